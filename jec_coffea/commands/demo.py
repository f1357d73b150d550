"""Run the main job on the embedded default data and print what it found.

The demo grows with the package. Today it reads every real file of the shared data folder
(NanoAOD, PFNano current and old layout, JetClass-II, ml-jec ntuples) into jet tables and prints,
per file, the layout, the jet counts, the gen-matched fraction and the flavour composition, then
writes a dataset description of them. Steps whose components are not built yet are listed as
not done rather than faked.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("JEC_COFFEA_DATA", "../shared/data")),
        help="folder with the real files (default: $JEC_COFFEA_DATA or ../shared/data)",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("demo-output"))


def _real_files(data: Path) -> list[Path]:
    files = sorted(data.glob("*/*.root")) + sorted(data.glob("mljec/shards/*.root"))
    return [f for f in files if "delphes" not in f.name]


def run(console: Console, args: argparse.Namespace) -> int:
    import numpy as np

    from jec_coffea.data import FLAVOUR_GROUPS, read_jet_table
    from jec_coffea.data.dataset import describe_files

    args.output.mkdir(parents=True, exist_ok=True)
    files = _real_files(args.data)
    if not files:
        console.print(f"[yellow]no real files found under {args.data}[/yellow]")
    table = Table(title="Jet tables of the real files")
    for col in ("file", "layout", "jets", "matched", *FLAVOUR_GROUPS, "constituents"):
        table.add_column(
            col, justify="right" if col not in ("file", "layout") else "left"
        )
    for path in files:
        jt = read_jet_table(path)
        jets = jt.jets
        n = len(jets)
        matched = (
            int(np.sum(np.asarray(jets["matched"]))) if "matched" in jets.fields else 0
        )
        groups = (
            np.bincount(
                np.asarray(jets["flavour_group"]), minlength=len(FLAVOUR_GROUPS)
            )
            if "flavour_group" in jets.fields
            else np.zeros(len(FLAVOUR_GROUPS), int)
        )
        ctypes = [c for c in ("charged", "neutral", "sv") if c in jets.fields]
        table.add_row(
            f"{path.parent.name}/{path.name}",
            jt.layout,
            str(n),
            str(matched),
            *(str(int(g)) for g in groups),
            ",".join(ctypes) or "-",
        )
    console.print(table)
    description = describe_files([str(f) for f in files])
    out = args.output / "real_data.yaml"
    description.save(out)
    console.print(f"dataset description of {len(files)} real files written to {out}")
    console.print(
        "[bold]not done yet[/bold]: simulation, standard-JEC derivation, training, processors on "
        "dask, report and correctionlib export (issues 3-7)"
    )
    return 0
