"""PFNano ROOT writer (uproot ``mktree``/``extend``) with the simulation settings as metadata.

The ``Events`` tree holds the PFNano branches (collections as ``n<Name>`` counters plus
``<Name>_<field>`` jagged branches, exactly as NanoAOD does). The generator, pile-up and
detector settings go into the file as the JSON string ``jec_coffea_metadata`` (a TObjString)
together with the detector hash, so a file says how it was made.

Simulation truth stored next to the GenJet information (never a model input; no feature in
``jec_coffea.features`` reads it):

``Jet_ptOffsetTruth`` [GeV]
    The detector-level pT that pile-up adds to the reco jet: the sum over the jet's
    (CHS) constituents of the candidate pT times its pile-up share. A charged candidate counts
    fully if its track comes from a pile-up particle (it survived CHS because its vertex was
    not found or the track was not associated to it), else 0. A neutral candidate (photon,
    neutral hadron, HF) counts with the pile-up fraction of the true energy deposited in the
    tower it comes from, before calorimeter response, noise and PF track subtraction. It is
    exactly 0 without pile-up and is what L1FastJet derivations fit against rho x area.
``PV_x``, ``PV_y``, ``PV_z`` [cm]
    The reconstructed hard-scatter vertex (true vertex drawn from the beam spot, smeared by
    the vertex resolution), so coffea's ``events.PV`` (``VertexArray``) works.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import awkward as ak
import uproot

from ..errors import ConfigError, InputFileError

__all__ = [
    "COMPRESSIONS",
    "METADATA_KEY",
    "PFNanoWriter",
    "parse_compression",
    "read_metadata",
]

log = logging.getLogger(__name__)

METADATA_KEY = "jec_coffea_metadata"
"""Name of the TObjString with the JSON metadata in every simulated file."""

COMPRESSIONS = {
    "lz4": uproot.LZ4,
    "zlib": uproot.ZLIB,
    "zstd": uproot.ZSTD,
    "lzma": uproot.LZMA,
}
"""ROOT compression algorithms by name (``NAME`` or ``NAME:LEVEL``, e.g. ``lzma:9``)."""

DEFAULT_COMPRESSION = "lz4:1"
"""Default of simulated files: a training or benchmark sample is read many times, and uproot
decompresses LZ4 ~3x faster than ZLIB-1 at ~17% more bytes (bench/processor.py, docs/
performance.md); CMS's own NanoAOD uses LZMA (smallest, slowest to read)."""


def parse_compression(text: str) -> uproot.compression.Compression:
    """``NAME[:LEVEL]`` (NAME in :data:`COMPRESSIONS`, LEVEL 1-9) -> an uproot compression.

    Raises :class:`~jec_coffea.errors.ConfigError` naming ``--compression`` otherwise.
    """
    name, _, level = str(text).partition(":")
    if name not in COMPRESSIONS:
        msg = (
            f"--compression {text!r}: unknown algorithm {name!r} "
            f"(one of {', '.join(COMPRESSIONS)}, optionally :LEVEL)"
        )
        raise ConfigError(msg)
    try:
        lvl = int(level) if level else 1
    except ValueError:
        lvl = -1
    if not 1 <= lvl <= 9:
        msg = f"--compression {text!r}: the level must be an integer 1-9"
        raise ConfigError(msg)
    return COMPRESSIONS[name](lvl)


class PFNanoWriter:
    """Write batches of PFNano arrays into one ROOT file (use with ``contextlib.closing``).

    Parameters
    ----------
    path
        Output file (overwritten).
    metadata
        JSON-serialisable settings stored as the ``jec_coffea_metadata`` string.
    compression
        ``NAME[:LEVEL]`` of :func:`parse_compression` (default :data:`DEFAULT_COMPRESSION`).
    """

    def __init__(
        self, path: str | Path, metadata: dict, compression: str = DEFAULT_COMPRESSION
    ) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self._file = uproot.recreate(
            self.path, compression=parse_compression(compression)
        )
        self._file[METADATA_KEY] = json.dumps(metadata, sort_keys=True)
        self._tree = None
        self.n_events = 0

    def write(self, arrays: dict) -> None:
        """Append one batch (dict of branch or collection name -> array)."""
        n = len(arrays["event"])
        if n == 0:
            return
        if self._tree is None:
            types = {
                k: (v.type if isinstance(v, ak.Array) else v.dtype)
                for k, v in arrays.items()
            }
            self._tree = self._file.mktree("Events", types, title="Events")
        self._tree.extend(arrays)
        self.n_events += n

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def read_metadata(path: str | Path) -> dict:
    """The simulation metadata of a file written by :class:`PFNanoWriter`.

    Raises
    ------
    InputFileError
        If the file cannot be opened or holds no jec-coffea metadata.
    """
    try:
        with uproot.open(path) as f:
            if METADATA_KEY not in f:
                raise InputFileError(
                    str(path), f"no {METADATA_KEY!r} (not a jec-coffea simulated file)"
                )
            return json.loads(str(f[METADATA_KEY]))
    except InputFileError:
        raise
    except (OSError, ValueError) as err:
        raise InputFileError(str(path), f"cannot read: {err}") from err
