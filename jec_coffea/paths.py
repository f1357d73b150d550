"""Where the real CMS files (``shared/data``: NanoAOD, PFNano, JEC tables) are found.

One rule for the demo, ``validate-sim``, the tests and the benchmarks: ``$JEC_COFFEA_DATA``
when set, else ``shared/data`` beside the source checkout, else ``../shared/data`` from the
working directory (an installed package has no checkout beside it).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "shared_data_dir"]

ENV_VAR = "JEC_COFFEA_DATA"
"""Environment variable naming the shared-data folder."""


def shared_data_dir() -> Path:
    """The shared-data folder by the rule above (not checked for existence)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    if beside.is_dir():
        return beside
    return Path("..") / "shared" / "data"
