"""Evaluators behind :class:`~jec_coffea.standard.JECStack`: coffea (text) and correctionlib (JSON).

Both take flat float64 numpy arrays of the jets (``JetEta``, ``JetPt`` = raw pT in GeV,
``JetA``, ``Rho`` in GeV) and return one factor array per level, applied sequentially: the
``JetPt`` each level sees is the raw pT times the factors of the levels before it, as CMS's
``FactorizedJetCorrector`` does. The heavy handles (coffea lookups compiled from a lambda,
correctionlib's C++ evaluator) are built on first use and left out of pickles, so a stack
travels cheaply to dask workers and is rebuilt there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["CoffeaTextBackend", "CorrectionlibBackend"]

log = logging.getLogger(__name__)


class CoffeaTextBackend:
    """JEC text files evaluated by ``coffea.jetmet_tools.FactorizedJetCorrector``.

    Parameters
    ----------
    paths
        Text files, one per level, named ``{tag}_{level}_{jettype}.jec.txt[.gz]``.
    names
        Their correction names, in application order.
    """

    kind = "coffea"

    def __init__(self, paths: Sequence[str], names: Sequence[str]) -> None:
        self.paths = tuple(str(p) for p in paths)
        self.names = tuple(names)
        self._corrector: Any = None
        self._evaluator: Any = None

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "names": self.names}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["paths"], state["names"])

    def _build(self) -> None:
        from coffea.jetmet_tools import FactorizedJetCorrector
        from coffea.lookup_tools import extractor

        ext = extractor()
        ext.add_weight_sets([f"* * {p}" for p in self.paths])
        ext.finalize()
        self._evaluator = ext.make_evaluator()
        self._corrector = FactorizedJetCorrector(
            **{name: self._evaluator[name] for name in self.names}
        )
        log.debug("built coffea FactorizedJetCorrector for %s", ", ".join(self.names))

    @property
    def corrector(self) -> Any:
        """coffea ``FactorizedJetCorrector`` of the stack (built on first use)."""
        if self._corrector is None:
            self._build()
        return self._corrector

    @property
    def evaluator(self) -> Any:
        """coffea ``lookup_tools`` evaluator holding one lookup per level."""
        if self._evaluator is None:
            self._build()
        return self._evaluator

    def signature(self) -> tuple[str, ...]:
        """Inputs the levels need (``JetEta``, ``JetPt``, ``JetA``, ``Rho``)."""
        return tuple(self.corrector.signature)

    def sub_factors(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Per-level factors, in application order, each an (N,) float array."""
        args = {k: inputs[k] for k in self.signature()}
        return [np.asarray(f) for f in self.corrector.getSubCorrections(**args)]


class CorrectionlibBackend:
    """JEC levels of a correctionlib JSON, evaluated one by one with correctionlib.

    Parameters
    ----------
    json_text
        A correction set (schema v2) holding at least the corrections in ``names``.
    names
        Correction names, in application order.
    """

    kind = "correctionlib"

    def __init__(self, json_text: str, names: Sequence[str]) -> None:
        self.json_text = json_text
        self.names = tuple(names)
        self._cset: Any = None

    def __getstate__(self) -> dict:
        return {"json_text": self.json_text, "names": self.names}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["json_text"], state["names"])

    @property
    def correction_set(self) -> Any:
        """correctionlib ``CorrectionSet`` evaluator (built on first use)."""
        if self._cset is None:
            import correctionlib

            self._cset = correctionlib.CorrectionSet.from_string(self.json_text)
        return self._cset

    def signature(self) -> tuple[str, ...]:
        """Inputs the levels need, in order of first use."""
        out: list[str] = []
        for name in self.names:
            for var in self.correction_set[name].inputs:
                if var.name not in out:
                    out.append(var.name)
        return tuple(out)

    def sub_factors(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Per-level factors, in application order, each an (N,) float64 array."""
        pt = np.asarray(inputs["JetPt"], dtype=np.float64)
        factors = []
        for name in self.names:
            corr = self.correction_set[name]
            args = [
                pt if v.name == "JetPt" else np.asarray(inputs[v.name], np.float64)
                for v in corr.inputs
            ]
            factor = np.asarray(corr.evaluate(*args), dtype=np.float64)
            factors.append(factor)
            pt = pt * factor
        return factors
