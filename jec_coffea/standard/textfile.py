"""Read and write CMS JEC text files (``*.jec.txt`` and ``*.jec.txt.gz``).

The format is CMSSW's ``JetCorrectorParameters``. The first line is a header in braces::

    {nBin binVar... nPar parVar... formula Correction level}

e.g. ``{1 JetEta 3 Rho JetPt JetA max(0.0001,1-(z/y)*(...)) Correction L1FastJet}``. Each
following line is one record::

    binLo binHi [binLo2 binHi2] N varLo varHi [varLo2 varHi2 ...] p0 p1 ...

where ``N`` counts the values after it: the validity range of every formula variable, then
the formula parameters. L2Relative exists in two forms, an analytic fit binned in eta only and
a "spline" binned in eta and pT. A table is held columnar (one numpy row per record), so a
derivation can build one from fitted arrays and :func:`write_jec_text` it.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputFileError
from .formula import FormulaSyntaxError, clamped_expression, formula_parameter_count

__all__ = ["JecTextTable", "read_jec_text", "write_jec_text"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class JecTextTable:
    """One CMS JEC text table: header and records, columnar.

    Shapes use ``R`` = number of records, ``B`` = number of bin variables, ``V`` = number of
    formula variables, ``P`` = number of formula parameters.
    """

    bin_vars: tuple[str, ...]
    """Binned variables, e.g. ``("JetEta",)`` or ``("JetEta", "JetPt")``."""
    par_vars: tuple[str, ...]
    """Formula variables ``x, y, z, t`` in order, e.g. ``("Rho", "JetPt", "JetA")``."""
    formula: str
    """TFormula expression of the header (``"1"`` for a constant correction)."""
    level: str
    """Level word of the header (L2L3Residual files say ``L2Relative`` here)."""
    bin_lo: np.ndarray
    """(R, B) lower bin bounds."""
    bin_hi: np.ndarray
    """(R, B) upper bin bounds."""
    var_lo: np.ndarray
    """(R, V) lower clamp of each formula variable."""
    var_hi: np.ndarray
    """(R, V) upper clamp of each formula variable."""
    params: np.ndarray
    """(R, P) formula parameters."""
    source: str = field(default="", compare=False)
    """File the table was read from (for messages)."""

    def __post_init__(self) -> None:
        self.bin_vars = tuple(self.bin_vars)
        self.par_vars = tuple(self.par_vars)
        if not self.bin_vars:
            msg = "a JEC table needs at least one binned variable"
            raise ConfigError(msg)
        if any(
            " " in s or not s for s in (*self.bin_vars, *self.par_vars, self.formula)
        ):
            msg = (
                "JEC variable names and the formula must be non-empty and without spaces: "
                f"{self.bin_vars}, {self.par_vars}, {self.formula!r}"
            )
            raise ConfigError(msg)
        n = np.asarray(self.bin_lo).shape[0] if np.ndim(self.bin_lo) else 0
        if n == 0:
            msg = "a JEC table needs at least one record"
            raise ConfigError(msg)
        shapes = {
            "bin_lo": (n, len(self.bin_vars)),
            "bin_hi": (n, len(self.bin_vars)),
            "var_lo": (n, len(self.par_vars)),
            "var_hi": (n, len(self.par_vars)),
            "params": (n, -1),
        }
        for name, shape in shapes.items():
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            try:
                arr = arr.reshape(shape)
            except ValueError as err:
                msg = (
                    f"JEC table field {name} of shape {arr.shape} does not fit {shape}"
                )
                raise ConfigError(msg) from err
            setattr(self, name, arr)

    @property
    def n_records(self) -> int:
        """Number of records (bins)."""
        return int(self.bin_lo.shape[0])

    @property
    def header(self) -> str:
        """The header line, braces included."""
        words = [
            str(len(self.bin_vars)),
            *self.bin_vars,
            str(len(self.par_vars)),
            *self.par_vars,
            self.formula,
            "Correction",
            self.level,
        ]
        return "{" + " ".join(words) + "}"

    def clamped_expression(self) -> str:
        """The formula with variables clamped as in CMS's correctionlib files (see formula.py)."""
        return clamped_expression(self.formula, len(self.par_vars))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JecTextTable):
            return NotImplemented
        return (self.bin_vars, self.par_vars, self.formula, self.level) == (
            other.bin_vars,
            other.par_vars,
            other.formula,
            other.level,
        ) and all(
            np.array_equal(getattr(self, k), getattr(other, k))
            for k in ("bin_lo", "bin_hi", "var_lo", "var_hi", "params")
        )

    __hash__ = None  # type: ignore[assignment]


def _open_text(path: Path, mode: str):
    if path.name.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="ascii")
    return path.open(mode, encoding="ascii")


def _parse_header(line: str, path: str, lineno: int) -> tuple:
    def bad(why: str) -> InputFileError:
        return InputFileError(
            path, f"line {lineno}: malformed JEC header {line.strip()!r}: {why}"
        )

    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        msg = "expected '{nBin binVars... nPar parVars... formula Correction level}'"
        raise bad(msg)
    words = text[1:-1].split()
    try:
        n_bin = int(words[0])
        n_par = int(words[n_bin + 1])
    except (IndexError, ValueError):
        msg = "the numbers of bin and formula variables must be integers"
        raise bad(msg) from None
    if n_bin < 1 or n_par < 0:
        msg = f"{n_bin} bin variables, {n_par} formula variables"
        raise bad(msg)
    rest = words[n_bin + 2 + n_par :]
    if len(rest) < 1:
        msg = "no formula after the variable names"
        raise bad(msg)
    formula, trailing = rest[0], rest[1:]
    if trailing and trailing[0] in ("Response", "Resolution"):
        msg = f"{trailing[0]!r} tables are not jet energy corrections"
        raise bad(msg)
    if trailing and trailing[0] == "Correction":
        trailing = trailing[1:]
    level = trailing[0] if trailing else ""
    return (
        tuple(words[1 : n_bin + 1]),
        tuple(words[n_bin + 2 : n_bin + 2 + n_par]),
        formula,
        level,
    )


def read_jec_text(path: str | Path) -> JecTextTable:
    """Read a CMS JEC text file, plain or gzipped.

    Parameters
    ----------
    path
        ``*.jec.txt`` or ``*.jec.txt.gz`` (gzip is recognised by the ``.gz`` suffix).

    Returns
    -------
    JecTextTable
        Values as float64 exactly as written (CMSSW stores them as float; the correctionlib
        converter rounds to float32 the way the official files do).

    Raises
    ------
    InputFileError
        If the file is missing or unreadable, or a line is malformed: the message names the
        file and the line number (bad header, non-numeric value, wrong value count, a record
        with fewer parameters than the formula uses, a formula that cannot be tokenised,
        an uncertainty-source ``[section]``).
    """
    path = Path(path)
    src = str(path)
    try:
        with _open_text(path, "r") as fh:
            lines = fh.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputFileError(src, f"cannot read JEC text file: {err}") from err

    header = None
    rows: list[list[float]] = []
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("["):
            msg = f"line {lineno}: section {text!r}: uncertainty-source files are not JEC tables"
            raise InputFileError(src, msg)
        if header is None:
            header = _parse_header(text, src, lineno)
            bin_vars, par_vars, formula, level = header
            try:
                n_formula = formula_parameter_count(formula)
                clamped_expression(formula, len(par_vars))
            except FormulaSyntaxError as err:
                raise InputFileError(src, f"line {lineno}: {err}") from err
            n_fixed = 2 * len(bin_vars)
            continue
        if text.startswith("{"):
            msg = f"line {lineno}: a second header {text!r} (one table per file)"
            raise InputFileError(src, msg)
        words = text.split()
        try:
            values = [float(w) for w in words]
        except ValueError:
            bad = next(w for w in words if not _is_float(w))
            msg = f"line {lineno}: value {bad!r} is not a number in record {text!r}"
            raise InputFileError(src, msg) from None
        if len(values) < n_fixed + 1:
            msg = (
                f"line {lineno}: record {text!r} has {len(values)} values, fewer than the "
                f"{n_fixed} bin bounds + count the header announces"
            )
            raise InputFileError(src, msg)
        count = values[n_fixed]
        n_after = len(values) - n_fixed - 1
        if count != int(count) or int(count) != n_after:
            msg = (
                f"line {lineno}: record announces {words[n_fixed]} values after the bin "
                f"bounds but has {n_after}"
            )
            raise InputFileError(src, msg)
        n_params = n_after - 2 * len(par_vars)
        if n_params < n_formula:
            msg = (
                f"line {lineno}: record has {max(n_params, 0)} parameters after the "
                f"{len(par_vars)} variable ranges, but the formula uses {n_formula}"
            )
            raise InputFileError(src, msg)
        if rows and len(values) != len(rows[0]):
            msg = (
                f"line {lineno}: record has {len(values)} values, the first record "
                f"{len(rows[0])}; all records of a table have the same parameter count"
            )
            raise InputFileError(src, msg)
        rows.append(values)
    if header is None:
        raise InputFileError(src, "empty JEC text file (no header line)")
    if not rows:
        raise InputFileError(src, "JEC text file has a header but no records")

    table = np.asarray(rows, dtype=np.float64)
    nb, nv = 2 * len(bin_vars), len(par_vars)
    ranges = table[:, nb + 1 : nb + 1 + 2 * nv]
    out = JecTextTable(
        bin_vars=bin_vars,
        par_vars=par_vars,
        formula=formula,
        level=level,
        bin_lo=table[:, 0:nb:2],
        bin_hi=table[:, 1:nb:2],
        var_lo=ranges[:, 0::2],
        var_hi=ranges[:, 1::2],
        params=table[:, nb + 1 + 2 * nv :],
        source=src,
    )
    bad_bins = np.flatnonzero(np.any(out.bin_hi < out.bin_lo, axis=1))
    if bad_bins.size:
        msg = f"record {int(bad_bins[0]) + 1}: upper bin bound below the lower one"
        raise InputFileError(src, msg)
    log.debug("read %s: %d records, formula %s", src, out.n_records, formula)
    return out


def _is_float(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def write_jec_text(path: str | Path, table: JecTextTable) -> Path:
    """Write a table in the CMS JEC text format (gzipped if ``path`` ends in ``.gz``).

    Numbers are written in their shortest round-trip form, so :func:`read_jec_text` gives back
    an equal table. Name the file ``{tag}_{level}_{jettype}.jec.txt[.gz]`` (e.g.
    ``Sim_V1_MC_L2Relative_AK4PFchs.jec.txt``): the level and the correction name come from it.

    Parameters
    ----------
    path
        Output file.
    table
        The table; for a derived L2Relative, ``bin_vars=("JetEta",)``, ``par_vars=("JetPt",)``.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    nb = 2 * len(table.bin_vars)
    bins = np.empty((table.n_records, nb))
    bins[:, 0::2], bins[:, 1::2] = table.bin_lo, table.bin_hi
    ranges = np.empty((table.n_records, 2 * len(table.par_vars)))
    ranges[:, 0::2], ranges[:, 1::2] = table.var_lo, table.var_hi
    count = ranges.shape[1] + table.params.shape[1]
    lines = [table.header]
    for b, r, p in zip(
        bins.tolist(), ranges.tolist(), table.params.tolist(), strict=True
    ):
        lines.append(
            " ".join([*map(repr, b), str(count), *map(repr, r), *map(repr, p)])
        )
    with _open_text(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    log.info("wrote %s (%d records)", path, table.n_records)
    return path
