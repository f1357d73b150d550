"""Run on HTCondor or SLURM worker jobs through dask-jobqueue.

Usage::

    python examples/batch_jobqueue.py htcondor|slurm FILESET.json OUT_DIR [--jobs N] [--dry-run]

``--dry-run`` prints the job script that would be submitted and stops. Otherwise N jobs are
submitted (each one dask worker process per core), the fileset is processed and the jobs end
with the script. The input files and OUT_DIR (which holds the checkpoints) must be reachable
from the worker nodes, e.g. on EOS/AFS or over xrootd; the workers run this Python
environment (shared file system or container). Needs ``pip install 'jec-coffea[cluster]'``.
The command-line equivalent is ``jec-coffea run --cluster htcondor --workers N ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jec_coffea import outputs
from jec_coffea.commands.run import load_fileset  # fileset JSON or data.yaml
from jec_coffea.processors import ResponseProcessor
from jec_coffea.runner import jobqueue_cluster, make_executor, open_client, run_fileset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("htcondor", "slurm"))
    parser.add_argument("fileset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--memory", default="4GB")
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    options = {
        "cores": args.cores,
        "memory": args.memory,
        "log_directory": str(args.out / "jobs"),
    }
    if args.dry_run:
        with jobqueue_cluster(args.kind, **options) as cluster:
            print(cluster.job_script())
        return 0
    fileset = load_fileset(str(args.fileset))
    args.out.mkdir(parents=True, exist_ok=True)
    with open_client(
        cluster=args.kind, workers=args.jobs, jobqueue_options=options
    ) as client:
        report = run_fileset(
            fileset,
            ResponseProcessor(methods=["raw", "nanoaod", "pnet"], split="test"),
            executor=make_executor("dask", client=client, status=True),
            checkpoint_dir=str(args.out / "checkpoints"),
            resume=True,  # resubmitting the script completes an interrupted run
        )
    outputs.save_coffea(report.output, args.out / outputs.COFFEA_NAME)
    return 0 if report.complete else 1


if __name__ == "__main__":
    sys.exit(main())
