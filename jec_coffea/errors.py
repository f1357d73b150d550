"""Exception types of jec-coffea.

Every error the user can cause derives from :class:`JecCoffeaError` *and* from the builtin it
refines (``OSError`` for unreadable files, ``KeyError`` for a missing branch, ``ValueError`` for
bad values), so callers can catch either. Messages name the file, tree, branch or option, the
value received, what was expected and, where known, the fix. The command line turns any
:class:`JecCoffeaError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "InputFileError",
    "JecCoffeaError",
    "MissingBranchError",
    "ModelMismatchError",
    "UnsupportedLayoutError",
    "closest",
]


class JecCoffeaError(Exception):
    """Base class of every error jec-coffea raises on bad input."""


class InputFileError(JecCoffeaError, OSError):
    """A file cannot be opened or read (missing, empty, truncated, not ROOT, corrupt basket)."""

    def __init__(self, path: str, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")

    def __str__(self) -> str:
        return f"{self.path}: {self.cause}"


class MissingBranchError(JecCoffeaError, KeyError):
    """A branch (or tree) the layout needs is not in the file; lists the nearest names."""

    def __init__(
        self,
        key: str,
        *,
        path: str | None = None,
        tree: str | None = None,
        available: Iterable[str] = (),
        reason: str = "",
    ) -> None:
        self.key, self.path, self.tree, self.reason = key, path, tree, reason
        self.suggestions = closest(key, available)
        super().__init__(key)

    def __str__(self) -> str:
        where = ":".join(p for p in (self.path, self.tree) if p)
        msg = f"{where}: " if where else ""
        msg += f"branch {self.key!r} not found"
        if self.reason:
            msg += f" ({self.reason})"
        if self.suggestions:
            msg += (
                "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
            )
        return msg


class UnsupportedLayoutError(JecCoffeaError, ValueError):
    """The file holds no layout jec-coffea can read (names the trees found)."""


class ConfigError(JecCoffeaError, ValueError):
    """A configuration file or option is invalid (names the key and the value)."""


class ModelMismatchError(JecCoffeaError, ValueError):
    """A model's metadata does not match the features that can be built for it."""


def closest(key: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names of ``candidates`` closest to ``key`` by edit similarity."""
    return difflib.get_close_matches(key, list(candidates), n=n, cutoff=0.6)
