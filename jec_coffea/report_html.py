"""HTML page of the report (figures embedded as base64) and the data/simulation pairing.

Kept apart from :mod:`jec_coffea.report` so that the page layout can change without touching
how the figures are made.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import hist

from .histograms import CutFlow

if TYPE_CHECKING:
    from .evaluation import Summary
    from .report import Figure

__all__ = ["datamc_pairs", "render_html"]

logger = logging.getLogger(__name__)


def datamc_pairs(
    data: Mapping[str, Any] | None, sim: Mapping[str, Any], methods: Sequence[str]
) -> list[tuple[str, hist.Hist, hist.Hist]]:
    """(name, data 1D, simulation 1D) for every input and corrected-pT histogram both runs have."""
    if data is None:
        return []
    pairs = []
    d_in, s_in = data.get("inputs") or {}, sim.get("inputs") or {}
    for name in sorted(set(d_in) & set(s_in)):
        if isinstance(d_in[name], hist.Hist) and len(d_in[name].axes) == 1:
            pairs.append((f"input_{name}", d_in[name], s_in[name]))
    d_pt, s_pt = data.get("corrected_pt"), sim.get("corrected_pt")
    if isinstance(d_pt, hist.Hist) and isinstance(s_pt, hist.Hist):
        for m in methods:
            if m in d_pt.axes["method"] and m in s_pt.axes["method"]:
                sel = {"method": m, "abs_eta": sum}
                pairs.append((f"pt_{m}", d_pt[sel], s_pt[sel]))
    if not pairs:
        logger.warning(
            "report: the comparison output has no inputs/corrected_pt histogram in common "
            "with the simulated run (keys %s)",
            sorted(data),
        )
    return pairs


_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right} th{background:#f0f0f0}
td:first-child,td:nth-child(2){text-align:left}
figure{display:inline-block;width:48%;margin:.5%;vertical-align:top}
figure img{width:100%} figcaption{font-size:.8em;color:#444}
.note{font-size:.85em;color:#555}
"""


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(
    title: str, source: str, summary: Summary, figures: Sequence[Figure], cutflow: Any
) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        (
            f"<p class='note'>Input: {html.escape(source or '(in memory)')}. Every figure is "
            "also in plots/ as PNG and PDF; the tables are in summary.json and summary.md.</p>"
        ),
        "<h2>Summary</h2>",
        _table_html(summary._HEADER, [summary._cells(r) for r in summary.rows]),
        "<p class='note'>"
        + html.escape(summary.to_markdown().split("\n\n", 1)[1].strip()).replace(
            "\n", "<br>"
        )
        + "</p>",
    ]
    if isinstance(cutflow, CutFlow) and cutflow.counts:
        eff = cutflow.efficiencies()
        parts += [
            "<h2>Jet selection</h2>",
            _table_html(
                ("step", "jets", "Σw", "fraction"),
                [
                    (k, cutflow.counts[k], f"{cutflow.sumw[k]:.6g}", f"{eff[k]:.4f}")
                    for k in cutflow.counts
                ],
            ),
        ]
    sections = list(dict.fromkeys(f.section for f in figures))
    for section in sections:
        parts.append(f"<h2>{html.escape(section)}</h2>")
        for f in (f for f in figures if f.section == section):
            data = base64.b64encode(f.png.read_bytes()).decode("ascii")
            parts.append(
                f"<figure id='{html.escape(f.name)}'><img alt='{html.escape(f.name)}' "
                f"src='data:image/png;base64,{data}'><figcaption>{html.escape(f.caption)} "
                f"[{html.escape(f.name)}.pdf]</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
