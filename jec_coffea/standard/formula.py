"""TFormula expressions of CMS JEC text files, rewritten for correctionlib.

A JEC text file writes one formula in its header, in ROOT TFormula syntax: the formula
variables are ``x, y, z, t`` (the header's parameter variables, in order, e.g. ``Rho JetPt
JetA`` for L1FastJet) and the per-record parameters are ``[0], [1], ...``. Each record line
then lists, after its bin bounds, the validity range of every formula variable followed by the
parameters. CMS's ``SimpleJetCorrector`` clamps each variable to that range before evaluating.

The official correctionlib files (JECDatabase ``createJSONs.py``) encode the clamp *inside*
the formula: variable number ``i`` becomes ``max(min(v,[2i+1]),[2i])``, every parameter index
is shifted by ``2 * n_vars`` and the record's parameter list starts with the ranges. This
module does exactly that rewrite, token by token, so that the expression we write is character
for character the one CMS ships.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "FORMULA_VARIABLES",
    "FormulaSyntaxError",
    "clamped_expression",
    "formula_parameter_count",
    "tokenize",
]

FORMULA_VARIABLES: tuple[str, ...] = ("x", "y", "z", "t")
"""TFormula names of the first four formula variables, in header order."""

_TMATH: dict[str, str] = {
    "TMath::Max": "max",
    "TMath::Min": "min",
    "TMath::Log": "log",
    "TMath::Log10": "log10",
    "TMath::Exp": "exp",
    "TMath::Power": "pow",
    "TMath::Erf": "erf",
    "TMath::Sqrt": "sqrt",
    "TMath::Abs": "abs",
    "TMath::TanH": "tanh",
    "TMath::CosH": "cosh",
    "TMath::SinH": "sinh",
    "TMath::ATan": "atan",
    "TMath::Cos": "cos",
    "TMath::Sin": "sin",
}
"""ROOT ``TMath::`` spellings found in old JEC files and their plain TFormula names."""

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<param>\[\d+\])
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_]\w*(?:::[A-Za-z_]\w*)?)
    |(?P<op><=|>=|==|!=|&&|\|\||[-+*/^(),<>!])
    """,
    re.VERBOSE,
)


class FormulaSyntaxError(ValueError):
    """A formula cannot be tokenised; the caller adds the file and line."""


@dataclass(frozen=True)
class Token:
    """One lexical token of a TFormula expression."""

    kind: str
    """``param``, ``number``, ``name`` or ``op``."""
    text: str
    """The token as written."""


def tokenize(expression: str) -> list[Token]:
    """Split a TFormula expression into tokens, dropping whitespace.

    Parameters
    ----------
    expression
        ROOT TFormula text, e.g. ``max(0.0001,1-(z/y)*([1]*(x-[0])))``.

    Returns
    -------
    list of Token
        In order of appearance.

    Raises
    ------
    FormulaSyntaxError
        On a character no TFormula token starts with, naming its position.
    """
    tokens: list[Token] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            msg = (
                f"unexpected character {expression[pos]!r} at position {pos} "
                f"of formula {expression!r}"
            )
            raise FormulaSyntaxError(msg)
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group()))
        pos = match.end()
    depth = 0
    for tok in tokens:
        depth += (tok.text == "(") - (tok.text == ")")
        if depth < 0:
            break
    if depth != 0:
        msg = f"unbalanced parentheses in formula {expression!r}"
        raise FormulaSyntaxError(msg)
    return tokens


def formula_parameter_count(expression: str) -> int:
    """Number of parameters ``[i]`` a formula needs (highest index + 1; 0 for none)."""
    indices = [int(t.text[1:-1]) for t in tokenize(expression) if t.kind == "param"]
    return max(indices) + 1 if indices else 0


def clamped_expression(expression: str, n_vars: int) -> str:
    """Rewrite a JEC-text formula so that its variables are clamped to the record's range.

    Parameters
    ----------
    expression
        The formula of the JEC text header (TFormula syntax, variables ``x, y, z, t``).
    n_vars
        Number of formula variables declared in the header (1 to 4).

    Returns
    -------
    str
        The expression as in CMS's official correctionlib files: variable ``i`` replaced by
        ``max(min(v,[2i+1]),[2i])`` and parameter ``[k]`` by ``[k + 2 n_vars]``, so the
        parameters of a record are ``[lo_0, hi_0, lo_1, hi_1, ..., p_0, p_1, ...]``. Whitespace
        is dropped and ``TMath::`` functions are renamed to their TFormula names.

    Raises
    ------
    FormulaSyntaxError
        If the formula uses a variable beyond ``n_vars``, an unknown ``TMath::`` function or
        cannot be tokenised.
    """
    if not 0 <= n_vars <= len(FORMULA_VARIABLES):
        msg = f"{n_vars} formula variables declared; JEC formulas take 0 to 4"
        raise FormulaSyntaxError(msg)
    variables = FORMULA_VARIABLES[:n_vars]
    out: list[str] = []
    for tok in tokenize(expression):
        if tok.kind == "param":
            out.append(f"[{int(tok.text[1:-1]) + 2 * n_vars}]")
        elif tok.kind == "name" and tok.text in variables:
            i = variables.index(tok.text)
            out.append(f"max(min({tok.text},[{2 * i + 1}]),[{2 * i}])")
        elif tok.kind == "name" and tok.text in FORMULA_VARIABLES:
            msg = (
                f"formula {expression!r} uses variable {tok.text!r} but the header "
                f"declares only {n_vars} formula variable(s)"
            )
            raise FormulaSyntaxError(msg)
        elif tok.kind == "name" and "::" in tok.text:
            if tok.text not in _TMATH:
                msg = (
                    f"unsupported ROOT function {tok.text!r} in formula {expression!r}"
                )
                raise FormulaSyntaxError(msg)
            out.append(_TMATH[tok.text])
        else:
            out.append(tok.text)
    return "".join(out)
