"""Where the work of a run executes: dask clients (local, scheduler, jobqueue) and coffea executors.

:func:`open_client` gives the dask client of a run: a :class:`distributed.LocalCluster` with
one single-threaded worker process per core (the default), an existing scheduler
(``scheduler="tcp://host:port"``), or an HTCondor / SLURM cluster through dask-jobqueue
(:func:`jobqueue_cluster`). :func:`make_executor` wraps it in coffea's ``DaskExecutor``; the
``futures`` and ``iterative`` executors run without dask, for debugging. Retries are off: a
failing chunk is reported at once and ``--resume`` (:mod:`jec_coffea.runner`) is the retry.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from coffea import processor

from .errors import ConfigError

__all__ = ["EXECUTORS", "jobqueue_cluster", "make_executor", "open_client"]

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
    """
    if kind == "dask":
        if client is None:
            msg = "make_executor('dask') needs a dask client (see open_client)"
            raise ConfigError(msg)
        return processor.DaskExecutor(client=client, status=status, retries=0)
    if kind == "futures":
        return processor.FuturesExecutor(
            workers=workers or os.cpu_count() or 1, status=status, retries=0
        )
    if kind == "iterative":
        return processor.IterativeExecutor(status=status, retries=0)
    msg = f"--executor {kind!r}: expected one of {', '.join(EXECUTORS)}"
    raise ConfigError(msg)
