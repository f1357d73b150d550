"""The training loop: epochs, validation, schedules, checkpoints, resume, early stopping.

:func:`train` runs one master configuration end to end and leaves in the output folder:

``config.yaml`` (resolved, with its hash) and ``config.sha256``
    what was trained, every default filled in;
``transform.yaml``
    the fitted preprocessing (given or fitted on the training split);
``history.csv`` and ``history.png``
    per epoch: train and validation loss, validation MAE, learning rate, step, seconds;
``checkpoint_last.pt`` (every epoch) and ``checkpoint_best.pt`` (best validation loss)
    model, optimiser, scheduler, early-stopping state, history and RNG states; ``--resume``
    continues from ``checkpoint_last.pt`` and gives the same weights as an uninterrupted run;
``model.onnx``
    the best model with its preprocessing, exported by :func:`jec_coffea.export.export_onnx`.

Determinism: every generator is seeded from ``seed``; the shuffles come from
``DistributedSampler(seed).set_epoch(epoch)``, so they do not depend on how many epochs ran
in this process. Under torchrun the same code runs on every rank (see
:mod:`jec_coffea.training.ddp`); only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__, extras
from ..config import RESUMABLE_KEYS, TrainingConfig
from ..errors import ConfigError
from . import ddp
from .adversarial import fgsm_inputs, numeric_columns
from .artifacts import (
    detector_hash,
    export_model,
    load_checkpoint,
    plot_history,
    save_checkpoint,
    write_history,
)
from .dataset import LABELS, BatchLoader, JetArrays, build_split_arrays, load_jet_tables
from .losses import Loss, make_loss
from .network import build_network, check_transform, fit_transform
from .optim import make_optimizer, make_scheduler

if TYPE_CHECKING:
    import torch

    from ..data.jet_table import JetTable
    from ..transform import Transform

__all__ = ["TrainResult", "check_transform", "fit_transform", "train"]

log = logging.getLogger(__name__)

RAW_PREFIX = "raw:"
"""Batch keys of the untransformed inputs (ParticleNet/ParT read their geometry from them)."""

_NEEDS_RAW = frozenset({"particlenet", "part"})
_PLOT_INTERVAL = 60.0
"""Seconds between redraws of history.png during training (always drawn at the end)."""


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    out_dir
        The output folder.
    best_epoch, best_val_loss
        Epoch (0-based) with the lowest validation loss and that loss.
    epochs_run, steps
        Epochs completed and optimiser steps taken (including resumed ones).
    stopped_early
        True if early stopping ended the training.
    onnx_path
        The exported ``model.onnx`` (None if export was skipped).
    history
        One dict per epoch with the columns of ``history.csv``.
    network
        The trained torch network (best weights, on CPU), without preprocessing.
    """

    out_dir: Path
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    steps: int
    stopped_early: bool
    onnx_path: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    network: Any = None


def _seed_everything(seed: int) -> None:
    torch = extras.torch()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _split_batch(batch: dict[str, torch.Tensor]):
    inputs = {
        k: v
        for k, v in batch.items()
        if k not in LABELS and not k.startswith(RAW_PREFIX)
    }
    raw = {
        k[len(RAW_PREFIX) :]: v for k, v in batch.items() if k.startswith(RAW_PREFIX)
    }
    return inputs, raw or None, batch["target"], batch["weight"]


def train(
    config: TrainingConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    export: bool = True,
    tables: list[JetTable] | None = None,
    check_only: bool = False,
) -> TrainResult:
    """Train the network of ``config`` and write everything to ``out_dir``.

    Parameters
    ----------
    config
        Validated master configuration.
    out_dir
        Output folder (created). With ``resume``, it must hold the ``checkpoint_last.pt`` of
        a run of the same configuration (same hash).
    resume
        Continue from ``out_dir/checkpoint_last.pt``.
    progress
        Show a rich progress bar per epoch (rank 0 only).
    export
        Export the best model to ``out_dir/model.onnx`` at the end.
    tables
        Jet tables to use instead of reading ``config.data.dataset`` (tests, notebooks).
    check_only
        Run every check (configuration, dataset counts, selection and split, transform,
        model construction) and return before training, writing nothing.

    Raises
    ------
    ConfigError, ModelMismatchError, InputFileError
        Bad configuration, transform, dataset or data — all before the first step.
    """
    out = Path(out_dir)
    ctx = ddp.init_distributed(config.device)
    try:
        return _train(config, out, ctx, resume, progress, export, tables, check_only)
    finally:
        ddp.shutdown_distributed(ctx)


def _check_out(config: TrainingConfig, out: Path, resume: bool) -> None:
    """Refuse to overwrite a training, or to resume a different one (nothing written)."""
    last = out / "checkpoint_last.pt"
    if resume:
        if not last.is_file():
            msg = f"--resume: {last} does not exist; start without --resume"
            raise ConfigError(msg)
        previous = out / "config.yaml"
        try:
            old = TrainingConfig.load(previous).config_hash(exclude=RESUMABLE_KEYS)
        except ConfigError as err:
            msg = f"--resume: cannot read the configuration of the run in {out}: {err}"
            raise ConfigError(msg) from err
        if old != config.config_hash(exclude=RESUMABLE_KEYS):
            msg = (
                f"--resume: {out} was trained with another configuration (only "
                f"{', '.join(RESUMABLE_KEYS)} may change on resume); use a new output folder"
            )
            raise ConfigError(msg)
    elif last.is_file():
        msg = f"{out} already holds a training (checkpoint_last.pt); use --resume or a new folder"
        raise ConfigError(msg)


def _write_config(config: TrainingConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.yaml")
    (out / "config.sha256").write_text(config.config_hash() + "\n")


def _make_loader(
    arrays: JetArrays,
    transform: Transform,
    keep_raw: bool,
    config: TrainingConfig,
    ctx: ddp.DistributedContext,
    training: bool,
) -> BatchLoader:
    """Transform a split's inputs once (numpy) and hold them on the device for batching.

    With ``keep_raw`` the untransformed inputs ride along under ``raw:<name>`` keys
    (ParticleNet and ParT take Δη, Δφ and pT for their geometry from them).
    """
    transformed = transform.apply_numpy(arrays.inputs)
    if keep_raw:
        transformed.update({RAW_PREFIX + k: v for k, v in arrays.inputs.items()})
    batch = config.data.batch_size
    if not training:
        batch = config.data.val_batch_size or 4 * config.data.batch_size
    return BatchLoader(
        replace(arrays, inputs=transformed),
        batch,
        device=ctx.device,
        shuffle=training,
        drop_last=training,
        seed=config.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )


def _train(
    config: TrainingConfig,
    out: Path,
    ctx: ddp.DistributedContext,
    resume: bool,
    progress: bool,
    export: bool,
    tables: list[JetTable] | None,
    check_only: bool,
) -> TrainResult:
    torch = extras.torch()
    from ..transform import Transform

    _check_out(config, out, resume)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    _seed_everything(config.seed)

    # -- data and preprocessing: every check before the first step
    if tables is None:
        tables = load_jet_tables(str(config.data.dataset))
    train_arrays = build_split_arrays(tables, config, "train")
    val_arrays = build_split_arrays(tables, config, "val")
    if resume:
        transform = Transform.from_yaml(out / "transform.yaml")
        check_transform(transform, config, str(out / "transform.yaml"))
    elif config.transform.path is not None:
        transform = Transform.from_yaml(config.transform.path)
        check_transform(transform, config, str(config.transform.path))
    else:
        transform = fit_transform(config, train_arrays)
    loss = make_loss(config.loss)
    network, model_cfg = build_network(config, transform, loss)
    n_params = sum(p.numel() for p in network.parameters())
    log.info("%s network with %d parameters", model_cfg.architecture, n_params)
    keep_raw = model_cfg.architecture in _NEEDS_RAW
    train_loader = _make_loader(train_arrays, transform, keep_raw, config, ctx, True)
    val_loader = _make_loader(val_arrays, transform, keep_raw, config, ctx, False)
    if len(train_loader) == 0:
        msg = (
            f"training split has {len(train_arrays)} jets, fewer than one batch of "
            f"{config.data.batch_size} per rank ({ctx.world_size} rank(s)); lower "
            "data.batch_size"
        )
        raise ConfigError(msg)
    if check_only:
        return TrainResult(out, -1, math.inf, 0, 0, False, None, [], network)
    if ctx.is_main:
        _write_config(config, out)
        transform.to_yaml(out / "transform.yaml")

    model = ddp.wrap_model(network, ctx)
    bare = network
    optimizer = make_optimizer(config, model.parameters())
    steps_per_epoch = len(train_loader)
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    scheduler, per_step = make_scheduler(config, optimizer, total_steps)
    numeric = numeric_columns(transform, ctx.device)

    state = {
        "epoch": 0,
        "step": 0,
        "best_val": math.inf,
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": [],
    }
    if resume:
        ckpt = load_checkpoint(out / "checkpoint_last.pt")
        bare.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        state.update(
            {
                k: ckpt[k]
                for k in (
                    "epoch",
                    "step",
                    "best_val",
                    "best_epoch",
                    "bad_epochs",
                    "history",
                )
            }
        )
        log.info("resuming from epoch %d (step %d)", state["epoch"], state["step"])

    stopped_early = False
    title = f"{model_cfg.architecture} ({config.loss.type})"
    last_plot = -math.inf
    log.info(
        "training %s on %d jets (%d val), %d steps/epoch, up to %d epochs, %d rank(s)",
        model_cfg.architecture,
        len(train_arrays),
        len(val_arrays),
        steps_per_epoch,
        config.epochs,
        ctx.world_size,
    )
    for epoch in range(state["epoch"], config.epochs):
        if config.max_steps and state["step"] >= config.max_steps:
            break
        t0 = time.perf_counter()
        train_loss = _train_epoch(
            config,
            model,
            bare,
            loss,
            optimizer,
            scheduler if per_step else None,
            train_loader,
            epoch,
            steps_per_epoch,
            state,
            numeric,
            ctx,
            progress,
        )
        val_loss, val_mae = _evaluate(bare, loss, val_loader, ctx)
        if scheduler is not None and not per_step:
            scheduler.step(val_loss)
        row = {
            "epoch": epoch,
            "step": state["step"],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_mae": val_mae,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        state["history"].append(row)
        improved = val_loss < state["best_val"] - config.early_stopping.min_delta
        if improved:
            state.update(best_val=val_loss, best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        log.info(
            "epoch %d: train %.5g, val %.5g (MAE %.4g), lr %.3g, %.1f s%s",
            epoch,
            train_loss,
            val_loss,
            val_mae,
            row["lr"],
            row["seconds"],
            " *" if improved else "",
        )
        if ctx.is_main:
            ckpt = {
                "model": bare.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "torch_rng": torch.get_rng_state(),
                "config_hash": config.config_hash(),
                "version": __version__,
                **{
                    k: state[k]
                    for k in (
                        "epoch",
                        "step",
                        "best_val",
                        "best_epoch",
                        "bad_epochs",
                        "history",
                    )
                },
            }
            save_checkpoint(out / "checkpoint_last.pt", ckpt)
            if improved:
                save_checkpoint(out / "checkpoint_best.pt", ckpt)
            write_history(out / "history.csv", state["history"])
            if time.monotonic() - last_plot > _PLOT_INTERVAL:
                plot_history(out / "history.png", state["history"], title)
                last_plot = time.monotonic()
        if (
            config.early_stopping.enabled
            and state["bad_epochs"] >= config.early_stopping.patience
        ):
            log.info(
                "early stopping: no improvement for %d epochs", state["bad_epochs"]
            )
            stopped_early = True
            break

    if ctx.is_main and state["history"]:
        plot_history(out / "history.png", state["history"], title)
    if ctx.distributed:
        torch.distributed.barrier()
    best_path = out / "checkpoint_best.pt"
    if best_path.is_file():
        bare.load_state_dict(load_checkpoint(best_path)["model"])
    bare = bare.cpu().eval()
    onnx_path = None
    if export and ctx.is_main:
        validity = {
            "pt": [float(train_arrays.pt_raw.min()), float(train_arrays.pt_raw.max())],
            "eta": [
                -config.data.selection.abs_eta_gen_max,
                config.data.selection.abs_eta_gen_max,
            ],
        }
        radius = float(getattr(tables[0], "jet_radius", 0.4))
        onnx_path = export_model(
            bare,
            loss,
            transform,
            config,
            out,
            state,
            validity,
            radius,
            detector_hash(tables),
        )
    return TrainResult(
        out_dir=out,
        best_epoch=state["best_epoch"],
        best_val_loss=state["best_val"],
        epochs_run=state["epoch"],
        steps=state["step"],
        stopped_early=stopped_early,
        onnx_path=onnx_path,
        history=state["history"],
        network=bare,
    )


def _train_epoch(
    config,
    model,
    bare,
    loss,
    optimizer,
    step_scheduler,
    loader,
    epoch,
    steps_per_epoch,
    state,
    numeric,
    ctx,
    progress,
) -> float:
    torch = extras.torch()
    model.train()
    loader.set_epoch(epoch)
    adv = config.adversarial
    total, count = 0.0, 0
    bar = _progress_bar(progress and ctx.is_main)
    with bar if bar is not None else nullcontext():
        task = (
            bar.add_task(f"epoch {epoch}", total=steps_per_epoch)
            if bar is not None
            else None
        )
        for i, batch in enumerate(loader):
            if i >= steps_per_epoch or (
                config.max_steps and state["step"] >= config.max_steps
            ):
                break
            inputs, raw, target, weight = _split_batch(batch)
            labels = {"flavour": batch["flavour"], "pt_gen": batch["pt_gen"]}
            if adv.enabled:
                bare.train()
                x_adv = fgsm_inputs(
                    bare, loss, inputs, raw, target, weight, adv.epsilon, numeric
                )
                both = {k: torch.cat([inputs[k], x_adv[k]]) for k in inputs}
                raw2 = {k: torch.cat([v, v]) for k, v in raw.items()} if raw else None
                out = model(both, raw=raw2)
                n = target.shape[0]
                value = (1 - adv.weight) * loss(
                    out[:n], target, weight, **labels
                ) + adv.weight * loss(out[n:], target, weight, **labels)
            else:
                value = loss(model(inputs, raw=raw), target, weight, **labels)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if config.optimizer.grad_clip:
                torch.nn.utils.clip_grad_norm_(
                    model.parameters(), config.optimizer.grad_clip
                )
            optimizer.step()
            if step_scheduler is not None:
                step_scheduler.step()
            state["step"] += 1
            v = float(value.detach())
            if not math.isfinite(v):
                msg = f"loss became {v} at epoch {epoch}, step {state['step']}; lower optimizer.lr or set optimizer.grad_clip"
                raise FloatingPointError(msg)
            total += v * target.shape[0]
            count += target.shape[0]
            if bar is not None:
                bar.update(task, advance=1, description=f"epoch {epoch} loss {v:.4g}")
    total, count = ddp.all_reduce_sum(ctx, [total, float(count)])
    return total / max(count, 1.0)


def _evaluate(
    network: torch.nn.Module,
    loss: Loss,
    loader: BatchLoader,
    ctx: ddp.DistributedContext,
) -> tuple[float, float]:
    """Weighted validation loss and unweighted MAE of ŷ, summed over all ranks."""
    torch = extras.torch()
    network.eval()
    sums = [0.0, 0.0, 0.0]
    with torch.no_grad():
        for batch in loader:
            inputs, raw, target, weight = _split_batch(batch)
            out = network(inputs, raw=raw)
            sums[0] += float((loss.per_jet(out, target) * weight).sum())
            sums[1] += float((loss.prediction(out) - target).abs().sum())
            sums[2] += target.shape[0]
    network.train()
    total, abs_err, n = ddp.all_reduce_sum(ctx, sums)
    return total / max(n, 1.0), abs_err / max(n, 1.0)


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
