"""coffea processors: response histograms of every pT estimate, and the default jet selection."""

from __future__ import annotations

from .response import KNOWN_METHODS, VIEWS, ResponseProcessor
from .selection import JetSelection, prompt_lepton_min_dr

__all__ = [
    "KNOWN_METHODS",
    "VIEWS",
    "JetSelection",
    "ResponseProcessor",
    "prompt_lepton_min_dr",
]


def __dir__() -> list[str]:
    return __all__
