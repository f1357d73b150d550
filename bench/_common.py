"""Shared pieces of the benchmarks: machine header, GEMM limit, timing, tables, models, data.

Every bench prints the machine and versions first, measures the single-core fp32 matrix
multiply rate in the same run (the limit the FLOP counts are compared with), and builds the
networks from the shipped configurations (``models/*.yaml``) at their real sizes. Timings use
CPU time of this process (``time.process_time``): on a shared machine this counts only the
cycles the benchmark got, and ratios measured in one run (ONNX/torch, fraction of the GEMM
rate) stay meaningful while absolute figures move with the load.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jec_coffea.paths import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
"""Repository root (``models/`` holds the configurations)."""

CONFIGS: dict[str, Path] = {
    "deepsets": ROOT / "models" / "deepsets.yaml",
    "particlenet": ROOT / "models" / "particlenet.yaml",
    "part": ROOT / "models" / "part.yaml",
    "mlp_nanoaod": ROOT / "models" / "mlp_nanoaod.yaml",
}
"""Shipped model configurations by name."""

SHARED_DATA = shared_data_dir()
"""The real CMS files, found as the tests and ``jec-coffea demo`` find them
(:func:`jec_coffea.paths.shared_data_dir`)."""

DEFAULT_SAMPLES: tuple[Path, ...] = (
    Path("/tmp/sim20k/data.yaml"),
    SHARED_DATA / "pfnano" / "coffea_pfnano.root",
)
"""Where the realistic jets come from, first existing wins: a simulated sample (data.yaml),
else the real PFNano file of shared/data."""

_GEMM_CODE = """
import time, numpy as np
n = {n}
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range({repeats}):
    t = time.process_time()
    a @ b
    best = min(best, time.process_time() - t)
print(2.0 * n**3 / best / 1e9)
"""


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_header(command: str) -> list[str]:
    """Lines describing the machine, the library versions and the command line."""
    import onnxruntime
    import torch

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import onnx

        versions["onnx"] = onnx.__version__
    except ImportError:
        pass
    load = os.getloadavg()
    return [
        f"command: {command}",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        (
            f"machine: {cpu_model()}, nproc {os.cpu_count()}, load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared machine: absolute rates "
            "are noisy, same-run ratios are robust)"
        ),
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]


def gemm_gflops(threads: int = 1, n: int = 2048, repeats: int = 3) -> float:
    """fp32 matrix-multiply rate [GFLOP/s] of numpy on ``threads`` threads.

    Runs in a subprocess so that the BLAS thread count is set through the environment
    before numpy is imported (the only reliable way for every BLAS). 2 n^3 FLOPs per
    product; best of ``repeats`` CPU times.
    """
    env = dict(os.environ)
    for var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ):
        env[var] = str(threads)
    code = _GEMM_CODE.format(n=n, repeats=repeats)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- timing


def cpu_rate(
    fn: Callable[[], Any], items: int, *, min_time: float = 0.5, repeats: int = 3
) -> float:
    """Items per CPU second of ``fn`` (best of ``repeats`` rounds of >= ``min_time`` s).

    One warm-up call first (allocations, lazy initialisation). Each round calls ``fn``
    until ``min_time`` CPU seconds have passed. A call slower than ``min_time`` (large
    batches of the heavy models) is timed once, to keep the benches within minutes.
    """
    start = time.process_time()
    fn()
    if time.process_time() - start > min_time:
        repeats = 1
    best = 0.0
    for _ in range(repeats):
        calls = 0
        start = time.process_time()
        while True:
            fn()
            calls += 1
            elapsed = time.process_time() - start
            if elapsed >= min_time:
                break
        best = max(best, calls * items / elapsed)
    return best


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Print a Markdown table (pastes into docs/performance.md as is)."""
    print()
    print(f"### {title}")
    print()
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(c), *(len(r[i]) for r in cells)) if cells else len(c)
        for i, c in enumerate(columns)
    ]
    print(
        "| "
        + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
        + " |"
    )
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print(
            "| "
            + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
            + " |"
        )
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --------------------------------------------------------------------------- data


def find_sample(explicit: str | None) -> Path:
    """The sample to take jets from: ``explicit``, else the first of DEFAULT_SAMPLES."""
    if explicit:
        path = Path(explicit)
        if not path.exists():
            msg = f"--sample {path}: no such file"
            raise FileNotFoundError(msg)
        return path
    for path in DEFAULT_SAMPLES:
        if path.exists():
            return path
    msg = f"no sample found (tried {[str(p) for p in DEFAULT_SAMPLES]}); pass --sample"
    raise FileNotFoundError(msg)


def load_tables(sample: Path, max_events: int | None) -> list[Any]:
    """Jet tables of a data.yaml (every file) or of one ROOT file, up to ``max_events``
    events per file."""
    from jec_coffea.data import read_jet_table

    if sample.suffix in (".yaml", ".yml"):
        from jec_coffea.data.dataset import DatasetDescription

        desc = DatasetDescription.load(sample)
        return [
            read_jet_table(
                desc.resolve(e), layout=e.layout, tree=e.tree, entry_stop=max_events
            )
            for e in desc.files
        ]
    return [read_jet_table(sample, entry_stop=max_events)]


def selected_jets(tables: Sequence[Any], config: Any) -> Any:
    """The jets of the tables passing the configuration's default selection (awkward)."""
    import awkward as ak

    from jec_coffea.training import selection_mask

    parts = []
    for table in tables:
        mask, _ = selection_mask(table.jets, config.data.selection)
        parts.append(table.jets[mask])
    return ak.concatenate(parts) if len(parts) > 1 else parts[0]


def multiplicity_summary(
    tensors: dict[str, np.ndarray], types: Sequence[str]
) -> list[list[Any]]:
    """Rows (type, mean, median, p90, p99, max slots) of the valid constituents per jet."""
    rows = []
    for t in types:
        key = f"{t}_mask"
        if key not in tensors:
            continue
        n = tensors[key].sum(axis=1)
        rows.append(
            [
                t,
                float(n.mean()),
                float(np.median(n)),
                float(np.percentile(n, 90)),
                float(np.percentile(n, 99)),
                int(tensors[key].shape[1]),
            ]
        )
    return rows


def fixed_count_tensors(
    pool: dict[str, np.ndarray], n_jets: int, count: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Tensors of ``n_jets`` jets with exactly min(``count``, M_type) valid constituents of
    every type, drawn from the real constituents and jets of ``pool`` (to_tensors layout).

    Each slot holds a real constituent of the sample (feature vector of a valid slot drawn at
    random), each jet row a real jet: values are realistic, only the counts are fixed.
    """
    out: dict[str, np.ndarray] = {}
    n_pool = len(pool["jet"]) if "jet" in pool else len(next(iter(pool.values())))
    if "jet" in pool:
        out["jet"] = pool["jet"][rng.integers(0, n_pool, n_jets)]
    for name, tensor in pool.items():
        if name == "jet" or name.endswith("_mask"):
            continue
        mask = pool[f"{name}_mask"] > 0
        valid = tensor[mask]
        m = min(count, tensor.shape[1])
        if len(valid) == 0:
            valid = np.zeros((1, tensor.shape[2]), dtype=np.float32)
        pick = rng.integers(0, len(valid), n_jets * m)
        out[name] = np.ascontiguousarray(
            valid[pick].reshape(n_jets, m, tensor.shape[2])
        )
        out[f"{name}_mask"] = np.ones((n_jets, m), dtype=np.float32)
    return out


def resample(
    tensors: dict[str, np.ndarray], n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``n`` jets drawn with replacement from a to_tensors dict (keeps each jet whole)."""
    first = next(iter(tensors.values()))
    index = rng.integers(0, len(first), n)
    return {k: np.ascontiguousarray(v[index]) for k, v in tensors.items()}


# --------------------------------------------------------------------------- models


def load_config(name: str) -> Any:
    """The :class:`~jec_coffea.config.TrainingConfig` of a shipped configuration."""
    from jec_coffea.config import TrainingConfig

    if name not in CONFIGS:
        msg = f"unknown model configuration {name!r} (known: {', '.join(CONFIGS)})"
        raise KeyError(msg)
    return TrainingConfig.load(CONFIGS[name])


def export_config_model(
    name: str,
    tensors: dict[str, np.ndarray],
    out_dir: Path,
    seed: int = 0,
    model_overrides: dict[str, Any] | None = None,
    **export_options: Any,
) -> Path:
    """Export the network of configuration ``name`` (untrained weights; transform fitted on
    ``tensors``) through the real :func:`jec_coffea.export.export_onnx`.

    ``model_overrides`` replaces keys of the ``model`` section (what-if variants, e.g.
    ``{"activation": "relu"}``); the file is then named ``<name>.<key>-<value>.onnx``.
    ``export_options`` go to ``export_onnx`` (``block=None``: the graph as exported).
    """
    import torch

    from jec_coffea.export import export_onnx
    from jec_coffea.training import make_loss
    from jec_coffea.training.network import build_network, prediction_network

    config = load_config(name)
    suffix = ""
    if model_overrides:
        model = config.model.model_copy(update=model_overrides)
        config = config.model_copy(update={"model": model})
        suffix = "".join(f".{k}-{v}" for k, v in model_overrides.items())
    transform = config.unfitted_transform().fit(tensors)
    loss = make_loss(config.loss)
    torch.manual_seed(seed)
    network, _ = build_network(config, transform, loss)
    network = prediction_network(network, loss).eval()
    path = out_dir / f"{name}{suffix}.onnx"
    meta = {
        "validity": {"pt": [10.0, 6500.0], "eta": [-5.0, 5.0]},
        "detector_config_hash": "bench-untrained",
        "config_hash": config.config_hash(),
        "note": "benchmark export: untrained weights",
    }
    return export_onnx(
        network, transform, config.features, path, meta, **export_options
    )


def torch_from_metadata(metadata: dict[str, Any], seed: int = 0) -> Any:
    """The torch module (preprocessing + network) of an exported model's metadata.

    Weights are random (the ONNX initialisers are not read back): the same architecture,
    sizes and preprocessing graph, which is all the speed depends on.
    """
    import torch

    from jec_coffea.inference import spec_from_metadata
    from jec_coffea.models import WithPreprocessing, build_model
    from jec_coffea.transform import Transform

    spec = spec_from_metadata(metadata)
    transform = Transform.model_validate(metadata["transform"])
    torch.manual_seed(seed)
    network = build_model(metadata["model_config"], spec)
    groups = [n for n in metadata["input_names"] if not n.endswith("_mask")]
    return WithPreprocessing(transform.to_torch(groups), network).eval()
