"""Fill the response histograms on a local dask cluster (one worker process per core).

Usage::

    python examples/run_local_cluster.py FILESET.json OUT_DIR [JEC_SPEC]

The library equivalent of ``jec-coffea run --fileset FILESET.json --jec JEC_SPEC -o OUT_DIR``:
every finished chunk is checkpointed in OUT_DIR/checkpoints, so running the script again with
``RESUME=1`` completes an interrupted run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jec_coffea import outputs
from jec_coffea.commands.run import load_fileset  # fileset JSON or data.yaml
from jec_coffea.processors import ResponseProcessor
from jec_coffea.runner import make_executor, open_client, run_fileset
from jec_coffea.standard import JECStack


def main(fileset_path: str, out_dir: str, jec_spec: str | None = None) -> int:
    fileset = load_fileset(fileset_path)
    jec = JECStack.from_spec(jec_spec) if jec_spec else None
    methods = ["raw", "nanoaod", "pnet"] + (["standard"] if jec else [])
    proc = ResponseProcessor(jec=jec, methods=methods, split="test")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open_client() as client:  # LocalCluster, os.cpu_count() worker processes
        report = run_fileset(
            fileset,
            proc,
            executor=make_executor("dask", client=client, status=True),
            chunksize=100_000,
            checkpoint_dir=str(out / "checkpoints"),
            resume=os.environ.get("RESUME") == "1",
        )
    outputs.save_coffea(report.output, out / outputs.COFFEA_NAME)
    outputs.save_root(report.output, out / outputs.ROOT_NAME)
    for f in report.files:
        print(f["file"], f["layout"], f["status"], f"{f['chunks']} chunks")
    return 0 if report.complete else 1


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:4]))
