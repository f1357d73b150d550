"""Run on an existing dask cluster by joining its scheduler.

Start a cluster anywhere the input files are readable, e.g.::

    dask scheduler --port 8786 &
    dask worker tcp://HOST:8786 --nworkers 4 --nthreads 1 &

then::

    python examples/join_scheduler.py tcp://HOST:8786 FILESET.json OUT_DIR

(the command-line equivalent is ``jec-coffea run --scheduler tcp://HOST:8786 ...``). The
cluster is not shut down at the end: it belongs to whoever started it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jec_coffea import outputs
from jec_coffea.commands.run import load_fileset  # fileset JSON or data.yaml
from jec_coffea.processors import ResponseProcessor
from jec_coffea.runner import make_executor, open_client, run_fileset


def main(address: str, fileset_path: str, out_dir: str) -> int:
    fileset = load_fileset(fileset_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open_client(scheduler=address) as client:
        print(f"{len(client.scheduler_info()['workers'])} workers at {address}")
        report = run_fileset(
            fileset,
            ResponseProcessor(methods=["raw", "nanoaod", "pnet"], split="test"),
            executor=make_executor("dask", client=client, status=True),
            checkpoint_dir=str(out / "checkpoints"),  # must be visible to the workers
            skip_bad_files=True,
        )
    outputs.save_coffea(report.output, out / outputs.COFFEA_NAME)
    for failure in report.failures:
        print("FAILED", failure["file"], failure["error_type"], failure["error"])
    return 0 if report.complete else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
