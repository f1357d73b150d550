"""Helpers shared by the commands that chain other ``jec-coffea`` subcommands (demo, ship-models).

Both commands run each step through :func:`jec_coffea.cli.main` with the argument list a user
would type, so every step can be rerun by hand; this module holds what they share: the step
record, the example configurations of ``models/`` and writing a variant of one with overrides,
and a runner of resumable steps (:func:`run_tasks`: a step whose outputs exist and are newer than
those of the steps it needs is skipped).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
"""The example configurations of a source checkout (``models/<architecture>.yaml``)."""


@dataclass
class Step:
    """One ``jec-coffea`` subcommand call of a pipeline and what became of it."""

    name: str
    argv: list[str]
    needs: tuple[str, ...] = ()
    status: str = "not run"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: nested mappings merge key by key, other values
    replace (a list replaces the whole list). Neither argument is modified."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def example_config(name: str) -> dict[str, Any]:
    """The example configuration ``models/<name>.yaml`` of the source checkout.

    Raises
    ------
    InputFileError
        The file is absent (an installed package has no ``models/`` folder).
    """
    source = REPO_MODELS / f"{name}.yaml"
    if not source.is_file():
        from jec_coffea.errors import InputFileError

        raise InputFileError(
            str(source), "example configuration not found (run from a checkout)"
        )
    return yaml.safe_load(source.read_text())


def write_config(
    name: str,
    out: Path,
    overrides: dict[str, Any],
    *,
    epochs: int | None = None,
    stem: str | None = None,
) -> Path:
    """Write ``models/<name>.yaml`` with ``overrides`` merged in as ``out/<stem>.yaml``.

    Parameters
    ----------
    name
        Example configuration (``deepsets``, ``mlp_nanoaod``, ``particlenet``, ``part``).
    out
        Folder of the written configuration (created).
    overrides
        Nested mapping merged into the configuration (:func:`merge`).
    epochs
        Replaces ``epochs`` when given.
    stem
        File name without ``.yaml`` (default ``name``).

    Returns
    -------
    Path
        The written file.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem or name}.yaml"
    path.write_text(render_config(name, overrides, epochs=epochs))
    return path


def render_config(
    name: str, overrides: dict[str, Any], *, epochs: int | None = None
) -> str:
    """The YAML text :func:`write_config` writes (to tell whether a written one is stale)."""
    config = merge(example_config(name), overrides)
    if epochs is not None:
        config["epochs"] = epochs
    return yaml.safe_dump(config, sort_keys=False)


# --------------------------------------------------------------------------- options


def parse_pairs(
    values: list[str] | None, option: str, known: Sequence[str], models: Sequence[str]
) -> dict[str, str]:
    """``["deepsets=40", ...]`` -> ``{"deepsets": "40"}`` for the names in ``models``.

    Raises
    ------
    ConfigError
        A value is not NAME=VALUE with NAME one of ``known`` (message names ``--option``).
    """
    from jec_coffea.errors import ConfigError

    out = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or name not in known:
            msg = f"option --{option} {value!r}: expected NAME=VALUE with NAME one of {', '.join(known)}"
            raise ConfigError(msg)
        out[name] = rest
    return {k: v for k, v in out.items() if k in models}


def positive_int(text: str, option: str) -> int:
    """``text`` as a positive integer, or ConfigError naming ``--option``."""
    from jec_coffea.errors import ConfigError

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        msg = f"option --{option}: expected a positive integer, got {text!r}"
        raise ConfigError(msg)
    return value


def dotted_overrides(
    sets: list[str], known: Sequence[str], models: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``--set NAME.KEY.KEY=VALUE`` items as nested override mappings per name of ``models``
    (``all.KEY=VALUE`` applies to every one); VALUE is parsed as YAML."""
    from jec_coffea.errors import ConfigError

    out: dict[str, dict[str, Any]] = {m: {} for m in models}
    for item in sets:
        key, sep, text = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or parts[0] not in (*known, "all"):
            msg = (
                f"option --set {item!r}: expected NAME.KEY[.KEY...]=VALUE with NAME one "
                f"of {', '.join(known)} or all"
            )
            raise ConfigError(msg)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            msg = f"option --set {item!r}: VALUE is not YAML ({err})"
            raise ConfigError(msg) from err
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        for model in models if parts[0] == "all" else [parts[0]]:
            if model in out:
                out[model] = merge(out[model], nested)
    return out


# --------------------------------------------------------------------------- resumable steps


@dataclass
class Task:
    """A :class:`Step` with the files that show it is done and how to do it.

    A task is done when every path of ``outputs`` exists, ``check`` (if any) finds nothing
    missing, and (unless ``by_content``) no output of a step it needs is newer than its oldest
    output, as ``make`` decides.
    """

    step: Step
    outputs: list[Path]
    action: Callable[[], int] | None = None
    """What to run instead of ``cli.main(step.argv)`` (e.g. writing a file); returns an exit code."""
    ok_codes: tuple[int, ...] = (0,)
    """Exit codes that count as done (closure's 1, "does not close", is a result)."""
    check: Callable[[], str | None] | None = None
    """Extra test of the outputs: the reason the task is not done, or None."""
    resume: Callable[[], bool] | None = None
    """When it returns True, ``--resume`` is appended to the arguments."""
    log_file: Path | None = None
    """File receiving the ``jec_coffea`` log records of the step (appended)."""
    stdout_file: Path | None = None
    """File receiving the step's printed output (written only when it succeeds)."""
    by_content: bool = False
    """Judge by ``check`` alone, not by modification times (copies)."""


def selected(name: str, patterns: list[str]) -> bool:
    """True if step ``name`` (``kind`` or ``kind:run``) matches one of ``patterns``
    (``kind`` matches every ``kind:*``)."""
    return any(name == p or name.split(":")[0] == p for p in patterns)


def pending(task: Task, by_name: dict[str, Task], forced: bool = False) -> str | None:
    """Why ``task`` must run, or None when it is done and up to date."""
    if forced:
        return "forced"
    missing = [p for p in task.outputs if not p.exists()]
    if missing:
        return f"{missing[0]} does not exist"
    if task.check is not None and (reason := task.check()) is not None:
        return reason
    if task.by_content:
        return None
    oldest = min(p.stat().st_mtime for p in task.outputs)
    for need in task.step.needs:
        for p in by_name[need].outputs if need in by_name else []:
            if p.exists() and p.stat().st_mtime > oldest:
                return f"{p} is newer than {task.outputs[0].name}"
    return None


def execute(task: Task, console: Console) -> int:
    """Run one task (printing the equivalent command line) and return its exit code."""
    from jec_coffea.cli import main

    for (
        path
    ) in task.outputs:  # subcommands expect the folder of an output file to exist
        path.parent.mkdir(parents=True, exist_ok=True)
    argv = list(task.step.argv)
    if task.resume is not None and task.resume():
        argv.append("--resume")
    if argv:
        shown = "jec-coffea " + " ".join(argv)
        if task.stdout_file is not None:
            shown += f" > {task.stdout_file}"
        console.print(shown, style="dim", soft_wrap=True)
    package_log = logging.getLogger("jec_coffea")
    handler = None
    if task.log_file is not None:
        task.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(task.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        package_log.addHandler(
            handler
        )  # cli.main resets the root logger's handlers only
    try:
        if task.action is not None:
            return task.action()
        if task.stdout_file is None:
            return main(argv)
        part = task.stdout_file.with_name(task.stdout_file.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        with part.open("w") as f, contextlib.redirect_stdout(f):
            code = main(argv)
        if code in task.ok_codes:
            part.replace(task.stdout_file)
        return code
    finally:
        if handler is not None:
            package_log.removeHandler(handler)
            handler.close()


def run_tasks(
    console: Console,
    tasks: list[Task],
    title: str,
    *,
    force: Sequence[str] = (),
    only: Sequence[str] = (),
    dry_run: bool = False,
) -> int:
    """Run the tasks not done, in order; print a table of what happened.

    A task whose needs failed (or are missing and not selected by ``only``) is blocked.
    Returns 0 when every task is done (ran or skipped), 1 otherwise.
    """
    by_name = {t.step.name: t for t in tasks}
    state: dict[str, str] = {}
    start = time.perf_counter()
    for task in tasks:
        step = task.step
        if only and not selected(step.name, only):
            step.status = "not selected"
            state[step.name] = "ok" if all(p.exists() for p in task.outputs) else "-"
            continue
        blocked = [n for n in step.needs if state.get(n) not in _USABLE]
        if blocked:
            step.status = "blocked"
            step.notes.append("needs " + ", ".join(blocked))
            state[step.name] = "blocked"
            continue
        upstream = [n for n in step.needs if state.get(n) == "pending"]
        reason = (
            f"after {upstream[0]}"
            if upstream
            else pending(task, by_name, selected(step.name, list(force)))
        )
        if reason is None:
            step.status = state[step.name] = "skipped"
            console.print(f"[dim]skip {step.name}: {task.outputs[0]} exists[/dim]")
            continue
        if dry_run:
            step.status = "would run"
            step.notes.append(reason)
            state[step.name] = "pending"
            shown = "jec-coffea " + " ".join(step.argv) if step.argv else "(internal)"
            console.print(f"would run {step.name}: {shown}", soft_wrap=True)
            continue
        console.rule(f"[bold]{step.name}[/bold] ({reason})")
        t0 = time.perf_counter()
        code = execute(task, console)
        step.seconds = time.perf_counter() - t0
        ok = code in task.ok_codes
        done = ok and pending(task, by_name) is None
        step.status = "ok" if code == 0 else f"exit {code}"
        if ok and code != 0:
            step.status += " (reported)"
        if ok and not done:
            step.status += ", outputs incomplete"
        state[step.name] = "ok" if done else "failed"
    table = Table(title=f"{title} ({(time.perf_counter() - start) / 60:.1f} min)")
    for col in ("step", "status", "seconds", "notes"):
        table.add_column(col)
    for t in tasks:
        s = t.step
        table.add_row(s.name, s.status, f"{s.seconds:.0f}", "; ".join(s.notes))
    console.print(table)
    return 1 if any(s in ("failed", "blocked") for s in state.values()) else 0


_USABLE = ("ok", "skipped", "pending")
"""States of a needed task that let a task go on (pending: a dry run would run it)."""
