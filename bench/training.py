"""Training benchmark: jets/s of the data loader alone and of full training steps, on CPU.

For each shipped configuration (``models/*.yaml``: the dense NanoAOD network, Deep Sets,
ParticleNet, ParT) at its configured size and batch size, on the realistic jets of a sample
(simulated sample if one exists, else shared/data's PFNano file), this prints:

* the loader alone: one epoch of :class:`jec_coffea.training.BatchLoader` (shuffled index,
  ``index_select`` of every pre-built tensor) in jets per CPU second;
* training: the real epoch function of :mod:`jec_coffea.training.loop` (forward, loss,
  backward, optimiser step, per-step loss check) for a fixed number of steps;
* their ratio (the loader must not be the bottleneck: >= 5x) and the epoch time they imply;
* the same training steps on full-width batches (``BatchLoader(trim=False)``: constituent
  tensors padded to ``max_constituents``) and the speed-up of trimming each batch to its
  longest jet, with the mean number of charged slots per batch both ways;
* cost vs number of jets at three sample sizes: data preparation (selection, split,
  to_tensors, transform fit and application), one loader epoch and one training epoch.

Usage: ``python bench/training.py [--models deepsets,...] [--threads 1] [--quick]``
(``--quick --models particlenet,part``: the trimming comparison of the point-cloud networks). Figures
are per CPU second of this process; ``--threads`` sets torch's intra-op threads (default 1:
per-core figures).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

TARGET_LOADER_RATIO = 5.0
"""The loader alone must deliver at least this many times the training step rate."""


class Setup:
    """Everything one architecture's training needs, built through the real training code."""

    def __init__(self, name: str, tables: list[Any], seed: int = 0) -> None:
        import torch

        from jec_coffea.training import build_split_arrays, make_loss
        from jec_coffea.training import loop as training_loop
        from jec_coffea.training.adversarial import numeric_columns
        from jec_coffea.training.ddp import init_distributed
        from jec_coffea.training.network import build_network
        from jec_coffea.training.optim import make_optimizer

        self.name = name
        self.config = c.load_config(name)
        self.ctx = init_distributed("cpu")
        t0 = time.process_time()
        self.arrays = build_split_arrays(tables, self.config, "train")
        transform = self.config.unfitted_transform().fit(self.arrays.inputs)
        self.loss = make_loss(self.config.loss)
        torch.manual_seed(seed)
        self.network, model_cfg = build_network(self.config, transform, self.loss)
        keep_raw = model_cfg.architecture in training_loop._NEEDS_RAW
        self.loader = training_loop._make_loader(
            self.arrays, transform, keep_raw, self.config, self.ctx, True
        )
        self.prep_cpu = time.process_time() - t0
        self.optimizer = make_optimizer(self.config, self.network.parameters())
        self.numeric = numeric_columns(transform, self.ctx.device)
        self.n_params = sum(p.numel() for p in self.network.parameters())
        self._epoch_fn = training_loop._train_epoch

    @property
    def batch_size(self) -> int:
        return int(self.loader.batch_size)

    def loader_epoch(self, epoch: int = 0, steps: int | None = None) -> int:
        """Iterate the loader for one epoch (or ``steps`` batches); returns jets delivered."""
        self.loader.set_epoch(epoch)
        jets = 0
        for i, batch in enumerate(self.loader):
            if steps is not None and i >= steps:
                break
            jets += int(batch["target"].shape[0])
        return jets

    def mean_slots(self, key: str = "charged", steps: int = 20) -> float | None:
        """Mean width of the ``key`` tensor over the first ``steps`` batches of epoch 0."""
        if key not in self.loader.tensors:
            return None
        self.loader.set_epoch(0)
        widths = [
            int(batch[key].shape[1])
            for _, batch in zip(range(steps), self.loader, strict=False)
        ]
        return sum(widths) / max(len(widths), 1)

    def train_steps(self, steps: int, epoch: int = 0) -> int:
        """Run ``steps`` training steps with the real epoch function; returns jets seen."""
        state = {"step": 0, "epoch": epoch}
        self._epoch_fn(
            self.config,
            self.network,
            self.network,
            self.loss,
            self.optimizer,
            None,
            self.loader,
            epoch,
            steps,
            state,
            self.numeric,
            self.ctx,
            False,
        )
        return state["step"] * self.batch_size


def timed(fn: Any) -> tuple[float, Any]:
    """CPU seconds of one call and its result."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def bench_architecture(setup: Setup, args: argparse.Namespace) -> list[Any]:
    """One row: loader alone vs training steps for one configuration."""
    steps = min(args.steps, len(setup.loader))
    setup.loader_epoch(0, steps=2)  # warm-up
    cpu_loader, jets_loader = timed(lambda: setup.loader_epoch(1))
    setup.train_steps(1, epoch=2)  # warm-up (allocator, autograd graph)
    cpu_train, jets_train = timed(lambda: setup.train_steps(steps, epoch=3))
    slots = setup.mean_slots()
    setup.loader.trim = False
    slots_full = setup.mean_slots()
    setup.train_steps(1, epoch=2)  # warm-up at the full width
    cpu_full, jets_full = timed(lambda: setup.train_steps(steps, epoch=3))
    setup.loader.trim = True
    r_loader = jets_loader / cpu_loader
    r_train = jets_train / cpu_train
    r_full = jets_full / cpu_full
    n = len(setup.arrays)
    return [
        setup.name,
        setup.n_params,
        setup.batch_size,
        n,
        r_loader,
        r_train,
        r_loader / r_train,
        "yes" if r_loader >= TARGET_LOADER_RATIO * r_train else "NO",
        n / r_train,
        r_full,
        r_train / r_full,
        "-" if slots is None else f"{slots:.1f} / {slots_full:.0f}",
        steps,
    ]


def scaling(
    name: str, sample: Path, event_counts: list[int], args: argparse.Namespace
) -> None:
    """Data preparation, loader epoch and training epoch at three sample sizes."""
    rows = []
    for events in event_counts:
        read_cpu, tables = timed(lambda e=events: c.load_tables(sample, e))
        setup = Setup(name, tables)
        cpu_loader, _ = timed(lambda s=setup: s.loader_epoch(0))
        steps = len(setup.loader)
        if args.quick:
            steps = min(steps, 3)
        cpu_train, _ = timed(lambda s=setup, k=steps: s.train_steps(k, epoch=1))
        epoch = cpu_train * len(setup.loader) / max(steps, 1)
        rows.append(
            [
                events,
                len(setup.arrays),
                read_cpu,
                setup.prep_cpu,
                cpu_loader,
                epoch,
                len(setup.arrays) / epoch,
                "measured" if steps == len(setup.loader) else f"{steps} steps, scaled",
            ]
        )
    c.print_table(
        f"{name}: cost vs number of jets (CPU s; events per file of the sample)",
        [
            "events/file",
            "train jets",
            "read",
            "prepare (select, split, tensors, transform)",
            "loader epoch",
            "training epoch",
            "training jets/s",
            "epoch",
        ],
        rows,
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated configurations (default: all four; --quick: mlp_nanoaod,deepsets)",
    )
    p.add_argument("--sample", default=None, help="data.yaml or ROOT file")
    p.add_argument("--max-events", type=int, default=2000, help="events read per file")
    p.add_argument(
        "--steps", type=int, default=20, help="training steps timed per model"
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--scaling-model", default="deepsets")
    p.add_argument(
        "--scaling-events", default="500,1500,4000", help="events per file, three sizes"
    )
    p.add_argument("--quick", action="store_true", help="smoke run (< 1 min)")
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.models or "mlp_nanoaod,deepsets"
        args.max_events = min(args.max_events, 300)
        args.steps = 3
        args.scaling_events = "100,200,300"
    args.models = args.models or "mlp_nanoaod,deepsets,particlenet,part"
    args.models = [m for m in str(args.models).split(",") if m]
    args.scaling_events = [int(e) for e in str(args.scaling_events).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    for line in c.machine_header("python bench/training.py " + " ".join(sys.argv[1:])):
        print(line)
    print(f"torch intra-op threads: {torch.get_num_threads()}, device cpu")
    sample = c.find_sample(args.sample)
    tables = c.load_tables(sample, args.max_events)
    print(
        f"jets: {sample} (first {args.max_events} events per file), train split of the "
        "default selection; networks at their configured sizes, untrained"
    )
    rows = [bench_architecture(Setup(name, tables), args) for name in args.models]
    c.print_table(
        f"training on CPU, jets per CPU second (target: loader >= {TARGET_LOADER_RATIO:g}x "
        "training)",
        [
            "model",
            "parameters",
            "batch",
            "train jets",
            "loader alone jets/s",
            "training jets/s",
            "loader/training",
            "met",
            "epoch CPU s",
            "untrimmed training jets/s",
            "trim speed-up",
            "charged slots trimmed / full",
            "steps timed",
        ],
        rows,
    )
    scaling(args.scaling_model, sample, args.scaling_events, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
