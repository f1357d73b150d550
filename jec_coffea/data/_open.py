"""Open ROOT files and trees with errors that name the file and the cause in one line.

uproot's own exceptions are accurate but long (multi-line deserialization dumps) and differ
between a 0-byte file, a text file and a truncated copy. Every way a file can be unreadable is
turned here into :class:`~jec_coffea.errors.InputFileError` (``OSError``) with one line naming
the file and what is wrong, chained (``from err``) to the original exception for debugging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uproot

from ..errors import InputFileError

__all__ = ["contents", "open_root", "reading", "tree_names"]

log = logging.getLogger(__name__)

_ROOT_MAGIC = b"root"


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local_path(path: str) -> Path:
    return Path(path.removeprefix("file://"))


def _one_line(err: BaseException) -> str:
    # uproot's DeserializationError keeps its cause in .message; str() is a multi-line dump
    message = getattr(err, "message", None)
    text = str(message if isinstance(message, str) else err).strip().splitlines()
    first = text[0].strip() if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _check_local(path: str) -> None:
    """Fail early, with a precise cause, on files that cannot be ROOT files."""
    local = _local_path(path)
    if not local.exists():
        raise InputFileError(path, "no such file")
    if local.is_dir():
        raise InputFileError(path, "is a directory, not a ROOT file")
    size = local.stat().st_size
    if size == 0:
        raise InputFileError(path, "empty file (0 bytes), not a ROOT file")
    with local.open("rb") as stream:
        head = stream.read(20)
    if head[:4] != _ROOT_MAGIC:
        raise InputFileError(
            path,
            f"not a ROOT file (starts with {head[:4]!r}, expected {_ROOT_MAGIC!r})",
        )
    end = _header_end(head)
    if end is not None and size < end:
        raise InputFileError(
            path, f"truncated: the file has {size} bytes but its ROOT header says {end}"
        )


def _header_end(head: bytes) -> int | None:
    """``fEND`` of a ROOT file header (32-bit before version 1000000, 64-bit after)."""
    if len(head) < 16:
        return None
    version = int.from_bytes(head[4:8], "big")
    if version >= 1_000_000:
        return int.from_bytes(head[12:20], "big") if len(head) >= 20 else None
    return int.from_bytes(head[12:16], "big")


def open_root(path: str) -> uproot.ReadOnlyDirectory:
    """Open ``path`` with uproot, checking that it is a complete ROOT file.

    Parameters
    ----------
    path
        Local path or URL (``root://``, ``https://``; remote files skip the local checks).

    Returns
    -------
    uproot.ReadOnlyDirectory
        The root directory; the caller closes it (``with open_root(p) as f``).

    Raises
    ------
    InputFileError
        Missing, empty, non-ROOT, truncated (shorter than the ROOT header's ``fEND``, checked
        before uproot parses anything) or otherwise unreadable file.
    """
    path = str(path)
    if _is_local(path):
        _check_local(path)
    try:
        directory = uproot.open(path)
    except InputFileError:
        raise
    except Exception as err:
        raise InputFileError(path, f"cannot open as ROOT: {_one_line(err)}") from err
    return directory


def _classnames(directory: uproot.ReadOnlyDirectory) -> dict[str, str]:
    try:
        return dict(directory.classnames(recursive=False, cycle=False))
    except Exception as err:
        raise InputFileError(
            directory.file.file_path, f"cannot list its contents: {_one_line(err)}"
        ) from err


def tree_names(directory: uproot.ReadOnlyDirectory) -> list[str]:
    """Names (without cycle) of the TTrees at the top of ``directory``."""
    classes = _classnames(directory)
    return sorted(name for name, cls in classes.items() if cls in ("TTree", "TNtuple"))


def contents(directory: uproot.ReadOnlyDirectory) -> str:
    """The top-level objects of ``directory`` as ``name (class)``, for error messages."""
    classes = _classnames(directory)
    return ", ".join(
        name if cls in ("TTree", "TNtuple") else f"{name} ({cls})"
        for name, cls in sorted(classes.items())
        if cls in ("TTree", "TNtuple", "ROOT::RNTuple")
    )


@contextmanager
def reading(path: str, what: str) -> Iterator[None]:
    """Turn any exception raised while reading ``what`` from ``path`` into one-line errors.

    ``JecCoffeaError`` passes through unchanged; everything uproot or awkward raise on corrupt
    baskets becomes :class:`InputFileError` naming ``what`` (e.g. the tree and entry range).
    """
    from ..errors import JecCoffeaError

    try:
        yield
    except JecCoffeaError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:
        raise InputFileError(
            str(path), f"cannot read {what}: {_one_line(err)}"
        ) from err
