"""Deterministic train / validation / test split by a hash of the event identity.

The split of a jet depends only on who it is, never on file order, chunking, worker count or
Python's per-process ``hash()`` salt, so the same jet lands in the same split in training, in
the MC-truth derivation of the standard correction and in every evaluation.

The hash
--------
``splitmix64`` (Steele, Lea & Flood 2014; the finaliser of Java's ``SplittableRandom``) on
unsigned 64-bit integers, wrapping modulo 2**64::

    z = x + 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    splitmix64(x) = z ^ (z >> 31)

Key of a jet, chained so that every part changes every bit:

* files with event IDs: ``h = splitmix64(splitmix64(splitmix64(seed ^ run) ^ lumi) ^ event)``
  with ``lumi = luminosityBlock`` or 0 where the file has none. All jets of one event share the
  split (no event is split between training and test);
* files without event IDs (ml-jec, JetClass-II: one entry per jet):
  ``h = splitmix64(splitmix64(splitmix64(seed ^ s) ^ 0) ^ entry)`` with ``s`` the first 8 bytes
  (big-endian) of the file's sha256, so renaming or moving the file keeps the split.

``u = (h >> 11) / 2**53`` is uniform in [0, 1); a jet is ``train`` if ``u < f_train``, ``val`` if
``u < f_train + f_val``, else ``test``. Default fractions 0.6 / 0.2 / 0.2, seed 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import awkward as ak
import numpy as np

from ..errors import ConfigError
from .jet_table import JetTable

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLITS",
    "select_split",
    "split_of",
    "split_uniform",
    "splitmix64",
]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names, in the order of the fractions."""

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)

_U64 = np.uint64
_GAMMA = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a uint64 array (wrapping arithmetic), same shape."""
    z = np.asarray(x, dtype=_U64) + _GAMMA
    z = (z ^ (z >> _U64(30))) * _M1
    z = (z ^ (z >> _U64(27))) * _M2
    return z ^ (z >> _U64(31))


def _u64(values) -> np.ndarray:
    """Integers (possibly signed) as uint64 bit patterns."""
    arr = np.asarray(ak.to_numpy(values) if isinstance(values, ak.Array) else values)
    return (
        arr.astype(np.int64).view(_U64) if arr.dtype.kind == "i" else arr.astype(_U64)
    )


def split_uniform(a, b, c, *, seed: int = 0) -> np.ndarray:
    """Uniform [0, 1) numbers from the chained hash of three integer arrays (see module doc)."""
    h = splitmix64(_U64(seed) ^ _u64(a))
    h = splitmix64(h ^ _u64(b))
    h = splitmix64(h ^ _u64(c))
    return (h >> _U64(11)).astype(np.float64) * 2.0**-53


def _fractions(fractions: Sequence[float] | Mapping[str, float]) -> np.ndarray:
    if isinstance(fractions, Mapping):
        unknown = set(fractions) - set(SPLITS)
        if unknown:
            msg = f"split fractions: unknown split(s) {sorted(unknown)}; expected {SPLITS}"
            raise ConfigError(msg)
        fractions = [float(fractions.get(s, 0.0)) for s in SPLITS]
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0, atol=1e-9):
        msg = (
            f"split fractions must be three non-negative numbers (train, val, test) summing "
            f"to 1, got {list(fractions)}"
        )
        raise ConfigError(msg)
    return f


def _sha_key(sha256: str) -> np.uint64:
    try:
        return _U64(int(sha256[:16], 16))
    except ValueError as err:
        msg = f"file sha256 must be a hex string, got {sha256!r}"
        raise ConfigError(msg) from err


def split_of(
    jets: JetTable | ak.Array,
    *,
    fractions: Sequence[float] | Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    file_sha256: str | None = None,
) -> np.ndarray:
    """Split name ("train", "val" or "test") of every jet, by the hash rule of the module doc.

    Parameters
    ----------
    jets
        Jet table (or its awkward array) of N jets; uses ``run``, ``luminosityBlock`` and
        ``event`` if present, else ``entry`` and the file's sha256.
    fractions
        (train, val, test) fractions or a mapping by split name; must sum to 1.
    seed
        Changes the whole assignment (for a different, equally valid split).
    file_sha256
        sha256 of the source file for tables without event IDs; computed from
        ``JetTable.source`` when not given.

    Returns
    -------
    numpy.ndarray
        (N,) array of split names (dtype ``<U5``).
    """
    f = _fractions(fractions)
    array = jets.jets if isinstance(jets, JetTable) else jets
    fields = array.fields
    zeros = np.zeros(len(array), dtype=_U64)
    if "event" in fields:
        run = array["run"] if "run" in fields else zeros
        lumi = array["luminosityBlock"] if "luminosityBlock" in fields else zeros
        u = split_uniform(run, lumi, array["event"], seed=seed)
    else:
        if "entry" not in fields:
            msg = "split_of: the jet table has neither 'event' nor 'entry'; cannot hash jets"
            raise ConfigError(msg)
        if file_sha256 is None:
            if not isinstance(jets, JetTable):
                msg = (
                    "split_of: jets without event IDs need the file's sha256 "
                    "(pass file_sha256= or a JetTable with its source)"
                )
                raise ConfigError(msg)
            from .dataset import file_sha256 as _sha

            file_sha256 = _sha(jets.source)
        key = np.full(len(array), _sha_key(file_sha256), dtype=_U64)
        u = split_uniform(key, zeros, array["entry"], seed=seed)
    edges = np.cumsum(f)[:2]
    names = np.asarray(SPLITS)[np.searchsorted(edges, u, side="right")]
    log.debug(
        "split of %d jets: %s",
        len(names),
        {s: int((names == s).sum()) for s in SPLITS},
    )
    return names


def select_split(jets: JetTable | ak.Array, name: str, **kwargs) -> JetTable | ak.Array:
    """The jets of one split; a JetTable stays a JetTable (same source, layout, missing).

    ``kwargs`` are passed to :func:`split_of` (fractions, seed, file_sha256).
    """
    if name not in SPLITS:
        msg = f"unknown split {name!r}; expected one of {', '.join(SPLITS)}"
        raise ConfigError(msg)
    mask = split_of(jets, **kwargs) == name
    if isinstance(jets, JetTable):
        return replace(jets, jets=jets.jets[mask])
    return jets[mask]
