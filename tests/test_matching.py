"""The one greedy ΔR matcher (jec_coffea.matching) and its two call sites."""

from __future__ import annotations

import numpy as np

from jec_coffea.data._match import greedy_match as reader_match
from jec_coffea.matching import greedy_match_offsets
from jec_coffea.simulation.reconstruction import greedy_match as sim_match


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def test_reader_and_simulation_give_the_same_pairs() -> None:
    rng = np.random.default_rng(3)
    jc, gc = rng.integers(0, 8, 500), rng.integers(0, 8, 500)
    # coarse grid: many exact ΔR ties, which must be resolved identically
    je, jp = (rng.integers(-4, 5, (2, jc.sum())) * 0.1).astype(np.float64)
    ge, gp = (rng.integers(-4, 5, (2, gc.sum())) * 0.1).astype(np.float64)
    flat = reader_match(jc, je, jp, gc, ge, gp, 0.4)
    local = sim_match(_offsets(jc), je, jp, _offsets(gc), ge, gp, 0.4)
    assert flat.dtype == np.int64
    assert local.dtype == np.int32
    event = np.repeat(np.arange(len(jc)), jc)
    expect = np.where(flat >= 0, flat - _offsets(gc)[event], -1)
    np.testing.assert_array_equal(local, expect)
    assert (flat >= 0).sum() > 100
    matched = flat[flat >= 0]
    assert len(np.unique(matched)) == len(matched)  # each GenJet used once


def test_ties_follow_index_order_and_cut_is_strict() -> None:
    # two jets at the same ΔR = 0.1 from one GenJet: the first jet (lower index) takes it
    out = greedy_match_offsets(
        [0, 2], [0.1, -0.1], [0.0, 0.0], [0, 1], [0.0], [0.0], 0.4
    )
    assert out.tolist() == [0, -1]
    # ΔR exactly at the cone is not matched (ΔR < max_dr)
    at_cut = greedy_match_offsets([0, 1], [0.5], [0.0], [0, 1], [0.0], [0.0], 0.5)
    assert at_cut.tolist() == [-1]
    inside = greedy_match_offsets([0, 1], [0.5], [0.0], [0, 1], [0.0], [0.0], 0.5001)
    assert inside.tolist() == [0]


def test_phi_wraps_across_pi() -> None:
    out = greedy_match_offsets(
        [0, 1], [0.0], [np.pi - 0.05], [0, 2], [0.0, 0.0], [-np.pi + 0.05, 1.0], 0.2
    )
    assert out.tolist() == [0]
