"""Render the performance report of a run: CMS-style PNG/PDF plots, one HTML page, summary tables.

OUT is a run directory holding histograms.coffea (or the file). REPORT receives plots/*.png and
plots/*.pdf, report.html (self-contained: images embedded), summary.json (keys documented in
jec_coffea.evaluation) and summary.md. --training adds loss curves from training directories
(history.csv); --data adds the dataset views (occupancy, flavour composition, target,
multiplicity, one jet's constituents) from a data.yaml or a ROOT file, reading at most
--max-jets jets. --compare adds data/simulation comparisons of the jet inputs and of the
corrected pT from a run of the same processor on collision data.

Example:
  jec-coffea report runs/qcd -o reports/qcd --training train/deepsets --data data.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "report"


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``report``."""
    parser.add_argument(
        "out", type=Path, help="run directory with histograms.coffea, or the file"
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="report directory (created)"
    )
    parser.add_argument(
        "--training",
        type=Path,
        action="append",
        default=[],
        help="training output directory with history.csv (repeatable)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data.yaml or ROOT file for dataset views",
    )
    parser.add_argument(
        "--max-jets",
        type=int,
        default=50_000,
        help="jets read for the dataset views (default 50000)",
    )
    parser.add_argument(
        "--reference", default="standard", help="reference method (default: standard)"
    )
    parser.add_argument(
        "--min-jets",
        type=float,
        default=1000.0,
        help="effective jets per flavour group for a summary-grid bin (default 1000)",
    )
    parser.add_argument(
        "--plot-min-jets",
        type=float,
        default=20.0,
        help="bins with fewer effective jets are not drawn (default 20)",
    )
    parser.add_argument(
        "--n-boot", type=int, default=100, help="bootstrap replicas (default 100)"
    )
    parser.add_argument(
        "--data-sample",
        action="store_true",
        help="the histograms come from collision data: label 'CMS' instead of 'CMS Simulation'",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="run directory of the same processor on collision data (data/simulation plots)",
    )
    parser.add_argument(
        "--abs-eta-max",
        type=float,
        default=5.0,
        help="draw per-|eta| figures up to this |eta| (default 5: all bins)",
    )
    parser.add_argument("--title", default="jec-coffea performance report")
    parser.add_argument(
        "--rlabel", default=None, help="right-hand figure label (default '(13 TeV)')"
    )


def run(console: Console, args: argparse.Namespace) -> int:
    """Build the report and print the summary; 0 on success."""
    from ..errors import ConfigError
    from ..evaluation import load_output
    from ..report import build_report

    if args.max_jets <= 0 or args.n_boot < 2:
        msg = f"--max-jets must be > 0 and --n-boot >= 2 (got {args.max_jets}, {args.n_boot})"
        raise ConfigError(msg)
    output = load_output(args.out)
    compare = load_output(args.compare) if args.compare is not None else None
    rep = build_report(
        output,
        args.output,
        reference=args.reference,
        min_jets=args.min_jets,
        plot_min_jets=args.plot_min_jets,
        training=args.training,
        dataset=args.data,
        max_jets=args.max_jets,
        simulation=not args.data_sample,
        title=args.title,
        source=str(args.out),
        n_boot=args.n_boot,
        rlabel=args.rlabel,
        compare=compare,
        abs_eta_max=args.abs_eta_max,
    )
    if rep.summary is not None:
        console.print(rep.summary)
    console.print(
        f"wrote {rep.html} ({len(rep.figures)} figures as PNG and PDF in "
        f"{rep.directory / 'plots'}), {rep.summary_json}, {rep.summary_md}"
    )
    return 0
