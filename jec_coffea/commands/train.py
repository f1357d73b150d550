"""Train a calibration network from a master configuration YAML.

`jec-coffea train CONFIG -o OUT` reads the dataset of the configuration (or `--data`),
checks the configuration, the transform and the dataset counts before the first step, then
trains with a progress bar, writing the resolved configuration and its hash, transform.yaml,
history.csv / history.png, checkpoint_last.pt (every epoch) and checkpoint_best.pt, and at
the end model.onnx (best model with its preprocessing). `--resume` continues an interrupted
run in OUT. Under `torchrun --nproc-per-node K` the same command trains with K
DistributedDataParallel processes (gloo on CPU, nccl on GPU), e.g.
`torchrun --nproc-per-node 2 -m jec_coffea.cli train CONFIG -o OUT`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", type=Path, metavar="CONFIG", help="master configuration YAML"
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="output folder"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint_last.pt"
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DATA_YAML",
        help="data.yaml replacing data.dataset",
    )
    parser.add_argument(
        "--transform",
        type=Path,
        metavar="TRANSFORM_YAML",
        help="fitted transform.yaml replacing transform.path (see build-transform)",
    )
    parser.add_argument("--device", help="replaces `device` (auto, cpu, cuda, cuda:N)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check configuration, data, transform and model; write nothing",
    )
    parser.add_argument(
        "--no-export", action="store_true", help="do not write model.onnx at the end"
    )


def apply_overrides(config, args: argparse.Namespace):
    """The configuration with the command-line replacements applied (validated again)."""
    from jec_coffea.config import TrainingConfig

    raw = config.resolved()
    if getattr(args, "data", None) is not None:
        raw["data"]["dataset"] = str(args.data.resolve())
    if getattr(args, "transform", None) is not None:
        raw["transform"]["path"] = str(args.transform.resolve())
    if getattr(args, "device", None):
        raw["device"] = args.device
    return TrainingConfig.from_dict(raw, source=str(args.config))


def run(console: Console, args: argparse.Namespace) -> int:
    from jec_coffea.config import TrainingConfig
    from jec_coffea.training import train

    config = apply_overrides(TrainingConfig.load(args.config), args)
    result = train(
        config,
        args.output,
        resume=args.resume,
        progress=not args.no_progress and console.is_terminal,
        export=not args.no_export,
        check_only=args.check,
    )
    if args.check:
        n_params = sum(p.numel() for p in result.network.parameters())
        console.print(
            f"configuration, data, transform and {config.model.architecture} network "
            f"({n_params} parameters) are consistent; nothing written"
        )
        return 0
    if os.environ.get("RANK", "0") == "0":
        console.print(
            f"trained {config.model.architecture}: best epoch {result.best_epoch} "
            f"(validation loss {result.best_val_loss:.5g}), {result.steps} steps"
            + (", stopped early" if result.stopped_early else "")
        )
        console.print(
            f"output: {result.out_dir}"
            + (f", model {result.onnx_path}" if result.onnx_path else "")
        )
    return 0
