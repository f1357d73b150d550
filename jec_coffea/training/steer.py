"""Run several training configurations one after another (``jec-coffea steer``).

Why: architecture and hyper-parameter comparisons are a list of configurations trained on
the same data. :func:`steer` validates *all* configurations first (a typo in the fifth must
not surface after four hours of training), then trains each in its own timestamped folder
``OUT/<YYYYmmdd-HHMMSS>_<config stem>/`` with its own ``train.log``, and writes
``OUT/steer.csv`` with one row per run (status, best epoch and validation loss, folder). A
failing run is logged and recorded, and the next one starts; the return value says which
failed.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainingConfig
from ..errors import ConfigError, JecCoffeaError

__all__ = ["SteerRun", "steer"]

log = logging.getLogger(__name__)


@dataclass
class SteerRun:
    """Outcome of one configuration of a steering run.

    Attributes
    ----------
    config
        Path of the configuration file.
    out_dir
        Its output folder.
    status
        ``"ok"`` or ``"failed: <reason>"``.
    best_epoch, best_val_loss
        From the training (None if it failed).
    seconds
        Wall time of the run.
    """

    config: Path
    out_dir: Path
    status: str
    best_epoch: int | None = None
    best_val_loss: float | None = None
    seconds: float = 0.0


def _run_dir(out: Path, config: Path, stamp: str) -> Path:
    base = out / f"{stamp}_{config.stem}"
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}_{i}")
        i += 1
    return path


def steer(
    configs: list[str | Path],
    out_dir: str | Path,
    *,
    dataset: str | Path | None = None,
    progress: bool = False,
    stop_on_error: bool = False,
    export: bool = True,
) -> list[SteerRun]:
    """Train every configuration in turn, each in its own timestamped folder.

    Parameters
    ----------
    configs
        Master configuration files, trained in this order.
    out_dir
        Parent folder of the run folders and of ``steer.csv``.
    dataset
        ``data.yaml`` to use instead of each configuration's ``data.dataset``.
    progress
        Show progress bars.
    stop_on_error
        Stop at the first failed run instead of continuing with the next.
    export
        Export each best model to ``model.onnx`` in its folder.

    Raises
    ------
    ConfigError
        If any configuration is invalid — before the first training starts.
    """
    from .loop import train

    loaded: list[tuple[Path, TrainingConfig]] = []
    problems = []
    for path in map(Path, configs):
        try:
            cfg = TrainingConfig.load(path)
        except ConfigError as err:
            problems.append(str(err))
            continue
        if dataset is not None:
            cfg = cfg.model_copy(deep=True)
            cfg.data.dataset = Path(dataset).resolve()
        loaded.append((path, cfg))
    if problems:
        msg = (
            f"{len(problems)} of {len(configs)} configurations are invalid: "
            + " | ".join(problems)
        )
        raise ConfigError(msg)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[SteerRun] = []
    for i, (path, cfg) in enumerate(loaded):
        run_dir = _run_dir(out, path, time.strftime("%Y%m%d-%H%M%S"))
        run_dir.mkdir(parents=True)
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        root = logging.getLogger()
        root.addHandler(handler)
        old_level = root.level
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        t0 = time.perf_counter()
        log.info("steer: run %d/%d, %s -> %s", i + 1, len(loaded), path, run_dir)
        try:
            result = train(cfg, run_dir, progress=progress, export=export)
            run = SteerRun(path, run_dir, "ok", result.best_epoch, result.best_val_loss)
        except (JecCoffeaError, FloatingPointError, RuntimeError) as err:
            log.exception("steer: %s failed", path)
            run = SteerRun(path, run_dir, f"failed: {err}")
        finally:
            root.removeHandler(handler)
            handler.close()
            root.setLevel(old_level)
        run.seconds = time.perf_counter() - t0
        runs.append(run)
        _write_summary(out / "steer.csv", runs)
        if stop_on_error and run.status != "ok":
            break
    return runs


def _write_summary(path: Path, runs: list[SteerRun]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["config", "out_dir", "status", "best_epoch", "best_val_loss", "seconds"]
        )
        for r in runs:
            writer.writerow(
                [
                    r.config,
                    r.out_dir,
                    r.status,
                    r.best_epoch,
                    r.best_val_loss,
                    f"{r.seconds:.1f}",
                ]
            )
