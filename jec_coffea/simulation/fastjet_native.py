"""Anti-kT of a whole batch in one C++ call, built on first use against fastjet's own library.

fastjet's Python many-event interface keeps every event's ClusterSequence alive and finds
the constituents of the jets with a loop over jets x particles per event
(``constituent_index``); at ~8,000 particles (candidates and area ghosts) and ~70 jets per
event that is a third of the clustering time. ``native/antikt.cpp`` clusters each event with
the same FastJet library and jet definition (anti-kT, R, Best strategy, E scheme) and reads
the constituents with ``ClusterSequence::particle_jet_indices``: the jets and constituents
are identical, bit for bit (tests/test_fastjet_native.py). The particles are read in place
from their sources (candidates, area ghosts, flavour ghosts), not merged into one array
first, and events with area ghosts use FastJet's strategy that skips ghost-ghost pairs
(``N2MHTLazy9AntiKtSeparateGhosts``, anti-kT only; the same jets and ghosts in them).

The same library sums PUPPI's neighbour metric (``jcpp_puppi_alpha``, used by
:mod:`jec_coffea.simulation.puppi`; numpy without it).

The shared library is compiled once per (source, fastjet installation, compiler) into
``cache_dir("native")`` with ``$CXX`` (default ``c++``). Without a compiler, or if the build
fails, :func:`library` returns None with a warning that says why, and
:func:`jec_coffea.simulation.reconstruction.cluster` uses fastjet's Python interface (same
jets, slower). ``JEC_COFFEA_NATIVE=0`` selects that path explicitly.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .. import extras
from .generator import cache_dir

__all__ = ["NativeBuildError", "build", "cluster_batch", "library", "puppi_alpha_batch"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "native" / "antikt.cpp"
_MESSAGE_SIZE = 1024


class NativeBuildError(RuntimeError):
    """The C++ clustering library could not be compiled or loaded."""


def _fastjet_paths() -> tuple[Path, Path, str]:
    """fastjet's header folder, library folder and version (from its wheel)."""
    fastjet = extras.fastjet()
    root = Path(fastjet.__file__).parent
    include = root / "include"
    libdir = next(
        (root / d for d in ("lib64", "lib") if (root / d / "libfastjet.so").is_file()),
        None,
    )
    if not (include / "fastjet" / "ClusterSequence.hh").is_file() or libdir is None:
        msg = f"the fastjet package at {root} ships no FastJet headers or libfastjet.so"
        raise NativeBuildError(msg)
    return include, libdir, str(getattr(fastjet, "__version__", "?"))


def build(rebuild: bool = False) -> Path:
    """Compile ``native/antikt.cpp`` (once; later calls return the cached library)."""
    include, libdir, version = _fastjet_paths()
    cxx = shlex.split(os.environ.get("CXX", "c++"))
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", f"-I{include}"]
    links = [f"-L{libdir}", "-lfastjet", f"-Wl,-rpath,{libdir}"]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, version.encode(), " ".join(cxx + flags + links).encode()])
    ).hexdigest()[:16]
    target = cache_dir("native") / f"antikt_{key}.so"
    if target.is_file() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".antikt_", suffix=".so")
    os.close(fd)
    tmp = Path(name)
    cmd = [*cxx, *flags, str(SOURCE), *links, "-o", str(tmp)]
    try:
        try:
            done = subprocess.run(
                cmd, check=False, capture_output=True, text=True, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            msg = f"cannot run the C++ compiler {cxx[0]!r}: {err}"
            raise NativeBuildError(msg) from err
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            msg = f"compiling {SOURCE} failed ({shlex.join(cmd)}):\n{tail}"
            raise NativeBuildError(msg)
        tmp.replace(target)  # atomic: parallel shards may build at the same time
    finally:
        tmp.unlink(missing_ok=True)
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled clustering library, or None (``JEC_COFFEA_NATIVE=0``, or no build)."""
    if os.environ.get("JEC_COFFEA_NATIVE", "1").strip() == "0":
        return None
    try:
        path = build()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as err:  # a damaged cached build: compile it again, once
            log.warning(
                "cached C++ clustering library %s unusable (%s); rebuilding", path, err
            )
            lib = ctypes.CDLL(str(build(rebuild=True)))
    except (
        NativeBuildError,
        OSError,
    ) as err:  # OSError: e.g. an unwritable cache folder
        log.warning(
            "C++ clustering unavailable, using fastjet's Python interface (same jets, "
            "about 1.5x slower clustering): %s",
            err,
        )
        return None
    ptr = ctypes.c_void_p
    lib.jcfj_cluster.restype = ptr
    lib.jcfj_cluster.argtypes = [ctypes.c_int64, ctypes.c_int64, *[ptr] * 5, ctypes.c_double, ctypes.c_double, ctypes.c_int64, ptr, ptr, ctypes.c_char_p, ctypes.c_int64]  # fmt: skip
    lib.jcfj_n_jets.restype = ctypes.c_int64
    lib.jcfj_n_jets.argtypes = [ptr]
    lib.jcfj_take_jets.restype = None
    lib.jcfj_take_jets.argtypes = [ptr, ptr]
    lib.jcfj_silence_banner.restype = None
    lib.jcpp_puppi_alpha.restype = ctypes.c_int
    lib.jcpp_puppi_alpha.argtypes = [ctypes.c_int64, *[ptr] * 7, ctypes.c_double, ptr]
    lib.jcfj_silence_banner()
    return lib


def puppi_alpha_batch(
    lib: ctypes.CDLL,
    targets: tuple[np.ndarray, np.ndarray, np.ndarray],
    sources: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    radius: float,
) -> np.ndarray:
    """PUPPI's alpha of ``targets`` = (offsets, eta, phi) against ``sources`` = (offsets,
    eta, phi, pT), both grouped by event with offsets of the same events
    (:func:`jec_coffea.simulation.puppi.alpha` documents the metric)."""
    t_off, t_eta, t_phi = (
        np.ascontiguousarray(a, d) for a, d in zip(targets, _TYPES[:3], strict=True)
    )
    s_off, s_eta, s_phi, s_pt = (
        np.ascontiguousarray(a, d) for a, d in zip(sources, _TYPES, strict=True)
    )
    if len(t_off) != len(s_off):
        msg = f"targets of {len(t_off) - 1} events, sources of {len(s_off) - 1}"
        raise ValueError(msg)
    out = np.empty(len(t_eta))
    status = lib.jcpp_puppi_alpha(
        len(t_off) - 1, t_off.ctypes.data, t_eta.ctypes.data, t_phi.ctypes.data,
        s_off.ctypes.data, s_eta.ctypes.data, s_phi.ctypes.data, s_pt.ctypes.data,
        float(radius), out.ctypes.data,
    )  # fmt: skip
    if status != 0:
        msg = "PUPPI alpha: out of memory in the C++ neighbour search"
        raise MemoryError(msg)
    return out


_TYPES = (np.int64, np.float64, np.float64, np.float64)


def cluster_batch(
    lib: ctypes.CDLL,
    offsets: list[np.ndarray],
    p4: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    radius: float,
    pt_min: float,
    explicit_ghosts: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Cluster the events of several sources of flat (px, py, pz, E) arrays, read in place.

    Source ``s`` holds particles ``[offsets[s][i], offsets[s][i+1])`` of event ``i``; FastJet
    sees an event's particles source after source. ``explicit_ghosts`` selects FastJet's
    strategy that never pairs two area ghosts (pT < 1e-50; anti-kT only): same jets, same
    ghosts in them, a fifth less time with ~6,000 ghosts per event.

    Returns
    -------
    jets, jet_counts, particle_jet
        Jet four-vectors (n_jets, 4) in FastJet's ``inclusive_jets`` order within each event,
        jets per event, and per source, per particle, the index of its jet within the event
        (-1: none).
    """
    if explicit_ghosts and not pt_min > 0:
        msg = f"explicit_ghosts needs pt_min > 0 (got {pt_min}): the ghost strategy makes no pure-ghost jets"
        raise ValueError(msg)
    if len(offsets) != len(p4) or not offsets:
        msg = f"{len(offsets)} offset arrays for {len(p4)} sources"
        raise ValueError(msg)
    offsets = [np.ascontiguousarray(o, np.int64) for o in offsets]
    n_events = len(offsets[0]) - 1
    comps = [[np.ascontiguousarray(c, np.float64) for c in source] for source in p4]
    for s, (off, source) in enumerate(zip(offsets, comps, strict=True)):
        if len(off) != n_events + 1:
            msg = (
                f"source {s}: offsets of {len(off) - 1} events, source 0 has {n_events}"
            )
            raise ValueError(msg)
        if off[0] != 0 or np.any(off[1:] < off[:-1]):
            msg = f"source {s}: offsets must start at 0 and never decrease"
            raise ValueError(msg)
        if any(len(c) != off[-1] for c in source):
            msg = f"source {s}: four-vector arrays of lengths {[len(c) for c in source]}, offsets end at {off[-1]}"
            raise ValueError(msg)
    particle_jet = [np.empty(int(off[-1]), np.int64) for off in offsets]
    jet_counts = np.empty(n_events, np.int64)

    def pointers(arrays):
        return (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))

    message = ctypes.create_string_buffer(_MESSAGE_SIZE)
    handle = lib.jcfj_cluster(
        n_events, len(offsets), pointers(offsets),
        *(pointers([source[k] for source in comps]) for k in range(4)),
        float(radius), float(pt_min), int(explicit_ghosts), pointers(particle_jet),
        jet_counts.ctypes.data, message, _MESSAGE_SIZE,
    )  # fmt: skip
    if not handle:
        detail = message.value.decode(errors="replace")
        msg = f"FastJet clustering (anti-kT R={radius}, pT >= {pt_min} GeV) failed: {detail}"
        raise RuntimeError(msg)
    jets = np.empty((lib.jcfj_n_jets(handle), 4))
    lib.jcfj_take_jets(handle, jets.ctypes.data)
    return jets, jet_counts, particle_jet
