"""PUPPI weights of the simulated PF candidates (jec_coffea.simulation.puppi)."""

from __future__ import annotations

import numpy as np
import pytest

from jec_coffea.simulation.puppi import PUPPI_UL, _alpha_numpy, alpha, puppi_weights


def _brute_alpha(targets, sources, cone):
    t_off, t_eta, t_phi = targets
    s_off, s_eta, s_phi, s_pt = sources
    out = np.zeros(len(t_eta))
    for e in range(len(t_off) - 1):
        t, s = slice(t_off[e], t_off[e + 1]), slice(s_off[e], s_off[e + 1])
        deta = t_eta[t][:, None] - s_eta[s][None]
        dphi = np.abs(t_phi[t][:, None] - s_phi[s][None])
        dphi = np.where(dphi > np.pi, 2 * np.pi - dphi, dphi)
        dr2 = deta**2 + dphi**2
        near = (dr2 < cone**2) & (dr2 >= 1e-4)
        total = np.where(near, s_pt[s][None] ** 2 / np.where(near, dr2, 1), 0).sum(1)
        out[t] = np.where(total > 0, np.log(np.where(total > 0, total, 1)), 0)
    return out


def _events(rng, counts, eta_max=4.5):
    off = np.concatenate([[0], np.cumsum(counts)])
    n = int(off[-1])
    return off, rng.uniform(-eta_max, eta_max, n), rng.uniform(-np.pi, np.pi, n)


def test_alpha_in_cpp_and_numpy_equals_the_definition():
    """log sum pT^2/dR^2 over neighbours with 1e-4 <= dR^2 < 0.16, per event: the C++ grid
    search and the numpy fallback both equal a brute-force double loop, across the phi
    wrap, for coincident candidates and for events without targets or sources."""
    from jec_coffea.simulation.fastjet_native import library

    rng = np.random.default_rng(4)
    t_counts = np.array([300, 0, 250, 40, 1])
    s_counts = np.array([120, 30, 0, 80, 5])
    t_off, t_eta, t_phi = _events(rng, t_counts)
    s_off, s_eta, s_phi = _events(rng, s_counts)
    s_pt = rng.exponential(3.0, len(s_eta))
    t_phi[:20] = np.pi - 0.01  # neighbours across the +-pi seam
    s_phi[:20] = -np.pi + 0.02
    s_eta[:20] = t_eta[:20]
    t_eta[20], t_phi[20] = s_eta[21], s_phi[21]  # a target on top of a source
    targets, sources = (t_off, t_eta, t_phi), (s_off, s_eta, s_phi, s_pt)
    ref = _brute_alpha(targets, sources, 0.4)
    assert 0.0 < np.mean(ref == 0) < 0.9
    assert np.all(ref[t_off[2] : t_off[3]] == 0)  # no sources in that event
    np.testing.assert_allclose(
        _alpha_numpy(targets, sources, 0.4, max_pairs=5000), ref, rtol=1e-12, atol=1e-12
    )
    if library() is None:
        pytest.skip("no C++ library (no compiler here)")
    np.testing.assert_allclose(
        alpha(targets, sources, 0.4), ref, rtol=1e-12, atol=1e-12
    )


def _event(parts, n_pv=20):
    """Candidates of one event: rows of (pt, eta, phi, charged, from_pv)."""
    a = np.array(parts, dtype=np.float64)
    return (
        np.array([0, len(a)]),
        (a[:, 0], a[:, 1], a[:, 2]),
        a[:, 3].astype(bool),
        a[:, 4].astype(bool),
        np.array([n_pv]),
    )


def test_weights_follow_cms_rules():
    """Charged: 1 from the PV, 0 from pile-up. A neutral inside a PV jet keeps its pT, one
    among pile-up only is removed down to the floor pT / 200 GeV, a soft one fails the pT
    cut (and its floor is below the 0.01 minimum), a hard one (> 200 GeV) keeps weight 1;
    without charged pile-up to compare with the weight is 1."""
    rng = np.random.default_rng(5)
    jet = [
        (rng.uniform(5, 20), rng.normal(0, 0.1), rng.normal(0, 0.1), 1, 1)
        for _ in range(8)
    ]
    pileup = [
        (
            rng.exponential(0.7) + 0.15,
            rng.uniform(-2, 2),
            rng.uniform(-np.pi, np.pi),
            1,
            0,
        )
        for _ in range(300)
    ]
    neutrals = [
        (8.0, 0.05, 0.05, 0, 0),  # in the PV jet
        (3.0, 1.2, 2.5, 0, 0),  # among pile-up only
        (0.25, 0.05, -0.05, 0, 0),  # soft, in the jet: below 0.2 + 0.015 x 20 GeV
        (400.0, -1.5, -2.0, 0, 0),  # hard, away from the PV tracks
        (5.0, 4.0, 1.0, 0, 0),  # forward algorithm
    ]
    w = puppi_weights(*_event(jet + pileup + neutrals))
    n_jet, n_pu = len(jet), len(pileup)
    assert np.all(w[:n_jet] == 1.0)
    assert np.all(w[n_jet : n_jet + n_pu] == 0.0)
    w_jet, w_pu, w_soft, w_hard, w_fwd = w[n_jet + n_pu :]
    assert w_jet > 0.9
    assert w_pu == pytest.approx(3.0 / 200)  # removed but for the hard-neutral floor
    assert w_soft == 0.0
    assert w_hard == 1.0
    assert 0.0 <= w_fwd <= 1.0
    # no charged pile-up: nothing to compare with, the neutral keeps weight 1
    w = puppi_weights(*_event([*jet, (3.0, 1.2, 2.5, 0, 0)]))
    assert w[-1] == 1.0
    # the neutral cut grows with the number of vertices
    w = puppi_weights(*_event(jet + pileup + [(0.5, 0.05, 0.05, 0, 0)], n_pv=10))
    assert w[-1] > 0
    w = puppi_weights(*_event(jet + pileup + [(0.5, 0.05, 0.05, 0, 0)], n_pv=60))
    assert w[-1] == 0.0
    assert PUPPI_UL.algos[0].regions[0].min_neutral_pt_slope == 0.015


@pytest.mark.slow
def test_simulated_candidates_carry_puppi_weights(sim_sample):
    """PFCands_puppiWeight of the simulated files: charged constituents 1 from the PV and 0
    otherwise, neutral ones in [0, 1], many of them below 1 at mu = 10, and the hard ones
    kept (the pT-weighted mean weight of neutral constituents above their plain mean)."""
    import awkward as ak
    import uproot

    from jec_coffea.simulation.writer import read_metadata

    for path in sorted(sim_sample.glob("*.root")):
        assert read_metadata(path)["puppi"]["cone"] == PUPPI_UL.cone  # provenance
        with uproot.open(path) as f:
            c = f["Events"].arrays(
                [
                    f"PFCands_{k}"
                    for k in ("puppiWeight", "charge", "pt", "pvAssocQuality")
                ]
            )
        w, q, pt, quality = (
            np.asarray(ak.flatten(c[f"PFCands_{k}"]), np.float64)
            for k in ("puppiWeight", "charge", "pt", "pvAssocQuality")
        )
        # CHS keeps the charged candidates of no pile-up vertex; PUPPI counts those of no
        # vertex from the PV only within 0.3 cm in z (pvAssocQuality 5; 0 beyond)
        np.testing.assert_array_equal(
            w[q != 0], np.where(quality[q != 0] == 0, 0.0, 1.0)
        )
        neutral = w[q == 0]
        assert np.all((neutral >= 0) & (neutral <= 1))
        assert 0.05 < np.mean(neutral < 1) < 0.95
        assert np.sum(neutral * pt[q == 0]) / np.sum(pt[q == 0]) > neutral.mean()
