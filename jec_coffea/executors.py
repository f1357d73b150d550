"""Where the work of a run executes: dask clients (local, scheduler, jobqueue) and coffea executors.

:func:`open_client` gives the dask client of a run: a :class:`distributed.LocalCluster` with
one single-threaded worker process per core (the default), an existing scheduler
(``scheduler="tcp://host:port"``), or an HTCondor / SLURM cluster through dask-jobqueue
(:func:`jobqueue_cluster`). :func:`make_executor` wraps it in :class:`ResilientDaskExecutor`
(coffea's ``DaskExecutor`` that survives chunks killing their worker); the ``futures`` and
``iterative`` executors run without dask, for debugging. Retries are off: a failing chunk is
reported at once and ``--resume`` (:mod:`jec_coffea.runner`) is the retry.

Chunks that kill their worker
-----------------------------
A chunk that crashes its worker process (segfault in a compiled library, the kernel's
out-of-memory killer) never raises: the nanny restarts the worker and the scheduler reschedules
every task the worker held, until a task has been on ``distributed.scheduler.allowed-failures``
+ 1 dead workers and ends in ``KilledWorker``. coffea's ``DaskExecutor`` merges all chunk
outputs in one reduction graph, so one such chunk fails every reduction above it and the run
raises without the outputs of the other chunks. :class:`ResilientDaskExecutor` follows each chunk
future on its own (``distributed.as_completed``) and merges finished outputs as they arrive, so
the rest of the run completes. Tasks that were merely queued on the same worker die with it and
end in ``KilledWorker`` too; each chunk that ends so is therefore run once more alone, and only a
chunk that kills its worker again is reported (to ``on_killed`` or as an error).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from coffea import processor
from coffea.processor.accumulator import accumulate
from coffea.processor.executor import _compression_wrapper, _decompress, _reduce

from .errors import ConfigError

__all__ = [
    "EXECUTORS",
    "ResilientDaskExecutor",
    "jobqueue_cluster",
    "make_executor",
    "open_client",
    "resilient",
]

logger = logging.getLogger(__name__)

EXECUTORS: tuple[str, ...] = ("dask", "futures", "iterative")
"""Executor names: ``dask`` (default; local cluster, scheduler or jobqueue), ``futures`` (local
processes without dask) and ``iterative`` (one process, for debugging)."""


def jobqueue_cluster(
    kind: Literal["htcondor", "slurm"],
    *,
    cores: int = 1,
    memory: str = "4GB",
    disk: str = "4GB",
    walltime: str = "02:00:00",
    queue: str | None = None,
    account: str | None = None,
    job_extra_directives: Sequence[str] = (),
    python: str | None = None,
    log_directory: str | None = None,
) -> Any:
    """A dask-jobqueue cluster (not yet scaled) for HTCondor or SLURM.

    Each job runs ``cores`` single-threaded dask worker processes (the per-chunk work holds the
    GIL). Call ``cluster.scale(jobs=N)``
    or ``cluster.adapt(...)`` to submit; ``cluster.job_script()`` shows what will be submitted.

    Parameters
    ----------
    kind
        ``"htcondor"`` or ``"slurm"``.
    cores, memory, disk, walltime
        Per job; ``walltime`` is ``HH:MM:SS`` (HTCondor: written as ``+MaxRuntime``);
        ``disk`` is HTCondor only.
    queue, account
        SLURM partition and account (ignored by HTCondor).
    job_extra_directives
        Extra job-script lines: ``KEY = VALUE`` submit-file commands for HTCondor
        (``+JobFlavour = "longlunch"``), ``#SBATCH`` options for SLURM (``--constraint=...``).
    python
        Python on the worker nodes (default: this interpreter; the worker nodes need the same
        environment, e.g. on a shared file system or in a container).
    log_directory
        Where the batch system writes job logs.
    """
    from .extras import dask_jobqueue

    jq = dask_jobqueue()
    common: dict[str, Any] = {
        "cores": cores,
        "processes": cores,
        "memory": memory,
        "walltime": walltime,
        "job_extra_directives": list(job_extra_directives),
        "log_directory": log_directory,
        "python": python,
    }
    if kind == "htcondor":
        # HTCondor has no walltime option: the job's runtime limit is +MaxRuntime [s]
        h, m, sec = (int(x) for x in walltime.split(":"))
        common.pop("walltime")
        extra = {"+MaxRuntime": str(3600 * h + 60 * m + sec)}
        for line in common["job_extra_directives"]:
            key, sep, value = line.partition("=")
            if not sep:
                msg = f"HTCondor job directive {line!r}: expected 'KEY = VALUE'"
                raise ConfigError(msg)
            extra[key.strip()] = value.strip()
        common["job_extra_directives"] = extra
        return jq.HTCondorCluster(disk=disk, **common)
    if kind == "slurm":
        return jq.SLURMCluster(queue=queue, account=account, **common)
    msg = f"--cluster {kind!r}: expected 'htcondor' or 'slurm'"
    raise ConfigError(msg)


@contextlib.contextmanager
def open_client(
    *,
    scheduler: str | None = None,
    cluster: Literal["local", "htcondor", "slurm"] = "local",
    workers: int | None = None,
    jobqueue_options: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """A dask client for the run, closed (with any cluster it started) on exit.

    Parameters
    ----------
    scheduler
        Address of a running scheduler (``tcp://host:port``); the cluster is not ours to close.
    cluster
        ``"local"``: a LocalCluster of ``workers`` single-threaded processes (default: one per
        core); ``"htcondor"`` / ``"slurm"``: :func:`jobqueue_cluster` scaled to ``workers``
        jobs (default 10).
    jobqueue_options
        Keyword arguments of :func:`jobqueue_cluster`.
    """
    import distributed

    if scheduler is not None:
        if cluster != "local":
            msg = "--scheduler and --cluster exclude each other: join a running scheduler or start a cluster"
            raise ConfigError(msg)
        try:
            client = distributed.Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as err:
            msg = f"--scheduler {scheduler}: cannot connect ({err}); is the scheduler running and reachable?"
            raise ConfigError(msg) from err
        logger.info("joined scheduler %s (%d workers)", scheduler, _n_workers(client))
        try:
            yield client
        finally:
            client.close()
        return
    if cluster == "local":
        n = workers or os.cpu_count() or 1
        local = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        )
        logger.info("started a local dask cluster of %d worker processes", n)
        with local, distributed.Client(local) as client:
            yield client
        return
    jq = jobqueue_cluster(cluster, **dict(jobqueue_options or {}))
    jq.scale(jobs=workers or 10)
    logger.info("submitted %d %s jobs", workers or 10, cluster)
    with jq, distributed.Client(jq) as client:
        yield client


def _n_workers(client: Any) -> int:
    return len(client.scheduler_info().get("workers", {}))


def make_executor(
    kind: str = "dask",
    *,
    client: Any = None,
    workers: int | None = None,
    status: bool = False,
) -> processor.executor.ExecutorBase:
    """A coffea executor: ``dask`` (needs ``client``), ``futures`` or ``iterative``.

    Retries are disabled (a failing chunk is reported at once; ``--resume`` is the retry).
    ``dask`` gives a :class:`ResilientDaskExecutor`.
    """
    if kind == "dask":
        if client is None:
            msg = "make_executor('dask') needs a dask client (see open_client)"
            raise ConfigError(msg)
        return ResilientDaskExecutor(client=client, status=status, retries=0)
    if kind == "futures":
        return processor.FuturesExecutor(
            workers=workers or os.cpu_count() or 1, status=status, retries=0
        )
    if kind == "iterative":
        return processor.IterativeExecutor(status=status, retries=0)
    msg = f"--executor {kind!r}: expected one of {', '.join(EXECUTORS)}"
    raise ConfigError(msg)


# --- chunks that kill their worker --------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


def _is_killed(err: BaseException | None) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(err, KilledWorker)


@dataclass
class ResilientDaskExecutor(processor.DaskExecutor):
    """coffea's ``DaskExecutor``, finishing the run when chunks kill their worker.

    Takes every field of ``coffea.processor.DaskExecutor`` (``client``, ``treereduction``,
    ``priority``, ``retries``, ``status``, ``compression``, ...). Each chunk future is followed
    on its own and finished outputs are merged ``treereduction`` at a time as they arrive;
    a chunk ending in ``KilledWorker`` is run once more alone after the others are done (see
    the module docstring). The metadata pass and ``use_dataframes`` / ``worker_affinity``
    runs are coffea's own code.

    Tasks are submitted impure (fresh keys): a resumed run on the same cluster must never be
    handed the erred tasks of the run it resumes.

    Parameters
    ----------
    on_killed
        ``on_killed(item, error)`` is called for each chunk (coffea ``WorkItem``) that killed
        its worker again when run alone; ``error`` is a ``RuntimeError`` naming the chunk,
        chained from the ``KilledWorker``. Its return value is merged into the output instead
        of the chunk's (:func:`jec_coffea.runner.run_fileset` returns a failure record). None:
        ``error`` is raised once all other chunks have finished, so they are checkpointed
        for ``--resume``.
    isolate_killed
        At most this many chunks ending in ``KilledWorker`` are run again alone; the rest are
        reported without that check (each check costs ``allowed-failures + 1`` worker
        restarts, too many when, say, every chunk is too big for the worker memory).
    """

    on_killed: Callable[[Any, BaseException], Any] | None = None
    isolate_killed: int = 10

    def __call__(  # type: ignore[override]
        self, items: Any, function: Callable[..., Any], accumulator: Any
    ) -> Any:
        """Run ``function`` on every item; return ``(merged output, 0)`` like coffea."""
        if (
            self.use_dataframes
            or self.worker_affinity
            or self.function_name == "get_metadata"
            or len(items) == 0
        ):
            return super().__call__(items, function, accumulator)
        if self.client is None:
            import distributed

            self.client = distributed.Client(threads_per_worker=1)
        if self.compression is not None:
            function = _compression_wrapper(
                self.compression, function, name=self.function_name
            )
        merged, replaced = _KillTolerantRun(self, function).run(list(items))
        parts = [] if merged is None else [_decompress(merged.result())]
        return accumulate([*parts, *replaced], accumulator), 0


def resilient(executor: processor.executor.ExecutorBase) -> Any:
    """``executor``, a plain coffea ``DaskExecutor`` becoming a :class:`ResilientDaskExecutor`."""
    if isinstance(executor, processor.DaskExecutor) and not isinstance(
        executor, ResilientDaskExecutor
    ):
        settings = {f.name: getattr(executor, f.name) for f in fields(executor)}
        return ResilientDaskExecutor(**settings)
    return executor


@dataclass
class _Task:
    """What a future of a :class:`_KillTolerantRun` computes."""

    kind: Literal["chunk", "alone", "merge"]
    items: list[Any]
    """Work items covered (one for a chunk)."""
    inputs: list[Any] | None = None
    """Futures a merge reads, dropped once it finished (their data is released then)."""


class _KillTolerantRun:
    """One call of :class:`ResilientDaskExecutor`: chunk and merge futures until one is left."""

    def __init__(self, executor: ResilientDaskExecutor, function: Callable) -> None:
        import distributed

        self.ex = executor
        self.client = executor.client
        self.function = function
        self.reducer = _reduce(executor.compression)
        self.heavy: Any = None
        self.pending = distributed.as_completed()
        self.tasks: dict[Any, _Task] = {}
        self.ready: list[Any] = []
        self.suspects: list[tuple[Any, BaseException]] = []
        self.replaced: list[Any] = []
        self.isolated = 0
        self.done: set[Any] = set()
        self.fatal: RuntimeError | None = None
        """The first chunk that killed its worker alone, raised at the end without on_killed."""
        self.bar: Any = None

    def run(self, items: list[Any]) -> tuple[Any, list[Any]]:
        """The future of the merged output (None if no chunk finished) and ``on_killed`` outputs."""
        import distributed
        from coffea.util import rich_bar

        with contextlib.ExitStack() as stack:
            if self.ex.status:
                progress = stack.enter_context(rich_bar())
                task = progress.add_task(
                    self.ex.desc, total=len(items), unit=self.ex.unit
                )

                def bar() -> None:
                    progress.update(task, completed=len(self.done), refresh=True)

                self.bar = bar
            self._submit(items, "chunk")
            while True:
                for fut in self.pending:
                    self._collect(fut)
                    self._schedule()
                final = self.ready[0] if self.ready else None
                if final is not None:
                    distributed.wait(final)
                if final is None or final.status == "finished":
                    if self.fatal is not None:
                        raise self.fatal
                    return final, self.replaced
                # its worker died after it finished and the recomputation was killed too
                self.ready.clear()
                self._collect(final)
                self._schedule()

    def _submit(self, items: list[Any], kind: Literal["chunk", "alone"]) -> None:
        import warnings

        if self.ex.heavy_input is not None and (
            self.heavy is None or self.heavy.status == "error"
        ):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Large object of size")
                self.heavy = self.client.submit(
                    _identity, self.ex.heavy_input, pure=False
                )
        args = items if self.heavy is None else [(i, self.heavy) for i in items]
        futures = self.client.map(
            self.function,
            args,
            pure=False,
            priority=self.ex.priority,
            retries=self.ex.retries,
        )
        for fut, item in zip(futures, items, strict=True):
            self.tasks[fut.key] = _Task(kind, [item])
            self.pending.add(fut)

    def _collect(self, fut: Any) -> None:
        """File a completed future: output to merge, suspect, killed chunk or error."""
        task = self.tasks[fut.key]
        if fut.status == "finished":
            if task.kind == "merge":
                for inp in task.inputs or ():
                    self.tasks.pop(inp.key, None)
                task.inputs = None
            else:
                self._count(task.items[0])
            self.ready.append(fut)
            return
        err = fut.exception()
        if not _is_killed(err):
            fut.result()  # the chunk's own exception stops the run, as in coffea
        del self.tasks[fut.key]
        if task.kind == "chunk":
            self.suspects.append((task.items[0], err))
        elif task.kind == "alone":
            self._killed(task.items[0], err, alone=True)
        elif task.inputs is None:
            # a finished merge whose data was lost and recomputation killed: redo its chunks
            logger.warning(
                "merged output of %d chunks lost with a killed worker; recomputing them",
                len(task.items),
            )
            self._submit(task.items, "chunk")
        else:
            for inp in task.inputs:
                if inp.status == "error":
                    self._collect(inp)
                else:
                    self.ready.append(inp)

    def _schedule(self) -> None:
        """Merge what is ready; once nothing else runs, rerun one suspect alone."""
        import distributed

        if len(self.ready) >= self.ex.treereduction or (
            self.pending.is_empty() and len(self.ready) > 1
        ):
            batch = self.ready[: self.ex.treereduction]
            del self.ready[: self.ex.treereduction]
            fut = self.client.submit(
                self.reducer,
                batch,
                pure=False,
                priority=self.ex.priority + 1,
                retries=self.ex.retries,
            )
            items = [i for f in batch for i in self.tasks[f.key].items]
            self.tasks[fut.key] = _Task("merge", items, batch)
            self.pending.add(fut)
            return
        while self.pending.is_empty() and self.suspects:
            item, err = self.suspects.pop(0)
            if self.isolated >= self.ex.isolate_killed:
                self._killed(item, err, alone=False)
                continue
            self.isolated += 1
            distributed.wait(self.ready)  # no recomputation of lost outputs alongside
            logger.warning(
                "chunk %s entries %d-%d ended in KilledWorker; running it again alone",
                item.filename,
                item.entrystart,
                item.entrystop,
            )
            self._submit([item], "alone")

    def _killed(self, item: Any, err: BaseException, *, alone: bool) -> None:
        how = (
            "again when run alone"
            if alone
            else f"(not rerun alone: more than {self.ex.isolate_killed} chunks ended so)"
        )
        msg = (
            f"chunk {item.filename} (dataset {item.dataset}, tree {item.treename}, entries "
            f"{item.entrystart}-{item.entrystop}) killed its dask worker {how}: likely a "
            "segfault or the worker memory limit"
        )
        error = RuntimeError(msg)
        error.__cause__ = err
        self._count(item)
        if self.ex.on_killed is None:
            logger.error("%s", msg)
            self.fatal = self.fatal or error
            return
        logger.warning("%s; skipping it", msg)
        self.replaced.append(self.ex.on_killed(item, error))

    def _count(self, item: Any) -> None:
        self.done.add(item)
        if self.bar is not None:
            self.bar()
