"""The C++ batch clustering (fastjet_native) against fastjet's Python interface."""

from __future__ import annotations

import ctypes
import logging
import shutil

import numpy as np
import pytest

from jec_coffea.simulation import fastjet_native
from jec_coffea.simulation.reconstruction import GHOST_PT, cluster

pytest.importorskip("fastjet")
needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None, reason="no C++ compiler (c++) on this machine"
)


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() rebuilt from scratch in an empty cache, restored afterwards."""
    monkeypatch.setenv("JEC_COFFEA_CACHE", str(tmp_path))
    fastjet_native.library.cache_clear()
    yield tmp_path
    fastjet_native.library.cache_clear()


def _sources(seed: int, n_events: int = 6):
    """Hard sprays, soft particles and area ghosts; event 2 empty, event 3 with no jet."""
    rng = np.random.default_rng(seed)
    sources = []
    for kind, per_event, scale in (
        ("hard", 40, 30.0),
        ("soft", 400, 0.3),
        ("ghost", 600, 0),
    ):
        n = rng.poisson(per_event, n_events)
        n[2] = 0
        if kind == "hard":
            n[3] = 0
        ev = np.repeat(np.arange(n_events), n)
        y = rng.uniform(-4.5, 4.5, len(ev))
        phi = rng.uniform(-np.pi, np.pi, len(ev))
        if kind == "hard":  # a few collimated sprays per event
            axis = rng.integers(0, 4, len(ev))
            y = np.clip(axis - 1.5 + 0.15 * rng.standard_normal(len(ev)), -4.5, 4.5)
            phi = axis * 1.5 + 0.15 * rng.standard_normal(len(ev))
        pt = rng.exponential(scale, len(ev)) if scale else np.full(len(ev), GHOST_PT)
        sources.append(
            (ev, pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(y), pt * np.cosh(y))
        )
    return sources


@pytest.mark.parametrize("explicit_ghosts", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_native_and_python_clustering_identical(seed, explicit_ghosts, monkeypatch):
    """Same jets, same constituents in the same order, to the last bit.

    With ``explicit_ghosts`` the native path skips ghost-ghost pairs (FastJet's
    N2MHTLazy9AntiKtSeparateGhosts); fastjet's Python interface uses the Best strategy.
    """
    if fastjet_native.library() is None:
        pytest.skip("no C++ compiler: the native path is not built here")
    sources = _sources(seed)
    native = cluster(sources, 6, 0.4, 8.0, explicit_ghosts=explicit_ghosts)
    monkeypatch.setattr(fastjet_native, "library", lambda: None)
    python = cluster(sources, 6, 0.4, 8.0)
    assert native.keys() == python.keys()
    for key in native:
        assert native[key].dtype == python[key].dtype, key
        np.testing.assert_array_equal(native[key], python[key], err_msg=key)
    counts = native["jet_counts"]
    assert counts[2] == counts[3] == 0
    assert counts.sum() >= 10
    # ghosts are constituents (areas), and jets come by decreasing pT in every event
    assert (native["c_source"] == 2).sum() > 100
    pt = np.hypot(native["jet_px"], native["jet_py"])
    same_event = np.diff(native["jet_event"]) == 0
    assert np.all(np.diff(pt)[same_event] <= 0)


def test_fastjet_error_is_reported_not_crashing():
    lib = fastjet_native.library()
    if lib is None:
        pytest.skip("no C++ compiler: the native path is not built here")
    p4 = (
        np.array([1.0, 2.0]),
        np.array([1.0, 2.0]),
        np.array([1.0, 2.0]),
        np.full(2, 5.0),
    )
    with pytest.raises(RuntimeError, match=r"anti-kT R=2000.*failed: .*R"):
        fastjet_native.cluster_batch(lib, [np.array([0, 2])], [p4], 2000.0, 8.0)
    with pytest.raises(ValueError, match=r"source 0: .*offsets end at 3"):
        fastjet_native.cluster_batch(lib, [np.array([0, 3])], [p4], 0.4, 8.0)
    with pytest.raises(ValueError, match="source 0: offsets must start at 0"):
        fastjet_native.cluster_batch(lib, [np.array([0, 2, 1, 2])], [p4], 0.4, 8.0)
    with pytest.raises(
        ValueError, match="source 1: offsets of 2 events, source 0 has 1"
    ):
        fastjet_native.cluster_batch(
            lib, [np.array([0, 2]), np.array([0, 1, 2])], [p4, p4], 0.4, 8.0
        )
    with pytest.raises(
        ValueError, match=r"explicit_ghosts needs pt_min > 0 \(got 0.0\)"
    ):
        fastjet_native.cluster_batch(lib, [np.array([0, 2])], [p4], 0.4, 0.0, True)
    with pytest.raises(ValueError, match="1 offset arrays for 2 sources"):
        fastjet_native.cluster_batch(lib, [np.array([0, 2])], [p4, p4], 0.4, 8.0)


def test_sources_need_not_be_grouped_by_event():
    """A source in any event order gives the jets and constituents of the sorted one.

    Only the order of a jet's constituents from that source follows the source's order.
    """
    sources = _sources(4)
    perm = np.random.default_rng(0).permutation(len(sources[1][0]))
    shuffled = [sources[0], tuple(a[perm] for a in sources[1]), sources[2]]
    ref, out = cluster(sources, 6, 0.4, 8.0), cluster(shuffled, 6, 0.4, 8.0)
    for key in ("jet_px", "jet_py", "jet_counts", "c_jet", "c_source"):
        np.testing.assert_array_equal(ref[key], out[key], err_msg=key)
    soft = out["c_source"] == 1
    assert soft.sum() > 50
    original = out["c_index"].copy()
    original[soft] = perm[original[soft]]  # back to indices of the unshuffled source
    pairs = np.lexsort((original, out["c_source"], out["c_jet"]))
    np.testing.assert_array_equal(original[pairs], ref["c_index"])


def test_events_of_ghosts_only_have_no_jets():
    """The ghost strategy on events without any real particle (and on empty ones)."""
    ghosts = _sources(5)[2]
    out = cluster([ghosts], 6, 0.4, 8.0, explicit_ghosts=True)
    assert out["jet_counts"].tolist() == [0] * 6
    assert len(out["c_jet"]) == 0


def test_without_compiler_falls_back_with_a_warning(fresh_library, monkeypatch, caplog):
    monkeypatch.setenv("CXX", str(fresh_library / "no-such-compiler"))
    with pytest.raises(fastjet_native.NativeBuildError, match="no-such-compiler"):
        fastjet_native.build()
    with caplog.at_level(logging.WARNING, logger=fastjet_native.__name__):
        assert fastjet_native.library() is None
    assert "fastjet's Python interface" in caplog.text
    out = cluster(_sources(3), 6, 0.4, 8.0)  # still clusters, through fastjet's Python
    assert out["jet_counts"].sum() >= 10


@needs_compiler
def test_compile_error_names_the_source(fresh_library, monkeypatch):
    monkeypatch.setenv("CXX", "c++ -DJCFJ_BROKEN -include /nonexistent/header.h")
    with pytest.raises(fastjet_native.NativeBuildError, match=r"antikt\.cpp failed"):
        fastjet_native.build()
    assert not list(fresh_library.glob("native/*.so"))  # no half-written library left


@needs_compiler
def test_damaged_cached_library_is_rebuilt(fresh_library):
    path = fastjet_native.build()
    path.write_bytes(b"\x7fELF truncated")
    assert fastjet_native.library() is not None
    assert path.stat().st_size > 1000


def test_explicit_python_path(monkeypatch, fresh_library):
    monkeypatch.setenv("JEC_COFFEA_NATIVE", "0")
    assert fastjet_native.library() is None
    assert not list(fresh_library.glob("native/*"))  # nothing compiled


def test_unwritable_cache_falls_back_with_a_warning(fresh_library, monkeypatch, caplog):
    blocker = fresh_library / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("JEC_COFFEA_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger=fastjet_native.__name__):
        assert fastjet_native.library() is None
    assert "not-a-folder" in caplog.text


def test_empty_batches():
    lib = fastjet_native.library()
    if lib is None:
        pytest.skip("no C++ compiler: the native path is not built here")
    empty = tuple(np.zeros(0) for _ in range(4))
    for offsets in (np.zeros(1, np.int64), np.zeros(4, np.int64)):
        jets, counts, particle_jet = fastjet_native.cluster_batch(
            lib, [offsets], [empty], 0.4, 8.0, explicit_ghosts=True
        )
        assert jets.shape == (0, 4)
        assert counts.tolist() == [0] * (len(offsets) - 1)
        assert len(particle_jet) == 1
        assert len(particle_jet[0]) == 0
    out = cluster([tuple(np.zeros(0, np.int64) for _ in range(5))], 3, 0.4, 8.0)
    assert out["jet_counts"].tolist() == [0, 0, 0]
    assert len(out["c_jet"]) == 0


def test_area_ghosts_are_ghosts_to_fastjets_strategy():
    """GHOST_PT lies below the threshold by which the ghost strategy knows ghosts.

    Above it the strategy treats ghosts as particles: the same jets, none of the speed.
    """
    lib = fastjet_native.library()
    if lib is None:
        pytest.skip("no C++ compiler: the native path is not built here")
    _include, libdir, _version = fastjet_native._fastjet_paths()
    fj = ctypes.CDLL(str(libdir / "libfastjet.so"))
    name = "_ZN7fastjet25LazyTiling9SeparateGhosts19ghost_pt2_thresholdE"
    try:
        threshold = ctypes.c_double.in_dll(fj, name).value
    except ValueError:
        pytest.skip("this FastJet build does not export ghost_pt2_threshold")
    assert threshold > GHOST_PT**2
