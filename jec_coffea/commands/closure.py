"""Closure test of a standard correction on the test split of a simulated sample.

Applies the correction given by --jec (a directory of *.jec.txt files such as
`derive-standard` writes, text files, or FILE.json:TAG:JETTYPE) to the matched jets of the
test split (jec_coffea.data.split) of DATA that pass the default selection, fills the
response histogram of DESIGN.md (|eta_gen| x pT_gen bins, genWeight) and checks closure as
DESIGN.md defines it: median response within 1% of 1 for pT_gen >= 30 GeV and within 2% for
20-30 GeV, in bins with >= --min-jets jets (effective). Prints the table of medians with
their bootstrap uncertainties and lists the failing bins.

Exit status: 0 if every tested bin closes, 1 if a bin fails or no bin has enough jets,
2 for bad input.

Example:
  jec-coffea closure sim/data.yaml --jec jec/Sim_V1 --json closure.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

NAME = "closure"

log = logging.getLogger(__name__)


def _wide(console: Console) -> Console:
    """The console itself on a terminal; into a file or pipe, one 160 columns wide so that
    wide tables are written whole instead of cut at 80 columns."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=160)


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``closure``."""
    parser.add_argument("data", type=Path, help="dataset description (data.yaml)")
    parser.add_argument(
        "--jec",
        required=True,
        help="correction: directory of *.jec.txt[.gz], comma-separated text files, or "
        "FILE.json[.gz]:TAG:JETTYPE",
    )
    parser.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        default="test",
        help="split to test on (default test)",
    )
    parser.add_argument(
        "--weights",
        choices=("gen", "unit"),
        default="gen",
        help="fill with genWeight (default, DESIGN.md) or count each jet once",
    )
    parser.add_argument(
        "--min-jets",
        type=float,
        default=500.0,
        help="bins with fewer (effective) jets are shown but not tested (default 500)",
    )
    parser.add_argument(
        "--n-boot", type=int, default=200, help="bootstrap replicas (default 200)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write the table as JSON"
    )
    parser.add_argument(
        "--all-bins", action="store_true", help="also print bins without jets"
    )


def _table(closure, title: str, all_bins: bool) -> Table:
    table = Table(title=title)
    for col in (
        "|eta_gen|",
        "pT_gen [GeV]",
        "jets",
        "median R",
        "stat. unc.",
        "tol.",
        "result",
    ):
        table.add_column(col, justify="right")
    for b in closure.bins:
        if not all_bins and not b.n_eff > 0:
            continue
        if b.tested:
            result = "[green]closes" if b.passed else "[red]FAILS"
        else:
            result = "[dim]too few jets"
        table.add_row(
            f"{b.abs_eta[0]:g}-{b.abs_eta[1]:g}",
            f"{b.pt_gen[0]:g}-{b.pt_gen[1]:g}",
            f"{b.n_eff:.0f}",
            f"{b.median:.4f}",
            f"{b.median_err:.4f}",
            f"{b.tolerance:.0%}",
            result,
        )
    return table


def run(console: Console, args: argparse.Namespace) -> int:
    """Load the split, apply the correction, print the closure table; 0 if it closes."""
    from ..errors import ConfigError
    from ..standard import JECStack
    from ..standard.derive import closure, load_jets

    if args.n_boot < 10:
        msg = f"option --n-boot: need at least 10 replicas, got {args.n_boot}"
        raise ConfigError(msg)
    stack = JECStack.from_spec(args.jec)
    split = None if args.split == "all" else args.split
    jets, cutflow = load_jets(args.data, split)
    console.print(cutflow)
    table, _ = closure(
        jets,
        stack,
        min_jets=args.min_jets,
        n_boot=args.n_boot,
        weights=args.weights,
        source=str(args.data),
    )
    title = (
        f"closure of {stack.tag} {stack.jet_type} ({', '.join(stack.levels)}) on the "
        f"{args.split} split of {args.data}, {args.weights} weights"
    )
    wide = _wide(console)
    wide.print(_table(table, title, args.all_bins))
    if args.json is not None:
        table.to_json(str(args.json))
    tested = [b for b in table.bins if b.tested]
    if not tested:
        console.print(
            f"[red]no bin has {args.min_jets:g} jets: closure cannot be tested "
            f"({len(jets)} selected jets)"
        )
        return 1
    if table.failing:
        console.print(f"[red]{len(table.failing)} of {len(tested)} tested bins fail:")
        for b in table.failing:
            console.print(
                f"  |eta_gen| {b.abs_eta[0]:g}-{b.abs_eta[1]:g}, pT_gen "
                f"{b.pt_gen[0]:g}-{b.pt_gen[1]:g} GeV: median {b.median:.4f} "
                f"+- {b.median_err:.4f} (tolerance {b.tolerance:.0%})"
            )
        return 1
    console.print(f"[green]closes: all {len(tested)} tested bins within tolerance")
    return 0
