"""The realism checks of issue 3 on a 20k-jet sample of the packaged detector (v3).

The sample is the one the README's realism table quotes (`jec-coffea simulate -o sim20k
--jets 20000 --shards 2 --seed 7`: flat pile-up 0-70 from a 20,000-event library); the checks
are those `jec-coffea validate-sim` prints, with the L1L2 derived on the sample. What passes
is asserted. What does not (yet) is an xfail with strict=True, so that the day it passes the
suite says so: our own comparison of the offset slope with CMS's L1FastJet gives 1.34 (the
endcap offset is twice CMS's). The sign of neHEF(g) - neHEF(uds) is not significant at 20k
jets (-0.007 +- 0.008); the difference is asserted to lie within 2 sigma of what CMS's full
simulation gives for the same jets (-0.005 +- 0.018 in the shared data's CMS files).
"""

from __future__ import annotations

import argparse

import pytest
from rich.console import Console

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")


@pytest.fixture(scope="module")
def report(tmp_path_factory, shared_data):
    from jec_coffea.commands.validate_sim import _standard
    from jec_coffea.simulation import SimulationConfig, default_detector, parse_pileup
    from jec_coffea.simulation import simulate as run_simulation
    from jec_coffea.simulation.composition import default_cms_mc_files
    from jec_coffea.simulation.validation import validate

    out = tmp_path_factory.mktemp("sim20k")
    config = SimulationConfig(detector=default_detector(), pileup=parse_pileup(None))
    run_simulation(config, out, n_jets=20_000, n_shards=2, seed=7, workers=2)
    args = argparse.Namespace(standard=None, no_derive=False)
    files = sorted(str(p) for p in out.glob("*.root"))
    work = tmp_path_factory.mktemp("derived")
    standard = _standard(Console(quiet=True), out, args, str(work))
    assert standard is not None
    rep = validate(
        files,
        shared_data / "jec" / "textfiles" / "pocketcoffea",
        standard,
        cms_mc=default_cms_mc_files(shared_data),
    )
    return {c.name: c for c in rep.checks}, rep


def test_sample_is_big_enough(report):
    _, rep = report
    assert rep.n_jets >= 20_000
    assert rep.derived


@pytest.mark.parametrize(
    "name",
    [
        "(a) derived L1L2 / CMS L1L2, min",
        "(a) derived L1L2 / CMS L1L2, max",
        "(b) core resolution / JER, min",
        "(b) core resolution / JER, max",
        "(c) median R(g) - R(uds), 30-50 GeV",
        "(c) neHEF(g) - neHEF(uds) vs CMS full simulation",
        "(d) offset / (rho A) slope",
    ],
)
def test_realism_check_passes(report, name):
    checks, _ = report
    check = checks[name]
    assert check.passed, (
        f"{name} = {check.value:.4f}, accepted {check.low}-{check.high}"
    )


@pytest.mark.xfail(strict=True, reason="endcap pile-up offset twice CMS's L1FastJet")
def test_offset_slope_as_cms_l1fastjet(report):
    checks, _ = report
    assert checks["(d) slope / CMS L1FastJet slope"].passed


def test_same_sample_as_the_readme(report):
    """The fixture reproduces `jec-coffea simulate -o sim20k --jets 20000 --shards 2 --seed 7`
    (the README's 20k column): same seed, same arrays, same figures."""
    checks, _ = report
    assert checks["(a) derived L1L2 / CMS L1L2, min"].value == pytest.approx(
        0.9156, abs=5e-4
    )
    assert checks["(b) core resolution / JER, min"].value == pytest.approx(
        0.8232, abs=5e-4
    )
