"""What a training leaves on disk: history (CSV and plot), checkpoints, the ONNX model.

Checkpoints are written atomically (temporary file, then rename) so that an interrupted job
never leaves a truncated ``checkpoint_last.pt``, and read with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, extras
from ..errors import ConfigError
from .network import prediction_network

if TYPE_CHECKING:
    from ..data.jet_table import JetTable

__all__ = [
    "HISTORY_COLUMNS",
    "detector_hash",
    "export_model",
    "load_checkpoint",
    "plot_history",
    "save_checkpoint",
    "write_history",
]

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "val_mae",
    "lr",
    "seconds",
)
"""Columns of ``history.csv``: epoch (0-based), optimiser steps so far, weighted train and
validation loss, unweighted validation MAE of ŷ (ln pT), learning rate, wall seconds."""


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in HISTORY_COLUMNS})


def plot_history(path: Path, history: list[dict[str, float]], title: str) -> None:
    plt = extras.matplotlib_pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if all(h["train_loss"] > 0 and h["val_loss"] > 0 for h in history):
        ax.set_yscale("log")
    ax.set_title(title)
    ax2 = ax.twinx()
    ax2.plot(
        epochs, [h["lr"] for h in history], ":", color="grey", label="learning rate"
    )
    ax2.set_ylabel("learning rate")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    torch = extras.torch()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    torch = extras.torch()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = f"{path}: cannot read the checkpoint ({err})"
        raise ConfigError(msg) from err


def detector_hash(tables: list[JetTable]) -> str | None:
    """sha256 of the detector configuration the (simulated) training files were made with.

    Read from the ``jec_coffea_metadata`` of files written by ``jec-coffea simulate``; None
    for other files. Files simulated with different detectors give a comma-joined list.
    """
    from ..errors import InputFileError
    from ..simulation.writer import read_metadata

    hashes = set()
    for table in tables:
        if not Path(str(table.source)).is_file():
            continue
        try:
            meta = read_metadata(table.source)
        except InputFileError:
            continue
        if meta.get("detector_sha256"):
            hashes.add(str(meta["detector_sha256"]))
    if len(hashes) > 1:
        log.warning("training files come from %d detector configurations", len(hashes))
    return ",".join(sorted(hashes)) or None


def export_model(
    network,
    loss,
    transform,
    config,
    out: Path,
    state,
    validity,
    jet_radius,
    detector_hash,
) -> Path | None:
    try:
        from ..export import export_onnx
    except ImportError:
        log.warning("jec_coffea.export is not available: model.onnx not written")
        return None
    metadata = {
        "config_hash": config.config_hash(),
        "loss": config.loss.type,
        "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val"],
        "selection": config.data.selection.model_dump(mode="json"),
        "validity": validity,
        "jet_radius": jet_radius,
        "package_version": __version__,
    }
    if detector_hash:
        metadata["detector_config_hash"] = detector_hash
    path = out / "model.onnx"
    export_onnx(
        prediction_network(network, loss), transform, config.features, path, metadata
    )
    log.info("exported %s", path)
    return path
