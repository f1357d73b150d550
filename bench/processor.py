"""Processor benchmark: cost of each stage of ResponseProcessor, events/s, memory, workers.

On the same simulated files, in one run, this prints:

* seconds of CPU per 1,000 jets of each stage on the first ``--max-events`` events of the
  first file: reading the needed branches with uproot alone (the I/O limit,
  ``uproot.open(f)["Events"].arrays(layout_branches(f))``), building virtual NanoEvents
  (:class:`jec_coffea.runner.LayoutSchema`, preloading the jet-table branches as
  :func:`jec_coffea.runner.run_fileset` does; ``--no-preload`` reads each branch on first
  access instead), the jet table from the events, ``to_tensors`` of the Deep Sets spec, the
  standard JEC, inference of each model (the shipped file where one is installed, else the
  network of ``models/<name>.yaml`` at real size, untrained, exported with
  :func:`jec_coffea.export.export_onnx`), and histogram filling;
* events/s of the processor (``run_fileset``, iterative executor, this process) with the
  standard JEC only, with one Deep Sets model, and with three Deep-Sets-sized variants
  (different seeds, one shared feature build);
* peak memory (resident size VmHWM, and tracemalloc) of one worker per configuration and chunk size, each in its own
  subprocess (a coffea Runner over ``--mem-chunks`` chunks);
* events/s (wall clock) of the Deep Sets configuration on a LocalCluster of 1 and 2 workers.

Targets of issue 8: all stages but inference together cost no more than the Deep Sets
inference; three variants sharing one feature build cost < 2x one.

Usage: ``python bench/processor.py [--sample data.yaml|file.root] [--files 1]
[--chunksize 500] [--quick]``. CPU times are ``time.process_time`` of this process (robust
on a shared machine); the worker scaling is wall clock and moves with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

DEFAULT_SIM = Path("/tmp/demo2/sim/data.yaml")
DEFAULT_JEC = (
    c.SHARED_DATA
    / "jec"
    / "correctionlib"
    / "2017_UL_jet_jerc.json.gz:Summer19UL17_V5_MC:AK4PFchs"
)
CONFIGURATIONS = ("standard", "standard+deepsets", "standard+3 deepsets")
"""Processor configurations: models on top of the standard JEC (and raw/nanoaod/...)."""

log = logging.getLogger("bench.processor")


def _quiet() -> None:
    """Silence coffea's schema warnings about cross-references the files lack."""
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"coffea\..*")
    warnings.filterwarnings("ignore", message="Missing cross-reference index")
    logging.basicConfig(level=logging.ERROR)


# --------------------------------------------------------------------------- inputs


def sample_files(sample: Path, n_files: int) -> list[tuple[str, str]]:
    """(path, tree) of the first ``n_files`` files of a data.yaml, or of one ROOT file."""
    if sample.suffix in (".yaml", ".yml"):
        from jec_coffea.data.dataset import DatasetDescription

        desc = DatasetDescription.load(sample)
        return [(str(desc.resolve(e)), e.tree) for e in desc.files[:n_files]]
    return [(str(sample), "Events")]


def export_models(
    path: str, max_events: int, workdir: Path, names: list[str]
) -> dict[str, Path]:
    """ONNX files: Deep Sets (seeds 0, 1, 2) and the other ``names`` at their real sizes.

    Seed 0 of a name is the shipped model when one is installed (what users run); the
    others are the networks of ``models/<name>.yaml``, untrained, exported through
    ``export_onnx`` with transforms fitted on the selected jets of the first ``max_events``
    events (the same sizes and graph layout, so the same speed).
    """
    from jec_coffea.features import to_tensors
    from jec_coffea.shipped import shipped_dir

    tables = c.load_tables(Path(path), max_events)
    out: dict[str, Path] = {}
    for name in names:
        config = c.load_config(name)
        tensors = to_tensors(c.selected_jets(tables, config), config.features)
        seeds = (0, 1, 2) if name == "deepsets" else (0,)
        for seed in seeds:
            sub = workdir / f"seed{seed}"
            sub.mkdir(parents=True, exist_ok=True)
            key = name if seed == 0 else f"{name}_s{seed}"
            shipped = shipped_dir() / f"{name}.onnx"
            if seed == 0 and shipped.is_file():
                out[key] = shipped
                continue
            out[key] = c.export_config_model(name, tensors, sub, seed=seed)
    return out


def make_processor(configuration: str, models: dict[str, Path], jec: str) -> Any:
    """ResponseProcessor of ``configuration`` (one of :data:`CONFIGURATIONS`)."""
    from jec_coffea.corrector import DNNJetCorrector
    from jec_coffea.processors import ResponseProcessor
    from jec_coffea.standard import JECStack

    names = {
        "standard": [],
        "standard+deepsets": ["deepsets"],
        "standard+3 deepsets": ["deepsets", "deepsets_s1", "deepsets_s2"],
    }[configuration]
    correctors = {
        n: DNNJetCorrector.from_onnx(models[n], intra_op_threads=1) for n in names
    }
    return ResponseProcessor(
        jec=JECStack.from_spec(jec), models=correctors, weights="unit"
    )


# --------------------------------------------------------------------------- stages


def best_cpu(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Smallest CPU time [s] of ``repeats`` calls of ``fn`` and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()
        result = fn()
        best = min(best, time.process_time() - t0)
    return best, result


def stage_costs(
    path: str, tree: str, models: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """CPU seconds of every stage on the first ``args.max_events`` events of ``path``."""
    import uproot
    from coffea.nanoevents import NanoEventsFactory

    from jec_coffea.data import jet_table_from_events, layout_branches
    from jec_coffea.features import to_tensors
    from jec_coffea.inference import OnnxModel
    from jec_coffea.processors.methods import estimate_pt
    from jec_coffea.runner import LayoutSchema

    branches = sorted(layout_branches(path))
    stop = args.max_events

    def read() -> Any:
        with uproot.open(path) as f:
            return f[tree].arrays(branches, entry_stop=stop)

    t_read, _ = best_cpu(read, args.repeats)

    def build() -> Any:
        # as jec_coffea.runner does: the jet-table branches preloaded in one arrays call
        factory = NanoEventsFactory.from_root(
            {path: tree},
            schemaclass=LayoutSchema,
            entry_stop=stop,
            mode="virtual",
            metadata={"filename": path},
            preload=None if args.no_preload else branches,
        )
        return factory.events()

    # fresh virtual events for every jet-table build (virtual arrays cache what they read)
    t_build, events = best_cpu(build, args.repeats)
    t_table = float("inf")
    for _ in range(args.repeats):
        fresh = build()
        t0 = time.process_time()
        table = jet_table_from_events(fresh, source=path)
        t_table = min(t_table, time.process_time() - t0)
    n_events, n_jets = len(events), len(table)

    wrappers = {
        n: OnnxModel(models[n], intra_op_threads=1)
        for n in ("deepsets", "particlenet", "part")
        if n in args.models
    }
    spec = wrappers["deepsets"].spec
    t_tensors, tensors = best_cpu(lambda: to_tensors(table, spec), args.repeats)
    proc = make_processor("standard+deepsets", models, args.jec)
    t_standard, _ = best_cpu(
        lambda: estimate_pt("standard", table, jec=proc.jec), args.repeats
    )
    inference = {}
    for name, model in wrappers.items():
        feed = tensors if name == "deepsets" else to_tensors(table, model.spec)
        model.evaluate({k: v[:256] for k, v in feed.items()})  # session creation
        inference[name], _ = best_cpu(
            lambda m=model, f=feed: m.evaluate(f), 1 if name == "part" else args.repeats
        )

    # histogram filling of the processor's methods (raw, standard, nanoaod, pt_full_corr,
    # deepsets): the processor's own fill methods on precomputed estimates
    from jec_coffea.processors.methods import estimate_models

    estimates = {
        m: e.pt
        for m, e in {
            **{m: estimate_pt(m, table, jec=proc.jec) for m in proc.methods[:-1]},
            **estimate_models(table, proc.models),
        }.items()
        if e.pt is not None
    }
    weight = np.ones(len(table))
    lepton_dr = proc._lepton_dr(events, table.jets)

    # The empty output (~20 histograms, most of the fill's time at a few hundred events) is
    # made once per chunk, not per jet: it is timed on its own and charged per chunk. The
    # outputs timed here are the ones the fill rounds below use.
    outputs, t_alloc = [], float("inf")
    for _ in range(args.repeats):
        t0 = time.process_time()
        outputs.append(proc.empty_output())
        t_alloc = min(t_alloc, time.process_time() - t0)

    def fill() -> None:
        out = outputs.pop()
        mask, _ = proc.selection.apply(
            table.jets, lepton_dr=lepton_dr, cutflow=out["cutflow"]
        )
        proc._fill_reco(out, table.jets, estimates, weight)
        proc._fill_response(out, table.jets, estimates, weight, mask)

    t_fill, _ = best_cpu(fill, args.repeats)
    return {
        "n_events": n_events,
        "n_jets": n_jets,
        "n_branches": len(branches),
        "read": t_read,
        "build": t_build,
        "table": t_table,
        "tensors": t_tensors,
        "standard": t_standard,
        "inference": inference,
        "fill": t_fill,
        "alloc": t_alloc,
        "n_fill_methods": len(estimates),
        "no_preload": bool(args.no_preload),
    }


# --------------------------------------------------------------------------- processor


def processor_rate(
    files: list[tuple[str, str]],
    configuration: str,
    models: dict[str, Path],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Events and jets per CPU second of run_fileset (iterative executor, this process)."""
    from jec_coffea.runner import make_executor, run_fileset

    proc = make_processor(configuration, models, args.jec)
    fileset = {"bench": {"files": dict(files)}}
    t0, w0 = time.process_time(), time.perf_counter()
    report = run_fileset(
        fileset, proc, executor=make_executor("iterative"), chunksize=args.chunksize
    )
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    n_events = report.output["n_events"]
    return {"events": n_events, "cpu": cpu, "wall": wall, "rate": n_events / cpu}


def worker_rate(
    files: list[tuple[str, str]],
    workers: int,
    models: dict[str, Path],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Events per wall second of the Deep Sets configuration on a LocalCluster."""
    from jec_coffea.runner import make_executor, open_client, run_fileset

    proc = make_processor("standard+deepsets", models, args.jec)
    fileset = {"bench": {"files": dict(files)}}
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with open_client(workers=workers) as client:
        executor = make_executor("dask", client=client)
        w0 = time.perf_counter()
        report = run_fileset(fileset, proc, executor=executor, chunksize=args.chunksize)
        wall = time.perf_counter() - w0
    n_events = report.output["n_events"]
    return {"events": n_events, "wall": wall, "rate": n_events / wall}


def child_memory(args: argparse.Namespace) -> int:
    """Subprocess entry: peak RSS of one worker running ``args.mem_chunks`` chunks."""
    from coffea import processor

    from jec_coffea.runner import LayoutSchema

    _quiet()
    models = {k: Path(v) for k, v in json.loads(args.child_models).items()}
    proc = make_processor(args.child, models, args.jec)
    files = sample_files(Path(args.sample), args.files)
    before = _proc_status_mb("VmRSS")
    _reset_peak_rss()
    tracemalloc.start()
    runner = processor.Runner(
        executor=processor.IterativeExecutor(),
        chunksize=args.chunksize,
        schema=LayoutSchema,
        maxchunks=args.mem_chunks,
    )
    out = runner({"bench": {"files": dict(files[:1])}}, proc)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    peak = _proc_status_mb("VmHWM")
    n_jets = max(out["n_reco_jets"].values()) if out["n_reco_jets"] else 0
    print(
        json.dumps(
            {
                "before": before,
                "peak": peak,
                "traced": traced,
                "events": out["n_events"],
                "jets": n_jets,
            }
        )
    )
    return 0


def _proc_status_mb(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process [MB] from /proc/self/status (Linux).

    ``ru_maxrss`` is not used: Linux carries the parent's resident size at fork time into a
    child's ``ru_maxrss``, so a child of this (large) bench would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return float(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (``/proc/self/clear_refs`` 5, Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        log.warning("cannot reset the peak RSS; VmHWM includes the imports")


def memory_row(
    configuration: str,
    chunksize: int,
    models: dict[str, Path],
    args: argparse.Namespace,
) -> list[Any]:
    """Run :func:`child_memory` in a fresh interpreter; one table row."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        configuration,
        "--child-models",
        json.dumps({k: str(v) for k, v in models.items()}),
        "--sample",
        str(args.sample),
        "--files",
        "1",
        "--jec",
        args.jec,
        "--chunksize",
        str(chunksize),
        "--mem-chunks",
        str(args.mem_chunks),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = f"memory subprocess {configuration!r} failed:\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    per_chunk = res["jets"] / max(
        1, min(args.mem_chunks, 1 + res["events"] // chunksize)
    )
    return [
        configuration,
        chunksize,
        per_chunk,
        res["traced"],
        res["before"],
        res["peak"],
    ]


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sample", default=None, help="data.yaml or ROOT file")
    p.add_argument("--files", type=int, default=1, help="files of the sample to run on")
    p.add_argument(
        "--max-events", type=int, default=300, help="events of the stage table"
    )
    p.add_argument(
        "--chunksize", type=int, default=500, help="events per processor chunk"
    )
    p.add_argument(
        "--mem-chunksizes", default="250,1000", help="chunk sizes of the memory table"
    )
    p.add_argument(
        "--mem-chunks", type=int, default=2, help="chunks per memory subprocess"
    )
    p.add_argument("--workers", default="1,2", help="LocalCluster sizes")
    p.add_argument("--models", default="deepsets,particlenet,part")
    p.add_argument(
        "--jec", default=str(DEFAULT_JEC), help="JECStack.from_spec spelling"
    )
    p.add_argument("--repeats", type=int, default=5, help="timing rounds (best kept)")
    p.add_argument(
        "--no-preload",
        action="store_true",
        help="build NanoEvents without preloading (every branch read on first access)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sample")
    p.add_argument("--workdir", default=None, help="keep the exported models here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-models", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sample is None:
        args.sample = str(DEFAULT_SIM if DEFAULT_SIM.exists() else c.find_sample(None))
    if args.quick:
        args.models = "deepsets"
        args.max_events = min(args.max_events, 100)
        args.chunksize = min(args.chunksize, 5)
        args.mem_chunksizes = "5"
        args.mem_chunks = 1
        args.workers = "1"
        args.repeats = 1
    args.mem_configurations = ["standard+deepsets"] if args.quick else CONFIGURATIONS
    args.models = [m for m in str(args.models).split(",") if m]
    if "deepsets" not in args.models:
        args.models.insert(0, "deepsets")
    args.mem_chunksizes = [int(s) for s in str(args.mem_chunksizes).split(",")]
    args.workers = [int(s) for s in str(args.workers).split(",") if s]
    return args


def main(argv: list[str] | None = None) -> int:
    import onnxruntime

    args = parse(argv)
    if args.child:
        return child_memory(args)
    _quiet()
    onnxruntime.set_default_logger_severity(3)
    header = c.machine_header("python bench/processor.py " + " ".join(sys.argv[1:]))
    import awkward
    import coffea
    import uproot

    header.append(
        f"versions: coffea {coffea.__version__}, uproot {uproot.__version__}, "
        f"awkward {awkward.__version__}"
    )
    for line in header:
        print(line)
    files = sample_files(Path(args.sample), args.files)
    path, tree = files[0]
    print(f"sample: {args.sample}; files: {[f for f, _ in files]}")
    print(f"standard JEC: {args.jec}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        models = export_models(path, max(args.max_events, 200), workdir, args.models)
        stages = stage_costs(path, tree, models, args)
        print_stages(stages)
        if not args.quick:
            processor_rate(files, CONFIGURATIONS[0], models, args)  # warm-up: caches
        rates = {
            cfg: processor_rate(files, cfg, models, args) for cfg in CONFIGURATIONS
        }
        print_rates(rates, stages, args)
        rows = [
            memory_row(cfg, size, models, args)
            for size in args.mem_chunksizes
            for cfg in args.mem_configurations
        ]
        c.print_table(
            f"peak memory of one worker (fresh process per row, {args.mem_chunks} "
            "chunk(s) of the first file; tracemalloc: numpy/awkward/Python allocations of "
            "the run, not onnxruntime's own; RSS: /proc VmRSS, VmHWM reset before the run)",
            [
                "configuration",
                "chunk [events]",
                "jets per chunk",
                "tracemalloc peak of the run [MB]",
                "RSS before the run [MB]",
                "peak RSS during the run [MB]",
            ],
            rows,
        )
        scale = [(n, worker_rate(files, n, models, args)) for n in args.workers]
        base = scale[0][1]["rate"]
        c.print_table(
            f"workers (LocalCluster, 1 thread each, standard+deepsets, chunk "
            f"{args.chunksize} events; wall clock, shared machine)",
            ["workers", "events", "wall s", "events/s", "speed-up"],
            [
                [n, r["events"], r["wall"], r["rate"], r["rate"] / base]
                for n, r in scale
            ],
        )
    return 0


def print_stages(s: dict[str, Any]) -> None:
    """Stage table and the first target."""
    from jec_coffea.runner import DEFAULT_CHUNKSIZE

    k = 1000.0 / max(1, s["n_jets"])
    # jets of one chunk of the runner's default size, at this file's jets per event
    k_chunk = 1000.0 / max(1.0, DEFAULT_CHUNKSIZE * s["n_jets"] / max(1, s["n_events"]))
    rows = [
        [
            f"uproot alone, {s['n_branches']} needed branches (I/O limit)",
            s["read"] * k,
            "reference",
        ],
        [
            "NanoEvents build (virtual, LayoutSchema"
            + (")" if s["no_preload"] else "; reads the preloaded branches)"),
            s["build"] * k,
            "yes",
        ],
        ["jet table from events (reads what is not preloaded)", s["table"] * k, "yes"],
        ["to_tensors (Deep Sets spec)", s["tensors"] * k, "yes"],
        ["standard JEC factor", s["standard"] * k, "yes"],
        [f"histogram filling ({s['n_fill_methods']} methods)", s["fill"] * k, "yes"],
        [
            (
                f"empty output of a chunk ({s['alloc']:.3f} s per chunk), per 1k jets "
                f"at {DEFAULT_CHUNKSIZE:,}-event chunks"
            ),
            s["alloc"] * k_chunk,
            "yes",
        ],
        [
            f"  (the same at {s['n_events']:,}-event chunks, the stage table's)",
            s["alloc"] * k,
            "no",
        ],
    ]
    rows += [[f"inference {n}", t * k, "-"] for n, t in s["inference"].items()]
    c.print_table(
        f"CPU seconds per 1,000 jets by stage ({s['n_events']:,} events, "
        f"{s['n_jets']:,} jets, best of rounds, one thread)",
        ["stage", "s / 1k jets", "in the non-inference sum"],
        rows,
    )
    rest = s["build"] + s["table"] + s["tensors"] + s["standard"] + s["fill"]
    rest += s["alloc"] * k_chunk / k
    ds = s["inference"]["deepsets"]
    print(
        f"\ntarget 1: stages but inference {rest * k:.4f} s/1k jets vs Deep Sets inference "
        f"{ds * k:.4f} s/1k jets: ratio {rest / ds:.2f} (target <= 1): "
        f"{'met' if rest <= ds else 'NOT met'}"
    )


def print_rates(
    rates: dict[str, dict[str, float]], stages: dict[str, Any], args: argparse.Namespace
) -> None:
    """Processor table and the second target."""
    base = rates["standard"]["rate"]
    c.print_table(
        f"processor events/s (run_fileset, iterative executor, chunk {args.chunksize} "
        "events, CPU time of this process)",
        ["configuration", "events", "CPU s", "wall s", "events/s", "vs standard only"],
        [
            [cfg, r["events"], r["cpu"], r["wall"], r["rate"], r["rate"] / base]
            for cfg, r in rates.items()
        ],
    )
    one = rates["standard+deepsets"]["cpu"] - rates["standard"]["cpu"]
    three = rates["standard+3 deepsets"]["cpu"] - rates["standard"]["cpu"]
    ratio = three / one if one > 0 else float("nan")
    whole = rates["standard+3 deepsets"]["cpu"] / rates["standard+deepsets"]["cpu"]
    print(
        f"\ntarget 2: processor CPU with 3 Deep Sets variants / with one = {whole:.2f} "
        f"(target < 2): {'met' if whole < 2 else 'NOT met'}; CPU added on top of the "
        f"standard-only run: 3 variants {three:.2f} s, one {one:.2f} s, ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
