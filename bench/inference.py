"""Inference benchmark of the exported calibration networks: onnxruntime vs torch eager.

For each model (default: Deep Sets, ParticleNet, ParT; the shipped ONNX file when installed,
else the network of ``models/<name>.yaml`` at its real size, untrained, exported through the
real :func:`jec_coffea.export.export_onnx`) this prints, on ONE thread:

* the multiplicity distribution of the realistic jets (simulated sample if one exists, else
  shared/data's PFNano file; jets passing the default training selection);
* FLOPs per jet counted from the ONNX graph (every MatMul/Gemm with the shapes of one run),
  cross-checked with torch's FlopCounterMode, and the single-core numpy fp32 GEMM rate
  measured in the same run: the limit = GEMM rate / FLOPs per jet;
* jets/s vs batch size (1 to 4096) at 30 constituents per type (fewer where the model's
  maximum is lower), onnxruntime ``session.run`` vs torch eager on the same inputs;
* realistic multiplicities through :class:`jec_coffea.inference.OnnxModel` with and without
  bucketing (sorting jets by constituent count and cutting the padding);
* graph-optimisation levels, an offline-optimised model, and dynamic int8 quantisation
  (speed and what it costs in the log-correction and in the response median and IQR/median);
* cost vs number of jets at three sizes.

Usage: ``python bench/inference.py [--models deepsets,particlenet,part] [--model PATH]
[--quick]``. Anchors (Triton on a whole CPU server, batch 1024): PFN 3.1k jets/s,
ParticleNet 310 jets/s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
from _onnx import onnx_matmul_flops, op_profile, torch_flops

ANCHORS = {"deepsets": 3100.0, "particlenet": 310.0}
"""Whole-server Triton figures (jets/s, batch 1024) the targets are 3x of."""

TARGET_FACTOR = 3.0
TARGET_GEMM_FRACTION = {"deepsets": 0.25}
TARGET_ONNX_OVER_TORCH = 1.5
FIXED_COUNT = 30


# --------------------------------------------------------------------------- sessions


def make_session(
    source: Path | bytes, level: str = "all", optimized_path: Path | None = None
) -> Any:
    """One-thread onnxruntime session at graph-optimisation ``level``."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[level]
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    data = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def session_rate(
    session: Any, feed: dict[str, np.ndarray], min_time: float, repeats: int
) -> float:
    """Jets per CPU second of ``session.run`` on ``feed``."""
    names = [i.name for i in session.get_inputs()]
    inputs = {n: feed[n] for n in names}
    n_jets = len(next(iter(inputs.values())))
    return c.cpu_rate(
        lambda: session.run(None, inputs), n_jets, min_time=min_time, repeats=repeats
    )


def torch_rate(
    module: Any, feed: dict[str, np.ndarray], min_time: float, repeats: int
) -> float:
    """Jets per CPU second of the torch module in eager mode (inference_mode)."""
    import torch

    tensors = {k: torch.from_numpy(v) for k, v in feed.items()}
    n_jets = len(next(iter(tensors.values())))

    def call() -> None:
        with torch.inference_mode():
            module(tensors)

    return c.cpu_rate(call, n_jets, min_time=min_time, repeats=repeats)


def head(tensors: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` jets of a to_tensors dict (contiguous)."""
    return {k: np.ascontiguousarray(v[:n]) for k, v in tensors.items()}


# --------------------------------------------------------------------------- sections


def resolve_model(
    name: str, explicit: str | None, pool_source: Any, workdir: Path
) -> tuple[Path, str]:
    """The ONNX file to measure for ``name`` and a description of where it came from."""
    from jec_coffea.shipped import shipped_dir

    if explicit:
        return Path(explicit), f"--model {explicit}"
    shipped = shipped_dir() / f"{name}.onnx"
    if shipped.is_file():
        return shipped, f"shipped model {shipped}"
    from jec_coffea.features import to_tensors

    config = c.load_config(name)
    jets = c.selected_jets(pool_source, config)
    path = c.export_config_model(name, to_tensors(jets, config.features), workdir)
    return path, (
        f"no shipped {name}.onnx: exported from {c.CONFIGS[name].relative_to(c.ROOT)} "
        "(real size, untrained weights) with export_onnx"
    )


def bench_model(
    name: str,
    path: Path,
    origin: str,
    tables: list[Any],
    gemm: float,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """Every table of one model; returns the headline figures for the summary."""
    import torch

    from jec_coffea.errors import ModelMismatchError
    from jec_coffea.features import to_tensors
    from jec_coffea.inference import DEFAULT_BATCH_SIZE, OnnxModel

    model = OnnxModel(path, intra_op_threads=1, batch_size=1024)
    arch = str(model.metadata.get("architecture", name))
    print(f"\n## {name} ({arch}): {origin}")
    config = c.load_config(
        "deepsets"
    )  # the default selection is the same in every config
    jets = c.selected_jets(tables, config)
    pool = to_tensors(jets, model.spec)
    types = [t for t in model.spec.constituents if f"{t}_mask" in pool]
    c.print_table(
        f"{name}: constituents per jet of the realistic sample ({len(jets):,} selected jets)",
        ["type", "mean", "median", "p90", "p99", "slots M"],
        c.multiplicity_summary(pool, types),
    )
    rng = np.random.default_rng(1)
    n_fixed = max(args.batch_sizes)
    fixed = c.fixed_count_tensors(pool, max(n_fixed, 1024), FIXED_COUNT, rng)
    counts = {t: fixed[f"{t}_mask"].shape[1] for t in types}
    module = c.torch_from_metadata(model.metadata)
    torch.set_num_threads(1)

    feed1024 = head(fixed, 1024)
    flops, by_op = onnx_matmul_flops(path, feed1024)
    flops_jet = flops / 1024
    tflops_jet = torch_flops(module, feed1024)
    limit = gemm * 1e9 / flops_jet
    print(
        f"\nFLOPs per jet at {counts} constituents: {flops_jet / 1e6:.3f} MFLOP from the ONNX "
        f"graph (MatMul {by_op['MatMul'] / 1024 / 1e6:.3f}, Gemm {by_op['Gemm'] / 1024 / 1e6:.3f}); "
        f"torch FlopCounterMode {tflops_jet / 1e6:.3f} MFLOP. GEMM limit {gemm:.1f} GFLOP/s / "
        f"{flops_jet / 1e6:.3f} MFLOP = {limit:,.0f} jets/s/core"
    )

    session = make_session(path)
    rows = []
    headline: dict[str, Any] = {"name": name, "flops_jet": flops_jet, "limit": limit}
    for batch in args.batch_sizes:
        feed = head(fixed, batch)
        min_time = args.min_time if batch >= 16 else args.min_time / 2
        r_onnx = session_rate(session, feed, min_time, args.repeats)
        r_torch = torch_rate(module, feed, min_time, args.repeats)
        frac = r_onnx * flops_jet / (gemm * 1e9)
        rows.append([batch, r_onnx, r_torch, r_onnx / r_torch, 100 * frac])
        if batch == 1024:
            headline.update(onnx=r_onnx, torch=r_torch, fraction=frac)
        if batch == DEFAULT_BATCH_SIZE:
            headline["onnx_default"] = r_onnx
    c.print_table(
        f"{name}: jets/s on one core vs batch size, {counts} constituents per jet",
        [
            "batch",
            "onnxruntime jets/s",
            "torch eager jets/s",
            "ONNX/torch",
            "% of GEMM limit",
        ],
        rows,
    )

    c.print_table(
        f"{name}: where the time goes (onnxruntime profiler, batch 1024, {counts})",
        ["operator", "% of kernel time"],
        op_profile(path, feed1024),
    )

    # ---- realistic multiplicities through the wrapper: bucketing on/off
    real = c.resample(pool, args.n_real, rng)
    # reference output, padded, at a batch small enough for ParT's pair tensors
    padded = OnnxModel(path, intra_op_threads=1, batch_size=64, bucket=False)
    rows = []
    rates = {}
    y_pad = padded.evaluate(real)
    modes = [
        ("padded to M (no bucketing)", False, 1024, None),
        (
            "bucketed, sorted by largest count (before)",
            True,
            1024,
            _largest_count_order,
        ),
        ("bucketed", True, 1024, None),
        ("bucketed, batch 256", True, 256, None),
        ("bucketed, batch 4096", True, 4096, None),
    ]
    for label, bucket, batch, order in modes:
        need = _pairwise_bytes(
            arch, batch, sum(real[f"{t}_mask"].shape[1] for t in types)
        )
        if need > MEMORY_BUDGET and not bucket:
            # ParT padded: the N x P x P pair tensors alone exceed the budget (OOM at 24 GB)
            rows.append(
                [
                    label,
                    float("nan"),
                    "-",
                    f"skipped: ~{need / 1e9:.1f} GB per pair tensor",
                ]
            )
            continue
        try:
            wrapper = OnnxModel(
                path, intra_op_threads=1, batch_size=batch, bucket=bucket
            )
        except ModelMismatchError as err:  # fixed constituent axes
            rows.append([label, float("nan"), "-", f"not possible: {err}"])
            continue
        with _bucket_order(order):
            rate = c.cpu_rate(
                lambda w=wrapper: w.evaluate(real),
                len(real["jet"]),
                min_time=args.min_time,
                repeats=args.repeats,
            )
            dev = float(np.max(np.abs(wrapper.evaluate(real) - y_pad)))
        rates[label] = rate
        slots = _slots_per_jet(real, wrapper, order)
        rows.append([label, rate, slots, f"max |dy| vs padded {dev:.2g}"])
    torch_batch = 1024
    while (
        torch_batch > 16
        and _pairwise_bytes(
            arch, torch_batch, sum(real[f"{t}_mask"].shape[1] for t in types)
        )
        > MEMORY_BUDGET
    ):
        torch_batch //= 4
    r_torch_real = torch_rate(
        module, head(real, torch_batch), args.min_time, args.repeats
    )
    rows.append(["torch eager, padded", r_torch_real, "-", f"batch {torch_batch}"])
    c.print_table(
        f"{name}: OnnxModel.evaluate on {len(real['jet']):,} realistic jets (1 thread)",
        ["mode", "jets/s", "constituent slots fed per jet", "note"],
        rows,
    )
    headline["bucket_gain"] = rates.get("bucketed", float("nan")) / rates.get(
        "padded to M (no bucketing)", float("nan")
    )

    # ---- graph optimisation levels, offline optimised model, int8 dynamic quantisation
    rows = []
    for level in ("disable", "basic", "extended", "all"):
        t0 = time.perf_counter()
        s = make_session(path, level)
        create = time.perf_counter() - t0
        rows.append(
            [
                f"ORT level {level}",
                session_rate(s, feed1024, args.min_time, args.repeats),
                1e3 * create,
                "-",
            ]
        )
    optimized = workdir / f"{name}.optimized.onnx"
    make_session(path, "all", optimized)
    t0 = time.perf_counter()
    s = make_session(optimized, "disable")
    create = time.perf_counter() - t0
    rows.append(
        [
            "offline-optimised file, loaded at level disable",
            session_rate(s, feed1024, args.min_time, args.repeats),
            1e3 * create,
            "-",
        ]
    )
    config_name = name if name in c.CONFIGS else None
    activation = str((model.metadata.get("model_config") or {}).get("activation", ""))
    if config_name and arch == "deepsets" and activation == "gelu" and not args.model:
        # what-if: the same configuration with ReLU in Phi and the head (a config change
        # that changes the network, so only before training; not a numerics-preserving fix)
        relu = c.export_config_model(
            config_name, pool, workdir, model_overrides={"activation": "relu"}
        )
        relu_module = c.torch_from_metadata(OnnxModel(relu).metadata)
        r_relu = session_rate(make_session(relu), feed1024, args.min_time, args.repeats)
        r_relu_torch = torch_rate(relu_module, feed1024, args.min_time, args.repeats)
        rows.append(
            [
                "config variant activation=relu (retraining needed)",
                r_relu,
                "-",
                (
                    f"torch eager {r_relu_torch:,.0f} jets/s, ONNX/torch "
                    f"{r_relu / r_relu_torch:.2f}, "
                    f"{100 * r_relu * flops_jet / (gemm * 1e9):.1f}% of GEMM"
                ),
            ]
        )
        headline["relu"] = r_relu
    quant_note = quantisation(
        path, workdir, name, real, jets, pool, model, feed1024, args, rows
    )
    c.print_table(
        f"{name}: optimisation and quantisation, batch 1024, {counts} constituents, 1 thread",
        ["variant", "jets/s", "session creation [ms]", "log-correction cost"],
        rows,
    )
    if quant_note:
        print(quant_note)

    # ---- cost vs number of jets (wrapper, realistic multiplicities)
    rows = []
    wrapper = OnnxModel(path, intra_op_threads=1)  # the wrapper's defaults
    # three sizes 100x apart, the largest bounded to ~--scaling-seconds of CPU at the
    # realistic rate measured above
    rate = max(rates.values()) if rates else headline.get("onnx", 1000.0)
    largest = min(max(args.sizes), max(1000, int(args.scaling_seconds * rate)))
    sizes = sorted({max(10, int(largest * s / max(args.sizes))) for s in args.sizes})
    for n in sizes:
        data = c.resample(pool, n, rng)
        wrapper.evaluate(head(data, min(n, 1024)))
        t0 = time.process_time()
        wrapper.evaluate(data)
        cpu = time.process_time() - t0
        t0 = time.process_time()
        to_tensors(jets[rng.integers(0, len(jets), min(n, len(jets)))], model.spec)
        prep = (time.process_time() - t0) * n / min(n, len(jets))
        rows.append([n, cpu, n / cpu, 1e6 * cpu / n, prep])
    c.print_table(
        f"{name}: cost vs number of jets (OnnxModel.evaluate with its defaults: "
        f"bucket={wrapper.bucket}, batch_size={wrapper.batch_size}; realistic "
        "multiplicities, 1 thread)",
        ["jets", "CPU s", "jets/s", "us/jet", "to_tensors CPU s (scaled)"],
        rows,
    )
    return headline


MEMORY_BUDGET = 1.0e9
"""Largest pairwise tensor (bytes) the bench lets a padded ParT batch build."""


def _pairwise_bytes(arch: str, batch: int, slots: int, width: int = 32) -> float:
    """Bytes of one (N, P, P, width) float32 pair tensor of ParT (0 for other models)."""
    return 4.0 * batch * (slots + 1) ** 2 * width if arch == "part" else 0.0


def _slots_per_jet(tensors: dict[str, np.ndarray], wrapper: Any, order: Any) -> float:
    """Constituent slots per jet that the wrapper feeds (summed over types), padding
    included: what the bucketing order and the batch size decide."""
    from jec_coffea import inference

    types = [t for t in wrapper.spec.constituents if f"{t}_mask" in tensors]
    if not types:
        return 0.0
    num = {t: tensors[f"{t}_mask"].sum(axis=1).astype(np.int64) for t in types}
    n = len(num[types[0]])
    if not wrapper.bucket:
        return float(sum(tensors[f"{t}_mask"].shape[1] for t in types))
    index = (order or inference._bucket_order)(
        num, types, wrapper.spec.max_constituents
    )
    total = 0
    for start in range(0, n, wrapper.batch_size):
        rows = index[start : start + wrapper.batch_size]
        total += len(rows) * sum(max(int(num[t][rows].max()), 1) for t in types)
    return total / n


def _largest_count_order(num: Any, types: Any, maxima: Any) -> np.ndarray:
    """The wrapper's bucketing order before the lexicographic sort: by the largest count
    of any type (kept here to measure the change)."""
    key = np.max(np.stack([num[t] for t in types], axis=1), axis=1)
    return np.argsort(key, kind="stable")


@contextlib.contextmanager
def _bucket_order(order: Any) -> Any:
    """Temporarily replace the wrapper's bucketing order (None: keep the current one)."""
    from jec_coffea import inference

    if order is None:
        yield
        return
    saved = inference._bucket_order
    inference._bucket_order = order
    try:
        yield
    finally:
        inference._bucket_order = saved


def quantisation(
    path: Path,
    workdir: Path,
    name: str,
    real: dict[str, np.ndarray],
    jets: Any,
    pool: dict[str, np.ndarray],
    model: Any,
    feed1024: dict[str, np.ndarray],
    args: argparse.Namespace,
    rows: list[list[Any]],
) -> str:
    """Dynamic int8 quantisation of the weights: speed row, and its cost in the output."""
    import awkward as ak
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from jec_coffea.inference import OnnxModel
    from jec_coffea.onnx_graph import block_batch, unblock

    qpath = workdir / f"{name}.int8.onnx"
    try:
        # the quantiser does not enter subgraphs: quantise the network outside the batch
        # loop, then put the loop back with the same block size
        proto = onnx.load(str(path))
        flat = workdir / f"{name}.unblocked.onnx"
        onnx.save(unblock(proto), str(flat))
        quantize_dynamic(str(flat), str(qpath), weight_type=QuantType.QInt8)
        block = model.metadata.get("graph_rewrites", {}).get("block_batch")
        if block:
            onnx.save(block_batch(onnx.load(str(qpath)), int(block)), str(qpath))
        s = make_session(qpath)
    except Exception as err:  # noqa: BLE001 - report any quantiser failure as a row
        rows.append(
            [
                "int8 dynamic quantisation",
                float("nan"),
                "-",
                f"failed: {type(err).__name__}: {err}",
            ]
        )
        return ""
    rate = session_rate(s, feed1024, args.min_time, args.repeats)
    # the quantised file keeps the metadata, so the wrapper runs it on the realistic jets
    fp32 = OnnxModel(path, intra_op_threads=1).evaluate(pool)
    int8 = OnnxModel(qpath, intra_op_threads=1).evaluate(pool)
    dy = np.abs(int8.astype(np.float64) - fp32)
    pt_raw = ak.to_numpy(jets.pt_raw).astype(np.float64)
    pt_gen = ak.to_numpy(jets.pt_gen).astype(np.float64)
    stats = {}
    for label, y in (("fp32", fp32), ("int8", int8)):
        r = pt_raw * np.exp(y.astype(np.float64)) / pt_gen
        q25, q50, q75 = np.percentile(r, [25, 50, 75])
        stats[label] = (q50, (q75 - q25) / q50)
    untrained = "untrained" in str(model.metadata.get("note", ""))
    cost = (
        f"mean |dy| {dy.mean():.2g}, max {dy.max():.2g}; median R {stats['fp32'][0]:.4f} -> "
        f"{stats['int8'][0]:.4f}, IQR/median {stats['fp32'][1]:.4f} -> {stats['int8'][1]:.4f}"
    )
    rows.append(["int8 dynamic quantisation (weights)", rate, "-", cost])
    return (
        f"{name}: quantisation cost measured on {len(fp32):,} selected jets"
        + (
            " with UNTRAINED weights: the response figures are not physics, only the deviation is meaningful"
            if untrained
            else ""
        )
        + f"; spread of fp32 outputs (std) {np.std(fp32):.3g}"
    )


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models",
        default="deepsets,particlenet,part",
        help="configurations/shipped names",
    )
    p.add_argument(
        "--model",
        default=None,
        help="measure this ONNX file (exported by export_onnx) instead",
    )
    p.add_argument(
        "--sample", default=None, help="data.yaml or ROOT file for realistic jets"
    )
    p.add_argument(
        "--max-events",
        type=int,
        default=1500,
        help="events read per file of the sample",
    )
    p.add_argument("--batch-sizes", default="1,16,64,256,1024,4096")
    p.add_argument(
        "--sizes", default="1000,10000,100000", help="jet counts of the scaling table"
    )
    p.add_argument(
        "--scaling-seconds",
        type=float,
        default=20.0,
        help="bound on the CPU time of the largest scaling point",
    )
    p.add_argument(
        "--n-real", type=int, default=8192, help="realistic jets of the bucketing table"
    )
    p.add_argument(
        "--min-time", type=float, default=0.5, help="CPU seconds per timing round"
    )
    p.add_argument("--repeats", type=int, default=3, help="timing rounds (best kept)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run (< 1 min): deepsets, few sizes"
    )
    p.add_argument(
        "--workdir", default=None, help="keep the exported/optimised models here"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.models if args.model else "deepsets"
        args.max_events = min(args.max_events, 300)
        args.batch_sizes = "1,1024"
        args.sizes = "1000,2000,4000"
        args.n_real = 2048
        args.min_time, args.repeats = 0.05, 1
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    args.models = [m for m in str(args.models).split(",") if m]
    return args


def main(argv: list[str] | None = None) -> int:
    import onnxruntime

    args = parse(argv)
    logging.basicConfig(level=logging.ERROR)
    onnxruntime.set_default_logger_severity(3)  # no warning on saving optimised models
    for line in c.machine_header("python bench/inference.py " + " ".join(sys.argv[1:])):
        print(line)
    gemm = c.gemm_gflops(threads=1, repeats=1 if args.quick else 3)
    print(f"numpy fp32 GEMM 2048^3, one thread: {gemm:.1f} GFLOP/s (the limit below)")
    sample = c.find_sample(args.sample)
    tables = c.load_tables(sample, args.max_events)
    print(
        f"realistic jets: {sample} (first {args.max_events} events per file), default training "
        "selection (matched, pT_gen >= 20 GeV, |eta_gen| < 5, tight ID)"
    )
    print("threads: onnxruntime intra_op 1 / inter_op 1, torch.set_num_threads(1)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        names = ["model"] if args.model else args.models
        summary = []
        for name in names:
            path, origin = resolve_model(name, args.model, tables, workdir)
            if args.model:
                from jec_coffea.export import read_onnx_metadata

                name = str(read_onnx_metadata(path).get("architecture", "model"))
            summary.append(bench_model(name, path, origin, tables, gemm, args, workdir))
    rows = []
    for h in summary:
        if "onnx" not in h:
            continue
        anchor = ANCHORS.get(h["name"])
        target = TARGET_FACTOR * anchor if anchor else float("nan")
        frac_target = TARGET_GEMM_FRACTION.get(h["name"])
        rows.append(
            [
                h["name"],
                h["onnx"],
                h.get("onnx_default", float("nan")),
                target,
                "yes"
                if anchor and h["onnx"] >= target
                else ("-" if not anchor else "NO"),
                h["flops_jet"] / 1e6,
                100 * h["fraction"],
                f">= {100 * frac_target:.0f}" if frac_target else "-",
                h["onnx"] / h["torch"],
                h.get("bucket_gain", float("nan")),
                h.get("relu", float("nan")),
            ]
        )
    c.print_table(
        f"summary: batch 1024, {FIXED_COUNT} constituents per type (sv: its maximum), one thread; "
        f"targets = {TARGET_FACTOR:g}x the whole-server anchors (PFN 3.1k, ParticleNet 310 jets/s), "
        f"ONNX/torch >= {TARGET_ONNX_OVER_TORCH}",
        [
            "model",
            "ONNX jets/s",
            "at batch 256 (wrapper default)",
            "target jets/s",
            "met",
            "MFLOP/jet",
            "% of GEMM",
            "target %",
            "ONNX/torch",
            "bucketing gain (realistic)",
            "relu variant jets/s",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
