"""Print the realism table of a simulated sample and check it against CMS references.

Compares raw jet response, resolution, flavour dependence and pile-up offset of the PFNano
files in DIR (or listed by DIR/data.yaml) with Summer19UL18_V5_MC L1FastJet x L2Relative and
Summer19UL17_JRV3_MC PtResolution (AK4PFchs). Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "validate-sim"


def _default_jec_dir() -> str:
    from ..paths import shared_data_dir

    return str(shared_data_dir() / "jec" / "textfiles" / "pocketcoffea")


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the options."""
    parser.add_argument(
        "directory", help="folder with the simulated ROOT files (and data.yaml)"
    )
    parser.add_argument(
        "--jec-dir", default=None, help="folder of the CMS JEC/JER text files"
    )


def run(console: Console, args: argparse.Namespace) -> int:
    """Compute and print the tables and checks."""
    from rich.table import Table

    from ..errors import InputFileError
    from ..simulation.validation import validate

    folder = Path(args.directory)
    files = sorted(str(p) for p in folder.glob("*.root")) if folder.is_dir() else []
    if not files:
        raise InputFileError(str(folder), "no .root files found")
    rep = validate(files, args.jec_dir or _default_jec_dir())
    console.width = max(console.width, 150)
    console.print(
        f"{rep.n_jets} gen-matched jets (dR < 0.2), <rho> = {rep.mean_rho:.1f} GeV"
    )
    t = Table(title="raw response R = pT_raw/pT_gen and resolution vs CMS references")
    cols = [
        "|eta|",
        "pT_gen",
        "n",
        "median R",
        "uds",
        "c",
        "b",
        "g",
        "L1L2",
        "(1/R)/L1L2",
        "core s/m",
        "JER",
        "ratio",
    ]
    for c in cols:
        t.add_column(c, justify="right")
    for r in rep.response_table:
        t.add_row(
            r["eta"], r["pt"], str(r["n"]), f"{r['median']:.3f}",
            *(f"{r[f]:.3f}" for f in ("uds", "c", "b", "g")),
            f"{r['l1l2']:.3f}", f"{r['inv_over_l1l2']:.3f}", f"{r['res']:.3f}", f"{r['jer']:.3f}",
            f"{r['res_ratio']:.2f}",
        )  # fmt: skip
    console.print(t)
    c = Table(title="realism checks")
    for col in ("check", "value", "accepted", "result", "detail"):
        c.add_column(col)
    for chk in rep.checks:
        c.add_row(
            chk.name, f"{chk.value:.4f}", f"[{chk.low:g}, {chk.high:g}]",
            "[green]pass" if chk.passed else "[red]FAIL", chk.detail,
        )  # fmt: skip
    console.print(c)
    return 0 if rep.passed else 1
