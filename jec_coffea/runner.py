"""Resilient runs of a processor over a fileset with coffea's ``processor.Runner``.

The executors and dask clients are in :mod:`jec_coffea.executors` (re-exported here).

Which schema reads a file
-------------------------
:class:`LayoutSchema` is handed to coffea's ``processor.Runner`` as its schema and picks, per
file, from the branches of the file: ``NanoAODSchema`` (NanoAOD), ``PFNanoAODSchema`` (current
PFNano), :class:`~jec_coffea.data.schema.OldPFNanoAODSchema` (old PFNano) or ``BaseSchema``
(per-jet ntuples: ml-jec, JetClass-II), so one run mixes layouts. Files without
``luminosityBlock`` are read with a warning instead of coffea's error; cross-references to
collections a file lacks (no jet input uses them) are not warned about.

Resilience
----------
Every finished chunk is saved by :class:`ResumableCheckpointer` (coffea's
``SimpleCheckpointer``, keyed additionally by a hash of the processor configuration, written
atomically). A failing chunk (out of memory, corrupt basket) stops the run with
:class:`ChunkFailedError` naming it, and keeps the finished chunks: ``resume=True`` completes
the run, recomputing only what is missing. With ``skip_bad_files=True`` the run goes on past
unreadable files and failing chunks and lists each with its error (:attr:`RunReport.failures`).

A chunk that kills its dask worker (segfault, out-of-memory killer) ends in ``KilledWorker``
once the scheduler's ``distributed.scheduler.allowed-failures`` retries are used up. The dask
executor (:class:`~jec_coffea.executors.ResilientDaskExecutor`) still finishes every other
chunk; the chunk is run once more alone, so a chunk that merely shared the dying worker is not
blamed. Then it is listed as a failure (``skip_bad_files``) or stops the run with
:class:`ChunkFailedError`, all other chunks checkpointed for ``resume``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from coffea import processor
from coffea.nanoevents import BaseSchema, NanoAODSchema, PFNanoAODSchema
from coffea.processor import SimpleCheckpointer
from coffea.processor.accumulator import accumulate

from .data._layouts import LAYOUTS, needed_branches
from .data.schema import OldPFNanoAODSchema
from .errors import ConfigError, InputFileError, JecCoffeaError
from .executors import (
    EXECUTORS,
    ResilientDaskExecutor,
    jobqueue_cluster,
    make_executor,
    open_client,
    resilient,
)

__all__ = [
    "DEFAULT_CHUNKSIZE",
    "EXECUTORS",
    "ChunkFailedError",
    "LayoutSchema",
    "ResilientDaskExecutor",
    "ResumableCheckpointer",
    "RunReport",
    "jobqueue_cluster",
    "make_executor",
    "open_client",
    "run_fileset",
]

logger = logging.getLogger(__name__)

DEFAULT_CHUNKSIZE = 100_000
"""Events per chunk of :func:`run_fileset` unless told otherwise (``jec-coffea run
--chunksize`` has the same default)."""


class ChunkFailedError(JecCoffeaError, RuntimeError):
    """A chunk failed and the run stopped; finished chunks are kept for ``--resume``.

    ``checkpoint_key`` and ``chunks_kept`` say where the finished chunks are and how many
    (None and 0 without a checkpoint directory).
    """

    def __init__(
        self, message: str, checkpoint_key: str | None = None, chunks_kept: int = 0
    ) -> None:
        super().__init__(message)
        self.checkpoint_key = checkpoint_key
        self.chunks_kept = chunks_kept


# --- schemas ----------------------------------------------------------------------------------


class _KeepFileBranches:
    """Keep the file's Photon_mass and Photon_charge: coffea's NanoAOD schemas overwrite
    them with constants, warning per file and chunk, even where the file stores them (every
    shared NanoAOD and PFNano file with photons does); files without them still get coffea's."""

    full_like_items: ClassVar[dict]

    def __init__(self, base_form: dict, *args: Any, **kwargs: Any) -> None:
        names = set(base_form.get("fields", ()))
        self.full_like_items = {
            k: v for k, v in type(self).full_like_items.items() if k not in names
        }
        super().__init__(base_form, *args, **kwargs)  # type: ignore[call-arg]


class _NanoAOD(_KeepFileBranches, NanoAODSchema):
    error_missing_event_ids = False
    warn_missing_crossrefs = (
        False  # e.g. Electron_photonIdx without Photon: not used here
    )


class _PFNano(_KeepFileBranches, PFNanoAODSchema):
    error_missing_event_ids = False
    warn_missing_crossrefs = False


class _OldPFNano(_KeepFileBranches, OldPFNanoAODSchema):
    error_missing_event_ids = False


class LayoutSchema(BaseSchema):
    """NanoEvents schema that delegates to the right schema for the layout of each file.

    coffea builds one schema instance per file from the file's base form; constructing this
    class returns an instance of the schema in :attr:`SCHEMAS` for the layout whose branch
    signature matches (the same signatures as :func:`jec_coffea.data.detect_layout`).
    """

    SCHEMAS: ClassVar[dict[str, type[BaseSchema]]] = {
        "pfnano": _PFNano,
        "pfnano_old": _OldPFNano,
        "nanoaod": _NanoAOD,
        "jetclass2": BaseSchema,
        "mljec": BaseSchema,
    }
    """Layout name -> schema class (per-event layouts tolerate a missing luminosityBlock)."""

    def __new__(cls, base_form: dict, *args: Any, **kwargs: Any) -> BaseSchema:  # type: ignore[misc]
        return cls.SCHEMAS[cls.layout_of(base_form)](base_form, *args, **kwargs)

    @staticmethod
    def layout_of(base_form: Mapping[str, Any]) -> str:
        """Layout name of a file from the branch names of its base form."""
        names = set(base_form.get("fields", ()))
        for layout in LAYOUTS.values():
            if layout.matches(names):
                return layout.name
        shown = ", ".join(sorted(names)[:10])
        msg = f"no supported layout matches the branches ({shown}, ...)"
        raise ConfigError(msg)

    @classmethod
    def behavior(cls) -> Any:
        """NanoAOD behaviours (a superset of the base ones), for dask-mode factories."""
        return NanoAODSchema.behavior()


# --- checkpointing ----------------------------------------------------------------------------


class ResumableCheckpointer(SimpleCheckpointer):
    """coffea's SimpleCheckpointer, keyed by configuration, written atomically, marked on load.

    Checkpoints live under ``checkpoint_dir/<key>/<dataset>/<file UUID>/<tree>/<start>-<stop>.coffea``
    where ``key`` hashes the processor configuration: a resumed run with other options never
    reuses chunks of the earlier one. A chunk is written to a temporary name and renamed, so a
    worker killed while writing leaves no truncated checkpoint; an unreadable checkpoint is
    logged and recomputed. Chunks loaded from disk are added to the ``resumed`` set of the
    wrapped output, so the run can report how many were reused.

    Parameters
    ----------
    checkpoint_dir
        Local directory or fsspec URL; must be reachable from every worker (shared storage on
        a batch cluster).
    key
        Configuration key (see :func:`config_key`).
    """

    def __init__(self, checkpoint_dir: str, key: str) -> None:
        super().__init__(checkpoint_dir, verbose=False, overwrite=True)
        self.key = key

    def filepath(self, metadata: Any, processor_instance: Any) -> str:
        """Path of the checkpoint of one chunk."""
        del processor_instance
        return "/".join(
            [
                self.checkpoint_dir.rstrip("/"),
                self.key,
                str(metadata["dataset"]).replace("/", "_"),
                str(metadata["fileuuid"]) or "nouuid",
                str(metadata["treename"]).replace("/", "_"),
                f"{metadata['entrystart']}-{metadata['entrystop']}.coffea",
            ]
        )

    def load(self, metadata: Any, processor_instance: Any) -> Any:
        """The saved wrapped output of a chunk, or None (absent or unreadable)."""
        import cloudpickle

        path = self.filepath(metadata, processor_instance)
        if not self.fs.exists(path):
            return None
        try:
            with self.fs.open(path, "rb", compression="lz4") as stream:
                out = cloudpickle.load(stream)
        except Exception as err:  # noqa: BLE001 - a damaged checkpoint is recomputed
            logger.warning("unreadable checkpoint %s (%s); recomputing", path, err)
            return None
        out = dict(out)
        out["resumed"] = set(out.get("processed", ()))
        return out

    def save(self, output: Any, metadata: Any, processor_instance: Any) -> None:
        """Write the wrapped output of a chunk atomically (temporary name, then rename)."""
        import cloudpickle

        path = self.filepath(metadata, processor_instance)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            self.fs.mkdirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "wb", compression="lz4") as stream:
                cloudpickle.dump(output, stream)
            self.fs.mv(tmp, path)
        except OSError as err:
            logger.warning("could not save checkpoint %s: %s", path, err)

    def count(self) -> int:
        """Number of chunks checkpointed under this key."""
        root = f"{self.checkpoint_dir.rstrip('/')}/{self.key}"
        if not self.fs.exists(root):
            return 0
        return sum(1 for p in self.fs.find(root) if p.endswith(".coffea"))

    def clear(self) -> None:
        """Remove the checkpoints of this key (a fresh, non-resumed run)."""
        root = f"{self.checkpoint_dir.rstrip('/')}/{self.key}"
        if self.fs.exists(root):
            self.fs.rm(root, recursive=True)


def config_key(fingerprint: Mapping[str, Any], chunksize: int) -> str:
    """16-hex-digit key of a processor configuration and chunk size."""
    text = json.dumps(
        {"processor": fingerprint, "chunksize": chunksize}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- failure recording ------------------------------------------------------------------------


def _innermost(err: BaseException) -> BaseException:
    seen = set()
    while err.__cause__ is not None and id(err) not in seen:
        seen.add(id(err))
        err = err.__cause__
    return err


def failure_record(item: Any, err: BaseException, stage: str) -> dict[str, Any]:
    """JSON-ready description of a failed chunk or file: where, what and the error chain."""
    root = _innermost(err)
    return {
        "stage": stage,
        "dataset": getattr(item, "dataset", None),
        "file": getattr(item, "filename", None),
        "tree": getattr(item, "treename", None),
        "entry_start": getattr(item, "entrystart", None),
        "entry_stop": getattr(item, "entrystop", None),
        "error_type": type(root).__name__,
        "error": str(root),
        "context": str(err) if err is not root else "",
        "traceback": "".join(traceback.format_exception_only(type(root), root)).strip(),
    }


class _RecordingRunner(processor.Runner):
    """coffea Runner whose skipped chunks come back as failure records instead of vanishing."""

    @staticmethod
    def automatic_retries(  # type: ignore[override]
        retries: int,
        skipbadfiles: Any,
        func: Any,
        *args: Any,
        use_result_type: bool = False,
        **kwargs: Any,
    ) -> Any:
        try:
            return processor.Runner.automatic_retries(
                retries, False, func, *args, use_result_type=use_result_type, **kwargs
            )
        except Exception as err:
            item = args[0] if args else None
            if isinstance(item, tuple):
                item = item[0]
            if not skipbadfiles or not isinstance(item, processor.executor.WorkItem):
                raise
            logger.warning(
                "skipping chunk %s entries %d-%d: %s",
                item.filename,
                item.entrystart,
                item.entrystop,
                _innermost(err),
            )
            return {"failed": [failure_record(item, err, "process")]}


class _KilledChunk:
    """``on_killed`` of the dask executor: a chunk that killed its worker becomes a failure record."""

    def __init__(self, processor_instance: Any) -> None:
        self.empty = getattr(processor_instance, "empty_output", None)

    def __call__(self, item: Any, err: BaseException) -> dict[str, Any]:
        out: dict[str, Any] = {"failed": [failure_record(item, err, "process")]}
        if self.empty is not None:
            out["out"] = (
                self.empty()
            )  # the run still has an output if every chunk failed
        return out


# --- the run ----------------------------------------------------------------------------------


@dataclass
class RunReport:
    """Outcome of :func:`run_fileset`.

    Attributes
    ----------
    output
        Merged processor output (empty histograms if nothing was processed).
    files
        Per input file: dataset, path, tree, layout, entries, entries processed, chunks,
        chunks taken from checkpoints, status (``complete``, ``partial``, ``failed``).
    failures
        Failed files and chunks with their errors (only with ``skip_bad_files``).
    timings
        Wall-clock seconds of the stages (``inspect``, ``process``, ``total``) and summed
        per-chunk processing time (``chunks_cpu``).
    checkpoint_key
        Configuration key of the checkpoints.
    """

    output: dict[str, Any]
    files: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    checkpoint_key: str | None = None

    @property
    def complete(self) -> bool:
        """True if every entry of every file was processed."""
        return not self.failures and all(f["status"] == "complete" for f in self.files)


def _inspect(dataset: str, path: str, tree: str) -> dict[str, Any]:
    """Open a file, check its tree, count entries, detect its layout and list the branches
    the jet-table build reads (coffea preloads them in one ``arrays`` call per chunk)."""
    import uproot

    from .data import detect_layout

    try:
        with uproot.open(path) as handle:
            if tree not in handle:
                msg = f"no tree {tree!r}; keys: {', '.join(handle.keys(recursive=False)[:10])}"
                raise InputFileError(path, msg)
            entries = int(handle[tree].num_entries)
            branches = handle[tree].keys(recursive=False)
    except InputFileError:
        raise
    except FileNotFoundError as err:
        raise InputFileError(path, "no such file") from err
    except Exception as err:
        raise InputFileError(path, f"cannot open: {type(err).__name__}: {err}") from err
    layout = detect_layout(path)
    return {
        "dataset": dataset,
        "file": path,
        "tree": tree,
        "layout": layout,
        "entries": entries,
        "preload": needed_branches(LAYOUTS[layout], branches),
    }


def normalize_fileset(fileset: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(dataset, path, tree) of every file of a coffea fileset ``{dataset: {"files": {path: tree}}}``."""
    rows = []
    for dataset, spec in fileset.items():
        files = spec.get("files") if isinstance(spec, Mapping) else None
        if not isinstance(files, Mapping):
            msg = f"fileset dataset {dataset!r}: expected {{'files': {{path: tree}}}}, got {spec!r}"
            raise ConfigError(msg)
        for path, tree in files.items():
            if isinstance(tree, Mapping):
                tree = tree.get("object_path", "Events")
            rows.append((str(dataset), str(path), str(tree or "Events")))
    return rows


def run_fileset(
    fileset: Mapping[str, Any],
    processor_instance: Any,
    *,
    executor: processor.executor.ExecutorBase,
    chunksize: int = DEFAULT_CHUNKSIZE,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    skip_bad_files: bool = False,
) -> RunReport:
    """Run a processor over a fileset with coffea's Runner, checkpointing every chunk.

    Parameters
    ----------
    fileset
        coffea fileset ``{dataset: {"files": {path: tree}}}`` (local paths or URLs).
    processor_instance
        A coffea processor; if it has ``fingerprint()`` and ``empty_output()`` (as
        :class:`~jec_coffea.processors.ResponseProcessor`), they key the checkpoints and give
        the output when nothing could be processed.
    executor
        From :func:`make_executor`; a coffea ``DaskExecutor`` runs as a
        :class:`~jec_coffea.executors.ResilientDaskExecutor` with the same settings.
    chunksize
        Events per chunk.
    checkpoint_dir
        Where finished chunks are kept (None: no checkpointing, no resume).
    resume
        Reuse the checkpoints of an earlier run with the same configuration; without it, old
        checkpoints of this configuration are removed first.
    skip_bad_files
        Go on past unreadable files, failing chunks and (dask) chunks that kill their worker
        (``KilledWorker``), listing them in the report.

    Raises
    ------
    InputFileError
        A file cannot be opened (without ``skip_bad_files``).
    ChunkFailedError
        A chunk failed or killed its worker (without ``skip_bad_files``); finished chunks stay
        checkpointed.
    """
    t0 = time.perf_counter()
    rows = normalize_fileset(fileset)
    if not rows:
        msg = "the fileset lists no files"
        raise ConfigError(msg)
    failures: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=min(8, len(rows))) as pool:
        futures = [pool.submit(_inspect, *row) for row in rows]
        for row, fut in zip(rows, futures, strict=True):
            try:
                files.append(fut.result())
            except JecCoffeaError as err:
                if not skip_bad_files:
                    raise
                logger.warning("skipping file %s: %s", row[1], err)
                failures.append(
                    {
                        **failure_record(None, err, "open"),
                        "dataset": row[0],
                        "file": row[1],
                        "tree": row[2],
                    }
                )
    t_inspect = time.perf_counter()
    good: dict[str, dict[str, Any]] = {}
    preload: dict[str, set[str]] = {}
    for f in files:
        good.setdefault(f["dataset"], {"files": {}})["files"][f["file"]] = f["tree"]
        # what every file of the dataset reads (a branch one layout lacks stays lazy)
        mine = f.pop("preload")
        preload[f["dataset"]] = preload.get(f["dataset"], mine) & mine
    for dataset, spec in good.items():
        if preload[dataset]:
            spec["preload"] = sorted(preload[dataset])

    checkpointer = None
    key = None
    if checkpoint_dir is not None:
        fingerprint = (
            processor_instance.fingerprint()
            if hasattr(processor_instance, "fingerprint")
            else {"processor": type(processor_instance).__qualname__}
        )
        key = config_key(fingerprint, chunksize)
        checkpointer = ResumableCheckpointer(str(checkpoint_dir), key)
        if resume:
            logger.info(
                "resuming: %d chunks checkpointed under %s/%s",
                checkpointer.count(),
                checkpoint_dir,
                key,
            )
        else:
            checkpointer.clear()

    executor = resilient(executor)
    if skip_bad_files and isinstance(executor, ResilientDaskExecutor):
        executor = executor.copy(on_killed=_KilledChunk(processor_instance))
    wrapped: dict[str, Any] = {}
    if good:
        runner = _RecordingRunner(
            executor=executor,
            chunksize=chunksize,
            schema=LayoutSchema,
            skipbadfiles=(Exception,) if skip_bad_files else False,
            checkpointer=checkpointer,
            savemetrics=True,
        )
        try:
            wrapped = runner.run(good, processor_instance) or {}
        except Exception as err:
            kept = checkpointer.count() if checkpointer is not None else 0
            root = _innermost(err)
            hint = (
                f"{kept} finished chunks are checkpointed in {checkpoint_dir}; rerun with "
                "--resume to complete the run, or --skip-bad-files to go on past failures"
                if checkpointer is not None
                else "no checkpoints were kept (no checkpoint directory)"
            )
            msg = f"{err} [{type(root).__name__}: {root}]; {hint}"
            raise ChunkFailedError(msg, checkpoint_key=key, chunks_kept=kept) from err
    t_run = time.perf_counter()

    failures.extend(wrapped.get("failed", []))
    out = wrapped.get("out") or {}
    if hasattr(processor_instance, "empty_output"):
        out = accumulate([processor_instance.empty_output(), out])
    processed = wrapped.get("processed", set())
    resumed = wrapped.get("resumed", set())
    for f in files:
        done = [
            i
            for i in processed
            if i.filename == f["file"] and i.dataset == f["dataset"]
        ]
        f["entries_processed"] = sum(i.entrystop - i.entrystart for i in done)
        f["chunks"] = len(done)
        f["chunks_resumed"] = sum(
            1 for i in resumed if i.filename == f["file"] and i.dataset == f["dataset"]
        )
        f["status"] = (
            "complete"
            if f["entries_processed"] == f["entries"]
            else ("partial" if done else "failed")
        )
        f["chunks_expected"] = max(1, math.ceil(f["entries"] / chunksize))
    metrics = wrapped.get("metrics", {})
    timings = {
        "inspect": t_inspect - t0,
        "process": t_run - t_inspect,
        "total": time.perf_counter() - t0,
        "chunks_cpu": float(metrics.get("processtime", 0.0)),
    }
    logger.info(
        "processed %d chunks (%d from checkpoints) of %d files in %.1f s; %d failures",
        len(processed),
        len(resumed),
        len(files),
        timings["process"],
        len(failures),
    )
    return RunReport(
        output=out,
        files=files,
        failures=failures,
        timings=timings,
        checkpoint_key=key,
    )


def checkpoint_root(out_dir: str | os.PathLike) -> Path:
    """Default checkpoint directory of an output directory."""
    return Path(out_dir) / "checkpoints"
