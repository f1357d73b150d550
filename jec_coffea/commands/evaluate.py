"""Print the summary table of a run: per method and |η| bin, resolution, S and improvements.

OUT is a run directory holding histograms.coffea (written by 'jec-coffea run') or the file
itself. The table averages the summary-grid pT bins where every flavour group has at least
--min-jets effective jets; improvements are 100 (1 - X / X_reference) in percent. With
--json the summary is also written as JSON (keys documented in jec_coffea.evaluation).

Example:
  jec-coffea evaluate runs/qcd --json runs/qcd/summary.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "evaluate"


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``evaluate``."""
    parser.add_argument(
        "out", type=Path, help="run directory with histograms.coffea, or the file"
    )
    parser.add_argument(
        "--reference",
        default="standard",
        help="method the improvements refer to (default: standard)",
    )
    parser.add_argument(
        "--min-jets",
        type=float,
        default=1000.0,
        help="effective jets per flavour group for a grid bin to count (default 1000)",
    )
    parser.add_argument(
        "--n-boot", type=int, default=100, help="bootstrap replicas (default 100)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write summary JSON"
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the Markdown table"
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="also print the per-bin summary grid and each method's per-bin improvements",
    )


def run(console: Console, args: argparse.Namespace) -> int:
    """Load, evaluate and print; 0 on success."""
    from ..errors import ConfigError
    from ..evaluation import evaluate, load_output

    if args.min_jets < 0 or args.n_boot < 2:
        msg = f"--min-jets must be >= 0 and --n-boot >= 2 (got {args.min_jets}, {args.n_boot})"
        raise ConfigError(msg)
    output = load_output(args.out)
    summary = evaluate(
        output,
        reference=args.reference,
        min_jets=args.min_jets,
        n_boot=args.n_boot,
        source=str(args.out),
    )
    console.print(summary)
    if args.grid and summary.grid is not None:
        from ..metrics import improvement

        console.print(summary.grid)
        if summary.reference is not None:
            for method in summary.methods:
                if method != summary.reference:
                    console.print(improvement(summary.grid, method, summary.reference))
    if summary.closure is not None:
        c = summary.closure
        console.print(
            f"closure of {c['method']}: {'passed' if c['passed'] else 'FAILED'} "
            f"({c['n_tested']} bins tested, {c['n_failing']} failing)"
        )
    if args.json is not None:
        summary.to_json(args.json)
        console.print(f"wrote {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(summary.to_markdown(), encoding="utf-8")
        console.print(f"wrote {args.markdown}")
    return 0
