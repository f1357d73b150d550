"""jec-coffea: deep-neural-network jet energy calibration for coffea analyses.

The package reads NanoAOD/PFNano (and JetClass-II, ml-jec ntuples) into jet tables, builds
features with one definition shared by training and inference, trains PyTorch models exported
to ONNX, applies them inside coffea processors, and compares with the standard CMS
L1FastJet + L2Relative correction.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jec-coffea")
except (
    PackageNotFoundError
):  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]


def __dir__() -> list[str]:
    return __all__
