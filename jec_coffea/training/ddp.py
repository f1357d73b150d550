"""Multi-process training with torch DistributedDataParallel, without code changes.

``torchrun --nproc-per-node K jec-coffea train CONFIG -o OUT`` (or any launcher that sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) turns the same
command into K cooperating processes: :func:`init_distributed` detects those variables and
initialises the process group with ``gloo`` on CPU and ``nccl`` on CUDA. Each rank reads its
shard of every epoch through a ``DistributedSampler`` and DDP averages the gradients, so K
ranks with batch B take the same steps as one process with batch K·B (the training loop
normalises the loss so that this holds exactly; see :mod:`jec_coffea.training.losses`).
Only rank 0 writes checkpoints, logs and the exported model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import extras
from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DistributedContext",
    "all_reduce_sum",
    "init_distributed",
    "resolve_device",
    "shutdown_distributed",
    "wrap_model",
]

log = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a (possibly single-process) training job.

    Attributes
    ----------
    rank, world_size, local_rank
        As set by torchrun; 0, 1, 0 for a plain process.
    device
        The torch device this rank trains on.
    backend
        ``"gloo"``, ``"nccl"`` or ``None`` when not distributed.
    """

    rank: int
    world_size: int
    local_rank: int
    device: Any
    backend: str | None

    @property
    def distributed(self) -> bool:
        """True when running under a launcher with more than one process."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files (rank 0)."""
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """Turn the config's ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) into a device.

    ``auto`` picks CUDA when available. Under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``.
    """
    torch = extras.torch()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            msg = f"device: {spec!r} requested but CUDA is not available on this machine; use 'cpu' or 'auto'"
            raise ConfigError(msg)
        if spec == "cuda":
            spec = f"cuda:{local_rank}"
    elif spec != "cpu":
        msg = f"device: {spec!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'"
        raise ConfigError(msg)
    return torch.device(spec)


def init_distributed(device: str = "auto") -> DistributedContext:
    """Detect torchrun's environment and join the process group.

    Parameters
    ----------
    device
        The config's ``device`` option.

    Returns
    -------
    DistributedContext
        Rank, world size and device; a single-process context without a launcher.
    """
    torch = extras.torch()
    env = os.environ
    if "WORLD_SIZE" not in env or int(env.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext(0, 1, 0, resolve_device(device), None)
    missing = [v for v in _TORCHRUN_VARS if v not in env]
    if missing:
        msg = (
            f"WORLD_SIZE={env['WORLD_SIZE']} is set but {', '.join(missing)} not; "
            "launch with torchrun (e.g. torchrun --nproc-per-node 2 "
            "$(which jec-coffea) train CONFIG -o OUT)"
        )
        raise ConfigError(msg)
    rank, world, local = (
        int(env["RANK"]),
        int(env["WORLD_SIZE"]),
        int(env["LOCAL_RANK"]),
    )
    dev = resolve_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist = torch.distributed
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    log.info("distributed training: rank %d of %d, %s on %s", rank, world, backend, dev)
    return DistributedContext(rank, world, local, dev, backend)


def shutdown_distributed(ctx: DistributedContext) -> None:
    """Leave the process group (no-op for a single process)."""
    torch = extras.torch()
    if ctx.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def all_reduce_sum(ctx: DistributedContext, values: list[float]) -> list[float]:
    """Sum a few floats over ranks (validation sums, early-stopping decisions)."""
    if not ctx.distributed:
        return list(values)
    torch = extras.torch()
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def wrap_model(model: torch.nn.Module, ctx: DistributedContext) -> torch.nn.Module:
    """Move the model to the rank's device and wrap it in DDP when distributed.

    BatchNorm layers become SyncBatchNorm on CUDA. On CPU (gloo) torch has no
    SyncBatchNorm, so batch statistics stay per rank; a warning says so, because then K
    ranks are no longer exactly equivalent to one process with the combined batch.
    """
    torch = extras.torch()
    model = model.to(ctx.device)
    if not ctx.distributed:
        return model
    has_bn = any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
    )
    if has_bn and ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif has_bn and ctx.is_main:
        log.warning(
            "model has BatchNorm layers and training runs on CPU with %d ranks: batch "
            "statistics are computed per rank (no SyncBatchNorm on CPU)",
            ctx.world_size,
        )
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
