"""Convert CMS JEC text files (*.jec.txt[.gz]) to one correctionlib JSON.

Each file {tag}_{level}_{jettype}.jec.txt[.gz] (L1FastJet, L2Relative in the analytic or
the eta x pT "spline" form, L3Absolute, L2L3Residual) becomes a correction of the same name,
encoded as CMS's official jet_jerc.json.gz files do (JetEta binning, formula per record with
the variables clamped to the record's range, inputs JetA, JetEta, JetPt, Rho). Each tag and
jet type with two or more levels also gets the compound {tag}_L1L2L3Res_{jettype}. The
output is checked against correctionlib's schema and loaded by its evaluator before the
command reports success.

Example:
  jec-coffea jec-to-correctionlib Summer19UL18_V5_MC_*_AK4PFchs.jec.txt.gz -o jec.json.gz
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

NAME = "jec-to-correctionlib"

log = logging.getLogger(__name__)


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``jec-to-correctionlib``."""
    parser.add_argument(
        "files", nargs="+", type=Path, help="JEC text files (*.jec.txt or *.jec.txt.gz)"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output JSON (gzipped if it ends in .gz)",
    )
    parser.add_argument(
        "--no-compound",
        action="store_true",
        help="do not add the {tag}_L1L2L3Res_{jettype} compound corrections",
    )
    parser.add_argument(
        "--description", default=None, help="description of the correction set"
    )


def run(console: Console, args: argparse.Namespace) -> int:
    """Convert, write, validate and print a summary; 0 on success."""
    import gzip

    import correctionlib
    from correctionlib import schemav2

    from ..errors import InputFileError
    from ..standard import jec_text_to_correctionlib, write_correction_set

    cset = jec_text_to_correctionlib(
        args.files, compound=not args.no_compound, description=args.description
    )
    out = write_correction_set(cset, args.output)
    try:
        if out.name.endswith(".gz"):
            with gzip.open(out, "rt", encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = out.read_text(encoding="utf-8")
        schemav2.CorrectionSet.model_validate_json(text)
        correctionlib.CorrectionSet.from_string(text)
    except (
        Exception
    ) as err:  # the written file must load; anything else is a bug or a full disk
        raise InputFileError(
            str(out), f"written file does not validate: {err}"
        ) from err

    table = Table(title=f"{out}", show_lines=False)
    for col in ("correction", "inputs", "bins"):
        table.add_column(col)
    for corr in cset.corrections:
        data = corr.data
        n = sum(
            len(c.content) if isinstance(c, schemav2.Binning) else 1
            for c in data.content
        )
        table.add_row(corr.name, ", ".join(v.name for v in corr.inputs), str(n))
    for comp in cset.compound_corrections or []:
        table.add_row(comp.name, ", ".join(v.name for v in comp.inputs), "compound")
    console.print(table)
    return 0
