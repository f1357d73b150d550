"""Fit the preprocessing of a configuration on the training split and write transform.yaml.

`jec-coffea build-transform DATA -c CONFIG -o transform.yaml` reads the files of the data.yaml
DATA, applies the configuration's jet selection, keeps the training split (hash rule), builds
the network inputs of the configuration's features and fits jec_coffea.transform.Transform
(manual chains and categorical features from the configuration's `transform` section, then
the robust linear scaling; padded constituents excluded). Point `transform.path` of the
configuration (or `jec-coffea train --transform`) at the result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "build-transform"


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", type=Path, metavar="DATA", help="data.yaml of the dataset"
    )
    parser.add_argument(
        "-c", "--config", type=Path, required=True, help="master configuration YAML"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("transform.yaml"),
        help="output file (default transform.yaml)",
    )


def run(console: Console, args: argparse.Namespace) -> int:
    from jec_coffea.config import TrainingConfig
    from jec_coffea.training.dataset import build_split_arrays, load_jet_tables
    from jec_coffea.training.loop import fit_transform

    config = TrainingConfig.load(args.config)
    tables = load_jet_tables(str(args.data))
    train = build_split_arrays(tables, config, "train")
    transform = fit_transform(config, train)
    transform.to_yaml(args.output)
    n_features = sum(len(f) for f in transform.groups.values())
    console.print(
        f"fitted {n_features} features on {len(train)} training jets -> {args.output}"
    )
    return 0
