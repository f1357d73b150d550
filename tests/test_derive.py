"""MC-truth derivation of L1FastJet + L2Relative and its closure (issue 4, item 3).

A stand-in sample with a known pile-up offset, offset = A * p1 * (rho - 1) * (1 + 0.05 ln(pT/15))
(p1 = 0.6 for |eta| < 2.5, 0.8 beyond), and a known pT- and eta-dependent response is derived
on its training split; the fit must recover the parameters and the correction must close on
the test split. The files are read back through coffea (text) and correctionlib (JSON).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from jec_coffea.cli import main
from jec_coffea.errors import ConfigError
from jec_coffea.standard import JECStack, read_jec_text
from jec_coffea.standard.derive import (
    DerivationConfig,
    closure,
    derive_standard,
    select_jets,
)
from jec_coffea.standard.derive_l1 import (
    CMS_ABS_ETA_EDGES,
    L1_FORMULA,
    merge_abs_eta_bins,
)
from jec_coffea.standard.derive_l2 import L2_FORMULA, fit_l2, grouped_quantiles

P0, P2 = 1.0, 0.05
P1_CENTRAL, P1_FORWARD = 0.6, 0.8
UL18 = "jec/textfiles/pocketcoffea/Summer19UL18_V5_MC_{}_AK4PFchs.jec.txt.gz"


def _true_response(pt_gen: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
    return (1.0 - 0.25 / np.log10(pt_gen) ** 2) * (1.0 - 0.04 * abs_eta)


def make_standin(
    n_jets: int, seed: int, pt_max: float = 1500.0
) -> dict[str, np.ndarray]:
    """Two jets per event; pT_raw = pT_gen * response * smearing + offset(pT_raw), solved."""
    rng = np.random.default_rng(seed)
    n_ev = n_jets // 2
    event = np.repeat(np.arange(n_ev, dtype=np.uint64) + np.uint64(seed * 10**7), 2)
    pt_gen = np.exp(rng.uniform(np.log(15.0), np.log(pt_max), 2 * n_ev))
    eta_gen = rng.uniform(-4.7, 4.7, 2 * n_ev)
    eta = eta_gen + rng.normal(0, 0.01, 2 * n_ev)
    rho = np.repeat(rng.gamma(6.0, 4.0, n_ev), 2)
    area = rng.normal(0.5, 0.03, 2 * n_ev)
    pt_nopu = (
        pt_gen * _true_response(pt_gen, np.abs(eta)) * rng.normal(1, 0.05, 2 * n_ev)
    )
    p1 = np.where(np.abs(eta) < 2.5, P1_CENTRAL, P1_FORWARD)
    pt_raw = pt_nopu.copy()
    for _ in range(30):  # fixed point of pt_raw = pt_nopu + offset(pt_raw)
        offset = area * p1 * (rho - P0) * (1 + P2 * np.log(pt_raw / 15.0))
        pt_raw = pt_nopu + offset
    return {
        "run": np.ones(2 * n_ev, np.uint32),
        "luminosityBlock": np.ones(2 * n_ev, np.uint32),
        "event": event,
        "eta": eta,
        "phi": rng.uniform(-np.pi, np.pi, 2 * n_ev),
        "pt_raw": pt_raw,
        "area": area,
        "event_rho": rho,
        "pt_gen": pt_gen,
        "eta_gen": eta_gen,
        "gen_weight": np.ones(2 * n_ev),
        "matched": np.ones(2 * n_ev, bool),
        "flavour_group": rng.integers(0, 4, 2 * n_ev).astype(np.int8),
        # per-jet truth scatters around the mean offset, as pile-up deposits do
        "pt_offset_truth": offset * rng.normal(1, 0.3, 2 * n_ev),
    }


@pytest.fixture(scope="module")
def standin() -> ak.Array:
    return ak.Array(make_standin(240_000, seed=1))


@pytest.fixture(scope="module")
def derived(standin, tmp_path_factory):
    out = tmp_path_factory.mktemp("derived")
    train, flow = select_jets(standin, split="train")
    return derive_standard(
        train, out, DerivationConfig(tag="Test_V1"), cutflow=flow
    ), out


def test_l1_fit_recovers_offset_parameters(derived):
    result, _ = derived
    fits = result.l1.fits
    assert len(fits) >= 20  # 240k jets: most CMS |eta| bins keep their own fit
    for f in fits:
        p1_true = P1_CENTRAL if f.abs_eta[1] <= 2.5 else P1_FORWARD
        p0, p1, p2 = f.params
        e0, e1, e2 = f.errors
        assert f.stage == "rho0_slope_pt"
        assert abs(p1 - p1_true) < 4 * e1 + 1e-3, f
        assert abs(p0 - P0) < 4 * e0 + 1e-3, f
        assert abs(p2 - P2) < 4 * e2 + 1e-3, f
        assert 0.3 < f.chi2 / f.ndf < 3.0, f
    # averaged over bins the estimate is much tighter than any single bin
    central = np.array([f.params for f in fits if f.abs_eta[1] <= 2.5])
    assert np.mean(central[:, 1]) == pytest.approx(P1_CENTRAL, rel=0.02)
    assert np.mean(central[:, 2]) == pytest.approx(P2, abs=0.005)


def test_written_l1_follows_ul18(derived, shared_data):
    _, out = derived
    ours = read_jec_text(out / "Test_V1_MC_L1FastJet_AK4PFchs.jec.txt")
    cms = read_jec_text(shared_data / UL18.format("L1FastJet"))
    assert ours.header == cms.header
    assert ours.formula == L1_FORMULA
    np.testing.assert_array_equal(ours.var_lo[0], cms.var_lo[0])
    np.testing.assert_array_equal(ours.var_hi[0], cms.var_hi[0])
    # signed, mirrored, contiguous records on a subset of CMS's edges
    edges = np.append(ours.bin_lo[:, 0], ours.bin_hi[-1, 0])
    np.testing.assert_array_equal(ours.bin_hi[:-1, 0], ours.bin_lo[1:, 0])
    np.testing.assert_array_equal(edges, -edges[::-1])
    assert set(np.abs(edges).round(3)) <= set(CMS_ABS_ETA_EDGES)
    np.testing.assert_array_equal(ours.params, ours.params[::-1])


def test_l2_formula_is_cms_syntax(derived, shared_data):
    _, out = derived
    table = read_jec_text(out / "Test_V1_MC_L2Relative_AK4PFchs.jec.txt")
    expected = (
        "max(0.0001,pow(x,0)*([0]+([1]/(pow(log10(x),2)+[2]))"
        "+([3]*exp(-([4]*((log10(x)-[5])*(log10(x)-[5])))))))"
    )
    assert table.formula == L2_FORMULA == expected
    assert table.header == "{1 JetEta 1 JetPt " + expected + " Correction L2Relative}"
    cms = read_jec_text(shared_data / UL18.format("L2Relative"))
    core = "[0]+([1]/(pow(log10(x),2)+[2]))+([3]*exp(-([4]*((log10(x)-[5])*(log10(x)-[5])))))"
    assert core in cms.formula
    assert core in table.formula
    assert table.params.shape[1] == 6


def test_l2_records_use_fitted_range(derived):
    result, out = derived
    table = read_jec_text(out / "Test_V1_MC_L2Relative_AK4PFchs.jec.txt")
    n = len(result.l2.fits)
    assert table.n_records == 2 * n
    for i, f in enumerate(result.l2.fits):
        row = n + i  # positive-eta record
        assert table.bin_lo[row, 0] == pytest.approx(f.abs_eta[0], abs=1e-6)
        assert table.var_lo[row, 0] == pytest.approx(f.pt_range[0], rel=1e-6)
        assert table.var_hi[row, 0] == pytest.approx(f.pt_range[1], rel=1e-6)
        assert f.pt_range[0] == min(p.median_pt_l1 for p in f.points)
        assert f.n_jets >= 500
        assert f.chi2 / f.ndf < 4.0, f


def test_derived_correction_closes(derived, standin):
    _, out = derived
    test, _ = select_jets(standin, split="test")
    stack = JECStack.from_spec(str(out))
    assert stack.backend == "coffea"
    assert stack.levels == ("L1FastJet", "L2Relative")
    table, _ = closure(test, stack, n_boot=50)
    tested = [b for b in table.bins if b.tested]
    assert len(tested) >= 30
    assert table.passed, table.failing
    assert max(abs(b.median - 1) for b in tested if b.pt_gen[0] >= 30) <= 0.01
    # without L2 the same jets are far from closing: the check has teeth
    l1_only = JECStack.from_text([out / "Test_V1_MC_L1FastJet_AK4PFchs.jec.txt"])
    raw_table, _ = closure(test, l1_only, n_boot=20)
    assert len(raw_table.failing) > 20


def test_text_and_json_agree(derived, standin):
    result, out = derived
    json_path = Path(result.files["json"])
    text = JECStack.from_spec(str(out))
    cl = JECStack.from_correctionlib(json_path, "Test_V1_MC", "AK4PFchs")
    rng = np.random.default_rng(3)
    n = 20000
    args = (
        np.exp(rng.uniform(np.log(3.0), np.log(7000.0), n)),  # includes out-of-range pT
        rng.uniform(-5.5, 5.5, n),  # and out-of-range eta
        rng.uniform(0.3, 0.7, n),
        rng.uniform(0.0, 80.0, n),
    )
    f_json, f_text = cl.factor(*args), text.factor(*args)
    np.testing.assert_allclose(f_json, f_text, rtol=0, atol=1e-5)
    # relative agreement wherever L1 is away from its 0.0001 floor (offset << pT)
    usable = f_text > 0.05
    assert np.count_nonzero(usable) > 0.8 * n
    np.testing.assert_allclose(f_json[usable], f_text[usable], rtol=1e-5)
    assert result.json_text_max_diff < 1e-5
    done = subprocess.run(
        [str(Path(sys.executable).parent / "correction"), "validate", str(json_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((out / "derivation.json").read_text())
    assert record["l2_formula"] == L2_FORMULA
    assert len(record["l2"]["fits"]) == len(result.l2.fits)
    assert all("chi2" in f and "ndf" in f for f in record["l1"]["fits"])
    assert record["cutflow"]["steps"][-1]["step"] == "split train"


def test_merge_abs_eta_bins():
    rng = np.random.default_rng(0)
    abs_eta = np.abs(rng.normal(0, 1.2, 6000))
    edges = merge_abs_eta_bins(abs_eta, min_jets=500)
    assert edges[0] == 0.0
    assert edges[-1] == CMS_ABS_ETA_EDGES[-1]
    assert set(edges) <= set(CMS_ABS_ETA_EDGES)
    counts = np.histogram(abs_eta, edges)[0]
    assert counts.min() >= 500
    assert counts.sum() == np.count_nonzero(abs_eta < CMS_ABS_ETA_EDGES[-1])
    # fewer jets than the threshold: one bin over the whole range
    np.testing.assert_array_equal(
        merge_abs_eta_bins(abs_eta[:100], min_jets=500), [0.0, CMS_ABS_ETA_EDGES[-1]]
    )


def test_grouped_quantiles_match_numpy():
    rng = np.random.default_rng(5)
    group = rng.integers(0, 7, 5000)
    values = rng.normal(group, 1.0)
    out = grouped_quantiles(group, values, np.ones(5000), 8, (0.25, 0.5, 0.75))
    for g in range(7):
        v = np.sort(values[group == g])
        for i, q in enumerate((0.25, 0.5, 0.75)):
            assert out[i, g] == v[int(np.ceil(q * len(v))) - 1]
    assert np.isnan(out[:, 7]).all()
    # integer weights act as repetitions
    w = rng.integers(1, 4, 5000).astype(float)
    rep = grouped_quantiles(np.repeat(group, w.astype(int)), np.repeat(values, w.astype(int)),
                            np.ones(int(w.sum())), 8, (0.5,))  # fmt: skip
    np.testing.assert_array_equal(grouped_quantiles(group, values, w, 8, (0.5,)), rep)


def test_l2_falls_back_with_few_points():
    rng = np.random.default_rng(2)
    n = 4000
    pt_gen = rng.choice([35.0, 45.0, 90.0, 700.0], n)  # four pT_gen bins only
    eta = rng.uniform(-1, 1, n)
    pt = pt_gen * _true_response(pt_gen, np.abs(eta)) * rng.normal(1, 0.05, n)
    result = fit_l2(
        eta, pt_gen, pt, np.ones(n), pt_gen_edges=(20, 40, 50, 100, 1000), min_jets=n
    )
    (fit,) = result.fits
    assert len(fit.points) == 4
    assert fit.stage == "log_only"  # too few points for the standard and full forms
    assert fit.ndf == 2
    ratio = (
        fit.params[0]
        + fit.params[1] / np.log10([p.median_pt_l1 for p in fit.points]) ** 2
    )
    np.testing.assert_allclose(
        ratio * [p.median_response for p in fit.points], 1.0, atol=0.01
    )


def test_l2_bin_without_populated_pt_bin_gets_one_point():
    rng = np.random.default_rng(4)
    n = 300  # spread over 20 pT_gen bins: no bin reaches 30 jets
    pt_gen = np.exp(rng.uniform(np.log(20.0), np.log(2000.0), n))
    pt = 0.9 * pt_gen * rng.normal(1, 0.05, n)
    eta = rng.uniform(-1, 1, n)
    edges = (20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300, 400, 500, 650, 800,
             1000, 1300, 1600, 2000)  # fmt: skip
    (fit,) = fit_l2(eta, pt_gen, pt, np.ones(n), pt_gen_edges=edges).fits
    assert len(fit.points) == 1
    assert fit.points[0].pt_gen == (20.0, 2000.0)
    assert fit.stage == "constant"
    assert fit.params[0] == pytest.approx(1 / 0.9, rel=0.01)


def test_missing_offset_truth_is_a_clear_error(standin, tmp_path):
    train, _ = select_jets(standin[:5000], split="train")
    no_truth = train[[f for f in train.fields if f != "pt_offset_truth"]]
    with pytest.raises(ConfigError, match=r"'pt_offset_truth'.*--l1 none"):
        derive_standard(no_truth, tmp_path)
    nan_truth = ak.with_field(train, np.full(len(train), np.nan), "pt_offset_truth")
    with pytest.raises(ConfigError, match=r"Jet_ptOffsetTruth.*--l1 none"):
        derive_standard(nan_truth, tmp_path)
    with pytest.raises(ValueError, match="tag"):
        DerivationConfig(tag="bad tag")
    with pytest.raises(ValueError, match="4 '_'-separated tokens"):
        DerivationConfig(tag="Sim")
    (tmp_path / "Other_V2_MC_L2Relative_AK4PFchs.jec.txt").write_text("{}")
    with pytest.raises(
        ConfigError, match=r"Other_V2_MC_L2Relative.*one tag per directory"
    ):
        derive_standard(train, tmp_path, DerivationConfig(l1="none"))


def test_l1_none_writes_unit_l1(standin, tmp_path):
    train, _ = select_jets(standin[:60000], split="train")
    result = derive_standard(train, tmp_path, DerivationConfig(l1="none"))
    assert result.l1 is None
    l1 = read_jec_text(tmp_path / "Sim_V1_MC_L1FastJet_AK4PFchs.jec.txt")
    assert l1.formula == "1"
    assert l1.n_records == 1
    stack = JECStack.from_spec(str(tmp_path))
    pt, eta, area = np.array([30.0, 300.0]), np.array([0.1, 0.1]), np.full(2, 0.5)
    # L1 = 1: the total factor does not depend on rho
    np.testing.assert_array_equal(
        stack.factor(pt, eta, area, np.full(2, 30.0)),
        stack.factor(pt, eta, area, np.full(2, 0.0)),
    )
    assert result.l2.fits[0].params[0] > 1.0  # L2 absorbs the offset and the response


# -- command line, on a NanoAOD-like ROOT file of the stand-in ---------------------------------


def _write_nanoaod(
    path: Path, jets: dict[str, np.ndarray], gen_part: ak.Array | None = None
) -> None:
    import uproot

    n_ev = len(jets["pt_raw"]) // 2

    def per_event(a):
        return ak.unflatten(np.asarray(a), np.full(n_ev, 2))

    branches = {
        "run": jets["run"][::2],
        "luminosityBlock": jets["luminosityBlock"][::2],
        "event": jets["event"][::2],
        "fixedGridRhoFastjetAll": jets["event_rho"][::2].astype(np.float32),
        "genWeight": jets["gen_weight"][::2].astype(np.float32),
        "Jet": ak.zip(
            {
                "pt": per_event(jets["pt_raw"].astype(np.float32)),
                "eta": per_event(jets["eta"].astype(np.float32)),
                "phi": per_event(jets["phi"].astype(np.float32)),
                "mass": per_event(np.full(2 * n_ev, 5.0, np.float32)),
                "rawFactor": per_event(np.zeros(2 * n_ev, np.float32)),
                "area": per_event(jets["area"].astype(np.float32)),
                "genJetIdx": per_event(np.tile(np.array([0, 1], np.int32), n_ev)),
                "ptOffsetTruth": per_event(jets["pt_offset_truth"].astype(np.float32)),
                "hadronFlavour": per_event(np.zeros(2 * n_ev, np.int32)),
                "partonFlavour": per_event(np.full(2 * n_ev, 21, np.int32)),
                "jetId": per_event(np.full(2 * n_ev, 6, np.int32)),
            }
        ),
        "GenJet": ak.zip(
            {
                "pt": per_event(jets["pt_gen"].astype(np.float32)),
                "eta": per_event(jets["eta_gen"].astype(np.float32)),
                "phi": per_event(jets["phi"].astype(np.float32)),
                "mass": per_event(np.full(2 * n_ev, 5.0, np.float32)),
            }
        ),
    }
    if gen_part is not None:
        branches["GenPart"] = gen_part
    with uproot.recreate(path) as f:
        f.mktree(
            "Events",
            {
                k: v.type if isinstance(v, ak.Array) else v.dtype
                for k, v in branches.items()
            },
        )
        f["Events"].extend(branches)


@pytest.fixture(scope="module")
def standin_dataset(tmp_path_factory) -> Path:
    from jec_coffea.data.dataset import describe_files

    folder = tmp_path_factory.mktemp("standin_nano")
    for i, seed in enumerate((11, 12)):
        _write_nanoaod(folder / f"standin_{i}.root", make_standin(120_000, seed))
    desc = describe_files(sorted(folder.glob("*.root")))
    desc.save(folder / "data.yaml")
    return folder / "data.yaml"


def test_cli_derive_and_close(standin_dataset, tmp_path, capsys, shared_data):
    out = tmp_path / "jec"
    code = main(
        ["derive-standard", str(standin_dataset), "-o", str(out), "--tag", "Nano_V1"]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "offset / A" in printed
    assert "rho" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "Nano_V1_MC_AK4PFchs.json",
        "Nano_V1_MC_L1FastJet_AK4PFchs.jec.txt",
        "Nano_V1_MC_L2Relative_AK4PFchs.jec.txt",
        "derivation.json",
    ]
    record = json.loads((out / "derivation.json").read_text())
    p1 = [f["params"][1] for f in record["l1"]["fits"] if f["abs_eta"][1] <= 2.5]
    assert np.mean(p1) == pytest.approx(P1_CENTRAL, rel=0.03)  # float32 file round trip

    report = tmp_path / "closure.json"
    code = main(["closure", str(standin_dataset), "--jec", str(out), "--n-boot", "30",
                 "--json", str(report)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "closes: all" in printed
    assert json.loads(report.read_text())["bins"]

    # CMS's own UL18 L1L2 does not describe the stand-in detector: closure fails, exit 1
    cms = ",".join(
        str(shared_data / UL18.format(lv)) for lv in ("L1FastJet", "L2Relative")
    )
    code = main(["closure", str(standin_dataset), "--jec", cms, "--n-boot", "20"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "FAILS" in printed
    assert "tested bins fail" in printed


def test_prompt_lepton_veto_from_genpart(tmp_path):
    from jec_coffea.data import read_jet_table
    from jec_coffea.standard.derive import prompt_lepton_dr

    jets = make_standin(6, seed=3)
    # event 0: a prompt muon on top of jet 0; event 1: a non-prompt one; event 2: none
    gen = ak.zip(
        {
            "pdgId": ak.Array([[13, 21], [-13], []]),
            "statusFlags": ak.Array([[1, 0], [0], []]),
            "status": ak.Array([[1, 1], [1], []]),
            "pt": ak.Array([[30.0, 50.0], [30.0], []]),
            "eta": ak.Array([[jets["eta"][0] + 0.05, 0.0], [jets["eta"][2]], []]),
            "phi": ak.Array([[jets["phi"][0], 0.0], [jets["phi"][2]], []]),
        }
    )
    gen = ak.values_astype(gen, np.float32)
    gen = ak.with_field(gen, ak.values_astype(gen.pdgId, np.int32), "pdgId")
    gen = ak.with_field(gen, ak.values_astype(gen.statusFlags, np.int32), "statusFlags")
    gen = ak.with_field(gen, ak.values_astype(gen.status, np.int32), "status")
    path = tmp_path / "leptons.root"
    _write_nanoaod(path, jets, gen)
    table = read_jet_table(path)
    dr = prompt_lepton_dr(str(path), "Events", table.jets)
    assert dr[0] == pytest.approx(0.05, abs=1e-3)
    assert np.all(dr[2:] == np.inf)
    selected, flow = select_jets(table.jets, lepton_dr=dr)
    assert len(selected) == 5
    assert flow.counts["no prompt lepton within dR 0.4"] == 5


def test_cli_bad_input(standin_dataset, tmp_path, capsys):
    assert (
        main(
            [
                "derive-standard",
                str(standin_dataset),
                "-o",
                str(tmp_path),
                "--tag",
                "a b",
            ]
        )
        == 2
    )
    assert "--tag" in capsys.readouterr().err
    bad = [
        "derive-standard",
        str(standin_dataset),
        "-o",
        str(tmp_path),
        "--min-jets",
        "-3",
    ]
    assert main(bad) == 2
    assert "option --min-jets" in capsys.readouterr().err
    missing = tmp_path / "nothing"
    assert main(["closure", str(standin_dataset), "--jec", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["closure", str(tmp_path / "none.yaml"), "--jec", "x.json"]) == 2
    assert "x.json" in capsys.readouterr().err


def test_cli_on_simulated_sample(sim_sample, tmp_path, capsys):
    """The real simulation through both commands (1,000 matched jets: mechanics, not physics)."""
    from jec_coffea.data import read_jet_table

    data = sim_sample / "data.yaml"
    first = min(sim_sample.glob("*.root"))
    has_truth = "pt_offset_truth" in read_jet_table(first).jets.fields
    out = tmp_path / "jec"
    common = ["-o", str(out), "--min-jets", "100", "--weights", "unit"]
    code = main(["derive-standard", str(data), *common])
    captured = capsys.readouterr()
    if has_truth:
        assert code == 0, captured.out + captured.err
    else:  # until the simulation writes Jet_ptOffsetTruth
        assert code == 2
        assert "pt_offset_truth" in captured.err
        assert "--l1 none" in captured.err
        code = main(["derive-standard", str(data), *common, "--l1", "none"])
        captured = capsys.readouterr()
        assert code == 0, captured.out + captured.err
    stack = JECStack.from_spec(str(out))
    assert stack.levels == ("L1FastJet", "L2Relative")
    code = main(["closure", str(data), "--jec", str(out), "--weights", "unit",
                 "--min-jets", "20", "--n-boot", "20"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code in (0, 1)
    assert "closure of Sim_V1_MC AK4PFchs" in printed
