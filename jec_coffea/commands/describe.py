"""Describe input files as a dataset (data.yaml), or verify a description against its files.

`jec-coffea describe FILES... -o data.yaml` records, for every file (local path or URL), its
layout, tree, number of events and jets and its sha256. `jec-coffea describe --verify data.yaml`
re-reads the files of a description (ours or ml-jec's) and fails with exit status 2, naming the
file, when a count or a checksum disagrees.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="*", metavar="FILE", help="ROOT files (paths or URLs)"
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="write the description to this YAML file"
    )
    parser.add_argument("--tree", help="tree name (default: the layout's tree)")
    parser.add_argument(
        "--no-sha256",
        action="store_true",
        help="skip checksums (faster for large remote files; verify cannot check them)",
    )
    parser.add_argument(
        "--verify",
        metavar="YAML",
        help="verify an existing data.yaml against its files instead of describing FILES",
    )


def _show(console: Console, desc, title: str) -> None:
    table = Table(title=title)
    for col in ("file", "layout", "tree", "events", "jets", "sha256"):
        table.add_column(
            col,
            justify="right" if col in ("events", "jets") else "left",
            overflow="fold",
        )
    for entry in desc.files:
        table.add_row(
            entry.path,
            entry.layout or "?",
            entry.tree or "?",
            "-" if entry.n_events is None else str(entry.n_events),
            "-" if entry.n_jets is None else str(entry.n_jets),
            (entry.sha256 or "-")[:12],
        )
    console.print(table)


def run(console: Console, args: argparse.Namespace) -> int:
    from jec_coffea.data.dataset import DatasetDescription, describe_files
    from jec_coffea.errors import ConfigError

    if args.verify:
        if args.files or args.output:
            msg = "--verify takes only the YAML file; do not pass FILE arguments or -o"
            raise ConfigError(msg)
        desc = DatasetDescription.load(args.verify)
        desc.verify(check_sha256=not args.no_sha256)
        _show(console, desc, f"{args.verify}: verified")
        console.print(f"{args.verify}: {len(desc.files)} files, {desc.n_jets} jets, OK")
        return 0
    if not args.files:
        msg = "no input files given (describe FILE... -o data.yaml, or --verify data.yaml)"
        raise ConfigError(msg)
    desc = describe_files(args.files, tree=args.tree, sha256=not args.no_sha256)
    _show(console, desc, "dataset")
    if args.output:
        desc.save(args.output)
        console.print(
            f"wrote {args.output}: {len(desc.files)} files, {desc.n_jets} jets"
        )
    return 0
