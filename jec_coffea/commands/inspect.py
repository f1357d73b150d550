"""Show what jec-coffea reads from a file: layout, counts, flavours and a field summary.

`jec-coffea inspect FILE` detects the layout, reads the file into the jet table and prints the
number of events, jets, gen-matched jets and constituents by type, the flavour composition of
the matched jets, the fields the layout lacks (and why), a min/median/max/NaN summary of every
numerical jet-table field and of the jet-level features (with the number of values replaced by
their default). Bad files give one error line and exit status 2.
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

NAME = "inspect"


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="ROOT file (path or URL)")
    parser.add_argument("--layout", help="force a layout instead of detecting it")
    parser.add_argument("--tree", help="tree name (default: the layout's tree)")
    parser.add_argument(
        "--entry-stop", type=int, default=None, help="read only the first N entries"
    )
    parser.add_argument(
        "--puppi",
        action="store_true",
        help="weight PF candidates by puppiWeight (PUPPI jets)",
    )
    parser.add_argument(
        "--no-features",
        action="store_true",
        help="skip the summary of the jet-level features",
    )


def _stats(values: np.ndarray) -> tuple[str, str, str, str]:
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    n_nan = int(np.count_nonzero(np.isnan(values)))
    if finite.size == 0:
        return "-", "-", "-", str(n_nan)
    lo, med, hi = np.min(finite), np.median(finite), np.max(finite)
    return f"{lo:.4g}", f"{med:.4g}", f"{hi:.4g}", str(n_nan)


def _counts_table(table, n_events: int) -> Table:
    import awkward as ak

    from jec_coffea.data import CONSTITUENT_TYPES

    jets = table.jets
    out = Table(title="counts", show_header=False)
    out.add_column("what")
    out.add_column("count", justify="right")
    out.add_row("events (tree entries) read", str(n_events))
    out.add_row("jets", str(len(jets)))
    if "matched" in jets.fields:
        out.add_row("gen-matched jets", str(int(np.sum(ak.to_numpy(jets.matched)))))
    else:
        out.add_row("gen-matched jets", "missing")
    for ctype in CONSTITUENT_TYPES:
        if ctype in jets.fields:
            n = ak.to_numpy(ak.num(jets[ctype], axis=1))
            mean = f" (mean {n.mean():.1f}/jet)" if n.size else ""
            out.add_row(f"{ctype} constituents", f"{int(n.sum())}{mean}")
        else:
            out.add_row(f"{ctype} constituents", "missing")
    if "constituents_complete" in jets.fields and len(jets):
        complete = bool(np.all(ak.to_numpy(jets.constituents_complete)))
        out.add_row("constituents complete", "yes" if complete else "NO")
    return out


def _flavour_table(jets) -> Table | None:
    import awkward as ak

    from jec_coffea.data import FLAVOUR_GROUPS

    if "flavour_group" not in jets.fields:
        return None
    groups = ak.to_numpy(jets.flavour_group)
    if "matched" in jets.fields:
        groups = groups[ak.to_numpy(jets.matched)]
    counts = np.bincount(groups.astype(np.int64), minlength=len(FLAVOUR_GROUPS))
    out = Table(title="flavour of matched jets")
    for name in FLAVOUR_GROUPS:
        out.add_column(name, justify="right")
    total = max(int(counts.sum()), 1)
    out.add_row(*(f"{c} ({100 * c / total:.0f}%)" for c in counts))
    return out


def _fields_table(jets) -> Table:
    import awkward as ak

    out = Table(title="jet-table fields")
    for col, just in (
        ("field", "left"),
        ("min", "right"),
        ("median", "right"),
        ("max", "right"),
        ("NaN", "right"),
    ):
        out.add_column(col, justify=just)
    for name in jets.fields:
        column = jets[name]
        if column.ndim == 1 and not column.fields:
            values = ak.to_numpy(column)
            if values.dtype.kind in "biuf":
                out.add_row(name, *_stats(values))
            continue
        for sub in column.fields:  # constituents: summarise every numerical field
            values = ak.to_numpy(ak.flatten(column[sub], axis=None))
            if values.dtype.kind in "biuf":
                out.add_row(f"{name}.{sub}", *_stats(values))
    return out


def _features_table(table) -> Table:
    from jec_coffea.features import JET_FEATURES, ReplacementCounts, jet_features

    counts = ReplacementCounts()
    names = list(JET_FEATURES)
    values = jet_features(table, names, counts=counts)
    out = Table(title="jet-level features")
    for col in ("feature", "min", "median", "max", "replaced"):
        out.add_column(col, justify="left" if col == "feature" else "right")
    for name in names:
        lo, med, hi, _ = _stats(values[name])
        out.add_row(name, lo, med, hi, str(counts.replaced(f"jet.{name}")))
    return out


def _entries(args: argparse.Namespace, layout) -> int:
    """Entries of the tree that were read (events, or jets for per-jet layouts)."""
    from jec_coffea.data._open import open_root

    with open_root(args.file) as directory:
        n = int(directory[args.tree or layout.tree].num_entries)
    return n if args.entry_stop is None else min(n, max(args.entry_stop, 0))


def run(console: Console, args: argparse.Namespace) -> int:
    from jec_coffea.data import read_jet_table
    from jec_coffea.data._layouts import LAYOUTS

    table = read_jet_table(
        args.file,
        layout=args.layout,
        tree=args.tree,
        entry_stop=args.entry_stop,
        puppi_weighted=args.puppi,
    )
    jets = table.jets
    layout = LAYOUTS[table.layout]
    console.print(f"[bold]{table.source}[/bold]")
    console.print(
        f"layout: [bold]{table.layout}[/bold] ({layout.description}); "
        f"jet radius R = {table.jet_radius}"
    )
    console.print(_counts_table(table, _entries(args, layout)))
    flavours = _flavour_table(jets)
    if flavours is not None:
        console.print(flavours)
    if table.missing:
        missing = Table(title="missing in this layout")
        missing.add_column("field")
        missing.add_column("reason")
        for name, reason in table.missing.items():
            missing.add_row(name, reason)
        console.print(missing)
    console.print(_fields_table(jets))
    if not args.no_features and len(jets):
        console.print(_features_table(table))
    return 0
