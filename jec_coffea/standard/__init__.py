"""Standard CMS jet energy corrections: text files, correctionlib JSON, the L1L2L3 stack.

- :func:`read_jec_text` / :func:`write_jec_text`: the CMS JEC text format (plain or gzipped).
- :func:`jec_text_to_correctionlib`: text files -> correctionlib schema v2, identical in
  structure to CMS's official ``jet_jerc.json.gz`` (command ``jec-coffea jec-to-correctionlib``).
- :class:`JECStack`: L1FastJet -> L2Relative [-> L3Absolute -> L2L3Residual], from text
  (through ``coffea.jetmet_tools``) or JSON (through correctionlib), applied to numpy, awkward
  or dask-awkward jets.
"""

from __future__ import annotations

from .naming import LEVELS, RHO_BRANCHES, CorrectionName, parse_correction_name
from .stack import JECStack, event_rho
from .textfile import JecTextTable, read_jec_text, write_jec_text
from .to_correctionlib import (
    compound_correction,
    jec_text_to_correctionlib,
    table_to_correction,
    write_correction_set,
)

__all__ = [
    "LEVELS",
    "RHO_BRANCHES",
    "CorrectionName",
    "JECStack",
    "JecTextTable",
    "compound_correction",
    "event_rho",
    "jec_text_to_correctionlib",
    "parse_correction_name",
    "read_jec_text",
    "table_to_correction",
    "write_correction_set",
    "write_jec_text",
]


def __dir__() -> list[str]:
    return __all__
