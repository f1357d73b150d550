"""Convert CMS JEC text files to a correctionlib (schema v2) correction set.

The output follows the official CMS ``*_jet_jerc.json.gz`` files (JECDatabase
``createJSONs.py`` / ``jerc2json``) so that analyses can swap one for the other:

- one correction per text file, named as the file (``Summer19UL18_V5_MC_L2Relative_AK4PFchs``),
  inputs sorted by name as CMS does (``JetA, JetEta, JetPt, Rho`` for L1FastJet, ``JetEta,
  JetPt`` for the others);
- a ``binning`` node over the first bin variable (``JetEta``), nested ``binning`` over the second
  one for the two-dimensional "spline" L2Relative, ``flow = 1.0`` (CMS returns 1 outside the
  table) and a ``formula`` node per record;
- each formula variable clamped to the record's range inside the expression
  (``max(min(x,[1]),[0])``, see :mod:`.formula`), the ranges leading the parameter list;
- parameters and bin edges rounded to float32 and written in shortest form, as CMSSW's
  ``JetCorrectorParameters`` holds them (float) and as the official files carry them;
- one ``CompoundCorrection`` per tag and jet type with at least two levels, named
  ``{tag}_L1L2L3Res_{jettype}`` when all four levels are there, with ``inputs_update =
  ["JetPt"]``, ``input_op = output_op = "*"`` (each level sees the pT after the previous ones).

No converter in this direction exists in coffea or correctionlib.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ConfigError, InputFileError
from .naming import LEVEL_SHORT, LEVELS, correction_name_of_file, parse_correction_name
from .textfile import JecTextTable, read_jec_text

__all__ = [
    "INPUT_DESCRIPTIONS",
    "compound_correction",
    "jec_text_to_correctionlib",
    "table_to_correction",
    "write_correction_set",
]

log = logging.getLogger(__name__)

INPUT_DESCRIPTIONS: dict[str, str] = {
    "JetA": "area of the jet",
    "JetEta": "pseudorapidity of the jet",
    "JetPt": "pT of the jet before this correction level (GeV)",
    "JetPhi": "azimuth of the jet",
    "JetE": "energy of the jet before this correction level (GeV)",
    "Rho": "energy density rho (GeV), as a measure of pileup",
}
"""Descriptions of the correctionlib inputs (names as in the official JSON)."""


def _f32(values: np.ndarray) -> list[float]:
    """Round to float32 and return the shortest decimal of each value as a Python float."""
    arr = np.asarray(values, dtype=np.float64).astype(np.float32)
    return arr.astype(str).astype(np.float64).tolist()


def _contiguous_edges(
    lo: np.ndarray, hi: np.ndarray, what: str, source: str
) -> np.ndarray:
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    gaps = np.flatnonzero(lo[1:] != hi[:-1])
    if gaps.size:
        i = int(gaps[0])
        msg = (
            f"bins in {what} are not contiguous: [{lo[i]}, {hi[i]}] is followed by "
            f"[{lo[i + 1]}, {hi[i + 1]}] (correctionlib binning needs adjacent bins)"
        )
        raise InputFileError(source, msg)
    return np.append(lo, hi[-1])


def _binning(table: JecTextTable, expression: str, source: str):
    """Build the binning tree of one table: ``JetEta`` [-> ``JetPt``] -> formula per record."""
    from correctionlib import schemav2 as cs

    params = np.concatenate(
        [
            np.stack([table.var_lo, table.var_hi], axis=2).reshape(table.n_records, -1),
            table.params,
        ],
        axis=1,
    )
    params_f32 = np.asarray(
        _f32(params) if params.size else np.zeros(params.shape)
    ).reshape(params.shape)

    def formula(row: int):
        return cs.Formula(
            nodetype="formula",
            expression=expression,
            parser="TFormula",
            variables=list(table.par_vars),
            parameters=params_f32[row].tolist(),
        )

    if len(table.bin_vars) > 2:
        msg = (
            f"{len(table.bin_vars)} bin variables; JEC levels are binned in one or two "
            f"({', '.join(table.bin_vars)})"
        )
        raise InputFileError(source, msg)

    outer_lo, outer_hi = table.bin_lo[:, 0], table.bin_hi[:, 0]
    pairs, group = np.unique(
        np.stack([outer_lo, outer_hi], axis=1), axis=0, return_inverse=True
    )
    group = group.reshape(-1)
    edges = _contiguous_edges(pairs[:, 0], pairs[:, 1], table.bin_vars[0], source)
    content = []
    for g in range(len(pairs)):
        rows = np.flatnonzero(group == g)
        if len(table.bin_vars) == 1:
            if rows.size != 1:
                msg = (
                    f"{rows.size} records share the {table.bin_vars[0]} bin "
                    f"[{pairs[g, 0]}, {pairs[g, 1]}]"
                )
                raise InputFileError(source, msg)
            content.append(formula(int(rows[0])))
            continue
        rows = rows[np.argsort(table.bin_lo[rows, 1], kind="stable")]
        what = f"{table.bin_vars[1]} for {table.bin_vars[0]} in [{pairs[g, 0]}, {pairs[g, 1]}]"
        inner = _contiguous_edges(
            table.bin_lo[rows, 1], table.bin_hi[rows, 1], what, source
        )
        content.append(
            cs.Binning(
                nodetype="binning",
                input=table.bin_vars[1],
                edges=_f32(inner),
                content=[formula(int(r)) for r in rows],
                flow=1.0,
            )
        )
    return cs.Binning(
        nodetype="binning",
        input=table.bin_vars[0],
        edges=_f32(edges),
        content=content,
        flow=1.0,
    )


def table_to_correction(table: JecTextTable, name: str, *, description: str = ""):
    """Convert one JEC text table to a correctionlib ``Correction``.

    Parameters
    ----------
    table
        Read with :func:`~jec_coffea.standard.read_jec_text` or built by a derivation.
    name
        Correction name, normally the file name without ``.jec.txt[.gz]``.
    description
        Free text; a default names the level, jet type and source.

    Returns
    -------
    correctionlib.schemav2.Correction
        Checked by building correctionlib's evaluator on it.

    Raises
    ------
    InputFileError
        If the binning is not contiguous, or correctionlib cannot parse the formula (the
        message names the table's file and correctionlib's reason).
    """
    import correctionlib
    from correctionlib import schemav2 as cs

    source = table.source or name
    try:
        expression = table.clamped_expression()
    except ValueError as err:
        raise InputFileError(source, f"line 1: {err}") from err
    names = sorted({*table.bin_vars, *table.par_vars})
    correction = cs.Correction(
        name=name,
        description=description
        or f"{table.level or 'JEC'} {name} converted from {Path(source).name} by jec-coffea {__version__}",
        version=1,
        inputs=[
            cs.Variable(name=n, type="real", description=INPUT_DESCRIPTIONS.get(n, n))
            for n in names
        ],
        output=cs.Variable(
            name="correction", type="real", description="multiplicative JEC factor"
        ),
        data=_binning(table, expression, source),
    )
    probe = cs.CorrectionSet(schema_version=2, corrections=[correction])
    try:
        correctionlib.CorrectionSet.from_string(
            probe.model_dump_json(exclude_unset=True)
        )
    except RuntimeError as err:
        reason = str(err).strip().replace("\n", " | ")
        msg = (
            f"line 1: correctionlib cannot use formula {table.formula!r} "
            f"(rewritten {expression!r}): {reason}"
        )
        raise InputFileError(source, msg) from err
    return correction


def compound_correction(corrections: Sequence, tag: str, jet_type: str):
    """Chain levels of one tag and jet type as CMS's compound ``{tag}_L1L2L3Res_{jettype}``.

    Parameters
    ----------
    corrections
        ``schemav2.Correction`` objects named ``{tag}_{level}_{jet_type}``, any order.
    tag, jet_type
        E.g. ``"Summer19UL18_V5_MC"``, ``"AK4PFchs"``.

    Returns
    -------
    correctionlib.schemav2.CompoundCorrection
        Stack in the order L1FastJet, L2Relative, L3Absolute, L2L3Residual (those present);
        the compound level name is the concatenation of their short names (``L1L2L3Res`` for
        all four, ``L1L2`` for L1FastJet + L2Relative).
    """
    from correctionlib import schemav2 as cs

    by_level = {parse_correction_name(c.name).level: c for c in corrections}
    levels = [lv for lv in LEVELS if lv in by_level]
    short = "".join(LEVEL_SHORT[lv] for lv in levels)
    names = sorted({v.name for lv in levels for v in by_level[lv].inputs})
    return cs.CompoundCorrection(
        name=f"{tag}_{short}_{jet_type}",
        description=f"{' -> '.join(levels)} applied sequentially on the corrected pT",
        inputs=[
            cs.Variable(name=n, type="real", description=INPUT_DESCRIPTIONS.get(n, n))
            for n in names
        ],
        output=cs.Variable(
            name="correction", type="real", description="product of the level factors"
        ),
        inputs_update=["JetPt"],
        input_op="*",
        output_op="*",
        stack=[by_level[lv].name for lv in levels],
    )


def jec_text_to_correctionlib(
    paths: Iterable[str | Path],
    *,
    compound: bool = True,
    description: str | None = None,
):
    """Convert CMS JEC text files to one correctionlib correction set.

    Parameters
    ----------
    paths
        ``*.jec.txt[.gz]`` files named ``{tag}_{level}_{jettype}``; levels L1FastJet,
        L2Relative (analytic or spline form), L3Absolute, L2L3Residual. Several tags and jet
        types may be mixed.
    compound
        Add one compound correction per (tag, jet type) with two or more levels.
    description
        Description of the set.

    Returns
    -------
    correctionlib.schemav2.CorrectionSet
        Schema version 2; write it with :func:`write_correction_set`.

    Raises
    ------
    InputFileError
        For an unreadable or malformed file (file and line named).
    ConfigError
        For a file name that is not ``{tag}_{level}_{jettype}``, the same correction given
        twice, or no files.
    """
    from correctionlib import schemav2 as cs

    paths = [Path(p) for p in paths]
    if not paths:
        msg = "no JEC text files given"
        raise ConfigError(msg)
    corrections = []
    groups: dict[tuple[str, str], list] = {}
    seen: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise InputFileError(str(path), "no such JEC text file")
        name = correction_name_of_file(path)
        parsed = parse_correction_name(name, source=str(path))
        if name in seen:
            msg = f"correction {name!r} given twice: {seen[name]} and {path}"
            raise ConfigError(msg)
        seen[name] = path
        corr = table_to_correction(read_jec_text(path), name)
        corrections.append(corr)
        groups.setdefault((parsed.tag, parsed.jet_type), []).append(corr)
        log.info("converted %s -> %s", path, name)
    compounds = (
        [compound_correction(g, *key) for key, g in groups.items() if len(g) > 1]
        if compound
        else []
    )
    extra = {"compound_corrections": compounds} if compounds else {}
    return cs.CorrectionSet(
        schema_version=2,
        description=description
        or f"JEC converted from CMS text files by jec-coffea {__version__}",
        corrections=corrections,
        **extra,
    )


def write_correction_set(cset, path: str | Path) -> Path:
    """Write a correction set as JSON (gzipped if ``path`` ends in ``.gz``); returns the path."""
    path = Path(path)
    text = cset.model_dump_json(exclude_unset=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    log.info("wrote %s (%d corrections)", path, len(cset.corrections))
    return path
