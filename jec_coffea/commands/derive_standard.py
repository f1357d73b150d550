"""Derive the standard correction (L1FastJet + L2Relative) by MC truth on a simulated sample.

Reads the training split (jec_coffea.data.split) of the dataset DATA (data.yaml), or every
jet with --split all (a training sample simulated apart from the test sample), keeps the
matched jets passing the default selection and derives:

- L1FastJet from the per-jet pile-up offset (jet-table field pt_offset_truth: the pile-up
  share of the jet's energy, a truth of the simulation), fitted per |eta| bin as
  offset/A = p1 (rho - p0) (1 + p2 ln(pT/15)), the form of Summer19UL18_V5 AK4PFchs;
- L2Relative on the L1-corrected jets: 1 / median(pT_L1/pT_gen) against the median pT_L1 in
  pT_gen bins, per |eta| bin (CMS edges, merged below --min-jets), fitted with CMS's
  standard + Gaussian formula.

Writes DIR/{tag}_MC_L1FastJet_{jettype}.jec.txt, DIR/{tag}_MC_L2Relative_{jettype}.jec.txt,
the correctionlib JSON DIR/{tag}_MC_{jettype}.json (validated, checked against the text files)
and DIR/derivation.json (every fit, chi2, points). Load it with JECStack.from_spec(DIR) or
`jec-coffea closure DATA --jec DIR`.

Example:
  jec-coffea derive-standard sim/data.yaml -o jec/Sim_V1 --tag Sim_V1
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

NAME = "derive-standard"

log = logging.getLogger(__name__)


_OPTION_OF_FIELD = {"min_jets_eta_bin": "min-jets", "min_jets_point": "min-point-jets"}
"""Command-line option of each DerivationConfig field whose name differs."""


def _wide(console: Console) -> Console:
    """The console itself on a terminal; into a file or pipe, one 160 columns wide so that
    wide tables are written whole instead of cut at 80 columns."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=160)


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``derive-standard``."""
    parser.add_argument("data", type=Path, help="dataset description (data.yaml)")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="output directory"
    )
    parser.add_argument("--tag", default="Sim_V1", help="version tag (default Sim_V1)")
    parser.add_argument(
        "--jet-type", default="AK4PFchs", help="jet type (default AK4PFchs)"
    )
    parser.add_argument(
        "--l1",
        choices=("fit", "none"),
        default="fit",
        help="fit L1FastJet from pt_offset_truth (default), or write L1 = 1 (formula '1', as "
        "CMS does for PUPPI) and let L2Relative absorb the mean offset",
    )
    parser.add_argument(
        "--weights",
        choices=("gen", "unit"),
        default="gen",
        help="weight jets by genWeight (default) or count each once (for pT-hat-biased "
        "samples whose weights span orders of magnitude)",
    )
    parser.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        default="train",
        help="split to derive on (default train); 'all' takes every jet of DATA, for a "
        "training sample independent of the test sample",
    )
    parser.add_argument(
        "--min-jets",
        type=float,
        default=500.0,
        help="minimum jets per merged |eta| bin (default 500)",
    )
    parser.add_argument(
        "--min-point-jets",
        type=float,
        default=30.0,
        help="minimum jets per (|eta|, pT_gen) point of the L2 fit (default 30)",
    )


def _l1_tables(result) -> tuple[Table, Table]:
    """The L1 fit parameters, and the mean offset / A vs rho per |eta| bin (measured/fit)."""
    l1 = result.l1
    fits = Table(title="L1FastJet fit: offset/A = p1 (rho - p0) (1 + p2 ln(pT/15))")
    for col in ("|eta|", "jets", "p0 [GeV]", "p1", "p2", "chi2/ndf", "stage"):
        fits.add_column(col, justify="right")
    vs_rho = Table(title="L1FastJet: mean offset / A [GeV] vs rho [GeV], measured/fit")
    vs_rho.add_column("|eta|", justify="right")
    for lo, hi in itertools.pairwise(l1.rho_edges):
        vs_rho.add_column(f"{lo:.0f}-{hi:.0f}", justify="right")
    for f in l1.fits:
        eta = f"{f.abs_eta[0]:.3f}-{f.abs_eta[1]:.3f}"
        fits.add_row(
            eta,
            str(f.n_jets),
            *(f"{v:.3f}±{e:.3f}" for v, e in zip(f.params, f.errors, strict=True)),
            f"{f.chi2:.1f}/{f.ndf}",
            f.stage,
        )
        vs_rho.add_row(
            eta,
            *(
                f"{m:.1f}/{p:.1f}"
                for m, p in zip(f.rho_mean_offset, f.rho_fit_offset, strict=True)
            ),
        )
    return fits, vs_rho


def _l2_table(result) -> Table:
    table = Table(title="L2Relative: fit of 1/median(R) vs median pT_L1")
    for col in ("|eta|", "jets", "points", "pT_L1 range [GeV]", "chi2/ndf", "stage"):
        table.add_column(col, justify="right")
    for f in result.l2.fits:
        table.add_row(
            f"{f.abs_eta[0]:.3f}-{f.abs_eta[1]:.3f}",
            str(f.n_jets),
            str(len(f.points)),
            f"{f.pt_range[0]:.1f}-{f.pt_range[1]:.1f}",
            f"{f.chi2:.1f}/{f.ndf}",
            f.stage
            + (f" (failed: {', '.join(f.failed_stages)})" if f.failed_stages else ""),
        )
    return table


def run(console: Console, args: argparse.Namespace) -> int:
    """Load the split, derive, write and print the fit summaries; 0 on success."""
    from pydantic import ValidationError

    from ..errors import ConfigError
    from ..standard.derive import DerivationConfig, derive_standard, load_jets

    try:
        config = DerivationConfig(
            tag=args.tag,
            jet_type=args.jet_type,
            l1=args.l1,
            weights=args.weights,
            min_jets_eta_bin=args.min_jets,
            min_jets_point=args.min_point_jets,
        )
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "tag"
        where = _OPTION_OF_FIELD.get(field, field.replace("_", "-"))
        reason = first.get("ctx", {}).get("error") or first["msg"]
        msg = f"option --{where}: {reason}"
        raise ConfigError(msg) from err
    jets, cutflow = load_jets(args.data, None if args.split == "all" else args.split)
    console.print(cutflow)
    result = derive_standard(
        jets, args.output, config, source=str(args.data), cutflow=cutflow
    )
    wide = _wide(console)
    if result.l1 is not None:
        for table in _l1_tables(result):
            wide.print(table)
    wide.print(_l2_table(result))
    console.print(
        f"derived from {result.n_jets} jets ({args.split} split); text vs JSON largest "
        f"factor difference {result.json_text_max_diff:.1e}"
    )
    for level, path in result.files.items():
        console.print(f"  {level}: {path}")
    return 0
