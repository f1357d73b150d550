"""The performance report of a run: CMS-style plots, one self-contained HTML page and the summary.

:func:`build_report` takes the processor output of ``jec-coffea run`` (``OUT/histograms.coffea``)
and writes into the report directory:

- ``plots/<name>.png`` and ``plots/<name>.pdf`` for every figure: response distributions per
  method, median response versus pT_gen per flavour, resolution versus pT_gen with the ratio to
  the reference, flavour residuals (and u, d, s separately when the six-flavour view exists),
  closure maps in (η, pT_gen), median response versus ρ, loss curves of training directories
  (``history.csv``: epoch, train_loss, val_loss, lr), data/simulation comparisons when the
  output of a run on collision data is given (``compare``: its reconstruction-level
  histograms, the jet-level ``inputs`` and the ``corrected_pt`` spectrum of each method,
  against the same histograms of the simulated run, shapes normalised, with the ratio), and
  the dataset views (pT-η occupancy, flavour composition, target, multiplicity, one jet's
  constituents) when a jet table source is given;
- ``summary.json`` (keys documented in :mod:`jec_coffea.evaluation`) and ``summary.md``;
- ``report.html``: every PNG embedded as base64 with its caption, the summary table, the
  cut-flow and the closure result, so the page can be mailed or attached as one file.

Figures of simulated samples carry "CMS Simulation"; data/simulation comparisons "CMS".
Collision data has no GenJets: response figures come from the simulated run only.
"""

from __future__ import annotations

import csv
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hist
import numpy as np

from . import extras, plotting, plotting_dataset
from .errors import ConfigError, InputFileError
from .evaluation import Summary, evaluate
from .histograms import ABS_ETA_EDGES, PARTON_FLAVOURS
from .metrics import flavour_dependence, response_table
from .report_html import datamc_pairs, render_html

__all__ = [
    "Figure",
    "Report",
    "build_report",
    "load_dataset_jets",
    "read_history",
]

logger = logging.getLogger(__name__)

_RESPONSE_PT_RANGES: tuple[tuple[float, float], ...] = (
    (30, 50),
    (100, 200),
    (500, 1000),
)
"""pT_gen ranges [GeV] of the response-distribution figures."""

_RESIDUAL_PAIRS = (("uds", "g"), ("uds", "b"), ("uds", "c"), ("b", "g"))
_RESIDUAL_PAIRS6 = (("u", "d"), ("u", "s"), ("d", "s"), ("u", "g"))


@dataclass
class Figure:
    """One rendered figure: its name (file stem), caption and the files written."""

    name: str
    caption: str
    png: Path
    pdf: Path
    section: str


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    directory: Path
    html: Path
    summary_json: Path
    summary_md: Path
    figures: list[Figure] = field(default_factory=list)
    summary: Summary | None = None


def read_history(directory: str | Path) -> dict[str, list[float]]:
    """Columns of ``history.csv`` in a training directory (epoch, train_loss, val_loss, lr).

    Raises :class:`InputFileError` naming the file if it is missing or lacks the loss columns.
    """
    directory = Path(directory)
    path = directory / "history.csv" if directory.is_dir() else directory
    if not path.is_file():
        raise InputFileError(
            str(path), "no history.csv (expected a training output directory)"
        )
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    needed = {"epoch", "train_loss", "val_loss"}
    have = set(rows[0]) if rows else set()
    if not rows or not needed <= have:
        raise InputFileError(
            str(path),
            f"needs columns {sorted(needed)} and at least one row; has {sorted(have)} and {len(rows)} rows",
        )
    out: dict[str, list[float]] = {}
    for key in rows[0]:
        try:
            out[key] = [float(r[key]) for r in rows]
        except (TypeError, ValueError):
            continue
    return out


def load_dataset_jets(source: str | Path, *, max_jets: int = 50_000) -> Any:
    """Read up to ``max_jets`` jets for the dataset views from a ROOT file or a data.yaml.

    For a data.yaml the files are read in order (paths relative to the yaml's folder) until
    ``max_jets`` jets are collected. Returns the awkward jet array.
    """
    import awkward as ak

    from .data import read_jet_table

    source = Path(source)
    if not source.exists():
        raise InputFileError(
            str(source), "dataset source not found (data.yaml or ROOT file)"
        )
    if source.suffix in (".yaml", ".yml"):
        from .data.dataset import DatasetDescription

        desc = DatasetDescription.load(source)
        files = [
            (
                str(e.path)
                if "://" in str(e.path) or Path(e.path).is_absolute()
                else str(source.parent / e.path),
                e.tree,
                e.layout,
            )
            for e in desc.files
        ]
    else:
        files = [(str(source), None, None)]
    parts, n = [], 0
    for path, tree, layout in files:
        if n >= max_jets:
            break
        # per-event layouts: read events until enough jets; ~10 jets per event is generous
        table = read_jet_table(path, layout=layout, tree=tree, entry_stop=max_jets)
        jets = table.jets[: max_jets - n]
        parts.append(jets)
        n += len(jets)
    jets = ak.concatenate(parts) if len(parts) > 1 else parts[0]
    logger.info(
        "dataset views: %d jets from %d file(s) of %s", len(jets), len(parts), source
    )
    return jets


class _Renderer:
    """Creates, labels, saves and records figures in one style."""

    def __init__(
        self, directory: Path, *, simulation: bool, rlabel: str | None
    ) -> None:
        self.plt = extras.matplotlib_pyplot()
        self.hep = extras.mplhep()
        self.hep.style.use("CMS")
        self.directory = directory
        self.simulation = simulation
        self.rlabel = rlabel
        self.figures: list[Figure] = []

    def draw(
        self,
        name: str,
        caption: str,
        section: str,
        fn: Callable[..., Any],
        *,
        ratio: bool = False,
        simulation: bool | None = None,
        figsize: tuple[float, float] = (10, 9),
    ) -> None:
        plt = self.plt
        if ratio:
            fig, (ax, rax) = plt.subplots(
                2,
                1,
                figsize=(figsize[0], figsize[1] + 1.5),
                gridspec_kw={"height_ratios": (3, 1), "hspace": 0.06},
                sharex=True,
            )
            fn(fig, ax, rax)
        else:
            fig, ax = plt.subplots(figsize=figsize)
            fn(fig, ax)
        plotting.cms_label(
            ax,
            simulation=self.simulation if simulation is None else simulation,
            rlabel=self.rlabel,
        )
        png = self.directory / f"{name}.png"
        pdf = self.directory / f"{name}.pdf"
        fig.savefig(png, dpi=100, bbox_inches="tight")
        fig.savefig(pdf, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(Figure(name, caption, png, pdf, section))
        logger.debug("wrote %s", png)


def _has(
    h: hist.Hist, method: str, min_jets: float, **ranges: tuple[float, float]
) -> bool:
    """True if ``method`` has at least ``min_jets`` effective jets (Σw)²/Σw² in the ranges."""
    sub = plotting._select(h, **ranges)[{"method": method}]
    sumw = float(np.sum(sub.values(flow=True)))
    sumw2 = float(np.sum(sub.variances(flow=True)))
    return sumw2 > 0 and sumw * sumw / sumw2 >= min_jets


def _eta_bins() -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in itertools.pairwise(ABS_ETA_EDGES)]


def _tag(r: tuple[float, float]) -> str:
    return f"{r[0]:g}-{r[1]:g}".replace(".", "p")


def build_report(
    output: Mapping[str, Any],
    directory: str | Path,
    *,
    reference: str | None = "standard",
    min_jets: float = 1000.0,
    plot_min_jets: float = 20.0,
    training: Sequence[str | Path] = (),
    dataset: str | Path | None = None,
    max_jets: int = 50_000,
    simulation: bool = True,
    title: str = "jec-coffea performance report",
    source: str = "",
    n_boot: int = 100,
    rlabel: str | None = None,
    compare: Mapping[str, Any] | None = None,
    abs_eta_max: float = 5.0,
) -> Report:
    """Render every figure and table of a processor output into ``directory``.

    Parameters
    ----------
    output
        ResponseProcessor output (``"response"`` required; the views, ``cutflow`` and
        ``datamc_*`` entries are used when present).
    directory
        Report directory (created); plots go to ``directory/plots``.
    reference
        Method of the ratio panels and improvements (skipped if absent).
    min_jets
        N_eff per flavour group for a summary-grid bin (summary tables).
    plot_min_jets
        Bins with fewer effective jets are not drawn.
    training
        Training output directories with ``history.csv`` (loss curves).
    dataset
        data.yaml or ROOT file for the dataset views; ``max_jets`` bounds the jets read.
    simulation
        The histograms come from simulation ("CMS Simulation" label).
    title, source
        Page title and the name of the input shown on the page.
    n_boot
        Bootstrap replicas of the uncertainties.
    rlabel
        Right-hand label of every figure (default mplhep's "(13 TeV)"), e.g. "QCD, 13.6 TeV".
    compare
        Output of the same processor on collision data: its ``inputs`` and ``corrected_pt``
        histograms are compared with this (simulated) output's.
    abs_eta_max
        Draw the per-|η| figures only for bins up to this |η| (the tables cover the grid).
    """
    h = output.get("response")
    if not isinstance(h, hist.Hist):
        msg = f"build_report: the output holds no 'response' histogram (keys: {sorted(output)})"
        raise ConfigError(msg)
    histories = {str(d): read_history(d) for d in training}
    jets = (
        load_dataset_jets(dataset, max_jets=max_jets) if dataset is not None else None
    )

    directory = Path(directory)
    plots = directory / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    methods = [m for m in h.axes["method"] if _has(h, m, 1e-9)]
    skipped = [m for m in h.axes["method"] if m not in methods]
    if skipped:
        logger.info("report: methods without entries are not drawn: %s", skipped)
    ref = reference if reference in methods else None
    summary = evaluate(
        output, reference=ref, min_jets=min_jets, n_boot=n_boot, source=source
    )
    table = response_table(h, n_boot=n_boot, fit=False)  # figures show IQR/median only
    fd = flavour_dependence(
        h,
        residuals=_RESIDUAL_PAIRS,
        n_boot=n_boot,
        n_shuffle=2,
    )
    r = _Renderer(plots, simulation=simulation, rlabel=rlabel)
    eta_bins = [
        e
        for e in _eta_bins()
        if e[1] <= abs_eta_max + 1e-9
        and any(_has(h, m, plot_min_jets, abs_eta=e) for m in methods)
    ]

    central = [e for e in eta_bins if e[1] <= 2.5]  # the summary-grid |eta| bins
    for eta in central:
        for pt in _RESPONSE_PT_RANGES:
            if not any(
                _has(h, m, plot_min_jets, abs_eta=eta, pt_gen=pt) for m in methods
            ):
                continue
            r.draw(
                f"response_eta{_tag(eta)}_pt{_tag(pt)}",
                f"Response distribution of every method, all flavours, {eta[0]:g} ≤ |η| < {eta[1]:g}, "
                f"{pt[0]:g} ≤ pT_gen < {pt[1]:g} GeV (normalised to unit area).",
                "Response distributions",
                lambda fig, ax, eta=eta, pt=pt: plotting.plot_response_distributions(
                    ax, h, methods=methods, abs_eta=eta, pt_gen=pt
                ),
            )
    for m in methods:
        for eta in central:
            r.draw(
                f"median_{m}_eta{_tag(eta)}",
                f"Median response of {m} versus pT_gen per flavour group, {eta[0]:g} ≤ |η| < {eta[1]:g} "
                "(error bars: bootstrap; band: ±1%).",
                "Scale per flavour",
                lambda fig, ax, m=m, eta=eta: plotting.plot_median_vs_pt(
                    ax, table, method=m, abs_eta=eta, min_jets=plot_min_jets
                ),
            )
    for eta in eta_bins:
        r.draw(
            f"resolution_eta{_tag(eta)}",
            f"Resolution IQR/median of every method versus pT_gen, all flavours, {eta[0]:g} ≤ |η| < {eta[1]:g}"
            + (f"; lower panel: ratio to {ref}." if ref else "."),
            "Resolution",
            lambda fig, ax, rax, eta=eta: plotting.plot_resolution_vs_pt(
                ax,
                rax if ref else None,
                table,
                methods=methods,
                reference=ref,
                abs_eta=eta,
                min_jets=plot_min_jets,
            ),
            ratio=ref is not None,
        )
    for m in methods:
        for eta in central[:1]:
            r.draw(
                f"residuals_{m}_eta{_tag(eta)}",
                f"Flavour residuals of the median response of {m}, {eta[0]:g} ≤ |η| < {eta[1]:g} (bootstrap errors).",
                "Flavour dependence",
                lambda fig, ax, m=m, eta=eta: plotting.plot_flavour_residuals(
                    ax, fd, method=m, abs_eta=eta
                ),
            )
    h6 = output.get("response_flavour6")
    if isinstance(h6, hist.Hist) and float(h6.sum(flow=True).value) > 0:
        fd6 = flavour_dependence(
            h6,
            flavours=PARTON_FLAVOURS,
            residuals=_RESIDUAL_PAIRS6,
            n_boot=n_boot,
            n_shuffle=2,
        )
        for m in [m for m in methods if m != "raw"]:
            r.draw(
                f"residuals6_{m}",
                f"Light-quark residuals (u, d, s separately) of {m}, |η| < 1.3.",
                "Flavour dependence",
                lambda fig, ax, m=m: plotting.plot_flavour_residuals(
                    ax, fd6, method=m, abs_eta=(0.0, 1.3)
                ),
            )
    h_eta = output.get("response_vs_eta")
    if isinstance(h_eta, hist.Hist):
        for m in methods:
            r.draw(
                f"closure_map_{m}",
                f"Closure map of {m}: median response − 1 in (η_gen, pT_gen); white where fewer than {plot_min_jets:g} jets.",
                "Closure",
                lambda fig, ax, m=m: plotting.plot_closure_map(
                    fig, ax, h_eta, method=m, min_jets=plot_min_jets
                ),
                figsize=(12, 8),
            )
    h_rho = output.get("response_vs_rho")
    if isinstance(h_rho, hist.Hist):
        for eta in eta_bins[:2]:
            for pt in ((30.0, 50.0), (100.0, 200.0)):
                if not any(
                    _has(h_rho, m, plot_min_jets, abs_eta=eta, pt_gen=pt)
                    for m in methods
                ):
                    continue
                r.draw(
                    f"rho_eta{_tag(eta)}_pt{_tag(pt)}",
                    f"Median response versus ρ (pile-up), {eta[0]:g} ≤ |η| < {eta[1]:g}, {pt[0]:g} ≤ pT_gen < {pt[1]:g} GeV.",
                    "Pile-up dependence",
                    lambda fig, ax, eta=eta, pt=pt: plotting.plot_response_vs_rho(
                        ax,
                        h_rho,
                        methods=methods,
                        abs_eta=eta,
                        pt_gen=pt,
                        min_jets=plot_min_jets,
                    ),
                )
    for i, (name, history) in enumerate(histories.items()):
        r.draw(
            f"loss_{i}_{Path(name).name}",
            f"Training and validation loss of {name}.",
            "Training",
            lambda fig, ax, history=history, name=name: plotting.plot_loss_curves(
                ax, history, label=Path(name).name
            ),
        )
    for key, h_data, h_sim in datamc_pairs(compare, output, methods):
        r.draw(
            f"datamc_{key}",
            f"Collision data and simulation, {h_sim.axes[0].label}: shapes normalised to unit "
            "area; lower panel data / simulation.",
            "Data and simulation",
            lambda fig, ax, rax, h_data=h_data, h_sim=h_sim: plotting.plot_data_mc(
                ax, rax, h_data, h_sim
            ),
            ratio=True,
            simulation=False,
        )
    if jets is not None:
        views = [
            (
                "dataset_occupancy",
                "Occupancy of the jets in (η, raw pT).",
                plotting_dataset.plot_occupancy,
            ),
            (
                "dataset_flavour",
                "Flavour composition of the matched jets versus pT_gen.",
                plotting_dataset.plot_flavour_composition,
            ),
            (
                "dataset_target",
                "Regression target ln(pT_gen/pT_raw) per flavour group.",
                plotting_dataset.plot_target,
            ),
            (
                "dataset_multiplicity",
                "Constituents per jet and type.",
                plotting_dataset.plot_multiplicity,
            ),
            (
                "dataset_constituents",
                "Constituents of the jet with most constituents in the (Δη, Δφ) plane; marker area ∝ pT; dashed: R = 0.4.",
                plotting_dataset.plot_jet_constituents,
            ),
        ]
        for name, caption, fn in views:
            r.draw(
                name,
                caption + f" ({len(jets)} jets of {dataset})",
                "Dataset",
                lambda fig, ax, fn=fn: fn(ax, jets),
            )

    summary_json = directory / "summary.json"
    summary_md = directory / "summary.md"
    summary.to_json(summary_json)
    summary_md.write_text(summary.to_markdown(), encoding="utf-8")
    page = directory / "report.html"
    page.write_text(
        render_html(title, source, summary, r.figures, output.get("cutflow")),
        encoding="utf-8",
    )
    logger.info("report: %d figures, %s", len(r.figures), page)
    return Report(directory, page, summary_json, summary_md, r.figures, summary)
