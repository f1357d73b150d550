"""Jet tables -> in-memory training tensors, split, selected, weighted and batched.

Why in memory: after feature building a jet is a few kB of float32 (e.g. 64 charged × 16
features), so millions of jets fit in RAM, and slicing pre-built tensors with a random index
per batch costs microseconds — the loader is never the bottleneck, unlike a per-jet
``__getitem__`` with collation. Everything here is columnar: one selection mask and one
:func:`jec_coffea.features.to_tensors` call per file.

The chain per file: :func:`~jec_coffea.data.read_jet_table` → default selection
(:func:`selection_mask`) → hash split (:func:`jec_coffea.data.split.split_of`) →
:func:`~jec_coffea.features.to_tensors` → target y = ln(pT_gen / pT_raw). Weights
(:func:`~jec_coffea.training.reweighting.training_weights`) are computed per split on the
concatenation of all files. Batches come from :class:`BatchLoader`, which draws indices from a
``DistributedSampler`` so that single-process and torchrun training see the same shuffles.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np

from .. import extras
from ..data.jet_table import CONSTITUENT_TYPES
from ..errors import ModelMismatchError
from .reweighting import training_weights

if TYPE_CHECKING:
    import torch

    from ..config import SelectionConfig, TrainingConfig
    from ..data.jet_table import JetTable
    from ..features import FeatureSpec

__all__ = [
    "BatchLoader",
    "JetArrays",
    "build_split_arrays",
    "load_jet_tables",
    "selection_mask",
]

log = logging.getLogger(__name__)

_TIGHT_ID_BIT = 2


@dataclass
class JetArrays:
    """Network inputs and per-jet truth of one split, as numpy arrays of equal length N.

    Attributes
    ----------
    inputs
        ``to_tensors`` layout: ``"jet"`` (N, F) and per type ``"<type>"`` (N, M, F) and
        ``"<type>_mask"`` (N, M), float32.
    target
        y = ln(pT_gen / pT_raw), float32 (N,).
    weight
        Training weights, mean 1, float32 (N,).
    flavour
        Flavour-group index, int8 (N,).
    pt_gen, eta_gen, pt_raw
        Gen-jet pT [GeV] and η, raw jet pT [GeV], float32 (N,).
    cutflow
        Jets remaining after each selection step, summed over files (all splits).
    """

    inputs: dict[str, np.ndarray]
    target: np.ndarray
    weight: np.ndarray
    flavour: np.ndarray
    pt_gen: np.ndarray
    eta_gen: np.ndarray
    pt_raw: np.ndarray
    cutflow: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.target)


def load_jet_tables(dataset_path: str, *, verify: bool = True) -> list[JetTable]:
    """Read every file of a ``data.yaml`` dataset description into jet tables.

    Parameters
    ----------
    dataset_path
        Path of the ``data.yaml`` (jec-coffea or ml-jec format).
    verify
        Check the recorded jet counts (and checksums) against the files first, so that a
        stale description fails before any training starts.
    """
    from ..data.dataset import DatasetDescription
    from ..data.reader import read_jet_table

    description = DatasetDescription.load(dataset_path)
    if verify:
        description.verify()
    tables = []
    for entry in description.files:
        path = description.resolve(entry)
        table = read_jet_table(path, layout=entry.layout, tree=entry.tree)
        log.info("%s: %d jets (%s layout)", path, len(table), table.layout)
        tables.append(table)
    return tables


def selection_mask(
    jets: ak.Array, selection: SelectionConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """Jets that carry a training target, by the default selection of DESIGN.md.

    Steps (each counted in the returned cut-flow): gen-matched; pT_gen ≥ ``pt_gen_min``;
    |η_gen| < ``abs_eta_gen_max``; tight jet ID where the table has ``jet_id``; a finite
    raw pT above ``pt_raw_min`` (the target needs pT_raw > 0).

    Returns
    -------
    mask
        bool (N,).
    cutflow
        Ordered ``{step: jets passing this and all previous steps}``.
    """
    n = len(jets)
    fields = set(jets.fields)
    mask = np.ones(n, dtype=bool)
    cutflow = {"all": n}

    def step(name: str, passed: np.ndarray) -> None:
        nonlocal mask
        mask &= passed
        cutflow[name] = int(mask.sum())

    if "matched" not in fields:
        msg = "jet table has no gen match ('matched'): training needs simulated jets"
        raise ModelMismatchError(msg)
    step("matched", ak.to_numpy(jets.matched).astype(bool))
    pt_gen = np.asarray(ak.to_numpy(jets.pt_gen), dtype=np.float64)
    eta_gen = np.asarray(ak.to_numpy(jets.eta_gen), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        step("pt_gen_min", pt_gen >= selection.pt_gen_min)
        step("abs_eta_gen_max", np.abs(eta_gen) < selection.abs_eta_gen_max)
    if "jet_id" in fields:
        jet_id = ak.to_numpy(jets.jet_id).astype(np.int64)
        if selection.tight_jet_id:
            step("tight_jet_id", (jet_id & _TIGHT_ID_BIT) != 0)
    pt_raw = np.asarray(ak.to_numpy(jets.pt_raw), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        step(
            "pt_raw_min",
            np.isfinite(pt_raw) & (pt_raw > max(selection.pt_raw_min, 0.0)),
        )
    return mask, cutflow


def _split_names(table: JetTable, config: TrainingConfig) -> np.ndarray:
    from ..data.split import split_of

    s = config.data.split
    return np.asarray(split_of(table, fractions=(s.train, s.val, s.test), seed=s.seed))


def _check_types(table: JetTable, spec: FeatureSpec) -> None:
    for ctype in spec.constituents:
        if ctype not in table.jets.fields:
            reason = table.missing.get(ctype, "collection absent from the file")
            msg = (
                f"{table.source}: constituent type {ctype!r} needed by features.constituents "
                f"is missing ({reason}); drop it from the config or use files that have it"
            )
            raise ModelMismatchError(msg)
    if spec.constituents and "constituents_complete" in table.jets.fields:
        complete = ak.to_numpy(table.jets.constituents_complete).astype(bool)
        if len(complete) and not complete.all():
            msg = (
                f"{table.source}: {int((~complete).sum())} jets have incomplete constituents "
                f"(layout {table.layout!r}); constituent models cannot be trained on it"
            )
            raise ModelMismatchError(msg)


def build_split_arrays(
    tables: list[JetTable], config: TrainingConfig, split: str
) -> JetArrays:
    """Selected jets of one split of all tables, as tensors with targets and weights.

    Parameters
    ----------
    tables
        Jet tables of the dataset (see :func:`load_jet_tables`).
    config
        The master configuration (features, selection, split fractions, reweighting).
    split
        ``"train"``, ``"val"`` or ``"test"``.
    """
    from ..features import ReplacementCounts, to_tensors

    spec = config.features
    parts: list[dict[str, Any]] = []
    cutflow: dict[str, int] = {}
    counts = ReplacementCounts()
    for table in tables:
        _check_types(table, spec)
        jets = table.jets
        mask, flow = selection_mask(jets, config.data.selection)
        for k, v in flow.items():
            cutflow[k] = cutflow.get(k, 0) + v
        mask &= _split_names(table, config) == split
        cutflow[f"split_{split}"] = cutflow.get(f"split_{split}", 0) + int(mask.sum())
        if not mask.any():
            continue
        sel = jets[mask]
        inputs = to_tensors(sel, spec, counts=counts)
        pt_raw = ak.to_numpy(sel.pt_raw).astype(np.float64)
        pt_gen = ak.to_numpy(sel.pt_gen).astype(np.float64)
        gen_weight = (
            ak.to_numpy(sel.gen_weight).astype(np.float64)
            if "gen_weight" in sel.fields
            else np.ones(len(sel))
        )
        parts.append(
            {
                "inputs": inputs,
                "target": np.log(pt_gen / pt_raw).astype(np.float32),
                "flavour": ak.to_numpy(sel.flavour_group).astype(np.int8),
                "pt_gen": pt_gen.astype(np.float32),
                "eta_gen": ak.to_numpy(sel.eta_gen).astype(np.float32),
                "pt_raw": pt_raw.astype(np.float32),
                "gen_weight": gen_weight,
            }
        )
    if not parts:
        msg = (
            f"no jet passes the selection in the {split!r} split (cut-flow {cutflow}); "
            "check data.selection and the dataset"
        )
        raise ModelMismatchError(msg)
    arrays = _concatenate(parts, config.data.max_jets)
    absent = sorted(
        key
        for key, c in counts.as_dict().items()
        if c.get("total") and c.get("missing", 0) == c["total"]
    )
    if absent:
        msg = (
            f"features {absent} are missing for every {split} jet (the files' layout "
            f"lacks them), so the network would learn their defaults and see real values "
            f"in the analysis; remove them from `features` or train on files that have them"
        )
        raise ModelMismatchError(msg)
    replaced = {
        key: {k: v for k, v in c.items() if k != "total" and v}
        for key, c in counts.as_dict().items()
        if any(v for k, v in c.items() if k != "total")
    }
    log.info(
        "%s split: %d jets (cut-flow %s); inputs replaced by defaults: %s",
        split,
        len(arrays["target"]),
        cutflow,
        replaced or "none",
    )
    weight = training_weights(
        arrays["pt_gen"],
        arrays["eta_gen"],
        arrays["flavour"],
        config.reweighting,
        gen_weight=arrays["gen_weight"],
    )
    return JetArrays(
        inputs=arrays["inputs"],
        target=arrays["target"],
        weight=weight,
        flavour=arrays["flavour"],
        pt_gen=arrays["pt_gen"],
        eta_gen=arrays["eta_gen"],
        pt_raw=arrays["pt_raw"],
        cutflow=cutflow,
    )


def _concatenate(parts: list[dict[str, Any]], limit: int | None) -> dict[str, Any]:
    keys = set(parts[0]["inputs"])
    for p in parts[1:]:
        if set(p["inputs"]) != keys:
            msg = f"files give different network inputs: {sorted(keys)} vs {sorted(p['inputs'])}"
            raise ModelMismatchError(msg)
    out: dict[str, Any] = {
        "inputs": {k: np.concatenate([p["inputs"][k] for p in parts]) for k in keys}
    }
    for k in ("target", "flavour", "pt_gen", "eta_gen", "pt_raw", "gen_weight"):
        out[k] = np.concatenate([p[k] for p in parts])
    if limit is not None and len(out["target"]) > limit:
        out["inputs"] = {k: v[:limit] for k, v in out["inputs"].items()}
        for k in ("target", "flavour", "pt_gen", "eta_gen", "pt_raw", "gen_weight"):
            out[k] = out[k][:limit]
    return out


LABELS = ("target", "weight", "flavour", "pt_gen")
"""Batch entries that are labels of the loss, not network inputs."""
LABEL_DTYPES = (np.float32, np.float32, np.int64, np.float32)


class BatchLoader:
    """Batches of pre-built tensors, sharded and shuffled like a ``DistributedSampler``.

    Each epoch draws the permutation of ``DistributedSampler(seed=seed)`` with
    ``set_epoch(epoch)``; rank r takes every world_size-th index. Rank r's k-th batch is
    therefore a slice of the same permutation that one process with world_size × batch_size
    would use for its k-th batch — the property the DDP equivalence relies on. Batches are
    gathered by advanced indexing of tensors already on the device.

    Parameters
    ----------
    arrays
        The split's arrays.
    batch_size
        Jets per batch on this rank.
    device
        Torch device the tensors live on.
    shuffle
        Reshuffle every epoch (training) or keep the order (validation).
    drop_last
        Drop an incomplete last batch (training; keeps ranks in lock-step).
    trim
        Cut every constituent tensor ``"<type>"`` (N, M, F) and its ``"<type>_mask"`` (N, M)
        — also the ``"raw:<type>"`` copies — to the last real slot of the batch's longest
        jet of that type (at least one slot). Why: inputs are padded to the configured
        maximum (e.g. 64 charged) while typical jets use 10-30 slots, and the per-point
        networks (ParticleNet's k-NN, ParT's attention, quadratic in M) would otherwise spend
        most of their time on padding. Only padded slots are dropped, so a padding-invariant
        (masked) network gives the same output; ``False`` hands out full-width batches (the
        benchmark's comparison, or a model that is not padding-invariant). DDP ranks trim
        independently: gradients do not depend on M.
    """

    def __init__(
        self,
        arrays: JetArrays,
        batch_size: int,
        *,
        device: Any = "cpu",
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        trim: bool = True,
    ) -> None:
        torch = extras.torch()
        self.batch_size = batch_size
        self.tensors: dict[str, torch.Tensor] = {
            k: torch.from_numpy(np.ascontiguousarray(v)).to(device)
            for k, v in arrays.inputs.items()
        }
        # the loss's labels (flavour and pT_gen for its flavour term), never network inputs
        for name, dtype in zip(LABELS, LABEL_DTYPES, strict=True):
            self.tensors[name] = torch.from_numpy(
                np.ascontiguousarray(getattr(arrays, name), dtype=dtype)
            ).to(device)
        self.n = len(arrays)
        self.sampler = torch.utils.data.DistributedSampler(
            range(self.n),
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last and self._per_rank() >= batch_size
        self._device = device
        self.trim = trim
        self._trim_groups = _trim_groups(arrays.inputs, device)

    def _per_rank(self) -> int:
        if self.shuffle:
            return len(self.sampler)
        return len(range(self.rank, self.n, self.world_size))

    def _indices(self) -> torch.Tensor:
        """This rank's indices for the epoch (validation: strided, no padding repeats)."""
        torch = extras.torch()
        if self.shuffle:
            index = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        else:
            index = torch.arange(self.rank, self.n, self.world_size, dtype=torch.long)
        return index.to(self._device)

    @property
    def input_names(self) -> list[str]:
        """Names of the network inputs (``to_tensors`` keys)."""
        return [k for k in self.tensors if k not in LABELS]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation (deterministic given the seed)."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        per_rank = self._per_rank()
        if self.drop_last:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)

    def __iter__(self):
        index = self._indices()
        for b in range(len(self)):
            idx = index[b * self.batch_size : (b + 1) * self.batch_size]
            yield self._gather(idx)

    def _gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of jets ``idx``, constituent axes trimmed (see ``trim``).

        Slicing before ``index_select`` gathers only the kept slots: the view is strided, so
        no full-width copy is made. One scalar per type (max of precomputed lengths) is the
        whole per-batch overhead.
        """
        sources = dict(self.tensors)
        for lengths, keys in self._trim_groups if self.trim else ():
            m = max(int(lengths.index_select(0, idx).max()), 1) if len(idx) else 1
            for k in keys:
                sources[k] = sources[k][:, :m]
        return {k: v.index_select(0, idx) for k, v in sources.items()}


def _trim_groups(
    inputs: dict[str, np.ndarray], device: Any
) -> list[tuple[torch.Tensor, list[str]]]:
    """Per constituent type: (per-jet used length (N,) int32 on ``device``, keys to slice).

    A type's keys are ``"<type>"``, ``"<type>_mask"`` and the same with any ``"prefix:"``
    (the training loop's ``raw:`` copies), so that transformed and raw inputs keep one
    shape. The length is the index of the last non-zero mask slot + 1 (0 for an empty set),
    the elementwise max over the type's masks: slicing to it never drops a real slot, even
    if a mask were not contiguous (``to_tensors`` fills slots in order, so it is the count).
    """
    torch = extras.torch()
    by_type: dict[str, tuple[list[np.ndarray], list[str]]] = {}
    for key, value in inputs.items():
        name = key.rsplit(":", 1)[-1]
        ctype = name.removesuffix("_mask")
        if ctype not in CONSTITUENT_TYPES:
            continue
        masks, keys = by_type.setdefault(ctype, ([], []))
        keys.append(key)
        if name.endswith("_mask"):
            masks.append(np.asarray(value))
    groups = []
    for ctype, (masks, keys) in by_type.items():
        if not masks:
            continue
        lengths = np.zeros(len(masks[0]), dtype=np.int32)
        for mask in masks:
            used = mask != 0
            if used.size == 0:
                continue
            last = used.shape[1] - np.argmax(used[:, ::-1], axis=1)
            np.maximum(lengths, np.where(used.any(axis=1), last, 0), out=lengths)
        log.debug("%s: at most %d slots used", ctype, lengths.max(initial=0))
        groups.append((torch.from_numpy(lengths).to(device), keys))
    return groups


def constituent_types(inputs: dict[str, np.ndarray]) -> list[str]:
    """Constituent types present in a ``to_tensors`` dict, in the fixed order."""
    return [t for t in CONSTITUENT_TYPES if t in inputs]
