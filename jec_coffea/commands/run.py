"""Fill the response histograms of raw, standard, NanoAOD and DNN pT over a fileset.

`jec-coffea run --fileset FILESET -m MODEL [-m MODEL2 ...] --jec STACK -o OUT [--split test]`

FILESET is a coffea fileset JSON (`{dataset: {"files": {path: tree}}}` or `{dataset: [paths]}`)
or a dataset description (data.yaml, ours or ml-jec's). MODEL is an ONNX file exported by
jec-coffea, `NAME=PATH` to name its method, or the name of a shipped model (deepsets,
particlenet, mlp_nanoaod). STACK is a JEC spelling of `JECStack.from_spec`
(`FILE.json.gz:TAG:JETTYPE`, a folder of JEC text files, or text files). Only jets of the split
(default: test, by the DESIGN.md hash, per jet) are used. Methods a file cannot feed (a
constituent model on plain NanoAOD, no PNet regression) are skipped for that file and listed.

Work runs on a local dask cluster (one worker process per core) by default;
`--scheduler tcp://HOST:PORT` joins a running one, `--cluster htcondor|slurm` submits workers
through dask-jobqueue, `--executor futures|iterative` runs without dask (debugging).

Outputs in OUT (stable names, see jec_coffea.outputs): histograms.coffea, histograms.root
(TH2D response/<method>/<flavour>/abs_eta_<i>), run.json (files, skipped methods with reasons,
failures with errors, timings), columns/ (with --save-columns) and checkpoints/. Every finished
chunk is checkpointed: after a failure, the same command with `--resume` completes the run;
`--skip-bad-files` goes on past unreadable files and failing chunks and lists them. Exit status
1 when chunks or files were skipped (outputs partial).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

NAME = "run"


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fileset",
        required=True,
        metavar="FILESET",
        help="coffea fileset JSON or data.yaml",
    )
    parser.add_argument(
        "-m",
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="ONNX model (PATH, NAME=PATH or a shipped model name); repeat for several",
    )
    parser.add_argument("--jec", metavar="STACK", help="standard JEC stack spelling")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="output directory"
    )
    parser.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        default="test",
        help="jets of this split only (default: test)",
    )
    parser.add_argument(
        "--weights",
        choices=("gen", "unit"),
        default="gen",
        help="fill with genWeight (default) or count each jet once (pT-hat-biased samples)",
    )
    parser.add_argument(
        "--no-reco-views",
        dest="reco_views",
        action="store_false",
        help="on simulation, evaluate the methods only on jets passing the response "
        "selection and fill only the gen-based histograms (about 20x less inference on "
        "simulated samples; the corrected-pT, factor and input views stay empty)",
    )
    parser.add_argument(
        "--methods",
        help="comma-separated built-in methods (default: raw,standard (with --jec),"
        "nanoaod,pt_full_corr,pnet,upart)",
    )
    parser.add_argument(
        "--chunksize", type=int, default=100_000, help="events per chunk"
    )
    parser.add_argument(
        "--executor", choices=("dask", "futures", "iterative"), default="dask"
    )
    parser.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="join a running dask scheduler"
    )
    parser.add_argument(
        "--cluster",
        choices=("local", "htcondor", "slurm"),
        default="local",
        help="where dask workers run (default: local processes)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="local worker processes (default: cores) or batch jobs (default: 10)",
    )
    batch = parser.add_argument_group("batch jobs (--cluster htcondor|slurm)")
    batch.add_argument("--job-cores", type=int, default=1)
    batch.add_argument("--job-memory", default="4GB")
    batch.add_argument("--job-disk", default="4GB", help="HTCondor only")
    batch.add_argument("--job-walltime", default="02:00:00")
    batch.add_argument("--job-queue", help="SLURM partition")
    batch.add_argument("--job-account", help="SLURM account")
    batch.add_argument(
        "--job-extra", action="append", default=[], help="extra job-script directive"
    )
    parser.add_argument(
        "--resume", action="store_true", help="complete an interrupted run in OUT"
    )
    parser.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="go on past unreadable files and failing chunks; list them in run.json",
    )
    parser.add_argument(
        "--save-columns",
        action="store_true",
        help="write the per-jet fill columns of every chunk as parquet under OUT/columns",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_fileset(path: str) -> dict[str, Any]:
    """A coffea fileset from a fileset JSON or a dataset description YAML."""
    from jec_coffea.data.dataset import DatasetDescription
    from jec_coffea.errors import ConfigError, InputFileError

    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        return DatasetDescription.load(p).to_fileset(name=p.stem)
    if not p.is_file():
        raise InputFileError(str(p), "no such fileset file")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        msg = f"--fileset {p}: not valid JSON ({err}); expected a coffea fileset or a data.yaml"
        raise ConfigError(msg) from err
    if not isinstance(raw, dict) or not raw:
        msg = f"--fileset {p}: expected {{dataset: {{'files': {{path: tree}}}}}}"
        raise ConfigError(msg)
    out: dict[str, Any] = {}
    for dataset, spec in raw.items():
        files = spec.get("files") if isinstance(spec, dict) else spec
        if isinstance(files, list):
            files = {str(f): _tree_of(str(f), p) for f in files}
        if not isinstance(files, dict):
            msg = f"--fileset {p}: dataset {dataset!r} has no 'files' mapping or list"
            raise ConfigError(msg)
        out[str(dataset)] = {
            "files": {
                _resolve(str(f), p): (
                    t.get("object_path") if isinstance(t, dict) else t
                )
                or _tree_of(_resolve(str(f), p), p)
                for f, t in files.items()
            }
        }
    return out


def _resolve(path: str, fileset: Path) -> str:
    if "://" in path or Path(path).is_absolute():
        return path
    return str((fileset.parent / path).resolve())


def _tree_of(path: str, fileset: Path) -> str:
    from jec_coffea.data import detect_layout
    from jec_coffea.data._layouts import LAYOUTS
    from jec_coffea.errors import InputFileError

    try:
        return LAYOUTS[detect_layout(_resolve(path, fileset))].tree
    except InputFileError:
        return "Events"  # unreadable: the run reports it (or skips it)


def load_models(specs: list[str]) -> dict[str, Any]:
    """Method name -> DNNJetCorrector for each ``-m`` argument."""
    from jec_coffea.errors import ConfigError

    if not specs:
        return {}
    try:
        from jec_coffea.corrector import DNNJetCorrector
        from jec_coffea.shipped import SHIPPED_MODELS
    except ImportError as err:
        msg = f"-m/--model needs jec_coffea.corrector, which cannot be imported: {err}"
        raise ConfigError(msg) from err
    models: dict[str, Any] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        if not name:
            name = Path(path).stem if path.endswith(".onnx") else path
        if name in models:
            msg = f"-m {spec}: method name {name!r} given twice; name them NAME=PATH"
            raise ConfigError(msg)
        if path in SHIPPED_MODELS and not Path(path).exists():
            models[name] = DNNJetCorrector.from_shipped(path, prefix=_prefix(name))
        else:
            models[name] = DNNJetCorrector.from_onnx(path, prefix=_prefix(name))
    return models


def _prefix(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name)
    return cleaned if cleaned.isidentifier() else f"m_{cleaned}"


def _show(console: Console, report, out_dir: Path) -> None:
    table = Table(title=f"jec-coffea run -> {out_dir}")
    for col in ("dataset", "file", "layout", "entries", "chunks", "resumed", "status"):
        table.add_column(col, overflow="fold")
    for f in report.files:
        table.add_row(
            f["dataset"],
            f["file"],
            f["layout"],
            f"{f['entries_processed']}/{f['entries']}",
            str(f["chunks"]),
            str(f["chunks_resumed"]),
            f["status"],
        )
    for fail in report.failures:
        entries = (
            f"{fail['entry_start']}-{fail['entry_stop']}"
            if fail["entry_start"] is not None
            else "-"
        )
        table.add_row(
            str(fail["dataset"]),
            str(fail["file"]),
            "-",
            entries,
            "-",
            "-",
            f"FAILED ({fail['stage']}): {fail['error_type']}: {fail['error'][:120]}",
        )
    console.print(table)
    skipped = report.output.get("skipped_methods", {})
    for method, reasons in skipped.items():
        for reason, per_file in reasons.items():
            console.print(
                f"method {method} skipped on {len(per_file)} file(s): {reason}"
            )


def run(console: Console, args: argparse.Namespace) -> int:
    from jec_coffea import __version__, outputs
    from jec_coffea.errors import ConfigError
    from jec_coffea.processors import ResponseProcessor
    from jec_coffea.runner import (
        checkpoint_root,
        make_executor,
        open_client,
        run_fileset,
    )

    t0 = time.perf_counter()
    if getattr(args, "verbose", 0) < 2:
        # dask's own INFO lines (workers started, nannies closed) drown the run's
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.chunksize <= 0:
        msg = f"--chunksize must be positive, got {args.chunksize}"
        raise ConfigError(msg)
    if args.executor != "dask" and (args.scheduler or args.cluster != "local"):
        msg = f"--scheduler/--cluster need --executor dask, got --executor {args.executor}"
        raise ConfigError(msg)
    fileset = load_fileset(args.fileset)
    jec = None
    if args.jec:
        from jec_coffea.standard import JECStack

        jec = JECStack.from_spec(args.jec)
    models = load_models(args.model)
    if args.methods:
        builtin = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        builtin = ["raw", "nanoaod", "pt_full_corr", "pnet", "upart"]
        if jec is not None:
            builtin.insert(1, "standard")
    out_dir: Path = args.output
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = ResponseProcessor(
        jec=jec,
        methods=[*builtin, *models],
        models=models,
        split=args.split,
        weights=args.weights,
        reco_views=args.reco_views,
        columns_dir=(
            str((out_dir / outputs.COLUMNS_DIR).resolve())
            if args.save_columns
            else None
        ),
    )
    options = {
        "run": {
            "run_options": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if not k.startswith("_")
            }
        }
    }
    common = {
        "chunksize": args.chunksize,
        "checkpoint_dir": str(checkpoint_root(out_dir).resolve()),
        "resume": args.resume,
        "skip_bad_files": args.skip_bad_files,
    }
    status = not args.no_progress
    if args.executor == "dask":
        jobqueue = {
            "cores": args.job_cores,
            "memory": args.job_memory,
            "disk": args.job_disk,
            "walltime": args.job_walltime,
            "queue": args.job_queue,
            "account": args.job_account,
            "job_extra_directives": args.job_extra,
            "log_directory": str(out_dir / "jobs"),
        }
        with open_client(
            scheduler=args.scheduler,
            cluster=args.cluster,
            workers=args.workers,
            jobqueue_options=jobqueue,
        ) as client:
            executor = make_executor("dask", client=client, status=status)
            report = run_fileset(fileset, proc, executor=executor, **common)
    else:
        executor = make_executor(args.executor, workers=args.workers, status=status)
        report = run_fileset(fileset, proc, executor=executor, **common)

    out = report.output
    outputs.save_coffea(out, out_dir / outputs.COFFEA_NAME)
    outputs.save_root(out, out_dir / outputs.ROOT_NAME)
    info = {
        "version": __version__,
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        **options["run"],
        "processor": proc.fingerprint(),
        "checkpoint_key": report.checkpoint_key,
        "complete": report.complete,
        "files": report.files,
        "failures": report.failures,
        "skipped_methods": out.get("skipped_methods", {}),
        "not_computed": out.get("not_computed", {}),
        "n_events": out.get("n_events", 0),
        "n_jets": out.get("n_jets", {}),
        "truth": out.get("truth", {}),
        "layouts": out.get("layouts", {}),
        "cutflow": out["cutflow"].to_dict() if "cutflow" in out else None,
        "timings": {**report.timings, "command": time.perf_counter() - t0},
    }
    outputs.write_run_json(info, out_dir / outputs.RUN_JSON_NAME)
    _show(console, report, out_dir)
    if not report.complete:
        console.print(
            f"[yellow]{len(report.failures)} failure(s): outputs are partial; "
            "rerun with --resume to retry the failed chunks[/yellow]"
        )
        return 1
    console.print(
        f"wrote {outputs.COFFEA_NAME}, {outputs.ROOT_NAME}, {outputs.RUN_JSON_NAME} in {out_dir}"
    )
    return 0
