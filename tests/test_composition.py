"""PF energy fractions per flavour against CMS's full simulation (``validate-sim``'s
composition table): the reference files' figures, the (pT_gen, rho) weighting, PUPPI files
named, and bad inputs named by file and branch."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import uproot

from jec_coffea.errors import ConfigError, InputFileError, MissingBranchError
from jec_coffea.simulation.composition import (
    CMS_MC_FILES,
    FRACTIONS,
    compare_composition,
    default_cms_mc_files,
    load_fraction_jets,
)


@pytest.fixture(scope="module")
def cms_jets(shared_data):
    return load_fraction_jets(default_cms_mc_files(shared_data))


def _files(folder):
    return sorted(str(p) for p in folder.glob("*.root"))


def test_cms_fractions_add_up_per_jet(cms_jets):
    """The five NanoAOD fractions are the whole jet in the barrel (HF has its own)."""
    central = np.abs(cms_jets["eta"]) < 1.3
    total = sum(cms_jets[f] for f in FRACTIONS)[central]
    assert central.sum() > 300
    assert np.mean(np.abs(total - 1) < 0.02) > 0.95


def test_cms_reference_figures(cms_jets):
    """The reference as the shipped CMS files give it (CHS jets, 20-100 GeV, |eta| < 1.3):
    neHEF(g) - neHEF(uds) is -0.005 +- 0.018, i.e. its sign is not measured by these
    files; light jets carry 0.60-0.63 in charged hadrons and 0.26-0.28 in photons."""
    # a reference of its own: every cell of CMS's jets is covered
    comp = compare_composition(cms_jets, cms_jets)
    assert comp.n_cms == {"uds": 41, "g": 125, "c": 17, "b": 8}
    assert comp.uncovered == {"uds": 0, "g": 0, "c": 0, "b": 0}
    d = comp.difference("neHEF")
    assert d["cms"] == pytest.approx(-0.0055, abs=5e-4)
    assert d["cms_err"] == pytest.approx(0.0179, abs=5e-4)
    assert d["ours"] == pytest.approx(d["cms"])  # weights of 1 on the same jets
    for fl in ("uds", "g"):
        assert 0.60 < comp.row(fl, "chHEF")["cms"] < 0.64
        assert 0.26 < comp.row(fl, "neEmEF")["cms"] < 0.29
    assert comp.mean_rho["cms"] == pytest.approx(comp.mean_rho["ours_weighted"])


def _synthetic(rho, flavour="g"):
    n = len(rho)
    jets = {f: np.zeros(n) for f in FRACTIONS}
    jets["neEmEF"] = 0.2 + 0.004 * rho  # pile-up adds photons
    jets["chHEF"] = 1 - jets["neEmEF"]
    jets |= {
        "eta": np.zeros(n),
        "pt_gen": np.full(n, 40.0),
        "rho": rho,
        "flavour": np.full(n, flavour),
        "file": np.zeros(n, int),
        "puppi": np.zeros(n, bool),
    }
    return jets


def test_ours_are_weighted_to_the_reference_rho():
    """A fraction that rises with rho: our sample (rho uniform 0-40) is weighted to the
    reference's (rho near 10) and agrees with it; unweighted it would be off by 0.04.
    Reference jets in a rho cell where we have none are dropped from both and counted."""
    rng = np.random.default_rng(1)
    ours = _synthetic(rng.uniform(0, 40, 20000))
    ours = {k: v[ours["rho"] < 30] for k, v in ours.items()}  # none at rho >= 30
    ref = _synthetic(np.concatenate([rng.uniform(5, 15, 300), np.full(7, 35.0)]))
    comp = compare_composition(ours, ref)
    assert comp.uncovered["g"] == 7
    assert comp.n_cms["g"] == 300
    row = comp.row("g", "neEmEF")
    expected = np.mean(ref["neEmEF"][:300])
    assert np.mean(ours["neEmEF"]) - expected > 0.015  # what the weighting removes
    assert row["ours"] == pytest.approx(expected, abs=0.003)
    assert abs(row["pull"]) < 3
    assert 0 < row["ours_err"] < 0.002


def test_composition_of_the_simulated_sample(sim_sample, cms_jets):
    """Our jets (CHS, the packaged detector) against CMS's: the fractions add up, every
    flavour is there, and the pulls of light jets' hadron fractions are within 5."""
    comp = compare_composition(_files(sim_sample), cms_jets)
    assert len(comp.rows) == 4 * len(FRACTIONS)
    for fl in ("uds", "g", "c", "b"):
        assert comp.n_ours[fl] > 20
        total = sum(comp.row(fl, f)["ours"] for f in FRACTIONS)
        assert total == pytest.approx(1.0, abs=0.02)
    for fl in ("uds", "g"):
        for frac in ("chHEF", "neHEF", "neEmEF"):
            assert abs(comp.row(fl, frac)["pull"]) < 5, (fl, frac)
    assert comp.row("b", "muEF")["ours"] > comp.row("uds", "muEF")["ours"]
    assert comp.to_dict()["rows"][0]["flavour"] == "uds"


def test_puppi_reference_files_are_named(shared_data, sim_sample, caplog):
    """NanoAOD v12's Jet is AK4 PUPPI: such a reference file is accepted but named, in
    the log and in the result, and it is not among the default files."""
    tt = shared_data / "nanoaod" / "coffea_nano_tt_v12.root"
    assert "nanoaod/coffea_nano_tt_v12.root" not in CMS_MC_FILES
    with caplog.at_level(logging.WARNING):
        comp = compare_composition(_files(sim_sample), [tt])
    assert comp.puppi_files == [str(tt)]
    assert "AK4 PUPPI" in caplog.text
    # the test sample has pile-up mu = 10: CMS's Run-3 jets at higher rho find none of ours
    assert comp.n_cms["g"] > 10
    assert comp.uncovered["g"] > 10
    assert comp.mean_rho["ours_weighted"] == pytest.approx(comp.mean_rho["cms"], abs=2)


def _write_events(path, branches):
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.dtype for k, v in branches.items()})
        f["Events"].extend(branches)


def test_bad_reference_files(shared_data, tmp_path):
    """Missing branch, data file without flavours, truncated, not ROOT, empty list: each a
    clear error naming the file and what is wrong."""
    real = shared_data / "pfnano" / "coffea_pfnano.root"
    no_nehef = tmp_path / "no_nehef.root"
    _write_events(no_nehef, {"run": np.ones(3, np.uint32)})
    with pytest.raises(MissingBranchError) as err:
        load_fraction_jets([real, no_nehef])
    assert str(no_nehef) in str(err.value)
    assert "Jet_pt" in str(err.value)

    data = shared_data / "nanoaod" / "coffea_nano_dimuon.root"
    with pytest.raises(MissingBranchError, match="GenJets and flavours") as err:
        load_fraction_jets([data])
    assert str(data) in str(err.value)

    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    with pytest.raises(InputFileError) as err:
        load_fraction_jets([truncated])
    assert str(truncated) in str(err.value)

    text = tmp_path / "notes.root"
    text.write_text("not a ROOT file")
    with pytest.raises(InputFileError, match=r"notes\.root"):
        load_fraction_jets([text])

    with pytest.raises(ConfigError, match="no files"):
        load_fraction_jets([])

    no_tree = tmp_path / "no_events.root"
    with uproot.recreate(no_tree) as f:
        f["note"] = "no Events tree"
    with pytest.raises(InputFileError) as err:
        load_fraction_jets([no_tree])
    assert str(no_tree) in str(err.value)


def test_reference_without_jets_is_refused(shared_data, sim_sample, tmp_path):
    """A reference whose Events tree has every branch but no event is an error naming it,
    not a table of NaN; so are jets of which none passes the selection."""
    import awkward as ak

    from jec_coffea.simulation.composition import _JET_BRANCHES

    real = shared_data / "pfnano" / "coffea_pfnano.root"
    names = [*_JET_BRANCHES, "fixedGridRhoFastjetAll"]
    a = uproot.open(real)["Events"].arrays(names, entry_stop=0)
    jets = ak.zip({k[4:]: a[k] for k in names if k.startswith("Jet_")})
    gen = ak.zip({k[7:]: a[k] for k in names if k.startswith("GenJet_")})
    empty = tmp_path / "zero_events.root"
    with uproot.recreate(empty) as f:
        f.mktree(
            "Events",
            {
                "Jet": jets.type.content,
                "GenJet": gen.type.content,
                "fixedGridRhoFastjetAll": np.float32,
            },
        )
        f["Events"].extend(
            {
                "Jet": jets,
                "GenJet": gen,
                "fixedGridRhoFastjetAll": ak.to_numpy(a.fixedGridRhoFastjetAll),
            }
        )
    with pytest.raises(InputFileError, match="no jet to compare") as err:
        compare_composition(_files(sim_sample), [empty])
    assert str(empty) in str(err.value)

    forward = _synthetic(np.full(50, 20.0))
    forward["eta"][:] = 3.0
    with pytest.raises(InputFileError, match=r"no jet to compare \(ours\)"):
        compare_composition(forward, [real])


def test_validate_sim_prints_the_composition(sim_sample, shared_data, capsys, tmp_path):
    """validate-sim compares with the CMS files of the shared folder by default, with
    --cms-mc FILE ... with others; --no-cms-mc skips it; a missing file is a bad input."""
    from jec_coffea.cli import main

    jec = str(shared_data / "jec" / "textfiles" / "pocketcoffea")
    base = ["validate-sim", str(sim_sample), "--jec-dir", jec, "--no-derive"]
    main(base)
    out = capsys.readouterr().out
    assert "PF energy fractions (mean): ours / CMS full simulation" in out
    assert "neHEF(g) - neHEF(uds) vs CMS full simulation" in out
    assert "CMS files: 5" in out

    one = shutil.copy(shared_data / CMS_MC_FILES[1], tmp_path / "ul17.root")
    main([*base, "--cms-mc", str(one)])
    out = capsys.readouterr().out
    assert "CMS files: 1" in out

    main([*base, "--no-cms-mc"])
    out = capsys.readouterr().out
    assert "PF energy fractions" not in out
    assert "vs CMS full simulation" not in out

    missing = tmp_path / "nowhere.root"
    assert main([*base, "--cms-mc", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "--cms-mc" in err

    # a file that does not read is said before the long part (no table computed and lost)
    real = shared_data / CMS_MC_FILES[1]
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
    assert main([*base, "--cms-mc", str(one), str(truncated)]) == 2
    captured = capsys.readouterr()
    assert str(truncated) in captured.err
    assert "realism checks" not in captured.out
