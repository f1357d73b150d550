"""Importers of optional dependencies, one function each (the ``uproot.extras`` pattern).

The base install (reading, processors, inference) needs neither torch nor pythia8mc nor
fastjet nor dask-jobqueue; each importer returns the module or raises ``ModuleNotFoundError``
naming the extra that provides it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "dask_jobqueue",
    "fastjet",
    "matplotlib_pyplot",
    "mplhep",
    "pythia8",
    "torch",
]


def _require(module: str, extra: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        msg = (
            f"{what} needs the Python package {module!r}, which is not installed; "
            f"install it with: pip install 'jec-coffea[{extra}]'"
        )
        raise ModuleNotFoundError(msg) from err


def torch() -> ModuleType:
    """PyTorch, for training and export (extra ``train``)."""
    return _require("torch", "train", "training and ONNX export")


def pythia8() -> ModuleType:
    """Pythia 8 (``pythia8mc``), for the simulated sample (extra ``sim``)."""
    return _require("pythia8mc", "sim", "event generation")


def fastjet() -> ModuleType:
    """FastJet, for jet clustering in the simulation (extra ``sim``)."""
    return _require("fastjet", "sim", "jet clustering")


def dask_jobqueue() -> ModuleType:
    """dask-jobqueue, for HTCondor/SLURM clusters (extra ``cluster``)."""
    return _require("dask_jobqueue", "cluster", "batch-cluster execution")


def matplotlib_pyplot() -> ModuleType:
    """matplotlib.pyplot with the non-interactive Agg backend."""
    mpl = importlib.import_module("matplotlib")
    mpl.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def mplhep() -> ModuleType:
    """mplhep, for CMS-style plots."""
    return importlib.import_module("mplhep")
