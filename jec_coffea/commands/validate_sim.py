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


def _cms_mc(console: Console, args: argparse.Namespace) -> dict | None:
    """The jets of the CMS simulation files for the composition (--cms-mc, else the shared
    data folder's when all are there), read now so that a bad file is said before the long
    part; None (said, not an error: the checks (a)-(d) need only the JEC tables) without."""
    from ..errors import InputFileError
    from ..simulation.composition import default_cms_mc_files, load_reference

    if args.no_cms_mc:
        return None
    if args.cms_mc:
        for f in args.cms_mc:
            if not Path(f).is_file():
                raise InputFileError(f, "--cms-mc: file not found")
        return load_reference(args.cms_mc)
    files = default_cms_mc_files()
    missing = [f for f in files if not f.is_file()]
    if missing:
        console.print(
            f"no comparison of the PF fractions with CMS's simulation: {missing[0]} not "
            "found (--cms-mc FILE ... names others)"
        )
        return None
    return load_reference(files)


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
        "--cms-mc",
        nargs="+",
        default=None,
        metavar="FILE",
        help="CMS full-simulation NanoAOD (AK4 CHS jets, GenJets, flavours) to compare the "
        "jets' PF energy fractions with (default: the CHS MC files of the shared data "
        "folder, when present)",
    )
    parser.add_argument(
        "--no-cms-mc",
        action="store_true",
        help="skip the comparison of the PF energy fractions with CMS's simulation",
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
    cms_mc = _cms_mc(console, args)
    with tempfile.TemporaryDirectory(prefix="validate-sim-") as tmp:
        standard = _standard(console, folder, args, tmp)
        rep = validate(
            files,
            args.jec_dir or _default_jec_dir(),
            standard,
            fine_eta=args.fine_eta,
            cms_mc=cms_mc,
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
    if rep.composition:
        console.print(_composition(rep.composition))
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


def _composition(comp: dict):
    """Mean PF fractions per flavour: ours (weighted to the CMS jets' pT_gen and rho) and
    CMS's simulation, with the pull of ours."""
    from rich.table import Table

    from ..simulation.composition import FLAVOURS, FRACTIONS

    sel = comp["selection"]
    t = Table(
        title="PF energy fractions (mean): ours / CMS full simulation (pull)",
        caption=f"gen-matched jets, |eta| < {sel['abs_eta_max']:g}, "
        f"{sel['pt_gen_edges'][0]:g}-{sel['pt_gen_edges'][-1]:g} GeV, muEF and chEmEF < "
        f"{sel['lepton_veto']:g}; ours weighted to the CMS jets' pT_gen and rho "
        f"(<rho> {comp['mean_rho']['ours_weighted']:.1f} against CMS "
        f"{comp['mean_rho']['cms']:.1f} GeV); CMS files: {len(comp['cms_files'])}",
    )
    for col in ("flavour", "fraction", "ours", "CMS", "pull", "jets ours / CMS"):
        t.add_column(col, justify="left" if col in ("flavour", "fraction") else "right")

    def num(v: float | None, err: float | None) -> str:
        if v is None:
            return ""
        return f"{v:.3f} ± {err:.3f}" if err is not None else f"{v:.3f}"

    for fl in (*FLAVOURS, "g - uds"):
        rows = (
            [r for r in comp["rows"] if r["flavour"] == fl]
            if fl in FLAVOURS
            else comp["differences"]
        )
        n = f"{comp['n_ours'][fl]} / {comp['n_cms'][fl]}" if fl in FLAVOURS else ""
        for k, r in enumerate(
            sorted(rows, key=lambda r: FRACTIONS.index(r["fraction"]))
        ):
            t.add_row(
                fl if k == 0 else "",
                r["fraction"],
                num(r["ours"], r["ours_err"]),
                num(r["cms"], r["cms_err"]),
                "" if r["pull"] is None else f"{r['pull']:+.1f}",
                n if k == 0 else "",
                end_section=k == len(rows) - 1,
            )
    return t


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
