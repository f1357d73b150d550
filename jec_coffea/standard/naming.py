"""Names of CMS JEC levels, corrections and text files.

CMS names every correction ``{tag}_{level}_{jettype}``, e.g. ``Summer19UL18_V5_MC_L2Relative_AK4PFchs``
(tag ``Summer19UL18_V5_MC``), and ships it as ``{name}.jec.txt[.gz]`` and as the correctionlib
correction of the same name. coffea's ``FactorizedJetCorrector`` reads campaign, era, data type,
level and jet type from the underscore-separated tokens and accepts only 5 or 6 of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "COMPOUND_LEVEL",
    "LEVELS",
    "LEVEL_SHORT",
    "RHO_BRANCHES",
    "CorrectionName",
    "correction_name_of_file",
    "parse_correction_name",
]

LEVELS: tuple[str, ...] = ("L1FastJet", "L2Relative", "L3Absolute", "L2L3Residual")
"""JEC levels handled here, in the order they are applied (each on the pT after the previous)."""

LEVEL_SHORT: dict[str, str] = {
    "L1FastJet": "L1",
    "L2Relative": "L2",
    "L3Absolute": "L3",
    "L2L3Residual": "Res",
}
"""Short names used to build a compound name; all four give CMS's ``L1L2L3Res``."""

COMPOUND_LEVEL = "L1L2L3Res"
"""Level token of CMS's compound correction ``{tag}_L1L2L3Res_{jettype}``."""

RHO_BRANCHES: tuple[str, ...] = ("Rho_fixedGridRhoFastjetAll", "fixedGridRhoFastjetAll")
"""NanoAOD branch of the rho used by L1FastJet: Run 3 first, then Run 2."""

_TEXT_SUFFIXES: tuple[str, ...] = (".jec.txt.gz", ".jec.txt", ".txt.gz", ".txt")


@dataclass(frozen=True)
class CorrectionName:
    """A CMS correction name split into its parts."""

    tag: str
    """Campaign, version and data type, e.g. ``Summer19UL18_V5_MC``."""
    level: str
    """One of :data:`LEVELS`."""
    jet_type: str
    """Jet algorithm and PU mitigation, e.g. ``AK4PFchs``."""

    @property
    def name(self) -> str:
        """The full name ``{tag}_{level}_{jet_type}``."""
        return f"{self.tag}_{self.level}_{self.jet_type}"


def correction_name_of_file(path: str | Path) -> str:
    """Correction name of a JEC text file: its file name without ``.jec.txt[.gz]``."""
    name = Path(path).name
    for suffix in _TEXT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_correction_name(
    name: str, *, source: str | None = None, require_coffea: bool = False
) -> CorrectionName:
    """Split ``{tag}_{level}_{jettype}`` and check that coffea will accept it.

    Parameters
    ----------
    name
        Correction name, e.g. ``Summer22_22Sep2023_V2_MC_L2Relative_AK4PFPuppi``.
    source
        File the name comes from, quoted in errors.
    require_coffea
        Also check coffea's naming rule (5 or 6 tokens), for stacks applied through
        ``coffea.jetmet_tools``.

    Returns
    -------
    CorrectionName

    Raises
    ------
    ConfigError
        If no token is a level of :data:`LEVELS`, the level is not the second-to-last token,
        or (``require_coffea``) the name has other than 5 or 6 underscore tokens (coffea's
        ``FactorizedJetCorrector`` reads campaign, era, data type, level and jet type from
        them and rejects anything else).
    """
    where = f"{source}: " if source else ""
    tokens = name.split("_")
    found = [t for t in tokens if t in LEVELS]
    if not found:
        msg = (
            f"{where}correction name {name!r} contains no JEC level; expected "
            f"'{{tag}}_{{level}}_{{jettype}}' with level one of {', '.join(LEVELS)} "
            "(rename the file, e.g. Summer19UL18_V5_MC_L2Relative_AK4PFchs.jec.txt)"
        )
        raise ConfigError(msg)
    if len(tokens) < 3 or tokens[-2] not in LEVELS:
        msg = (
            f"{where}correction name {name!r}: the level ({found[0]}) must be the "
            "second-to-last '_' token, followed by the jet type (e.g. ..._L2Relative_AK4PFchs)"
        )
        raise ConfigError(msg)
    if require_coffea and not 5 <= len(tokens) <= 6:
        msg = (
            f"{where}correction name {name!r} has {len(tokens)} '_'-separated tokens; "
            "coffea.jetmet_tools needs 5 or 6 (campaign_era_[x_]datatype_level_jettype, "
            "e.g. Sim_V1_MC_L1FastJet_AK4PFchs): rename the file"
        )
        raise ConfigError(msg)
    return CorrectionName("_".join(tokens[:-2]), tokens[-2], tokens[-1])
