"""MC-truth derivation of the standard correction (L1FastJet + L2Relative) and its closure.

This is what ``jec-coffea derive-standard`` and ``jec-coffea closure`` run:

1. :func:`~.derive_input.load_jets`: the jets of one split (training for the derivation,
   test for the closure) of a dataset, passing the default jet selection of DESIGN.md
   (matched jets only; :mod:`.derive_input`);
2. :func:`derive_standard`: L1FastJet from the per-jet pile-up offset truth
   (:mod:`.derive_l1`), applied through ``coffea.jetmet_tools`` from the file just written;
   L2Relative on the L1-corrected jets (:mod:`.derive_l2`); both written as CMS text files
   ``{tag}_MC_{level}_{jettype}.jec.txt`` and as one correctionlib JSON, each validated, plus
   ``derivation.json`` with every fit and its chi2;
3. :func:`closure`: the response after a :class:`~.stack.JECStack`, in the DESIGN.md
   histogram, judged by :func:`jec_coffea.metrics.closure_table`.

The pile-up offset is the truth of the simulation: the detector-level pT that pile-up adds
to the jet, i.e. the pile-up share of the jet's tower/candidate energy (jet-table field
``pt_offset_truth``). CMS obtains it from jets matched between samples with and without
pile-up; the fitted form and the file format are the same.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import __version__
from ..errors import ConfigError
from .derive_input import DERIVATION_FIELDS, load_jets, prompt_lepton_dr, select_jets
from .derive_l1 import L1Result, constant_l1_table, fit_l1
from .derive_l2 import L2Result, fit_l2
from .naming import parse_correction_name
from .stack import JECStack
from .textfile import write_jec_text
from .to_correctionlib import jec_text_to_correctionlib, write_correction_set

if TYPE_CHECKING:
    from ..metrics import ClosureTable

__all__ = [
    "DERIVATION_FIELDS",
    "DerivationConfig",
    "DerivationResult",
    "closure",
    "derive_standard",
    "load_jets",
    "prompt_lepton_dr",
    "select_jets",
]

log = logging.getLogger(__name__)

PT_GEN_EDGES: tuple[float, ...] = (
    20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300, 400, 500, 650, 800, 1000,
    1300, 1600, 2000, 3000,
)  # fmt: skip
"""pT_gen edges [GeV] of DESIGN.md, used for the L2Relative points."""


class DerivationConfig(BaseModel):
    """Options of the MC-truth derivation (saved in ``derivation.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: str = Field(
        "Sim_V1", description="version tag; files are {tag}_MC_{level}_{jet_type}"
    )
    jet_type: str = Field("AK4PFchs", description="CMS jet type of the file names")
    l1: Literal["fit", "none"] = Field(
        "fit",
        description="'fit': L1FastJet from pt_offset_truth; 'none': L1 = 1 (formula '1', as "
        "CMS writes for PUPPI) and L2Relative absorbs the mean offset",
    )
    weights: Literal["gen", "unit"] = Field(
        "gen",
        description="'gen': medians, means and jet counts weighted by genWeight (the spectrum "
        "the closure histogram is filled with); 'unit': every jet counts once (more "
        "statistical power on pT-hat-biased samples, whose weights span orders of magnitude)",
    )
    min_jets_eta_bin: float = Field(
        500.0,
        gt=0,
        description="minimum effective jets per merged |eta| bin (L1 and L2)",
    )
    min_jets_point: float = Field(
        30.0, gt=0, description="minimum effective jets per (|eta|, pT_gen) L2 point"
    )
    l1_rho_bins: int = Field(8, ge=2, description="rho cells of the L1 fit (quantiles)")
    l1_pt_bins: int = Field(
        6, ge=1, description="pT_raw cells of the L1 fit (quantiles)"
    )
    l1_min_cell_jets: float = Field(10.0, gt=1, description="minimum jets per L1 cell")
    max_json_text_diff: float = Field(
        1e-5,
        gt=0,
        description="largest factor difference JSON vs text accepted",
    )

    @field_validator("tag", "jet_type")
    @classmethod
    def _no_separator_issues(cls, v: str) -> str:
        if not v or any(c in v for c in " /\\{}"):
            msg = f"must be non-empty without spaces, slashes or braces, got {v!r}"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _coffea_accepts_names(self) -> DerivationConfig:
        self.file_name("L1FastJet")  # raises for names coffea.jetmet_tools rejects
        return self

    @property
    def full_tag(self) -> str:
        """``{tag}_MC`` (``_MC`` not doubled)."""
        return self.tag if self.tag.endswith("_MC") else f"{self.tag}_MC"

    def file_name(self, level: str) -> str:
        """``{tag}_MC_{level}_{jet_type}.jec.txt``, checked to be accepted by coffea."""
        name = f"{self.full_tag}_{level}_{self.jet_type}"
        parse_correction_name(name, source=f"--tag {self.tag}", require_coffea=True)
        return name + ".jec.txt"


@dataclass
class DerivationResult:
    """Everything the derivation produced: fits, files and the text-vs-JSON check."""

    config: DerivationConfig
    n_jets: int
    n_jets_l1: int
    l1: L1Result | None
    l2: L2Result
    files: dict[str, str]
    json_text_max_diff: float
    cutflow: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN as null; tables omitted, they are in the files)."""

        def clean(obj):
            if isinstance(obj, float) and not math.isfinite(obj):
                return None
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items() if k != "table"}
            if isinstance(obj, list | tuple):
                return [clean(v) for v in obj]
            return obj

        return clean(
            {
                "jec_coffea_version": __version__,
                "config": self.config.model_dump(),
                "n_jets": self.n_jets,
                "n_jets_l1": self.n_jets_l1,
                "l1_formula": None if self.l1 is None else self.l1.table.formula,
                "l1": None if self.l1 is None else asdict(self.l1),
                "l2_formula": self.l2.table.formula,
                "l2": asdict(self.l2),
                "files": self.files,
                "json_text_max_diff": self.json_text_max_diff,
                "cutflow": self.cutflow,
            }
        )


def _column(jets: ak.Array, name: str, source: str) -> np.ndarray:
    if name not in jets.fields:
        msg = (
            f"{source}: jet-table field {name!r} is needed but absent; "
            f"fields present: {', '.join(jets.fields)}"
        )
        raise ConfigError(msg)
    return np.asarray(ak.to_numpy(jets[name]), dtype=np.float64)


def _columns(
    jets: ak.Array | Mapping[str, Any], names, source: str
) -> dict[str, np.ndarray]:
    if not isinstance(jets, ak.Array):
        jets = ak.Array(dict(jets))
    return {n: _column(jets, n, source) for n in names}


def derive_standard(
    jets: ak.Array | Mapping[str, Any],
    outdir: str | Path,
    config: DerivationConfig | None = None,
    *,
    source: str = "jets",
    cutflow: Any = None,
) -> DerivationResult:
    """Derive L1FastJet and L2Relative by MC truth and write them (text, JSON, fit record).

    Parameters
    ----------
    jets
        Selected, matched jets of the training split (flat jet table or mapping of (N,)
        arrays) with ``eta, pt_raw, area, event_rho, pt_gen, gen_weight`` and, for
        ``config.l1 == "fit"``, ``pt_offset_truth`` [GeV].
    outdir
        Output directory (created); ``JECStack.from_spec(outdir)`` loads the result.
    config
        Options; default :class:`DerivationConfig`.
    source
        Name of the input for messages.
    cutflow
        :class:`~jec_coffea.histograms.CutFlow` of the selection, recorded in
        ``derivation.json``.

    Returns
    -------
    DerivationResult

    Raises
    ------
    ConfigError
        A needed field is absent, or too few jets carry a finite offset.
    InputFileError
        A written file does not validate (a bug, or a full disk).
    """
    config = config or DerivationConfig()
    out = Path(outdir)
    ours = {config.file_name("L1FastJet"), config.file_name("L2Relative")}
    others = sorted(
        p.name
        for pattern in ("*.jec.txt", "*.jec.txt.gz")
        for p in (out.glob(pattern) if out.is_dir() else ())
        if p.name not in ours
    )
    if others:
        msg = (
            f"output directory {out} holds other JEC text files ({', '.join(others)}); "
            "JECStack.from_spec(DIR) loads one tag per directory: choose an empty directory"
        )
        raise ConfigError(msg)
    out.mkdir(parents=True, exist_ok=True)
    col = _columns(
        jets, ("eta", "pt_raw", "area", "event_rho", "pt_gen", "gen_weight"), source
    )
    n = len(col["eta"])
    if config.weights == "unit":
        col["gen_weight"] = np.ones(n)
    if n == 0:
        msg = f"{source}: no selected jets to derive the correction from"
        raise ConfigError(msg)
    l1: L1Result | None = None
    n_l1 = 0
    if config.l1 == "fit":
        fields = jets.fields if isinstance(jets, ak.Array) else list(jets)
        if "pt_offset_truth" not in fields:
            msg = (
                f"{source}: L1FastJet is fitted from the per-jet pile-up offset, jet-table "
                "field 'pt_offset_truth' (branch Jet_ptOffsetTruth), which these jets do not "
                "have; use --l1 none (config l1='none') to derive L2Relative alone"
            )
            raise ConfigError(msg)
        offset = _columns(jets, ("pt_offset_truth",), source)["pt_offset_truth"]
        ok = np.isfinite(offset) & (col["area"] > 0) & np.isfinite(col["event_rho"])
        n_l1 = int(np.count_nonzero(ok))
        if n_l1 < config.min_jets_eta_bin:
            msg = (
                f"{source}: only {n_l1} jets have a finite pt_offset_truth (need >= "
                f"{config.min_jets_eta_bin:g} to fit L1FastJet); the simulation must write the "
                "per-jet pile-up offset (branch Jet_ptOffsetTruth), or use --l1 none"
            )
            raise ConfigError(msg)
        l1 = fit_l1(
            *(col[k][ok] for k in ("eta", "pt_raw", "area", "event_rho")),
            offset[ok],
            col["gen_weight"][ok],
            min_jets=config.min_jets_eta_bin,
            rho_bins=config.l1_rho_bins,
            pt_bins=config.l1_pt_bins,
            min_cell_jets=config.l1_min_cell_jets,
        )
        l1_table = l1.table
    else:
        l1_table = constant_l1_table()
    l1_path = write_jec_text(out / config.file_name("L1FastJet"), l1_table)
    # apply L1 exactly as an analysis will: coffea.jetmet_tools on the file just written
    stack_l1 = JECStack.from_text([l1_path])
    args = (col["pt_raw"], col["eta"], col["area"], col["event_rho"])
    pt_l1 = col["pt_raw"] * stack_l1.factor(*args)
    l2 = fit_l2(
        col["eta"],
        col["pt_gen"],
        pt_l1,
        col["gen_weight"],
        pt_gen_edges=PT_GEN_EDGES,
        min_jets=config.min_jets_eta_bin,
        min_point_jets=config.min_jets_point,
    )
    l2_path = write_jec_text(out / config.file_name("L2Relative"), l2.table)
    json_path = out / f"{config.full_tag}_{config.jet_type}.json"
    _write_json(json_path, [l1_path, l2_path], config)
    diff = _json_text_check(out, json_path, config, args)
    files = {
        "L1FastJet": str(l1_path),
        "L2Relative": str(l2_path),
        "json": str(json_path),
    }
    flow = cutflow.to_dict() if cutflow is not None else None
    result = DerivationResult(config, n, n_l1, l1, l2, files, diff, flow)
    record = out / "derivation.json"
    record.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
    files["derivation"] = str(record)
    log.info(
        "derived %s %s from %d jets into %s", config.full_tag, config.jet_type, n, out
    )
    return result


def _write_json(path: Path, texts: list[Path], config: DerivationConfig) -> None:
    """Convert the text files, write the JSON and validate it as ``correction validate`` does."""
    import correctionlib
    from correctionlib.highlevel import model_auto, open_auto

    from ..errors import InputFileError

    cset = jec_text_to_correctionlib(
        texts,
        description=f"{config.full_tag} {config.jet_type}: MC-truth L1FastJet + L2Relative "
        f"derived by jec-coffea {__version__}",
    )
    write_correction_set(cset, path)
    try:
        model_auto(open_auto(str(path)))  # the check of `correction validate`
        correctionlib.CorrectionSet.from_file(str(path))
    except Exception as err:  # any failure here means we wrote a bad file
        raise InputFileError(
            str(path), f"written correction set does not validate: {err}"
        ) from err


def _edges_of(path: Path) -> np.ndarray:
    from .textfile import read_jec_text

    table = read_jec_text(path)
    return np.concatenate([table.bin_lo[:, 0], table.bin_hi[:, 0]])


def _json_text_check(
    out: Path, json_path: Path, config: DerivationConfig, args
) -> float:
    """Largest absolute difference of the total factor, text (coffea) vs JSON (correctionlib)."""
    text = JECStack.from_spec(str(out))
    cl = JECStack.from_correctionlib(json_path, config.full_tag, config.jet_type)
    f_text, f_json = text.factor(*args), cl.factor(*args)
    # The JSON holds bin edges rounded to float32 as CMS's files do; a jet whose (float32)
    # eta lies within that rounding of an edge is binned differently by the two, legitimately.
    eta = args[1]
    edges = np.unique(
        np.concatenate([_edges_of(p) for p in sorted(out.glob("*.jec.txt"))])
    )
    i = np.clip(np.searchsorted(edges, eta), 1, len(edges) - 1)
    gap = np.minimum(np.abs(eta - edges[i - 1]), np.abs(eta - edges[i]))
    away = gap > 1e-6 * np.maximum(1.0, np.abs(eta))
    # absolute, as factors are O(1): where L1 nears its 0.0001 floor (offset ~ pT), the
    # cancellation in 1 - offset/pT makes relative differences meaningless
    delta = np.abs(f_json - f_text)[away]
    diff = float(np.max(delta)) if len(delta) else 0.0
    log.debug("text vs JSON: %d jets on a bin edge skipped", np.count_nonzero(~away))
    log.info("text vs JSON: largest factor difference %.2e", diff)
    if not diff <= config.max_json_text_diff:
        from ..errors import InputFileError

        msg = (
            f"correctionlib JSON and text files disagree by {diff:.3g} in the factor on "
            f"the training jets; allowed {config.max_json_text_diff:g}"
        )
        raise InputFileError(str(json_path), msg)
    return diff


def closure(
    jets: ak.Array | Mapping[str, Any],
    stack: JECStack,
    *,
    min_jets: float = 500.0,
    n_boot: int = 200,
    seed: int = 0,
    weights: Literal["gen", "unit"] = "gen",
    source: str = "jets",
) -> tuple[ClosureTable, Any]:
    """Closure of a standard correction on selected, matched jets (DESIGN.md definition).

    Parameters
    ----------
    jets
        Selected jets (test split) with ``eta, pt_raw, area, event_rho, pt_gen, eta_gen``
        and optionally ``gen_weight``, ``flavour_group``.
    stack
        The correction to test (e.g. ``JECStack.from_spec(outdir)``).
    min_jets
        Bins with fewer effective jets are listed but not tested.
    n_boot, seed
        Bootstrap replicas and seed of the median uncertainties.
    weights
        "gen": fill with genWeight (DESIGN.md); "unit": every jet once.

    Returns
    -------
    (ClosureTable, hist.Hist)
        The closure table (pass/fail per bin, failing bins) and the response histogram.
    """
    from ..histograms import fill_response, response_histogram
    from ..metrics import closure_table

    if not isinstance(jets, ak.Array):
        jets = ak.Array(dict(jets))
    col = _columns(
        jets, ("eta", "pt_raw", "area", "event_rho", "pt_gen", "eta_gen"), source
    )
    factor = stack.factor(col["pt_raw"], col["eta"], col["area"], col["event_rho"])
    flavour = (
        np.asarray(ak.to_numpy(jets["flavour_group"]), dtype=np.int64)
        if "flavour_group" in jets.fields
        else np.full(len(jets), 4, dtype=np.int64)
    )
    h = response_histogram(["standard"])
    fill_response(
        h,
        "standard",
        pt=col["pt_raw"] * factor,
        pt_gen=col["pt_gen"],
        eta_gen=col["eta_gen"],
        flavour=flavour,
        weight=(
            ak.to_numpy(jets["gen_weight"])
            if weights == "gen" and "gen_weight" in jets.fields
            else None
        ),
    )
    table = closure_table(h, "standard", min_jets=min_jets, n_boot=n_boot, seed=seed)
    return table, h
