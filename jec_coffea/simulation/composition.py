"""Jet energy composition by flavour, compared with CMS's full simulation.

The realism checks of :mod:`.validation` hold the sample's response, resolution and offset
against CMS's JEC and JER tables. The particle-flow energy fractions (``Jet_chHEF``,
``Jet_neHEF``, ``Jet_chEmEF``, ``Jet_neEmEF``, ``Jet_muEF``) have no such table; their
reference is CMS's own simulation (Geant4 and CMS PF), whose NanoAOD files in the shared data
folder carry GenJets and flavours (:data:`CMS_MC_FILES`). A few hundred jets, so the
comparison is of means with their errors, not of distributions.

The two samples are compared on the same jets: gen-matched (:func:`.validation.gen_match`),
|eta| < 1.3, 20 <= pT_gen < 100 GeV, CMS's TightLepVeto fractions (muEF < 0.8 and chEmEF < 0.8:
the CMS files are mostly ttbar and Drell-Yan, whose prompt leptons make jets of their own).
Within a flavour our jets are weighted to the CMS jets' distribution in (pT_gen, rho) cells
(the fractions move with both: pile-up adds neutral energy); CMS jets in a cell without any of
ours are dropped from both and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from ..errors import ConfigError, InputFileError, MissingBranchError
from .validation import FRACTIONS, _flavour, gen_match

log = logging.getLogger(__name__)

__all__ = [
    "CMS_MC_FILES",
    "FRACTIONS",
    "Composition",
    "compare_composition",
    "default_cms_mc_files",
    "load_fraction_jets",
    "load_reference",
]

FLAVOURS = ("uds", "g", "c", "b")
CMS_MC_FILES = (
    "nanoaod/skhep_nanoAOD_2015_CMS_Open_Data_ttbar.root",
    "pfnano/cmsjet_nano106X_on_mini106X_2017_mc_NANO.root",
    "nanoaod/coffea_nano_dy.root",
    "pfnano/coffea_pfnano.root",
    "nanoaod/coffea_nano_tree.root",
)
"""CMS full-simulation NanoAOD in the shared data folder with AK4 CHS jets, GenJets and
flavours (PROVENANCE.md): ttbar of 2015, UL 2017 PFNano, Drell-Yan and Z+jets of Run 2.
``nanoaod/coffea_nano_tt_v12.root`` is left out: NanoAOD v12's ``Jet`` is AK4 PUPPI, whose
neutral fractions PUPPI lowers (its light jets: neEmEF 0.22 against 0.26-0.28 of the CHS
files)."""
ETA_MAX = 1.3
PT_EDGES = (20.0, 25.0, 30.0, 40.0, 50.0, 70.0, 100.0)
RHO_EDGES = (*np.arange(0.0, 44.0, 4.0), np.inf)
"""Cells of the weighting: narrow, since a cell's own spread is not weighted away (the
photon fraction rises by ~0.004 per GeV of rho), and only our jets' weights spread with
them: the CMS jets count once each."""
LEPTON_VETO = 0.8
"""CMS's TightLepVeto jet ID: muEF and chEmEF below 0.8 (|eta| < 2.6)."""
RHO_BRANCHES = ("fixedGridRhoFastjetAll", "Rho_fixedGridRhoFastjetAll")
"""Run-2 NanoAOD's name of rho and the one of NanoAOD v12 on (whose ``Jet`` is AK4 PUPPI)."""
_JET_BRANCHES = (
    "Jet_pt", "Jet_eta", "Jet_phi", "Jet_genJetIdx", "Jet_hadronFlavour",
    "Jet_partonFlavour", "GenJet_pt", "GenJet_eta", "GenJet_phi",
    *(f"Jet_{f}" for f in FRACTIONS),
)  # fmt: skip


def default_cms_mc_files(data_dir: str | Path | None = None) -> list[Path]:
    """:data:`CMS_MC_FILES` in ``data_dir`` (default: the shared data folder)."""
    from ..paths import shared_data_dir

    base = Path(data_dir) if data_dir is not None else shared_data_dir()
    return [base / f for f in CMS_MC_FILES]


def load_fraction_jets(paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Gen-matched jets of NanoAOD/PFNano files as flat arrays: the fractions, eta, pT_gen,
    rho, flavour group (``uds``, ``c``, ``b``, ``g`` or ``other``), the file's index and
    whether the file names rho as NanoAOD v12 on does (``puppi``: its ``Jet`` is AK4 PUPPI);
    ``files`` holds the paths themselves (one entry per file, what ``file`` indexes).

    A file that cannot be read, or lacks a branch, raises naming the file and the branch."""
    if not paths:
        msg = "no files given for the jet composition"
        raise ConfigError(msg)
    parts = []
    for i, p in enumerate(paths):
        try:
            with uproot.open(p) as f:
                tree = f["Events"]
                keys = set(tree.keys())
                rho = next((b for b in RHO_BRANCHES if b in keys), None)
                for b in (*_JET_BRANCHES, rho or RHO_BRANCHES[0]):
                    if b not in keys:
                        raise MissingBranchError(
                            b,
                            path=str(p),
                            tree="Events",
                            available=keys,
                            reason="needed for the jet composition (an MC NanoAOD with "
                            "GenJets and flavours)",
                        )
                a = tree.arrays([*_JET_BRANCHES, rho])
        except MissingBranchError:
            raise
        except (OSError, KeyError, ValueError) as err:
            raise InputFileError(
                str(p), f"cannot read the jet branches: {err}"
            ) from err
        matched, gpt, _ = gen_match(a)
        flat = {f: a[f"Jet_{f}"] for f in FRACTIONS}
        flat |= {
            "eta": a.Jet_eta,
            "pt_gen": gpt,
            "rho": ak.broadcast_arrays(a[rho], a.Jet_pt)[0],
            "had": a.Jet_hadronFlavour,
            "par": a.Jet_partonFlavour,
        }
        part = {
            k: ak.to_numpy(ak.flatten(v[matched])).astype(np.float64)
            for k, v in flat.items()
        }
        part["flavour"] = _flavour(part.pop("had"), part.pop("par"))
        part["file"] = np.full(len(part["eta"]), i)
        part["puppi"] = np.full(len(part["eta"]), rho == RHO_BRANCHES[1])
        parts.append(part)
    jets = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    jets["files"] = np.array([str(p) for p in paths])
    return jets


def _selected(j: dict[str, np.ndarray]) -> np.ndarray:
    return (
        (np.abs(j["eta"]) < ETA_MAX)
        & (j["pt_gen"] >= PT_EDGES[0])
        & (j["pt_gen"] < PT_EDGES[-1])
        & (j["muEF"] < LEPTON_VETO)
        & (j["chEmEF"] < LEPTON_VETO)
    )


def _cells(j: dict[str, np.ndarray]) -> np.ndarray:
    """Index of each jet's (pT_gen, rho) cell."""
    ipt = np.clip(
        np.searchsorted(PT_EDGES, j["pt_gen"], side="right") - 1, 0, len(PT_EDGES) - 2
    )
    irho = np.clip(
        np.searchsorted(RHO_EDGES, j["rho"], side="right") - 1, 0, len(RHO_EDGES) - 2
    )
    return ipt * (len(RHO_EDGES) - 1) + irho


@dataclass
class Composition:
    """Mean PF fractions per flavour of our jets (weighted to the CMS jets' pT_gen and rho)
    and of CMS's full simulation, each with its standard error."""

    rows: list[dict] = field(default_factory=list)
    """One per flavour and fraction: ``cms``, ``cms_err``, ``ours``, ``ours_err``, ``pull``."""
    differences: list[dict] = field(default_factory=list)
    """g - uds of each fraction on both samples, with the pull of ours against CMS."""
    n_cms: dict[str, int] = field(default_factory=dict)
    n_ours: dict[str, int] = field(default_factory=dict)
    uncovered: dict[str, int] = field(default_factory=dict)
    """CMS jets per flavour in (pT_gen, rho) cells without any of ours (dropped from both)."""
    cms_files: list[str] = field(default_factory=list)
    puppi_files: list[str] = field(default_factory=list)
    """Reference files whose jets are PUPPI (NanoAOD v12 on): not like for like with CHS."""
    mean_rho: dict[str, float] = field(default_factory=dict)
    """<rho> of the selected jets: CMS, ours before and after the weighting."""

    def row(self, flavour: str, fraction: str) -> dict:
        """The row of one flavour and fraction."""
        return next(
            r
            for r in self.rows
            if r["flavour"] == flavour and r["fraction"] == fraction
        )

    def difference(self, fraction: str) -> dict:
        """g - uds of one fraction."""
        return next(d for d in self.differences if d["fraction"] == fraction)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``validate-sim --json``."""
        from ..metrics._records import _clean

        return _clean(
            {
                "selection": {
                    "abs_eta_max": ETA_MAX,
                    "pt_gen_edges": list(PT_EDGES),
                    "rho_edges": list(RHO_EDGES),
                    "lepton_veto": LEPTON_VETO,
                },
                "cms_files": self.cms_files,
                "puppi_files": self.puppi_files,
                "n_cms": self.n_cms,
                "n_ours": self.n_ours,
                "uncovered": self.uncovered,
                "mean_rho": self.mean_rho,
                "rows": self.rows,
                "differences": self.differences,
            }
        )


def _mean_and_error(x: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    """(Weighted) mean and its standard error (Kish's effective count for weights)."""
    if len(x) == 0 or (w is not None and w.sum() <= 0):
        return np.nan, np.nan
    if w is None:
        w = np.ones_like(x)
    mean = float(np.average(x, weights=w))
    n_eff = w.sum() ** 2 / np.sum(w**2)
    if n_eff < 2:
        return mean, np.nan
    var = float(np.average((x - mean) ** 2, weights=w)) * n_eff / (n_eff - 1)
    return mean, float(np.sqrt(var / n_eff))


def _pull(ours: float, ours_err: float, cms: float, cms_err: float) -> float:
    """(ours - CMS) / combined error; NaN when the reference has no spread (a few jets, none
    with a muon, say: its standard error of 0 says nothing)."""
    if not cms_err > 0:
        return np.nan
    return (ours - cms) / float(np.hypot(ours_err, cms_err))


def _require_jets(what: str, sel: np.ndarray, jets: dict, given: Any) -> None:
    """Refuse a sample of which no jet enters the comparison (naming its files)."""
    if not (sel & np.isin(jets["flavour"], FLAVOURS)).any():
        names = "jets given" if isinstance(given, dict) else ", ".join(map(str, given))
        msg = (
            f"no jet to compare ({what}): none is gen-matched with |eta| < {ETA_MAX}, "
            f"pT_gen {PT_EDGES[0]:g}-{PT_EDGES[-1]:g} GeV and a flavour"
        )
        raise InputFileError(names, msg)


def load_reference(paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """:func:`load_fraction_jets` of CMS files, refused when no jet enters the comparison:
    what ``validate-sim`` checks before its long part."""
    jets = load_fraction_jets(paths)
    _require_jets("CMS", _selected(jets), jets, paths)
    return jets


def compare_composition(
    ours: dict[str, np.ndarray] | Sequence[str | Path],
    cms: dict[str, np.ndarray] | Sequence[str | Path],
) -> Composition:
    """Mean PF fractions per flavour of our sample against CMS's full simulation.

    ``ours`` and ``cms`` are files or what :func:`load_fraction_jets` (or
    :func:`load_reference`) returns for them."""
    cms_files = [
        str(p) for p in (cms.get("files", ()) if isinstance(cms, dict) else cms)
    ]
    j_ours = ours if isinstance(ours, dict) else load_fraction_jets(ours)
    j_cms = cms if isinstance(cms, dict) else load_fraction_jets(cms)
    s_ours, s_cms = _selected(j_ours), _selected(j_cms)
    _require_jets("ours", s_ours, j_ours, ours)
    _require_jets("CMS", s_cms, j_cms, cms)
    c_ours, c_cms = _cells(j_ours), _cells(j_cms)
    n_cells = (len(PT_EDGES) - 1) * (len(RHO_EDGES) - 1)
    out = Composition(cms_files=cms_files)
    if cms_files:
        out.puppi_files = [
            cms_files[i] for i in np.unique(j_cms["file"][j_cms["puppi"]]).astype(int)
        ]
        if out.puppi_files:
            log.warning(
                "%s: NanoAOD v12 or later, whose Jet is AK4 PUPPI: its fractions are not "
                "those of CHS jets",
                ", ".join(out.puppi_files),
            )
    per_flavour = {}
    rho_w, rho_x, rho_cms = [], [], []
    for fl in FLAVOURS:
        m_ours = s_ours & (j_ours["flavour"] == fl)
        m_cms = s_cms & (j_cms["flavour"] == fl)
        n_ref = np.bincount(c_cms[m_cms], minlength=n_cells)
        n_sim = np.bincount(c_ours[m_ours], minlength=n_cells)
        covered = n_sim[c_cms] > 0
        m_cms_cov = m_cms & covered
        out.uncovered[fl] = int((m_cms & ~covered).sum())
        out.n_cms[fl] = int(m_cms_cov.sum())
        out.n_ours[fl] = int(m_ours.sum())
        w = (np.where(n_sim > 0, n_ref / np.maximum(n_sim, 1), 0.0))[c_ours[m_ours]]
        rho_w.append(w)
        rho_x.append(j_ours["rho"][m_ours])
        rho_cms.append(j_cms["rho"][m_cms_cov])
        per_flavour[fl] = {}
        for frac in FRACTIONS:
            cm, ce = _mean_and_error(j_cms[frac][m_cms_cov])
            om, oe = _mean_and_error(j_ours[frac][m_ours], w)
            per_flavour[fl][frac] = (om, oe, cm, ce)
            out.rows.append(
                {
                    "flavour": fl, "fraction": frac, "cms": cm, "cms_err": ce,
                    "ours": om, "ours_err": oe, "pull": _pull(om, oe, cm, ce),
                }
            )  # fmt: skip
    for frac in FRACTIONS:
        og, oge, cg, cge = per_flavour["g"][frac]
        ou, oue, cu, cue = per_flavour["uds"][frac]
        d_ours, e_ours = og - ou, float(np.hypot(oge, oue))
        d_cms, e_cms = cg - cu, float(np.hypot(cge, cue))
        out.differences.append(
            {
                "fraction": frac, "cms": d_cms, "cms_err": e_cms, "ours": d_ours,
                "ours_err": e_ours, "pull": _pull(d_ours, e_ours, d_cms, e_cms),
            }
        )  # fmt: skip
    w_all, x_all = np.concatenate(rho_w), np.concatenate(rho_x)
    r_cms = np.concatenate(rho_cms)
    out.mean_rho = {
        "cms": float(np.mean(r_cms)) if len(r_cms) else np.nan,
        "ours": float(np.mean(x_all)) if len(x_all) else np.nan,
        "ours_weighted": float(np.average(x_all, weights=w_all))
        if w_all.sum() > 0
        else np.nan,
    }
    return out
