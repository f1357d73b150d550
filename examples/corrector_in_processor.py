"""Apply a jec-coffea DNN calibration inside your own coffea processor.

Usage::

    python examples/corrector_in_processor.py MODEL.onnx FILE.root [FILE.root ...]

``DNNJetCorrector.from_onnx`` is created once on the client; the processor (and the corrector
in it) is pickled to the workers, where the onnxruntime session is created lazily on first
use. ``corrector.apply(events)`` returns ``events.Jet`` with ``pt_raw``, ``pt_dnn``,
``dnn_factor`` and ``dnn_valid`` added; the features are those of training.
"""

from __future__ import annotations

import sys

import awkward as ak
import hist
from coffea import processor

from jec_coffea.corrector import DNNJetCorrector
from jec_coffea.runner import LayoutSchema, make_executor, open_client


class DijetBalance(processor.ProcessorABC):
    """A user analysis: leading-jet pT spectrum before and after the DNN correction."""

    def __init__(self, corrector: DNNJetCorrector) -> None:
        self.corrector = corrector

    def process(self, events):
        jets = self.corrector.apply(events)
        jets = jets[jets.dnn_valid & (abs(jets.eta) < 2.5)]
        leading = ak.firsts(jets[ak.argsort(jets.pt_dnn, ascending=False)])
        leading = leading[~ak.is_none(leading)]
        h = (
            hist.Hist.new.StrCat(["raw", "dnn"], name="method")
            .Log(40, 20, 2000, name="pt", label="leading jet pT [GeV]")
            .Weight()
        )
        h.fill(method="raw", pt=ak.to_numpy(leading.pt_raw))
        h.fill(method="dnn", pt=ak.to_numpy(leading.pt_dnn))
        return {"leading_pt": h, "n_events": len(events)}

    def postprocess(self, accumulator):
        return accumulator


def main(model: str, files: list[str]) -> dict:
    corrector = DNNJetCorrector.from_onnx(model)
    fileset = {"sample": {"files": dict.fromkeys(files, "Events")}}
    with open_client(workers=2) as client:
        runner = processor.Runner(
            executor=make_executor("dask", client=client, status=True),
            schema=LayoutSchema,  # NanoAOD, PFNano or old PFNano, per file
            chunksize=50_000,
        )
        return runner(fileset, DijetBalance(corrector))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = main(sys.argv[1], sys.argv[2:])
    print(out["leading_pt"])
    print(f"{out['n_events']} events")
