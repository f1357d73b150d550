"""Write one validated correctionlib JSON with the standard levels, DNN tables and networks.

Any combination of:
  --standard DIR     derived standard correction (derive-standard directory, CMS text files):
                     {tag}_L1FastJet_{jet}, {tag}_L2Relative_{jet} and compound {tag}_L1L2_{jet}
  --binned METHOD    median DNN factor pT_corr/pT_raw per (eta, raw pT) bin, named METHOD_binned,
                     from --columns (parquet of 'run --save-columns', or files with METHOD_factor),
                     --histograms OUT (the correction_factor histogram; |eta| only), or
                     --data DATA.yaml --model MODEL.onnx (computed through DNNJetCorrector);
                     --per-flavour adds an int input FlavourGroup (0 uds, 1 c, 2 b, 3 g, 4 unknown)
  --resolution OUT   IQR/median resolution of every method (or --resolution-methods) in
                     (|eta|, pT, rho), named METHOD_PtResolution, from a run's histograms
  --mlp MODEL.onnx   a jet-level MLP as an lwtnn node with its preprocessing (repeatable),
                     output exp(log correction) = pT_corr/pT_raw (or --mlp-output log_correction)
The file is checked with correctionlib's schema and loaded in its evaluator before success.

Example:
  jec-coffea export-correctionlib --standard std/ --binned deepsets --columns runs/qcd/columns \
      --per-flavour --resolution runs/qcd --mlp models/mlp_nanoaod.onnx -o jec_dnn.json.gz
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

NAME = "export-correctionlib"


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``export-correctionlib``."""
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output JSON (.json or .json.gz)",
    )
    parser.add_argument(
        "--standard", type=Path, help="derive-standard output directory"
    )
    parser.add_argument(
        "--levels",
        default="L1FastJet,L2Relative",
        help="standard levels to take (default L1FastJet,L2Relative)",
    )
    parser.add_argument(
        "--binned", metavar="METHOD", help="method of the binned DNN table"
    )
    parser.add_argument(
        "--columns",
        type=Path,
        nargs="+",
        help="parquet files or directories (per-jet factors)",
    )
    parser.add_argument(
        "--histograms",
        type=Path,
        help="run directory or histograms.coffea (correction_factor)",
    )
    parser.add_argument(
        "--data", type=Path, help="data.yaml or ROOT file (with --model)"
    )
    parser.add_argument("--model", type=Path, help="ONNX model for --data")
    parser.add_argument(
        "--max-jets", type=int, default=None, help="jets read with --data (default all)"
    )
    parser.add_argument(
        "--per-flavour", action="store_true", help="binned table per flavour group"
    )
    parser.add_argument(
        "--min-jets",
        type=int,
        default=10,
        help="jets per bin of the binned table (default 10)",
    )
    parser.add_argument(
        "--resolution", type=Path, help="run directory for the resolutions"
    )
    parser.add_argument(
        "--resolution-methods",
        default=None,
        help="comma-separated methods (default all)",
    )
    parser.add_argument(
        "--mlp", type=Path, action="append", default=[], help="jet-level MLP ONNX file"
    )
    parser.add_argument(
        "--mlp-output", choices=("factor", "log_correction"), default="factor"
    )
    parser.add_argument("--description", default="", help="description of the set")


def run(console: Console, args: argparse.Namespace) -> int:
    """Build, write, validate and summarise the correction set; 0 on success."""
    from .. import correction_export as ce
    from ..correction_mlp import mlp_correction
    from ..errors import ConfigError
    from ..evaluation import load_output
    from ..standard import write_correction_set

    corrections, compound = [], []
    if args.standard is not None:
        c, k = ce.standard_corrections(
            args.standard,
            levels=[s.strip() for s in args.levels.split(",") if s.strip()],
        )
        corrections += c
        compound += k
    if args.binned is not None:
        sources = [
            args.columns is not None,
            args.histograms is not None,
            args.data is not None,
        ]
        if sum(sources) != 1:
            msg = "--binned needs exactly one of --columns, --histograms, --data (with --model)"
            raise ConfigError(msg)
        if args.columns is not None:
            cols = ce.read_factor_columns(args.columns, args.binned)
            corrections.append(
                ce.binned_factor_correction(
                    args.binned,
                    columns=cols,
                    per_flavour=args.per_flavour,
                    min_jets=args.min_jets,
                )
            )
        elif args.histograms is not None:
            out = load_output(args.histograms)
            if "correction_factor" not in out:
                msg = f"{args.histograms}: no correction_factor histogram in the run output (keys {sorted(out)})"
                raise ConfigError(msg)
            corrections.append(
                ce.binned_factor_correction(
                    args.binned,
                    histogram=out["correction_factor"],
                    min_jets=args.min_jets,
                )
            )
        else:
            if args.model is None:
                msg = "--data needs --model MODEL.onnx"
                raise ConfigError(msg)
            cols = ce.factors_from_dataset(
                args.data, args.model, max_jets=args.max_jets
            )
            corrections.append(
                ce.binned_factor_correction(
                    args.binned,
                    columns=cols,
                    per_flavour=args.per_flavour,
                    min_jets=args.min_jets,
                )
            )
    elif args.columns or args.histograms or args.data:
        msg = "--columns/--histograms/--data need --binned METHOD"
        raise ConfigError(msg)
    if args.resolution is not None:
        out = load_output(args.resolution)
        methods = (
            [m.strip() for m in args.resolution_methods.split(",") if m.strip()]
            if args.resolution_methods
            else list(out["response"].axes["method"])
        )
        corrections += [ce.resolution_correction(out, m) for m in methods]
    for path in args.mlp:
        corrections.append(mlp_correction(path, output=args.mlp_output))

    cset = ce.build_correction_set(corrections, compound, description=args.description)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_correction_set(cset, args.output)
    ce.validate_correction_set(args.output)

    table = Table(title=f"{args.output} (validated)")
    for col in ("correction", "inputs", "output", "node"):
        table.add_column(col)
    for c in cset.corrections:
        table.add_row(
            c.name, ", ".join(v.name for v in c.inputs), c.output.name, c.data.nodetype
        )
    for c in cset.compound_corrections or []:
        table.add_row(
            c.name, ", ".join(v.name for v in c.inputs), c.output.name, "compound"
        )
    console.print(table)
    return 0
