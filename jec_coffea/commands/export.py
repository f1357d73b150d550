"""Re-export a training directory to ONNX with the current graph code.

`jec-coffea export TRAINDIR -o model.onnx` rebuilds the network of TRAINDIR/config.yaml,
loads TRAINDIR/checkpoint_best.pt into it (strictly: every weight must fit), puts the fitted
TRAINDIR/transform.yaml in front of it and writes one ONNX file with exactly the metadata
`jec-coffea train` writes at the end of a training. Use it to pick up a faster exported
graph without retraining, or to export a run trained with --no-export or still running.

The metadata taken from the training data (validity range in raw pT, jet radius, detector
hash) is read from TRAINDIR/model.onnx when train wrote one for this configuration;
otherwise the dataset (config data.dataset, or --data) is read again to compute it as train
does. The new file is checked against torch (parity) before it replaces OUTPUT.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from jec_coffea.errors import ConfigError, InputFileError, ModelMismatchError

__all__ = ["REQUIRED_FILES", "export_training"]

log = logging.getLogger(__name__)

REQUIRED_FILES: tuple[str, ...] = (
    "config.yaml",
    "transform.yaml",
    "checkpoint_best.pt",
)
"""Files of a training directory the export needs (all written by ``jec-coffea train``)."""


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "train_dir",
        type=Path,
        metavar="TRAINDIR",
        help="output folder of jec-coffea train",
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="ONNX file to write"
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DATA_YAML",
        help="data.yaml replacing data.dataset (only read when TRAINDIR has no model.onnx "
        "of this configuration to take the validity range and detector hash from)",
    )


def run(console: Console, args: argparse.Namespace) -> int:
    path = export_training(args.train_dir, args.output, data=args.data)
    from jec_coffea.export import read_onnx_metadata

    meta = read_onnx_metadata(path)
    console.print(
        f"exported {meta['architecture']} of {args.train_dir} (best epoch "
        f"{meta.get('best_epoch')}, validation loss {meta.get('best_val_loss', float('nan')):.5g}) "
        f"to {path}"
    )
    return 0


def export_training(
    train_dir: str | Path, output: str | Path, *, data: str | Path | None = None
) -> Path:
    """Export the best checkpoint of a training directory to ``output`` (ONNX).

    Parameters
    ----------
    train_dir
        Folder written by ``jec-coffea train`` (config.yaml, transform.yaml,
        checkpoint_best.pt; model.onnx optional).
    output
        ONNX file to write; replaced atomically once the export passed its parity check.
    data
        ``data.yaml`` to read when the data-derived metadata cannot be taken from
        ``train_dir/model.onnx`` (default: the configuration's ``data.dataset``).

    Returns
    -------
    pathlib.Path
        ``output``.

    Raises
    ------
    InputFileError
        A required file of ``train_dir`` is missing (all missing ones are named).
    ModelMismatchError
        The checkpoint does not fit the network of the configuration.
    ConfigError
        Unreadable configuration or checkpoint, or no source for the validity range.
    """
    from jec_coffea.config import TrainingConfig
    from jec_coffea.training import make_loss
    from jec_coffea.training.artifacts import export_model, load_checkpoint
    from jec_coffea.training.network import build_network, check_transform
    from jec_coffea.transform import Transform

    train_dir = Path(train_dir)
    output = Path(output)
    missing = [f for f in REQUIRED_FILES if not (train_dir / f).is_file()]
    if missing:
        raise InputFileError(
            str(train_dir),
            f"missing {', '.join(missing)} (a training folder holds "
            f"{', '.join(REQUIRED_FILES)}, written by jec-coffea train; checkpoint_best.pt "
            "appears after the first validation)",
        )
    config = TrainingConfig.load(train_dir / "config.yaml")
    transform = Transform.from_yaml(train_dir / "transform.yaml")
    check_transform(transform, config, str(train_dir / "transform.yaml"))
    loss = make_loss(config.loss)
    network, _ = build_network(config, transform, loss)
    ckpt = load_checkpoint(train_dir / "checkpoint_best.pt")
    try:
        network.load_state_dict(ckpt["model"], strict=True)
    except (KeyError, RuntimeError) as err:
        msg = (
            f"{train_dir / 'checkpoint_best.pt'}: does not fit the "
            f"{config.model.architecture} network of {train_dir / 'config.yaml'}: {err}"
        )
        raise ModelMismatchError(msg) from err
    network = network.cpu().eval()
    state = {"best_epoch": ckpt["best_epoch"], "best_val": ckpt["best_val"]}
    validity, radius, det_hash = _data_metadata(train_dir, config, data)

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        written = export_model(
            network,
            loss,
            transform,
            config,
            Path(tmp),
            state,
            validity,
            radius,
            det_hash,
        )
        if written is None:
            msg = "jec_coffea.export is not available (install 'jec-coffea[train]')"
            raise ConfigError(msg)
        written.replace(output)
    log.info(
        "exported %s of %s (best epoch %s) to %s",
        config.model.architecture,
        train_dir,
        state["best_epoch"],
        output,
    )
    return output


def _data_metadata(
    train_dir: Path, config: Any, data: str | Path | None
) -> tuple[dict[str, list[float]], float, str | None]:
    """Validity range, jet radius and detector hash, as train computes them at its end.

    Taken from ``train_dir/model.onnx`` when it was exported from this configuration
    (same ``config_hash``) and no ``data`` is given; otherwise computed from the training
    split of the dataset.
    """
    from jec_coffea.export import read_onnx_metadata

    previous = train_dir / "model.onnx"
    if data is None and previous.is_file():
        try:
            meta = read_onnx_metadata(previous)
        except (InputFileError, ModelMismatchError) as err:
            log.warning(
                "%s is not usable (%s); reading the dataset instead", previous, err
            )
        else:
            if meta.get("config_hash") == config.config_hash():
                return (
                    meta["validity"],
                    float(meta["jet_radius"]),
                    meta.get("detector_config_hash"),
                )
            log.warning(
                "%s was exported from another configuration; reading the dataset instead",
                previous,
            )
    return _metadata_from_dataset(config, data, train_dir)


def _metadata_from_dataset(
    config: Any, data: str | Path | None, train_dir: Path
) -> tuple[dict[str, list[float]], float, str | None]:
    from jec_coffea.training import build_split_arrays
    from jec_coffea.training.artifacts import detector_hash
    from jec_coffea.training.dataset import load_jet_tables

    dataset = data if data is not None else config.data.dataset
    if dataset is None or not Path(dataset).is_file():
        msg = (
            f"{train_dir}: no model.onnx of this configuration to take the validity range "
            f"from, and the dataset {str(dataset)!r} is not a file; pass --data DATA_YAML"
        )
        raise ConfigError(msg)
    log.info("reading %s for the validity range of the training split", dataset)
    tables = load_jet_tables(str(dataset))
    train = build_split_arrays(tables, config, "train")
    eta_max = config.data.selection.abs_eta_gen_max
    validity = {
        "pt": [float(train.pt_raw.min()), float(train.pt_raw.max())],
        "eta": [-eta_max, eta_max],
    }
    radius = float(getattr(tables[0], "jet_radius", 0.4))
    return validity, radius, detector_hash(tables)
