"""Print the realism table of a simulated sample and check it against CMS references.

Compares raw jet response, resolution, flavour dependence and pile-up offset of the PFNano
files in DIR (or listed by DIR/data.yaml) with Summer19UL18_V5_MC L1FastJet x L2Relative and
Summer19UL17_JRV3_MC PtResolution (AK4PFchs). Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

NAME = "validate-sim"


def _default_jec_dir() -> str:
    from ..paths import shared_data_dir

    return str(shared_data_dir() / "jec" / "textfiles" / "pocketcoffea")


def _standard(console: Console, folder: Path, args: argparse.Namespace, tmp: str):
    """The L1L2 derived on the sample: --standard, else derived on DIR/data.yaml into
    ``tmp``, else None."""
    from ..errors import JecCoffeaError
    from ..standard import JECStack

    if args.standard:
        return JECStack.from_spec(args.standard)
    data = folder / "data.yaml"
    if args.no_derive or not data.is_file():
        console.print(
            "no L1L2 derived on the sample (--no-derive or no data.yaml): (a) compares the "
            "inverse median response, (b) resolution after CMS's L1FastJet"
        )
        return None
    from ..standard.derive import DerivationConfig, derive_standard, load_jets

    jets, _ = load_jets(data, None)
    try:
        result = derive_standard(
            jets, tmp, DerivationConfig(tag="Sim_V1", weights="unit"), source=str(data)
        )
    except (JecCoffeaError, ValueError) as err:  # too few jets to fit, say
        console.print(
            f"[yellow]could not derive the L1L2 on {data}: {err}; (a) compares the "
            "inverse median response, (b) resolution after CMS's L1FastJet"
        )
        return None
    stack = JECStack.from_spec(tmp)
    console.print(
        f"L1L2 derived on the sample: {result.n_jets} jets (derive-standard --split all "
        "--weights unit)"
    )
    return stack


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the options."""
    parser.add_argument(
        "directory", help="folder with the simulated ROOT files (and data.yaml)"
    )
    parser.add_argument(
        "--jec-dir", default=None, help="folder of the CMS JEC/JER text files"
    )
    parser.add_argument(
        "--standard",
        default=None,
        metavar="SPEC",
        help="the L1L2 derived on this sample for checks (a) and (b): a derive-standard "
        "folder or any JECStack spec (default: derived here when DIR has a data.yaml)",
    )
    parser.add_argument(
        "--fine-eta",
        action="store_true",
        help="also print the core resolution / JER in 8 |eta| bins x 3 pT bins",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the report (tables, checks with errors, the sample's detector and "
        "seeds) as JSON",
    )
    parser.add_argument(
        "--no-derive",
        action="store_true",
        help="do not derive the L1L2: (a) compares the inverse median response, (b) uses "
        "CMS's L1FastJet",
    )


def run(console: Console, args: argparse.Namespace) -> int:
    """Compute and print the tables and checks."""
    from rich.table import Table

    from ..errors import InputFileError
    from ..simulation.validation import validate

    folder = Path(args.directory)
    files = sorted(str(p) for p in folder.glob("*.root")) if folder.is_dir() else []
    if not files:
        raise InputFileError(str(folder), "no .root files found")
    with tempfile.TemporaryDirectory(prefix="validate-sim-") as tmp:
        standard = _standard(console, folder, args, tmp)
        rep = validate(
            files,
            args.jec_dir or _default_jec_dir(),
            standard,
            fine_eta=args.fine_eta,
        )
    console.width = max(console.width, 150)
    console.print(
        f"{rep.n_jets} gen-matched jets (dR < 0.2), <rho> = {rep.mean_rho:.1f} GeV"
    )
    t = Table(
        title="raw response R = pT_raw/pT_gen and resolution vs CMS references",
        caption="L1L2: CMS Summer19UL18 at each jet's rho; ours/L1L2: the derived L1L2 over "
        "CMS's, both at <rho>; core s/m: after "
        + ("the derived L1L2" if rep.derived else "CMS's L1FastJet (nothing derived)"),
    )
    cols = [
        "|eta|",
        "pT_gen",
        "n",
        "median R",
        "uds",
        "c",
        "b",
        "g",
        "L1L2",
        "(1/R)/L1L2",
        "ours/L1L2",
        "core s/m",
        "JER",
        "ratio",
    ]
    for c in cols:
        t.add_column(c, justify="right")
    for r in rep.response_table:
        t.add_row(
            r["eta"], r["pt"], str(r["n"]), f"{r['median']:.3f}",
            *(f"{r[f]:.3f}" for f in ("uds", "c", "b", "g")),
            f"{r['l1l2']:.3f}", f"{r['inv_over_l1l2']:.3f}", f"{r['ours_over_cms']:.3f}",
            f"{r['res']:.3f}", f"{r['jer']:.3f}",
            f"{r['res_ratio']:.2f} ± {r['res_ratio_err']:.2f}",
        )  # fmt: skip
    console.print(t)
    if rep.fine_eta_table:
        console.print(_fine_eta(rep.fine_eta_table))
    c = Table(title="realism checks")
    for col in ("check", "value", "accepted", "result", "detail"):
        c.add_column(col)
    for chk in rep.checks:
        c.add_row(
            chk.name, f"{chk.value:.4f}", f"[{chk.low:g}, {chk.high:g}]",
            "[green]pass" if chk.passed else "[red]FAIL", chk.detail,
        )  # fmt: skip
    console.print(c)
    if args.json is not None:
        rep.to_json(args.json)
        console.print(f"wrote {args.json}")
    return 0 if rep.passed else 1


def _fine_eta(rows: list[dict]):
    """|eta| x pT_gen map of core resolution / JER (cells: ours / JER = ratio)."""
    from rich.table import Table

    from ..simulation.validation import MIN_FINE_JETS

    pts = list(dict.fromkeys(r["pt"] for r in rows))
    t = Table(
        title="core resolution / JER in fine |eta| bins (ours / CMS = ratio)",
        caption=f"cells with fewer than {MIN_FINE_JETS} jets are left empty",
    )
    t.add_column("|eta|")
    for pt in pts:
        t.add_column(f"pT_gen {pt}", justify="right")
    for eta in dict.fromkeys(r["eta"] for r in rows):
        cells = []
        for pt in pts:
            (r,) = (x for x in rows if x["eta"] == eta and x["pt"] == pt)
            ok = r["ratio"] == r["ratio"]  # not NaN
            cells.append(
                f"{r['res']:.3f} / {r['jer']:.3f} = {r['ratio']:.2f} ± {r['ratio_err']:.2f}"
                if ok
                else ""
            )
        t.add_row(eta, *cells)
    return t
