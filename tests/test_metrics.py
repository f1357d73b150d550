"""Response histograms and metrics against unbinned numpy on generated samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from jec_coffea.data.jet_table import FLAVOUR_GROUPS
from jec_coffea.errors import ConfigError
from jec_coffea.histograms import (
    ETA_FINE_EDGES,
    PARTON_FLAVOURS,
    PT_GEN_EDGES,
    CutFlow,
    fill_response,
    parton_flavour_label,
    response_histogram,
    response_vs_eta_histogram,
    response_vs_rho_histogram,
)
from jec_coffea.metrics import (
    closure_table,
    flavour_dependence,
    gaussian_core_fit,
    histogram_quantiles,
    improvement,
    response_table,
    summary_grid,
)

BIN_WIDTH = 0.005


def _sample(rng, n, *, pt_range=(100.0, 130.0), eta_range=(0.0, 1.3)):
    """Jets uniform in one (pT_gen, |eta|) bin of the histogram, random flavour group 0-3."""
    pt_gen = rng.uniform(*pt_range, n)
    eta = rng.uniform(*eta_range, n) * rng.choice([-1.0, 1.0], n)
    flav = rng.integers(0, 4, n)
    return pt_gen, eta, flav


def _fill(h, method, r, pt_gen, eta, flav, weight=None):
    return fill_response(
        h,
        method,
        pt=r * pt_gen,
        pt_gen=pt_gen,
        eta_gen=eta,
        flavour=flav,
        weight=weight,
    )


def _bin(table, method="m", flavour="all", eta=(0.0, 1.3), pt=(100.0, 130.0)):
    return table.get(method, flavour, eta, pt)


def _at(rows, pt, eta=(0.0, 1.3)):
    return next(b for b in rows.bins if b.pt_gen == pt and b.abs_eta == eta)


def test_histogram_axes_and_fixed_categories():
    h = response_histogram(["raw", "standard"])
    assert h.axes.name == ("method", "flavour", "abs_eta", "pt_gen", "response")
    assert list(h.axes["flavour"]) == list(FLAVOUR_GROUPS)
    assert tuple(h.axes["pt_gen"].edges) == PT_GEN_EDGES
    assert h.axes["response"].size == 600
    assert np.isclose(h.axes["response"].widths[0], BIN_WIDTH)
    assert all(ax.label for ax in h.axes)
    assert "GeV" in h.axes["pt_gen"].label
    assert not h.axes["method"].traits.growth
    six = response_histogram(["raw"], flavours=PARTON_FLAVOURS)
    assert list(six.axes["flavour"]) == ["u", "d", "s", "c", "b", "g"]
    with pytest.raises(ConfigError, match="distinct"):
        response_histogram(["raw", "raw"])
    with pytest.raises(ConfigError, match="'dnn' is not a category"):
        fill_response(h, "dnn", pt=[1.0], pt_gen=[1.0], eta_gen=[0.0], flavour=[0])
    with pytest.raises(ValueError, match="flavour"):
        fill_response(h, "raw", pt=[1.0], pt_gen=[1.0], eta_gen=[0.0])


def test_quantiles_match_numpy_with_flow():
    rng = np.random.default_rng(1)
    n = 20000
    pt_gen, eta, flav = _sample(rng, n)
    r = rng.gamma(20.0, 0.05, n)
    r[:300] = -0.1  # underflow
    r[300:2300] = 3.5  # overflow, 10% of the jets
    h = response_histogram(["m"])
    # a constant weight leaves the quantiles unchanged
    _fill(h, "m", r, pt_gen, eta, flav, weight=np.full(n, 0.37))
    table = response_table(h, flavours=["all"], errors="analytic", fit=False)
    row = _bin(table)
    q25, q50, q75 = np.quantile(r, [0.25, 0.5, 0.75])
    assert row.n_eff == pytest.approx(n)
    assert row.sumw == pytest.approx(0.37 * n)
    assert row.median == pytest.approx(q50, abs=BIN_WIDTH)
    assert row.resolution == pytest.approx((q75 - q25) / q50, abs=3 * BIN_WIDTH)
    # a quantile inside the overflow is reported at the upper edge of the axis
    q = histogram_quantiles(h, [0.5, 0.95])
    assert q.shape == (1, 5, 4, 21, 2)
    assert q[0, :, 0, 7, 1][:4] == pytest.approx([3.0] * 4)
    assert np.isnan(q[0, 4, 0, 7, 0])  # no "unknown" jets: empty bin gives NaN


def test_errors_bootstrap_and_analytic_agree_with_sample_spread():
    rng = np.random.default_rng(2)
    n, n_toys = 4000, 40
    medians, resolutions = [], []
    for _ in range(n_toys):
        pt_gen, eta, flav = _sample(rng, n)
        r = rng.normal(1.0, 0.12, n)
        h = _fill(response_histogram(["m"]), "m", r, pt_gen, eta, flav)
        row = _bin(response_table(h, flavours=["all"], errors="analytic", fit=False))
        medians.append(row.median)
        resolutions.append(row.resolution)
    spread_med, spread_res = np.std(medians, ddof=1), np.std(resolutions, ddof=1)
    boot = _bin(response_table(h, flavours=["all"], n_boot=300, seed=3, fit=False))
    analytic = _bin(response_table(h, flavours=["all"], errors="analytic", fit=False))
    # expected 1.2533 * 0.12 / sqrt(4000) = 0.0024 for the median
    for err in (boot.median_err, analytic.median_err):
        assert err == pytest.approx(spread_med, rel=0.35)
    for err in (boot.resolution_err, analytic.resolution_err):
        assert err == pytest.approx(spread_res, rel=0.35)
    with pytest.raises(ConfigError, match="errors must be"):
        response_table(h, errors="jackknife")


def test_gaussian_core_fit_recovers_core_of_tailed_distribution():
    rng = np.random.default_rng(4)
    n = 200000
    core = rng.normal(0.97, 0.08, n)
    # 9% wide low tail as from neutrinos and out-of-cone losses
    tail = rng.normal(0.75, 0.30, n // 10)
    r = np.concatenate([core, tail])
    pt_gen, eta, flav = _sample(rng, r.size)
    h = _fill(response_histogram(["m"]), "m", r, pt_gen, eta, flav)
    row = _bin(response_table(h, flavours=["all"], errors="analytic"))
    g = row.gauss
    assert g.ok
    assert g.mu == pytest.approx(0.97, abs=max(3 * g.mu_err, 0.002))
    assert g.sigma == pytest.approx(0.08, rel=0.03)
    assert g.resolution == pytest.approx(0.08 / 0.97, rel=0.03)
    assert 0 < g.resolution_err < 0.01
    assert row.gauss_resolution == g.resolution
    assert json.loads(response_table(h, flavours=["all"], n_boot=5).to_json())["bins"][
        0
    ]["gauss"]
    # the IQR of the whole distribution is inflated by the tails; the core fit is not
    assert row.resolution > 1.349 * g.resolution * 1.05
    # a distribution narrower than a few bins cannot be fitted: reported as failed, not garbage
    edges = np.linspace(0, 3, 601)
    values = np.zeros(600)
    values[200] = 100.0
    bad = gaussian_core_fit(values, values.copy(), edges, mu0=1.0, sigma0=0.001)
    assert not bad.ok
    assert np.isnan(bad.sigma)


def _flavour_hist(rng, shifts, n_per_flavour=6000, methods=("m",)):
    h = response_histogram(list(methods))
    for method in methods:
        for f, shift in enumerate(
            shifts[method] if isinstance(shifts, dict) else shifts
        ):
            pt_gen = rng.uniform(100.0, 130.0, n_per_flavour)
            eta = rng.uniform(-1.3, 1.3, n_per_flavour)
            r = rng.normal(1.0 + shift, 0.1, n_per_flavour)
            _fill(h, method, r, pt_gen, eta, np.full(n_per_flavour, f))
    return h


def test_flavour_dependence_noise_floor():
    rng = np.random.default_rng(5)
    flat = flavour_dependence(
        _flavour_hist(rng, [0, 0, 0, 0]), n_boot=50, n_shuffle=50, seed=1
    )
    shifted_h = _flavour_hist(rng, [0.0, 0.0, 0.0, 0.03])
    shifted = flavour_dependence(
        shifted_h, residuals=[("g", "uds")], n_boot=50, n_shuffle=50, seed=1
    )
    row = _at(flat, (100.0, 130.0))
    assert row.flavours == ("uds", "c", "b", "g")
    assert row.n_eff == pytest.approx((6000,) * 4)
    # no real flavour dependence: S is compatible with its floor and not significant
    assert row.s < 3 * row.floor
    assert abs(row.s - row.floor) < 4 * row.floor_spread
    srow = _at(shifted, (100.0, 130.0))
    # medians (1, 1, 1, 1.03): mean 1.0075, S = 3 * 0.0075 + 0.0225 = 0.045
    assert srow.s == pytest.approx(0.045, abs=4 * srow.s_err)
    assert srow.s > 5 * srow.floor
    assert srow.significant
    diff, err = srow.residuals["g-uds"]
    assert diff == pytest.approx(0.03, abs=4 * err)
    assert 0 < err < 0.01
    empty = _at(shifted, (20.0, 25.0))
    assert np.isnan(empty.s)
    assert not empty.significant
    # S_6 from the separate histogram of u, d, s, c, b, g
    had = np.array([0, 0, 0, 4, 5, 0, 0])
    par = np.array([2, -1, 3, 4, 5, 21, 0])
    assert parton_flavour_label(had, par).tolist() == [0, 1, 2, 3, 4, 5, -1]
    six = response_histogram(["m"], flavours=PARTON_FLAVOURS)
    n = 3000
    for k, shift in enumerate([0, 0, 0.02, 0, 0, 0]):
        pt_gen = rng.uniform(100.0, 130.0, n)
        fill_response(six, "m", pt=rng.normal(1 + shift, 0.1, n) * pt_gen, pt_gen=pt_gen,
                      eta_gen=np.zeros(n), flavour=np.full(n, k))  # fmt: skip
    s6 = flavour_dependence(six, flavours=PARTON_FLAVOURS, n_boot=20, n_shuffle=20)
    s6row = _at(s6, (100.0, 130.0))
    # one of six shifted by 0.02: S = 5 * 0.02/6 + 0.02 * 5/6 = 0.0333
    assert s6row.s == pytest.approx(0.0333, abs=4 * s6row.s_err)
    with pytest.raises(ConfigError, match="flavour 'top'"):
        flavour_dependence(six, flavours=["u", "top"])


def test_summary_grid_headline_and_improvement():
    rng = np.random.default_rng(6)
    shifts = {"standard": [0.0, 0.0, 0.0, 0.04], "dnn": [0.0, 0.0, 0.0, 0.01]}
    h = response_histogram(["standard", "dnn"])
    for method, sigma in (("standard", 0.12), ("dnn", 0.06)):
        for f, shift in enumerate(shifts[method]):
            n = 8000
            pt_gen = np.exp(rng.uniform(np.log(30), np.log(3000), n))
            eta = rng.uniform(-1.3, 1.3, n)
            _fill(
                h, method, rng.normal(1 + shift, sigma, n), pt_gen, eta, np.full(n, f)
            )
    grid = summary_grid(h, min_jets=300, n_boot=20, n_shuffle=20)
    assert len(grid.bins) == 2 * 2 * 6
    eligible = [b for b in grid.bins if b.eligible]
    # 1.3 < |eta| < 2.5 is empty: only the barrel row is eligible
    assert {b.abs_eta for b in eligible} == {(0.0, 1.3)}
    assert grid.headline["standard"]["n_bins"] == 6
    assert grid.headline["standard"]["resolution"] == pytest.approx(
        2 * 0.6745 * 0.12, rel=0.05
    )
    assert grid.headline["dnn"]["s"] == pytest.approx(0.015, abs=0.006)
    imp = improvement(grid, "dnn", reference="standard")
    assert imp.headline["resolution"] == pytest.approx(50.0, abs=4.0)
    assert imp.headline["s"] == pytest.approx(75.0, abs=15.0)
    assert len(imp.bins) == 6
    strict = summary_grid(h, min_jets=5000, n_boot=2, n_shuffle=2)
    assert strict.headline["dnn"]["n_bins"] == 0
    assert np.isnan(strict.headline["dnn"]["resolution"])
    data = json.loads(grid.to_json())
    assert data["headline"]["dnn"]["n_bins"] == 6
    assert data["bins"][-1]["s"] is None  # empty bin: NaN written as null
    Console(file=open("/dev/null", "w")).print(grid, imp)  # noqa: SIM115, PTH123
    with pytest.raises(ConfigError, match="'bdt' not in the summary grid"):
        improvement(grid, "bdt")


def test_closure_flags_shifted_bin(tmp_path):
    rng = np.random.default_rng(7)
    h = response_histogram(["standard"])
    n = 1500
    cells = [((20, 25), (0.0, 1.3), 1.012), ((30, 40), (0.0, 1.3), 1.0), ((100, 130), (1.3, 2.5), 1.03),
             ((100, 130), (0.0, 1.3), 0.995), ((500, 650), (0.0, 1.3), 1.0)]  # fmt: skip
    for pt_range, eta_range, scale in cells:
        pt_gen, eta, flav = _sample(rng, n, pt_range=pt_range, eta_range=eta_range)
        _fill(h, "standard", rng.normal(scale, 0.05, n), pt_gen, eta, flav)
    # too few jets: not tested
    pt_gen, eta, flav = _sample(rng, 100, pt_range=(1000, 1300))
    _fill(h, "standard", rng.normal(1.2, 0.05, 100), pt_gen, eta, flav)
    table = closure_table(h, n_boot=50)
    assert [(b.pt_gen, b.abs_eta) for b in table.failing] == [
        ((100.0, 130.0), (1.3, 2.5))
    ]
    assert not table.passed
    bad = table.failing[0]
    assert bad.median == pytest.approx(1.03, abs=0.005)
    assert 0 < bad.median_err < 0.005
    low = _at(table, (20.0, 25.0))
    # 1.2% passes at 20-30 GeV
    assert low.tested
    assert low.passed
    assert low.tolerance == 0.02
    few = _at(table, (1000.0, 1300.0))
    assert not few.tested
    assert few.n_eff == 100
    assert sum(b.tested for b in table.bins) == 5
    path = tmp_path / "closure.json"
    table.to_json(str(path))
    assert json.loads(path.read_text())["bins"][0]["tolerance"] == 0.02
    with pytest.raises(ConfigError, match="method 'dnn' not in the histogram"):
        closure_table(h, "dnn")
    with pytest.raises(ConfigError, match="'pt_gen' onto edges"):
        closure_table(h, pt_edges=(20, 35, 50))


def test_merge_of_two_fills_equals_one_fill():
    rng = np.random.default_rng(8)
    n = 5000
    pt_gen = np.exp(rng.uniform(np.log(15), np.log(4000), n))
    eta = rng.uniform(-5.5, 5.5, n)
    flav = rng.integers(0, 5, n)
    r = rng.normal(1.0, 0.3, n)
    w = rng.normal(1.0, 0.5, n)
    rho = rng.uniform(0, 80, n)
    makers = (
        lambda: response_histogram(["a", "b"]),
        lambda: response_vs_rho_histogram(["a", "b"]),
        lambda: response_vs_eta_histogram(["a", "b"]),
    )
    for make in makers:
        one, first, second = make(), make(), make()
        for h, sl in (
            (one, slice(None)),
            (first, slice(0, 2000)),
            (second, slice(2000, None)),
        ):
            fill_response(h, "b", pt=(r * pt_gen)[sl], pt_gen=pt_gen[sl], eta_gen=eta[sl],
                          flavour=flav[sl], event_rho=rho[sl], weight=w[sl])  # fmt: skip
        merged = first + second
        assert np.allclose(
            merged.view(flow=True)["value"], one.view(flow=True)["value"]
        )
        assert np.allclose(
            merged.view(flow=True)["variance"], one.view(flow=True)["variance"]
        )
    cf_one, cf_a, cf_b = CutFlow(), CutFlow(), CutFlow()
    for cf, sl in (
        (cf_one, slice(None)),
        (cf_a, slice(0, 2000)),
        (cf_b, slice(2000, None)),
    ):
        cf.record("all", np.ones(n, bool)[sl], w[sl])
        cf.record("pt_gen >= 20", (pt_gen >= 20)[sl], w[sl])
    merged_cf = cf_a + cf_b
    assert merged_cf.steps == ["all", "pt_gen >= 20"]
    assert merged_cf.counts == cf_one.counts
    assert merged_cf.sumw == pytest.approx(cf_one.sumw)
    assert CutFlow.from_dict(merged_cf.to_dict()).counts == cf_one.counts
    assert merged_cf.efficiencies()["pt_gen >= 20"] == pytest.approx(
        w[pt_gen >= 20].sum() / w.sum()
    )


def test_extra_views_medians_match_numpy():
    rng = np.random.default_rng(9)
    n = 40000
    pt_gen = rng.uniform(100.0, 200.0, n)
    eta = rng.uniform(-5.0, 5.0, n)
    rho = rng.uniform(0.0, 70.0, n)
    r = rng.normal(1.0 - 0.002 * rho, 0.1, n)  # offset growing with rho
    h_rho = fill_response(response_vs_rho_histogram(["m"]), "m", pt=r * pt_gen, pt_gen=pt_gen,
                          eta_gen=eta, event_rho=rho)  # fmt: skip
    # |eta| < 1.3, 100-200 GeV, per rho bin
    med = histogram_quantiles(h_rho, [0.5])[0, 0, 3, :, 0]
    central = np.abs(eta) < 1.3
    rho_edges = h_rho.axes["event_rho"].edges
    for k in range(len(rho_edges) - 1):
        sel = central & (rho >= rho_edges[k]) & (rho < rho_edges[k + 1])
        assert med[k] == pytest.approx(np.median(r[sel]), abs=BIN_WIDTH)
    h_eta = fill_response(
        response_vs_eta_histogram(["m"]), "m", pt=r * pt_gen, pt_gen=pt_gen, eta_gen=eta
    )
    assert h_eta.axes["eta_gen"].size == len(ETA_FINE_EDGES) - 1
    med_eta = histogram_quantiles(h_eta, [0.5])[0, :, 3, 0]
    sel = (eta >= -5.0) & (eta < -4.8)
    assert med_eta[0] == pytest.approx(np.median(r[sel]), abs=BIN_WIDTH)
    with pytest.raises(ConfigError, match="expected a response histogram"):
        response_table(h_eta)
