"""Model cards of the shipped models, built only from the files ``jec-coffea ship-models`` leaves.

A card (Markdown, installed beside ``<model>.onnx``) states what an analysis needs to trust a
shipped calibration: the architecture and parameter count, the training and test samples
(files, events, jets, detector and its configuration hash, how they were simulated), the
configuration and its hash, the fitted transform, training time and epochs, a learning curve,
the DESIGN.md summary figures against the standard correction and raw pT, the closure of the
standard correction, the validity range and metadata of the ONNX file and the command that
regenerates it. Nothing is typed by hand: every number is read from the work directory
(``ship-models.json``, ``train/<run>/``, ``evaluate/summary.json``, ``closure.json``, the
data.yaml files and the simulation metadata of their ROOT files), so a card cannot disagree
with the files it describes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import InputFileError

__all__ = ["ISSUE_BAR", "build_card", "write_card"]

log = logging.getLogger(__name__)

ISSUE_BAR = {"resolution": 10.0, "s": 50.0, "s_over_floor": 3.0}
"""The physics bar of issue 5 for ``deepsets``: improvement over the standard correction in
resolution (%) and in flavour dependence S (%), with S_std above this multiple of its floor."""

_TRAIN_LOG = re.compile(r"training \S+ on (\d+) jets \((\d+) val\)")
"""The line of jec_coffea.training.loop that states the training and validation jets."""


def write_card(workdir: str | Path, model: str) -> Path:
    """Build the card of ``model`` and write it to ``WORKDIR/cards/<model>.md``."""
    workdir = Path(workdir)
    path = workdir / "cards" / f"{model}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_card(workdir, model), encoding="utf-8")
    log.info("wrote %s", path)
    return path


def build_card(workdir: str | Path, model: str) -> str:
    """The Markdown model card of ``model`` from a ``ship-models`` work directory.

    Raises
    ------
    InputFileError
        A file the card needs (plan, model, evaluation summary) is missing or unreadable.
    """
    from .export import read_onnx_metadata
    from .shipped import SHIPPED_MODELS

    workdir = Path(workdir)
    plan = _json(workdir / "ship-models.json")
    summary = _json(workdir / "evaluate" / "summary.json")
    train_dir = workdir / "train" / model
    onnx = train_dir / "model.onnx"
    meta = read_onnx_metadata(onnx)
    training = _training(train_dir)
    closure = _closure(workdir / "closure.json")
    lines = [
        f"# Model card: `{model}.onnx`",
        "",
        (
            f"{SHIPPED_MODELS.get(model, meta.get('architecture', model))}. Predicts "
            f"`{meta.get('target')}` per jet; corrected pT = pT_raw exp(prediction). Load it "
            f'with `DNNJetCorrector.from_shipped("{model}")` or `jec-coffea run -m {model}`.'
        ),
        "",
        "Regenerate (all models and cards, resumable):",
        "",
        f"```\n{plan['command']}\n```",
        "",
        _detector_note(meta),
        "",
        "## Model",
        "",
        *_table(["", ""], _model_rows(meta, onnx, train_dir)),
        "",
        *_inputs(meta),
        "## Samples",
        "",
        *_samples(plan, meta),
        "## Training",
        "",
        *_table(["", ""], training),
        "",
        "## Learning curve",
        "",
        *_curve(plan, summary, model, workdir),
        "## Performance on the test sample",
        "",
        *_performance(summary, model, closure),
        "## Configuration",
        "",
        (
            f"`config.yaml` of the run, sha256 of the resolved configuration "
            f"`{_read(train_dir / 'config.sha256').strip()}`:"
        ),
        "",
        f"```yaml\n{_read(train_dir / 'config.yaml').rstrip()}\n```",
        "",
        "## Preprocessing (transform.yaml, inside the ONNX graph)",
        "",
        *_transform(train_dir / "transform.yaml"),
        "## ONNX metadata",
        "",
        *_table(["key", "value"], _metadata_rows(meta)),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputFileError(str(path), f"needed by the model card ({err})") from err


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(_read(path))
    except json.JSONDecodeError as err:
        raise InputFileError(str(path), f"not valid JSON ({err})") from err


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _history(train_dir: Path) -> list[dict[str, float]]:
    with (train_dir / "history.csv").open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def training_jets(train_dir: Path) -> tuple[int | None, str]:
    """Training jets of a run and how they are known: from ``train.log`` (the count the
    training logged), else bounded by history.csv (steps of the first epoch x batch size;
    the last incomplete batch of an epoch is dropped)."""
    log_file = train_dir / "train.log"
    if log_file.is_file():
        found = _TRAIN_LOG.findall(log_file.read_text(encoding="utf-8"))
        if found:
            return int(found[-1][0]), "train.log"
    try:
        history = _history(train_dir)
        batch = yaml.safe_load(_read(train_dir / "config.yaml"))["data"]["batch_size"]
    except (OSError, InputFileError, KeyError, TypeError):
        return None, "unknown"
    if not history:
        return None, "unknown"
    return int(history[0]["step"]) * int(batch), "at least (history.csv)"


def parameter_count(train_dir: Path) -> int | None:
    """Trainable parameters of the network of a run, rebuilt from its configuration and
    transform (None without torch)."""
    try:
        from .config import TrainingConfig
        from .training.losses import make_loss
        from .training.network import build_network
        from .transform import Transform
    except ImportError:
        return None
    config = TrainingConfig.load(train_dir / "config.yaml")
    transform = Transform.from_yaml(train_dir / "transform.yaml")
    network, _ = build_network(config, transform, make_loss(config.loss))
    return int(sum(p.numel() for p in network.parameters() if p.requires_grad))


def _training(train_dir: Path) -> list[list[str]]:
    history = _history(train_dir)
    if not history:
        return [["epochs", "0 (history.csv is empty)"]]
    jets, how = training_jets(train_dir)
    best = min(history, key=lambda h: h["val_loss"])
    config = yaml.safe_load(_read(train_dir / "config.yaml"))
    seconds = sum(h["seconds"] for h in history)
    return [
        ["training jets", _jets(jets, how)],
        ["epochs run / maximum", f"{len(history)} / {config.get('epochs')}"],
        [
            "early-stopping patience",
            str(config.get("early_stopping", {}).get("patience")),
        ],
        ["optimiser steps", f"{int(history[-1]['step']):,}"],
        ["training time", f"{_duration(seconds)} (sum of the epochs' wall times)"],
        ["best epoch (0-based)", str(int(best["epoch"]))],
        ["best validation loss", f"{best['val_loss']:.5g} ({config['loss']['type']})"],
        ["validation MAE of ln(pT) at best", f"{best['val_mae']:.4g}"],
        ["final learning rate", f"{history[-1]['lr']:.3g}"],
    ]


def _data_facts(data_yaml: str) -> dict[str, Any]:
    """Files, events, jets of a data.yaml and the simulation metadata of its first file."""
    from .simulation.writer import read_metadata

    path = Path(data_yaml)
    desc = yaml.safe_load(_read(path)) or {}
    files = desc.get("files") or []
    facts: dict[str, Any] = {
        "path": str(path),
        "files": len(files),
        "events": sum(f.get("n_events") or 0 for f in files),
        "jets": sum(f.get("n_jets") or 0 for f in files),
    }
    if files:
        first = Path(files[0]["path"])
        first = first if first.is_absolute() else path.parent / first
        try:
            facts["meta"] = read_metadata(first)
        except InputFileError as err:
            log.warning("no simulation metadata: %s", err)
    return facts


# --------------------------------------------------------------------------- sections


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _jets(jets: int | None, how: str) -> str:
    if not jets:
        return "-"
    return f"{jets:,}" if how == "train.log" else f"{jets:,} ({how})"


def _fmt(x: float | None, digits: int = 4, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.{digits}g}{unit}"


def _model_rows(meta: dict[str, Any], onnx: Path, train_dir: Path) -> list[list[str]]:
    n_params = parameter_count(train_dir)
    mc = meta.get("model_config") or {}
    shape = ", ".join(
        f"{k} {v}"
        for k, v in mc.items()
        if k not in ("architecture", "categorical", "types") and v not in (None, [], {})
    )
    validity = meta.get("validity") or {}
    return [
        ["architecture", f"{meta.get('architecture')} ({shape})"],
        ["trainable parameters", f"{n_params:,}" if n_params else "- (needs torch)"],
        ["jet type, R", f"{meta.get('jet_type')}, {meta.get('jet_radius')}"],
        [
            "validity: raw pT [GeV]",
            " - ".join(f"{v:.4g}" for v in validity.get("pt", [])),
        ],
        ["validity: η", " - ".join(f"{v:g}" for v in validity.get("eta", []))],
        ["ONNX file", f"{onnx.stat().st_size:,} bytes, sha256 `{_sha256(onnx)}`"],
        ["package version", str(meta.get("package_version"))],
    ]


def _inputs(meta: dict[str, Any]) -> list[str]:
    inputs = meta.get("inputs") or {}
    maxc = meta.get("max_constituents") or {}
    rows = []
    for group, spec in inputs.items():
        if group.endswith("_mask"):
            continue
        size = f"up to {maxc[group]}" if group in maxc else "1 per jet"
        rows.append([f"`{group}`", size, ", ".join(spec.get("features", []))])
    return [
        f"Inputs (feature version {meta.get('feature_version')}, built by jec_coffea.features):",
        "",
        *_table(["group", "entries", "features, in order"], rows),
        "",
    ]


def _detector_note(meta: dict[str, Any]) -> str:
    """Whether the samples' detector is the one this package carries: a command recorded
    with ``--config`` pointing to a file of its day stays reproducible without that file."""
    from .simulation import default_detector, detector_hash

    onnx_hash = meta.get("detector_config_hash")
    if not onnx_hash:
        return (
            "The ONNX metadata carry no detector hash: the samples were not simulated by "
            "jec-coffea, so the command needs the same input files."
        )
    packaged = detector_hash(default_detector())
    if onnx_hash == packaged:
        return (
            "The samples' detector is the packaged one (`jec_coffea/simulation/detector.yaml`, "
            "the same SHA-256): the command without `--config` makes the same samples."
        )
    return (
        f"The samples' detector (`{onnx_hash}`) is not the packaged one (`{packaged}`): keep "
        "`--config` with the file that has its hash."
    )


def _samples(plan: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    rows, notes, hashes = [], [], set()
    for kind in ("train", "test"):
        facts = _data_facts(plan[f"{kind}_data"])
        sim = facts.get("meta") or {}
        config = sim.get("config") or {}
        pu = config.get("pileup") or {}
        pileup = {
            "flat": f"flat μ {pu.get('mu_min', 0):g}-{pu.get('mu_max', 0):g}",
            "fixed": f"fixed μ {pu.get('mu', 0):g}",
        }.get(pu.get("profile"), pu.get("profile", "-"))
        detector = (config.get("detector") or {}).get("name", "-")
        hashes.add(sim.get("detector_sha256"))
        rows.append(
            [
                kind,
                f"`{facts['path']}`",
                str(facts["files"]),
                f"{facts['events']:,}",
                f"{facts['jets']:,}",
                f"{detector} `{sim.get('detector_sha256')}`",
                pileup,
                str(sim.get("seed", "-")),
            ]
        )
        command = (plan.get("simulate") or {}).get(kind)
        notes.append(
            f"- {kind}: `{command}`"
            if command
            else f"- {kind}: given with --{kind}-data (seed and pile-up from its files)"
        )
    onnx_hash = meta.get("detector_config_hash")
    check = "equals" if hashes == {onnx_hash} and onnx_hash else "DIFFERS FROM"
    return [
        *_table(_SAMPLE_HEADER, rows),
        "",
        "Simulated with:",
        *notes,
        "",
        (
            f"The detector-config hash in the ONNX metadata (`{onnx_hash}`) {check} that of "
            "the sample files. The training sample is split 90% training / 10% validation by "
            "the event hash; the test sample is independent and used whole."
        ),
        "",
    ]


_SAMPLE_HEADER = ["sample", "data.yaml", "files", "events", "jets (all)"]
_SAMPLE_HEADER += ["detector, config sha256", "pile-up", "seed"]


def _headline(summary: dict[str, Any], method: str) -> dict[str, Any] | None:
    for row in (summary.get("methods", {}).get(method) or {}).get("bins", []):
        if row.get("abs_eta") == "all":
            return row
    return None


def _curve(
    plan: dict[str, Any], summary: dict[str, Any], model: str, workdir: Path
) -> list[str]:
    rows = []
    runs = sorted(
        (r for r in plan["runs"] if r["model"] == model),
        key=lambda r: (r["max_jets"] is None, r["max_jets"] or 0),
    )
    for r in runs:
        jets, how = training_jets(workdir / "train" / r["name"])
        h = _headline(summary, r["name"]) or {}
        rows.append(
            [
                r["name"],
                _jets(jets, how),
                _fmt(h.get("resolution")),
                _fmt(h.get("s")),
                _fmt(h.get("improvement_resolution"), 3, "%"),
                _fmt(h.get("improvement_s"), 3, "%"),
            ]
        )
    ref = summary.get("reference")
    return [
        *_table(
            [
                "run",
                "training jets",
                "resolution",
                "S",
                f"Δ resolution vs {ref}",
                f"Δ S vs {ref}",
            ],
            rows,
        ),
        "",
        (
            "Headline figures (summary grid, see below) on the test sample; a '-' means no "
            "eligible bin or a run not evaluated."
        ),
        "",
    ]


def _performance(summary: dict[str, Any], model: str, closure: str) -> list[str]:
    ref = summary.get("reference")
    rows = []
    for method in ("raw", ref, model):
        for row in (summary.get("methods", {}).get(method) or {}).get("bins", []):
            eta = row["abs_eta"]
            eta = eta if eta == "all" else f"{eta[0]:g}-{eta[1]:g}"
            res = _fmt(row.get("resolution"))
            if row.get("resolution_err") is not None and res != "-":
                res += f" ± {row['resolution_err']:.2g}"
            rows.append(
                [
                    method,
                    eta,
                    str(row.get("n_bins")),
                    res,
                    _fmt(row.get("gauss_resolution")),
                    _fmt(row.get("s")),
                    _fmt(row.get("s_floor")),
                    _fmt(row.get("improvement_resolution"), 3, "%"),
                    _fmt(row.get("improvement_s"), 3, "%"),
                ]
            )
    header = ["method", r"\|η\|", "pT bins", "resolution (IQR/median)", "σ/μ core"]
    header += ["S", "S floor", f"Δ resolution vs {ref}", f"Δ S vs {ref}"]
    return [
        *_table(header, rows),
        "",
        (
            f"Summary grid of DESIGN.md: |η_gen| {summary.get('abs_eta_edges')} x pT_gen "
            f"{summary.get('pt_gen_edges')} GeV, bins where every flavour group (uds, c, b, g) "
            f"has N_eff >= {summary.get('min_jets'):g} (unit weights); figures are unweighted "
            "means over those bins. Resolution = IQR/median of pT/pT_gen, S = Σ_f |m_f - mean m|, "
            "Δ = 100 (1 - X / X_standard). The standard correction is L1FastJet + L2Relative "
            "derived by MC truth on the whole training sample."
        ),
        "",
        *_bar(summary, model),
        closure,
        "",
    ]


def _bar(summary: dict[str, Any], model: str) -> list[str]:
    """The issue-5 bar (``ISSUE_BAR``) checked on the headline figures."""
    h, std = _headline(summary, model), _headline(summary, summary.get("reference"))
    if not h or not std or h.get("improvement_resolution") is None:
        return ["Issue-5 bar: not testable (no eligible summary-grid bin).", ""]
    floor = std.get("s_floor") or 0.0
    ratio = (std.get("s") or 0.0) / floor if floor > 0 else math.inf
    res, ds = h["improvement_resolution"], h.get("improvement_s")
    checks = [
        (f"resolution better by >= {ISSUE_BAR['resolution']:g}%", res, "%"),
        (f"S better by >= {ISSUE_BAR['s']:g}%", ds, "%"),
        (f"S_std > {ISSUE_BAR['s_over_floor']:g} x its noise floor", ratio, " x"),
    ]
    limits = (ISSUE_BAR["resolution"], ISSUE_BAR["s"], ISSUE_BAR["s_over_floor"])
    return [
        (
            f"Issue-5 bar (required of deepsets; shown for every model), headline means "
            f"against {summary.get('reference')}:"
        ),
        "",
        *(
            f"- {what}: {_fmt(value, 3, unit)} -> "
            + ("met" if value is not None and value >= limit else "NOT met")
            for (what, value, unit), limit in zip(checks, limits, strict=True)
        ),
        "",
    ]


def _closure(path: Path) -> str:
    if not path.is_file():
        return "Closure of the standard correction on the test sample: not run."
    doc = _json(path)
    bins = doc.get("bins") or []
    tested = [b for b in bins if b.get("tested")]
    failing = [b for b in tested if not b.get("passed")]
    if not tested:
        return (
            "Closure of the standard correction on the test sample: not testable (no bin "
            "with enough jets; closure.txt)."
        )
    verdict = "closes" if not failing else "does NOT close"
    return (
        f"Closure of the standard correction on the test sample (DESIGN.md: median within "
        f"1% / 2%): {verdict}, {len(tested) - len(failing)} of {len(tested)} tested bins "
        f"within tolerance (closure.txt)."
    )


def _transform(path: Path) -> list[str]:
    doc = yaml.safe_load(_read(path)) or {}
    rows = []
    for group, features in (doc.get("groups") or {}).items():
        for name, ft in features.items():
            steps = " -> ".join(
                step.get("type", "?")
                + "".join(
                    f"({', '.join(f'{k}={v:g}' for k, v in params.items())})"
                    for params in [{k: v for k, v in step.items() if k != "type"}]
                    if params
                )
                for step in ft.get("steps") or []
            )
            rows.append(
                [
                    group,
                    name,
                    ft.get("kind", "-"),
                    steps or "-",
                    str(ft.get("scaling") or "-"),
                    _fmt(ft.get("centre")),
                    _fmt(ft.get("scale")),
                    " to ".join(f"{v:g}" for v in ft.get("bounds") or []) or "-",
                ]
            )
    return [
        (
            f"sha256 `{_sha256(path)}`; (y - centre) x scale of the manual steps' output y, clipped to the "
            "bounds; centre and scale fitted (median, inverse half 16-84% width) on the "
            "training jets, padding excluded; scale 0: the feature had one value over all "
            "training jets, so the network sees 0 for it on any sample."
        ),
        "",
        *_table(_TRANSFORM_HEADER, rows),
        "",
    ]


_TRANSFORM_HEADER = [
    "group",
    "feature",
    "kind",
    "steps",
    "scaling",
    "centre",
    "scale",
    "bounds",
]


def _metadata_rows(meta: dict[str, Any]) -> list[list[str]]:
    skip = {"features", "transform", "inputs", "model_config"}
    return [[f"`{k}`", f"`{json.dumps(v)}`"] for k, v in meta.items() if k not in skip]
