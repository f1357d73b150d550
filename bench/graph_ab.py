"""A/B of the ONNX graph rewrites of :mod:`jec_coffea.onnx_graph`, interleaved in one run.

For each model (the network of ``models/<name>.yaml`` at its real size, untrained, exported
with ``export_onnx(..., block=None)``: the graph as the exporter writes it) this builds the
variants

* as exported;
* ``dense_as_gemm`` + ``block_batch`` (the shipped layout of the fourth round);
* that + ``masked_sum_as_matmul``; that + ``slices_as_split`` instead;
* ``optimise`` (all of them, what ``export_onnx`` writes by default),

checks each against the exported graph (max |Δy|), and times them interleaved: ``--rounds``
rounds, each running every variant for ``--min-time`` CPU seconds at batch ``--batch`` with
30 constituents per type drawn from real jets; the median per variant and its ratio to the
exported graph are printed. Interleaving keeps a drift of the machine out of the ratios.

Usage: ``python bench/graph_ab.py [--models deepsets,particlenet] [--rounds 7] [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

FIXED_COUNT = 30
"""Constituents per type of the timed inputs (the targets of issue 8)."""


def variants(plain: Any, block: int) -> dict[str, Any]:
    """The rewrite combinations, each a ModelProto, from the graph as exported."""
    from jec_coffea.onnx_graph import (
        block_batch,
        dense_as_gemm,
        masked_sum_as_matmul,
        optimise,
        slices_as_split,
    )

    gemm, _ = dense_as_gemm(plain)
    pooled, _ = masked_sum_as_matmul(gemm)
    split, _ = slices_as_split(gemm)
    return {
        "as exported": plain,
        "gemm + blocks": block_batch(gemm, block),
        "gemm + blocks + pooling as MatMul": block_batch(pooled, block),
        "gemm + blocks + slices as Split": block_batch(split, block),
        "optimise (all)": optimise(plain, block=block),
    }


def session(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def bench(
    name: str, tables: list[Any], args: argparse.Namespace, workdir: Path
) -> None:
    import onnx

    from jec_coffea.features import to_tensors
    from jec_coffea.onnx_graph import DEFAULT_BLOCK

    config = c.load_config(name)
    pool = to_tensors(c.selected_jets(tables, config), config.features)
    path = c.export_config_model(name, pool, workdir, block=None)
    rng = np.random.default_rng(1)
    feed = c.fixed_count_tensors(pool, args.batch, FIXED_COUNT, rng)
    models = variants(onnx.load(str(path)), DEFAULT_BLOCK)
    sessions = {k: session(m) for k, m in models.items()}
    names = [i.name for i in sessions["as exported"].get_inputs()]
    inputs = {n: feed[n] for n in names}
    want = sessions["as exported"].run(None, inputs)[0]
    rates: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.rounds):
        for key, s in sessions.items():
            rates[key].append(
                c.cpu_rate(
                    lambda s=s: s.run(None, inputs),
                    args.batch,
                    min_time=args.min_time,
                    repeats=1,
                )
            )
    base = float(np.median(rates["as exported"]))
    rows = []
    for key, s in sessions.items():
        dev = float(np.max(np.abs(s.run(None, inputs)[0] - want)))
        median = float(np.median(rates[key]))
        rows.append([key, median, min(rates[key]), max(rates[key]), median / base, dev])
    c.print_table(
        f"{name}: jets/s on one core, batch {args.batch}, {FIXED_COUNT} constituents per "
        f"type, median of {args.rounds} interleaved rounds",
        ["graph", "jets/s", "min", "max", "vs as exported", "max |dy| vs as exported"],
        rows,
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", default="deepsets,particlenet")
    parser.add_argument("--sample", help="data.yaml or ROOT file for realistic jets")
    parser.add_argument("--max-events", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in c.CONFIGS]
    if unknown:
        parser.error(f"--models: unknown {unknown} (known: {', '.join(c.CONFIGS)})")
    if args.quick:
        args.rounds, args.min_time, args.batch, args.max_events = 1, 0.05, 64, 200
    return args


def main(argv: list[str] | None = None) -> int:
    import onnxruntime

    args = parse(argv)
    onnxruntime.set_default_logger_severity(3)
    for line in c.machine_header("python bench/graph_ab.py " + " ".join(sys.argv[1:])):
        print(line)
    sample = c.find_sample(args.sample)
    tables = c.load_tables(sample, args.max_events)
    print(f"realistic jets: {sample} (first {args.max_events} events per file)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            bench(name, tables, args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
