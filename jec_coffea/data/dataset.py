"""Dataset descriptions (``data.yaml``): which files, which tree, how many jets, which bytes.

A dataset description pins a training or evaluation sample down: for every file its path (local
or any URL uproot opens: ``root://`` through fsspec-xrootd, ``https://``, ``s3://``/``gs://``
through the fsspec extras), tree, layout, number of events and jets, and the sha256 of its
bytes. ``jec-coffea describe FILES... -o data.yaml`` writes one; :meth:`DatasetDescription.verify`
re-reads the files and fails, naming the yaml and the file, when a count or a checksum
disagrees, so a model is never trained on silently different inputs.

ml-jec's own ``data.yaml`` (a plain list of ``{path, count}``) is read as well. Relative paths
resolve against the directory (or URL) of the yaml file, so a dataset folder can be moved or
served over HTTP as a whole.

Example
-------
.. code-block:: yaml

    version: 1
    files:
      - path: shards/1.root
        tree: Jets
        layout: mljec
        n_events: null        # per-jet ntuple: no event structure
        n_jets: 10
        sha256: 3f5c...
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from ..errors import ConfigError, InputFileError, closest

__all__ = [
    "LAYOUT_NAMES",
    "DatasetDescription",
    "FileEntry",
    "count_file",
    "describe_files",
    "file_sha256",
    "is_url",
    "resolve_path",
]

log = logging.getLogger(__name__)

LAYOUT_NAMES = ("nanoaod", "pfnano", "pfnano_old", "jetclass2", "mljec")
"""Layout names a description may record (those of ``detect_layout``)."""

_CHUNK = 1 << 22  # 4 MiB per read when hashing


def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths other than ``file://``."""
    return "://" in str(path) and not str(path).startswith("file://")


def resolve_path(path: str, base: str | None) -> str:
    """Resolve ``path`` against ``base`` (a directory path or URL); absolute paths and URLs
    are returned unchanged."""
    path = str(path)
    if is_url(path) or base is None or Path(path).is_absolute():
        return path
    if is_url(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
    return str(Path(base, path))


def file_sha256(path: str) -> str:
    """sha256 (hex) of the bytes of a local file or of a URL opened through fsspec.

    Reads in 4 MiB chunks, so memory stays flat for multi-GB files.
    """
    path = str(path)
    digest = hashlib.sha256()
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(path, "rb") as stream:
                for chunk in iter(lambda: stream.read(_CHUNK), b""):
                    digest.update(chunk)
        else:
            local = Path(path.removeprefix("file://"))
            with local.open("rb") as stream:
                for chunk in iter(lambda: stream.read(_CHUNK), b""):
                    digest.update(chunk)
    except FileNotFoundError as err:
        raise InputFileError(path, "no such file") from err
    except (OSError, ValueError, ImportError) as err:
        raise InputFileError(
            path, f"cannot read for sha256: {type(err).__name__}: {err}"
        ) from err
    return digest.hexdigest()


class FileEntry(BaseModel):
    """One file of a dataset."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="local path (relative to the yaml's directory) or URL"
    )
    tree: str | None = Field(None, description="tree name; None: the layout's default")
    layout: Literal[LAYOUT_NAMES] | None = Field(  # type: ignore[valid-type]
        None, description="file layout; None: detected when read"
    )
    n_events: int | None = Field(
        None,
        ge=0,
        description="tree entries of per-event layouts; None for per-jet ntuples",
    )
    n_jets: int | None = Field(
        None, ge=0, description="jets in the file (all, before cuts)"
    )
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the file's bytes (hex)"
    )


class _MlJecEntry(BaseModel):
    """An entry of ml-jec's ``data.yaml``: ``{path, count}`` with count = jets (tree entries)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    count: int = Field(ge=0)


class DatasetDescription(BaseModel):
    """The files of a dataset with their counts and checksums (``data.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="format version of data.yaml")
    files: list[FileEntry] = Field(description="the files, in order")
    _base: str | None = PrivateAttr(None)
    _source: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _unique_paths(self) -> DatasetDescription:
        seen: set[str] = set()
        for i, entry in enumerate(self.files):
            if entry.path in seen:
                msg = f"files[{i}].path {entry.path!r} is listed twice"
                raise ValueError(msg)
            seen.add(entry.path)
        return self

    # ------------------------------------------------------------------ IO

    @classmethod
    def load(cls, path: str | Path) -> DatasetDescription:
        """Read a ``data.yaml`` (ours or ml-jec's list of ``{path, count}``).

        Raises
        ------
        InputFileError
            The yaml cannot be read.
        ConfigError
            Invalid YAML, an unknown key, a bad value; the message names the yaml, the entry and
            the key.
        """
        path = str(path)
        try:
            if is_url(path):
                import fsspec

                with fsspec.open(path, "rt") as stream:
                    text = stream.read()
            else:
                text = Path(path).read_text()
        except FileNotFoundError as err:
            raise InputFileError(path, "no such file") from err
        except OSError as err:
            raise InputFileError(path, f"cannot read: {err}") from err
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            msg = f"{path}: invalid YAML: {str(err).splitlines()[0]}"
            raise ConfigError(msg) from err
        desc = cls._from_raw(raw, path)
        desc._source = path
        desc._base = (
            posixpath.dirname(path)
            if is_url(path)
            else str(Path(path).resolve().parent)
        )
        return desc

    @classmethod
    def _from_raw(cls, raw: object, path: str) -> DatasetDescription:
        try:
            if isinstance(raw, list):  # ml-jec's format
                entries = [_MlJecEntry.model_validate(e) for e in raw]
                return cls(
                    files=[FileEntry(path=e.path, n_jets=e.count) for e in entries]
                )
            if not isinstance(raw, dict):
                msg = f"{path}: expected a mapping with 'files' or a list of {{path, count}}, got {type(raw).__name__}"
                raise ConfigError(msg)
            return cls.model_validate(raw)
        except ValidationError as err:
            msg = f"{path}: {_explain(err, raw)}"
            raise ConfigError(msg) from err

    def save(self, path: str | Path) -> None:
        """Write the description as YAML; local files below the yaml's folder are written
        relative to it, so the folder stays relocatable."""
        out = Path(path)
        folder = out.resolve().parent
        entries = []
        for entry in self.files:
            full = self.resolve(entry)
            data = entry.model_dump()
            if not is_url(full):
                target = Path(full).resolve()
                data["path"] = (
                    target.relative_to(folder).as_posix()
                    if target.is_relative_to(folder)
                    else str(target)
                )
            entries.append(data)
        text = yaml.safe_dump(
            {"version": self.version, "files": entries}, sort_keys=False
        )
        out.write_text(text)
        log.info("wrote %s (%d files, %d jets)", out, len(self.files), self.n_jets)

    # ------------------------------------------------------------------ queries

    @property
    def n_jets(self) -> int:
        """Total number of jets recorded (files without a count contribute 0)."""
        return sum(e.n_jets or 0 for e in self.files)

    def resolve(self, entry: FileEntry) -> str:
        """Path or URL of ``entry`` with relative paths resolved against the yaml's folder."""
        return resolve_path(entry.path, self._base)

    def paths(self) -> list[str]:
        """Resolved paths of all files, in order."""
        return [self.resolve(e) for e in self.files]

    def to_fileset(self, name: str = "dataset") -> dict[str, dict[str, dict[str, str]]]:
        """coffea fileset ``{name: {"files": {path: tree}}}``.

        A file without a recorded tree gets its layout's tree (the layout is detected by
        opening the file when it is not recorded either, e.g. for ml-jec's data.yaml).
        """
        from ._layouts import LAYOUTS

        files = {}
        for entry in self.files:
            path = self.resolve(entry)
            tree = entry.tree
            if tree is None:
                if entry.layout is None:
                    from .reader import detect_layout

                    tree = LAYOUTS[detect_layout(path)].tree
                else:
                    tree = LAYOUTS[entry.layout].tree
            files[path] = tree
        return {name: {"files": files}}

    def verify(self, *, check_sha256: bool = True) -> None:
        """Re-read every file and compare layout, counts and sha256 with the description.

        Every file is checked before failing, so one error lists every disagreement.

        Raises
        ------
        InputFileError
            A file is missing or unreadable (names the yaml and the file).
        ConfigError
            A recorded value disagrees with the file (names the yaml, file, key and both
            values).
        """
        where = self._source or "dataset description"
        problems: list[str] = []
        for entry in self.files:
            path = self.resolve(entry)
            if not is_url(path) and not Path(path).is_file():
                raise InputFileError(path, f"listed in {where} but no such file")
            try:
                fact = count_file(path, tree=entry.tree)  # layout detected afresh
            except InputFileError as err:
                raise InputFileError(path, f"listed in {where}: {err.cause}") from err
            for key in ("layout", "n_events", "n_jets"):
                recorded = getattr(entry, key)
                if recorded is not None and recorded != fact[key]:
                    problems.append(
                        f"{entry.path}: {key} is {recorded} in the description "
                        f"but {fact[key]} in the file"
                    )
            if check_sha256 and entry.sha256 is not None:
                actual = file_sha256(path)
                if actual != entry.sha256:
                    problems.append(
                        f"{entry.path}: sha256 {entry.sha256[:12]}... in the description "
                        f"but {actual[:12]}... for the file (file changed?)"
                    )
        if problems:
            msg = (
                f"{where}: {len(problems)} disagreement(s) with the files: "
                + "; ".join(problems)
            )
            raise ConfigError(msg)
        log.info("verified %s: %d files, %d jets", where, len(self.files), self.n_jets)


def _explain(err: ValidationError, raw: object) -> str:
    """One line per pydantic error, naming the entry, the key and the nearest valid key."""
    lines = []
    for e in err.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        loc = loc.lstrip(".") or "top level"
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            valid = (
                list(FileEntry.model_fields)
                if "files" in str(e["loc"][0])
                else list(DatasetDescription.model_fields)
            )
            if isinstance(raw, list):
                valid = list(_MlJecEntry.model_fields)
            hint = closest(key, valid)
            text = f"unknown key {key!r} at {loc}"
            text += (
                f" (did you mean {hint[0]!r}?)"
                if hint
                else f" (allowed: {', '.join(valid)})"
            )
        elif e["type"] == "missing":
            text = f"missing key {loc}"
        else:
            text = e["msg"].removeprefix("Value error, ")
            if not isinstance(e.get("input"), (dict, list)):
                text += f" (got {e.get('input')!r})"
            text = text if loc == "top level" else f"{loc}: {text}"
        lines.append(text)
    return "; ".join(lines)


def count_file(
    path: str, *, tree: str | None = None, layout: str | None = None
) -> dict[str, object]:
    """Layout, tree, number of events and of jets of one file, reading at most one branch.

    Per-jet layouts (ml-jec, JetClass-II) count tree entries as jets and have no events;
    per-event layouts count entries as events and sum ``nJet`` for the jets.

    Returns
    -------
    dict
        ``{"layout", "tree", "n_events", "n_jets"}``.
    """
    from ._layouts import LAYOUTS
    from ._open import open_root, reading
    from .reader import detect_layout

    layout = layout or detect_layout(path)
    spec = LAYOUTS[layout]
    tree = tree or spec.tree
    with open_root(path) as directory:
        if tree not in directory:
            from ..errors import MissingBranchError
            from ._open import tree_names

            raise MissingBranchError(
                tree, path=path, available=tree_names(directory), reason="no such tree"
            )
        ttree = directory[tree]
        entries = int(ttree.num_entries)
        if spec.per_jet:
            return {"layout": layout, "tree": tree, "n_events": None, "n_jets": entries}
        if "nJet" not in ttree:
            from ..errors import MissingBranchError

            counter = "nJet"
            raise MissingBranchError(
                counter,
                path=path,
                tree=tree,
                available=ttree.keys(),
                reason="jet counter",
            )
        with reading(path, f"{tree}/nJet"):
            n_jets = int(ttree["nJet"].array(library="np").sum())
    return {"layout": layout, "tree": tree, "n_events": entries, "n_jets": n_jets}


def describe_files(
    paths: Iterable[str | Path], *, tree: str | None = None, sha256: bool = True
) -> DatasetDescription:
    """Describe files: layout, tree, events, jets and sha256 of each.

    Parameters
    ----------
    paths
        Local paths or URLs.
    tree
        Tree name for every file (default: each layout's tree).
    sha256
        Compute the checksums (reads every byte once).
    """
    entries = []
    for p in paths:
        p = str(p)
        fact = count_file(p, tree=tree)
        entries.append(
            FileEntry(
                path=p,
                tree=fact["tree"],
                layout=fact["layout"],
                n_events=fact["n_events"],
                n_jets=fact["n_jets"],
                sha256=file_sha256(p) if sha256 else None,
            )
        )
        log.info(
            "%s: %s, %s events, %d jets",
            p,
            fact["layout"],
            fact["n_events"],
            fact["n_jets"],
        )
    desc = DatasetDescription(files=entries)
    desc._base = None
    return desc
