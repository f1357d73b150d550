"""The standard CMS jet energy correction as one object: :class:`JECStack`.

A stack is L1FastJet -> L2Relative [-> L3Absolute -> L2L3Residual] of one tag and jet type,
loaded from CMS text files (evaluated by ``coffea.jetmet_tools``) or from a CMS correctionlib
JSON (evaluated by correctionlib). Whatever order the levels are given in, they are applied in
that order, each on the pT after the previous ones. :meth:`JECStack.factor` takes numpy,
awkward or dask-awkward jets (flatten, evaluate, restore) and returns the total factor
pT_corr / pT_raw.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputFileError, MissingBranchError, closest
from .backends import CoffeaTextBackend, CorrectionlibBackend
from .naming import (
    LEVELS,
    RHO_BRANCHES,
    correction_name_of_file,
    parse_correction_name,
)
from .textfile import read_jec_text

__all__ = ["JECStack", "event_rho"]

log = logging.getLogger(__name__)

_JSON_SPEC = re.compile(r"^(?P<path>.+\.json(?:\.gz)?):(?P<tag>[^:]+):(?P<jet>[^:]+)$")
_TEXT_GLOBS = ("*.jec.txt", "*.jec.txt.gz")
_ARG_OF_INPUT = {"JetPt": "pt_raw", "JetEta": "eta", "JetA": "area", "Rho": "rho"}


def _select_levels(available: Sequence[str], levels: Sequence[str] | None, where: str):
    if levels is None:
        chosen = [lv for lv in LEVELS if lv in available]
    else:
        unknown = [lv for lv in levels if lv not in LEVELS]
        if unknown:
            msg = f"unknown JEC level(s) {unknown}; known: {', '.join(LEVELS)}"
            raise ConfigError(msg)
        missing = [lv for lv in levels if lv not in available]
        if missing:
            msg = f"{where}: level(s) {missing} not found; available: {list(available)}"
            raise ConfigError(msg)
        chosen = [lv for lv in LEVELS if lv in levels]
    if not chosen:
        msg = f"{where}: no JEC level among {', '.join(LEVELS)}"
        raise ConfigError(msg)
    return chosen


@functools.lru_cache(maxsize=4)
def _json_corrections(path: str, mtime_ns: int, size: int) -> dict[str, dict]:
    """Corrections of a correctionlib JSON by name; cached, as CMS files take ~1 s to parse."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    log.debug("parsed %s (%d bytes, mtime %d)", path, size, mtime_ns)
    return {c["name"]: c for c in doc["corrections"]}


class JECStack:
    """L1FastJet -> L2Relative [-> L3Absolute -> L2L3Residual] of one tag and jet type.

    Build it with :meth:`from_text`, :meth:`from_correctionlib` or :meth:`from_spec`. The
    object is picklable (evaluators are rebuilt on first use after unpickling), so it can sit
    in a coffea processor sent to dask workers.
    """

    def __init__(
        self,
        backend: CoffeaTextBackend | CorrectionlibBackend,
        *,
        tag: str,
        jet_type: str,
        levels: Sequence[str],
        source: str,
    ) -> None:
        self._backend = backend
        self.tag = tag
        """Campaign, version and data type, e.g. ``Summer19UL18_V5_MC``."""
        self.jet_type = jet_type
        """E.g. ``AK4PFchs``."""
        self.levels = tuple(levels)
        """Levels in application order."""
        self.source = source
        """Files the stack was read from (for messages and provenance)."""

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_text(
        cls, paths: Sequence[str | Path], *, levels: Sequence[str] | None = None
    ) -> JECStack:
        """Load CMS JEC text files, applied through ``coffea.jetmet_tools``.

        Parameters
        ----------
        paths
            ``{tag}_{level}_{jettype}.jec.txt[.gz]`` files of one tag and jet type, any order.
        levels
            Levels to use (default: every one of L1FastJet, L2Relative, L3Absolute,
            L2L3Residual found).

        Raises
        ------
        InputFileError
            A file is missing or malformed (file and line named).
        ConfigError
            A name coffea rejects, files of different tags or jet types, a level twice.
        """
        paths = [Path(p) for p in paths]
        if not paths:
            msg = "no JEC text files given"
            raise ConfigError(msg)
        by_level: dict[str, Path] = {}
        stacks: set[tuple[str, str]] = set()
        for path in paths:
            if not path.is_file():
                raise InputFileError(str(path), "no such JEC text file")
            name = parse_correction_name(
                correction_name_of_file(path), source=str(path), require_coffea=True
            )
            if name.level in by_level:
                msg = (
                    f"level {name.level} given twice: {by_level[name.level]} and {path}"
                )
                raise ConfigError(msg)
            read_jec_text(path)  # validates with clear, line-numbered errors
            by_level[name.level] = path
            stacks.add((name.tag, name.jet_type))
        if len(stacks) > 1:
            found = ", ".join(f"{t} {j}" for t, j in sorted(stacks))
            msg = (
                f"JEC text files of several tags/jet types ({found}); "
                "a stack takes one tag and one jet type"
            )
            raise ConfigError(msg)
        (tag, jet_type) = stacks.pop()
        chosen = _select_levels(list(by_level), levels, ", ".join(map(str, paths)))
        files = [str(by_level[lv]) for lv in chosen]
        names = [f"{tag}_{lv}_{jet_type}" for lv in chosen]
        log.info("JEC stack %s %s from text: %s", tag, jet_type, ", ".join(chosen))
        return cls(
            CoffeaTextBackend(files, names),
            tag=tag,
            jet_type=jet_type,
            levels=chosen,
            source=", ".join(files),
        )

    @classmethod
    def from_correctionlib(
        cls,
        json_path: str | Path,
        tag: str,
        jet_type: str,
        *,
        levels: Sequence[str] | None = None,
    ) -> JECStack:
        """Load the levels ``{tag}_{level}_{jet_type}`` of a CMS correctionlib JSON.

        Parameters
        ----------
        json_path
            E.g. ``2018_UL_jet_jerc.json.gz`` (plain or gzipped).
        tag, jet_type
            E.g. ``"Summer19UL18_V5_MC"``, ``"AK4PFchs"``.
        levels
            Levels to use (default: every standard level present).

        Raises
        ------
        InputFileError
            The file cannot be read or is not JSON.
        ConfigError
            The tag or jet type is not in the file (the message lists those that are).
        """
        path = Path(json_path)
        try:
            stat = path.stat()
            corrections = _json_corrections(
                str(path.resolve()), stat.st_mtime_ns, stat.st_size
            )
        except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
            raise InputFileError(
                str(path), f"cannot read correctionlib JSON: {err}"
            ) from err
        available: dict[tuple[str, str], list[str]] = {}
        for name in corrections:
            try:
                parsed = parse_correction_name(name)
            except ConfigError:
                continue
            available.setdefault((parsed.tag, parsed.jet_type), []).append(parsed.level)
        if (tag, jet_type) not in available:
            tags = sorted({t for t, _ in available})
            jets = sorted({j for _, j in available})
            hint = closest(tag, tags)
            msg = (
                f"{path}: no JEC levels for tag {tag!r} and jet type {jet_type!r}; "
                f"tags in the file: {', '.join(tags) or 'none'}; jet types: {', '.join(jets) or 'none'}"
            )
            if hint:
                msg += f"; did you mean {hint[0]!r}?"
            raise ConfigError(msg)
        chosen = _select_levels(available[(tag, jet_type)], levels, str(path))
        names = [f"{tag}_{lv}_{jet_type}" for lv in chosen]
        subset = {"schema_version": 2, "corrections": [corrections[n] for n in names]}
        log.info("JEC stack %s %s from %s: %s", tag, jet_type, path, ", ".join(chosen))
        return cls(
            CorrectionlibBackend(json.dumps(subset), names),
            tag=tag,
            jet_type=jet_type,
            levels=chosen,
            source=f"{path}:{tag}:{jet_type}",
        )

    @classmethod
    def from_spec(cls, spec: str | Sequence[str]) -> JECStack:
        """Build a stack from a command-line spelling.

        Parameters
        ----------
        spec
            One of: ``FILE.json[.gz]:TAG:JETTYPE`` (correctionlib); a directory holding
            ``*.jec.txt[.gz]`` files (e.g. written by ``derive-standard``); one or several
            ``*.jec.txt[.gz]`` files, comma-separated or as a list.

        Raises
        ------
        ConfigError
            For a JSON file without ``:TAG:JETTYPE``, a directory without JEC text files, or
            a spelling that matches none of the forms.
        """
        if not isinstance(spec, str):
            items = [str(s) for s in spec]
            if len(items) == 1:
                return cls.from_spec(items[0])
            return cls.from_text(items)
        spec = spec.strip()
        match = _JSON_SPEC.match(spec)
        if match:
            return cls.from_correctionlib(match["path"], match["tag"], match["jet"])
        if re.search(r"\.json(\.gz)?$", spec):
            msg = (
                f"JEC spec {spec!r}: a correctionlib JSON needs the tag and jet type, "
                "e.g. 2018_UL_jet_jerc.json.gz:Summer19UL18_V5_MC:AK4PFchs"
            )
            raise ConfigError(msg)
        if "," in spec:
            return cls.from_text([s.strip() for s in spec.split(",") if s.strip()])
        path = Path(spec)
        if path.is_dir():
            files = sorted({f for g in _TEXT_GLOBS for f in path.glob(g)})
            if not files:
                msg = f"JEC spec {spec!r}: directory holds no *.jec.txt or *.jec.txt.gz file"
                raise ConfigError(msg)
            return cls.from_text(files)
        if path.name.endswith((".txt", ".txt.gz")):
            return cls.from_text([path])
        msg = (
            f"JEC spec {spec!r} is none of: FILE.json.gz:TAG:JETTYPE, a directory of "
            "*.jec.txt[.gz] files, or comma-separated *.jec.txt[.gz] files"
        )
        raise ConfigError(msg)

    # -- description --------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """``"coffea"`` (text files) or ``"correctionlib"`` (JSON)."""
        return self._backend.kind

    @property
    def names(self) -> tuple[str, ...]:
        """Correction names of the levels, in application order."""
        return self._backend.names

    @property
    def signature(self) -> tuple[str, ...]:
        """Correction inputs the levels need (among JetEta, JetPt, JetA, Rho)."""
        return self._backend.signature()

    @property
    def coffea_corrector(self) -> Any:
        """coffea ``FactorizedJetCorrector`` of a text stack, e.g. for ``CorrectedJetsFactory``."""
        if not isinstance(self._backend, CoffeaTextBackend):
            msg = f"stack {self.source} is evaluated by correctionlib, not coffea"
            raise ConfigError(msg)
        return self._backend.corrector

    def coffea_jec_stack(self) -> Any:
        """A ``coffea.jetmet_tools.JECStack`` of the text levels, for ``CorrectedJetsFactory``."""
        from coffea.jetmet_tools import JECStack as CoffeaJECStack

        ev = self._backend.evaluator if self.backend == "coffea" else None
        if ev is None:
            msg = f"stack {self.source} is evaluated by correctionlib, not coffea"
            raise ConfigError(msg)
        return CoffeaJECStack({name: ev[name] for name in self.names})

    def __repr__(self) -> str:
        return (
            f"JECStack({self.tag!r}, {self.jet_type!r}, levels={list(self.levels)}, "
            f"backend={self.backend!r})"
        )

    # -- evaluation ---------------------------------------------------------------------
    def _flat_factors(self, pt_raw, eta, area, rho) -> list[np.ndarray]:
        given = {"JetPt": pt_raw, "JetEta": eta, "JetA": area, "Rho": rho}
        inputs = {}
        for key in self.signature:
            if given.get(key) is None:
                msg = (
                    f"JEC levels {', '.join(self.names)} need {_ARG_OF_INPUT.get(key, key)} "
                    f"({key}); pass it to factor()"
                )
                raise ConfigError(msg)
            inputs[key] = np.asarray(given[key], dtype=np.float64)
        return self._backend.sub_factors(inputs)

    def _numpy_factors(self, pt_raw, eta, area, rho) -> list[np.ndarray]:
        arrays = [
            np.asarray(a, dtype=np.float64) if a is not None else None
            for a in (pt_raw, eta, area, rho)
        ]
        present = [a for a in arrays if a is not None]
        shape = np.broadcast_shapes(*(a.shape for a in present))
        flat = [
            np.broadcast_to(a, shape).reshape(-1) if a is not None else None
            for a in arrays
        ]
        return [f.reshape(shape) for f in self._flat_factors(*flat)]

    def _awkward_factors(self, pt_raw, eta, area, rho) -> list:
        import awkward as ak

        names = [
            n
            for n, a in zip(range(4), (pt_raw, eta, area, rho), strict=True)
            if a is not None
        ]
        arrays = ak.broadcast_arrays(
            *(a for a in (pt_raw, eta, area, rho) if a is not None)
        )
        full: list = [None] * 4
        for i, arr in zip(names, arrays, strict=True):
            full[i] = arr
        template = full[0]
        if "?" in str(ak.type(template)):
            msg = (
                "JEC inputs with missing values (option type) cannot be corrected; "
                "select or ak.fill_none them first"
            )
            raise ConfigError(msg)
        if ak.backend(template) == "typetracer":
            # dask-awkward's column optimisation runs the graph on typetracers: mark the
            # inputs as needed and return the output's type without data.
            for arr in full:
                if arr is not None:
                    ak.typetracer.touch_data(arr)
            return [ak.values_astype(template, np.float64)] * len(self.levels)
        flat = [
            ak.to_numpy(ak.flatten(a, axis=None)) if a is not None else None
            for a in full
        ]
        counts = [
            ak.flatten(ak.num(template, axis=d), axis=None)
            for d in range(template.ndim - 1, 0, -1)
        ]
        out = []
        for factor in self._flat_factors(*flat):
            res = ak.Array(factor)
            for c in counts:
                res = ak.unflatten(res, c)
            out.append(res)
        return out

    def _dispatch(self, pt_raw, eta, area, rho) -> list:
        kind = type(pt_raw).__module__.split(".")[0]
        if kind == "dask_awkward":
            return [
                self._dask_level(pt_raw, eta, area, rho, i)
                for i in range(len(self.levels))
            ]
        if kind == "awkward":
            return self._awkward_factors(pt_raw, eta, area, rho)
        return self._numpy_factors(pt_raw, eta, area, rho)

    def _dask_level(self, pt_raw, eta, area, rho, index: int | None):
        import awkward as ak
        import dask_awkward as dak

        def compute(*args):
            factors = self._awkward_factors(*args)
            if index is None:
                total = factors[0]
                for f in factors[1:]:
                    total = total * f
                return total
            return factors[index]

        args = (pt_raw, eta, area, rho)
        zero = tuple(
            ak.Array(a._meta.layout.form.length_zero_array()) if a is not None else None
            for a in args
        )
        out = compute(*zero)
        meta = ak.Array(out.layout.to_typetracer(forget_length=True))
        label = f"jec-{self.tag}-{self.jet_type}-" + (
            "total" if index is None else self.levels[index]
        )
        return dak.map_partitions(compute, *args, label=label, meta=meta)

    def level_factors(self, pt_raw, eta, area=None, rho=None) -> dict[str, Any]:
        """Factor of each level, applied sequentially (level k sees pT after levels < k).

        Parameters are as for :meth:`factor`. Returns ``{level: factor}`` in application
        order; their product is :meth:`factor`.
        """
        return dict(
            zip(self.levels, self._dispatch(pt_raw, eta, area, rho), strict=True)
        )

    def factor(self, pt_raw, eta, area=None, rho=None) -> Any:
        """Total correction factor pT_corr / pT_raw of the stack.

        Parameters
        ----------
        pt_raw
            Raw jet pT in GeV (``Jet_pt * (1 - Jet_rawFactor)``): numpy, awkward (events x
            jets) or dask-awkward.
        eta
            Jet pseudorapidity, same shape.
        area
            Jet area (needed by L1FastJet).
        rho
            Pileup energy density in GeV, per jet or per event (broadcast to the jets); the
            NanoAOD branch is ``fixedGridRhoFastjetAll`` (Run 2) or
            ``Rho_fixedGridRhoFastjetAll`` (Run 3), see :func:`event_rho`.

        Returns
        -------
        array
            Same type and shape as ``pt_raw`` (float64); corrected pT = pt_raw * factor.
        """
        if type(pt_raw).__module__.split(".")[0] == "dask_awkward":
            return self._dask_level(pt_raw, eta, area, rho, None)
        factors = self._dispatch(pt_raw, eta, area, rho)
        total = factors[0]
        for f in factors[1:]:
            total = total * f
        return total


def event_rho(events: Any) -> Any:
    """The per-event rho of NanoEvents, whichever run's branch name the file uses.

    Parameters
    ----------
    events
        coffea NanoEvents (eager or dask).

    Returns
    -------
    array
        ``events.Rho.fixedGridRhoFastjetAll`` (Run 3) or ``events.fixedGridRhoFastjetAll``
        (Run 2), in GeV.

    Raises
    ------
    MissingBranchError
        If neither is present (lists the closest fields).
    """
    fields = list(events.fields)
    if "Rho" in fields and "fixedGridRhoFastjetAll" in events.Rho.fields:
        return events.Rho.fixedGridRhoFastjetAll
    if "fixedGridRhoFastjetAll" in fields:
        return events.fixedGridRhoFastjetAll
    raise MissingBranchError(
        RHO_BRANCHES[0],
        available=fields,
        reason="L1FastJet needs rho: Rho_fixedGridRhoFastjetAll (Run 3) or "
        "fixedGridRhoFastjetAll (Run 2)",
    )
