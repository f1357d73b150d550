"""Batches trimmed to their longest jet: same jets, fewer padded slots, same network output.

The loader cuts every constituent tensor to the last real slot of the batch's longest jet
(:class:`jec_coffea.training.BatchLoader`, ``trim``). That is only a speed-up if nothing else
changes: the loader must hand out the same jets in the same order, drop only padding, and the
masked networks must give the same output, loss, gradients and FGSM perturbation on the
trimmed batch as on the full-width one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_training import _config, synthetic_table

from jec_coffea.training import BatchLoader, build_split_arrays, make_loss
from jec_coffea.training import loop as training_loop
from jec_coffea.training.adversarial import fgsm_inputs, numeric_columns
from jec_coffea.training.dataset import _trim_groups
from jec_coffea.training.network import build_network

torch = pytest.importorskip("torch")

WIDE = {"charged": 32, "neutral": 24, "sv": 8}
"""Slots well above the synthetic multiplicities (Poisson 7, 5, ≤ 2): every batch is trimmed."""

ARCHITECTURES = ["mlp_nanoaod", "deepsets", "particlenet", "part"]


@pytest.fixture(scope="module")
def table():
    return synthetic_table(640, seed=11)


def _arrays(table, name: str = "deepsets"):
    # dropout off: per-slot dropout masks would differ with the width, not the physics
    wide = {"data__max_constituents": WIDE} if name != "mlp_nanoaod" else {}
    cfg = _config(name, model__dropout=0.0, **wide)
    return cfg, build_split_arrays([table], cfg, "train")


def _used(batch: dict, key: str) -> int:
    """Last real slot + 1 over the batch (0 if every set is empty)."""
    mask = batch[f"{key}_mask"].numpy() != 0
    cols = np.nonzero(mask.any(axis=0))[0]
    return int(cols[-1]) + 1 if len(cols) else 0


def test_trim_lengths_cover_every_real_slot_and_raw_copies():
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]], np.float32)
    inputs = {
        "jet": np.zeros((3, 2), np.float32),
        "charged": np.ones((3, 4, 2), np.float32),
        "charged_mask": mask,
        "raw:charged": np.ones((3, 4, 3), np.float32),
        "raw:charged_mask": mask,
        "sv": np.zeros((3, 2, 1), np.float32),
        "sv_mask": np.zeros((3, 2), np.float32),
    }
    groups = {
        tuple(keys): lengths.tolist() for lengths, keys in _trim_groups(inputs, "cpu")
    }
    # jet 2 has a hole at slot 1: the length is its last real slot + 1, not its count
    assert groups == {
        ("charged", "charged_mask", "raw:charged", "raw:charged_mask"): [2, 0, 3],
        ("sv", "sv_mask"): [0, 0, 0],
    }
    arrays = replace(
        _arrays_stub(3), inputs={k: v for k, v in inputs.items() if k != "raw:charged"}
    )
    loader = BatchLoader(arrays, 2, shuffle=False, drop_last=False)
    batches = list(loader)
    # batch {0, 1}: 2 charged slots; all-empty SV sets keep one zero-masked slot
    assert batches[0]["charged"].shape == (2, 2, 2)
    assert batches[0]["raw:charged_mask"].shape == (2, 2)
    assert batches[0]["sv"].shape == (2, 1, 1)
    assert batches[0]["sv_mask"].sum() == 0
    assert batches[1]["charged_mask"].tolist() == [[1.0, 0.0, 1.0]]
    assert batches[0]["jet"].shape == (2, 2)


def _arrays_stub(n: int):
    from jec_coffea.training import JetArrays

    z = np.zeros(n, np.float32)
    return JetArrays(
        inputs={},
        target=np.arange(n, dtype=np.float32),
        weight=np.ones(n, np.float32),
        flavour=np.zeros(n, np.int8),
        pt_gen=z,
        eta_gen=z,
        pt_raw=z,
    )


@pytest.mark.parametrize(
    ("shuffle", "rank", "world_size"), [(True, 0, 1), (True, 1, 2), (False, 1, 2)]
)
def test_loader_yields_the_same_jets_in_order_with_trimmed_shapes(
    table, shuffle, rank, world_size
):
    _, arrays = _arrays(table)
    kw = {"shuffle": shuffle, "drop_last": shuffle, "seed": 3}
    kw.update(rank=rank, world_size=world_size)
    full = BatchLoader(arrays, 48, trim=False, **kw)
    trimmed = BatchLoader(arrays, 48, **kw)
    assert len(full) == len(trimmed) > 1
    types = ["charged", "neutral", "sv"]
    narrowed = dict.fromkeys(types, 0)
    for epoch in (0, 2):
        full.set_epoch(epoch)
        trimmed.set_epoch(epoch)
        for a, b in zip(full, trimmed, strict=True):
            assert a.keys() == b.keys()
            for key in ("target", "weight", "jet"):
                assert torch.equal(a[key], b[key])
            for t in types:
                m = max(_used(a, t), 1)
                assert b[t].shape == (*a[t].shape[:1], m, a[t].shape[2])
                assert b[f"{t}_mask"].shape == (a[t].shape[0], m)
                assert torch.equal(b[t], a[t][:, :m])
                assert torch.equal(b[f"{t}_mask"], a[f"{t}_mask"][:, :m])
                assert not a[f"{t}_mask"][:, m:].any()
                assert not a[t][:, m:].any()
                narrowed[t] += m < a[t].shape[1]
    assert all(narrowed.values()), narrowed


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_network_output_loss_gradients_and_fgsm_unchanged_by_trimming(table, name):
    cfg, arrays = _arrays(table, name)
    transform = cfg.unfitted_transform().fit(arrays.inputs)
    loss = make_loss(cfg.loss)
    torch.manual_seed(0)
    network, model_cfg = build_network(cfg, transform, loss)
    inputs = transform.apply_numpy(arrays.inputs)
    if model_cfg.architecture in training_loop._NEEDS_RAW:
        inputs.update(
            {training_loop.RAW_PREFIX + k: v for k, v in arrays.inputs.items()}
        )
    arrays = replace(arrays, inputs=inputs)
    kw = {"shuffle": True, "drop_last": True, "seed": 1}
    batch_full = next(iter(BatchLoader(arrays, 64, trim=False, **kw)))
    batch_trim = next(iter(BatchLoader(arrays, 64, **kw)))
    if cfg.features.constituents:
        assert batch_trim["charged"].shape[1] < batch_full["charged"].shape[1]
    numeric = numeric_columns(transform, "cpu")

    def run(batch, train: bool):
        network.train(train)
        network.zero_grad(set_to_none=True)
        x, raw, target, weight = training_loop._split_batch(batch)
        out = network(x, raw=raw)
        value = loss(out, target, weight)
        value.backward()
        grads = [p.grad.clone() for p in network.parameters() if p.grad is not None]
        x_adv = fgsm_inputs(network, loss, x, raw, target, weight, 0.05, numeric)
        with torch.no_grad():
            out_adv = network(x_adv, raw=raw)
        return out.detach(), value.detach(), grads, out_adv

    # train mode too: it is what the optimiser sees
    for train in (False, True):
        out_f, loss_f, grads_f, adv_f = run(batch_full, train)
        out_t, loss_t, grads_t, adv_t = run(batch_trim, train)
        torch.testing.assert_close(out_t, out_f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss_t, loss_f, rtol=1e-5, atol=1e-5)
        assert len(grads_t) == len(grads_f) > 0
        for g_t, g_f in zip(grads_t, grads_f, strict=True):
            torch.testing.assert_close(g_t, g_f, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(adv_t, adv_f, rtol=1e-5, atol=1e-5)
