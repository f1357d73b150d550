"""Train several configurations one after another, each in its own timestamped folder.

`jec-coffea steer CONFIG... -o DIR` validates every configuration first, then trains them in
order into DIR/<date-time>_<config name>/ (each with its train.log and the outputs of
`jec-coffea train`) and writes DIR/steer.csv with the status and best validation loss of
each run. A failed run is recorded and the next one starts (exit status 1 if any failed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "configs",
        nargs="+",
        type=Path,
        metavar="CONFIG",
        help="master configuration YAMLs",
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="parent folder"
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DATA_YAML",
        help="data.yaml for every configuration",
    )
    parser.add_argument(
        "--stop-on-error", action="store_true", help="stop at the first failed run"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-export", action="store_true", help="do not write model.onnx per run"
    )


def run(console: Console, args: argparse.Namespace) -> int:
    from jec_coffea.training import steer

    runs = steer(
        args.configs,
        args.output,
        dataset=args.data,
        progress=not args.no_progress and console.is_terminal,
        stop_on_error=args.stop_on_error,
        export=not args.no_export,
    )
    table = Table(title=f"steering summary ({args.output / 'steer.csv'})")
    for col in ("config", "status", "best epoch", "best val loss", "folder"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            str(r.config),
            r.status[:60],
            "-" if r.best_epoch is None else str(r.best_epoch),
            "-" if r.best_val_loss is None else f"{r.best_val_loss:.5g}",
            str(r.out_dir),
        )
    console.print(table)
    return 0 if all(r.status == "ok" for r in runs) else 1
