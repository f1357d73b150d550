"""`jec-coffea export TRAINDIR -o model.onnx` (issue 5) and checkpoint compatibility (issue 8).

Tiny Deep Sets and ParticleNet networks are trained by the real training loop on the
synthetic jet table of test_training, which writes the training folder (config.yaml,
transform.yaml, checkpoint_best.pt, model.onnx). Checked: the checkpoint loads strictly into
a network rebuilt from the folder and reproduces the trained network; the re-export carries
exactly train's metadata and matches torch within 1e-5 at batch 1 and 7 with 0, 1 and the
maximum number of constituents (and a jet without any in every batch); a folder without its
files fails with the missing file named; the dataset is read again when model.onnx is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from test_training import MLJEC_CONFIG, _config, _write_config, synthetic_table

from jec_coffea.cli import main
from jec_coffea.commands.export import export_training
from jec_coffea.config import TrainingConfig
from jec_coffea.errors import ConfigError, InputFileError
from jec_coffea.export import check_parity, read_onnx_metadata
from jec_coffea.features import to_tensors
from jec_coffea.models import WithPreprocessing
from jec_coffea.training import make_loss, train
from jec_coffea.training.artifacts import load_checkpoint
from jec_coffea.training.network import build_network, prediction_network
from jec_coffea.transform import Transform

ARCHS = ["deepsets", "particlenet"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine more threads only oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def table():
    return synthetic_table(320, seed=11)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, table):
    """arch -> (training folder, TrainResult), trained and exported by the real loop."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for arch in ARCHS:
        cfg = _config(arch, max_steps=6, epochs=3)
        folder = tmp_path_factory.mktemp(arch) / "run"
        out[arch] = (folder, train(cfg, folder, tables=[table], export=True))
    torch.set_num_threads(before)
    return out


def _rebuilt(folder: Path):
    """Network of the folder's configuration, with checkpoint_best.pt loaded strictly."""
    config = TrainingConfig.load(folder / "config.yaml")
    transform = Transform.from_yaml(folder / "transform.yaml")
    loss = make_loss(config.loss)
    network, _ = build_network(config, transform, loss)
    network.load_state_dict(
        load_checkpoint(folder / "checkpoint_best.pt")["model"], strict=True
    )
    return config, transform, prediction_network(network.eval(), loss)


def _batches(config, table) -> list[dict[str, np.ndarray]]:
    """Raw tensors of the table at batch 1 and 7 with 0, 1 and M constituent slots per type;
    the first jet of each batch has no constituent at all."""
    full = to_tensors(table.jets, config.features)
    types = [k for k in full if k != "jet" and not k.endswith("_mask")]
    out = []
    for n in (1, 7):
        for count in (0, 1, None):
            x = {}
            for k, v in full.items():
                v = v[:n]
                if k != "jet":
                    v = v[:, :count] if count is not None else v
                x[k] = np.ascontiguousarray(v)
            for t in types:
                x[t][0] = 0.0
                x[f"{t}_mask"][0] = 0.0
            out.append(x)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_of_train_loads_strictly_and_reproduces(arch, trained, table):
    folder, result = trained[arch]
    config, transform, network = _rebuilt(folder)
    assert result.network.state_dict().keys() == network.state_dict().keys()
    module = WithPreprocessing(transform.to_torch(), network).eval()
    reference = WithPreprocessing(transform.to_torch(), result.network).eval()
    assert transform.to_torch().state_dict() == {}  # nothing of it in checkpoints
    x = {k: torch.from_numpy(v) for k, v in _batches(config, table)[-1].items()}
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_export_command_matches_train_metadata_and_torch(
    arch, trained, table, tmp_path, capsys
):
    folder, _ = trained[arch]
    out = tmp_path / "sub" / "model.onnx"
    assert main(["export", str(folder), "-o", str(out)]) == 0
    assert f"exported {arch}" in capsys.readouterr().out
    assert read_onnx_metadata(out) == read_onnx_metadata(folder / "model.onnx")
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]
    config, transform, network = _rebuilt(folder)
    groups = [n for n in network.input_names() if not n.endswith("_mask")]
    module = WithPreprocessing(transform.to_torch(groups), network).eval()
    for inputs in _batches(config, table):
        n, count = len(inputs["jet"]), inputs["charged"].shape[1]
        diff = check_parity(out, module, inputs)
        assert diff <= 1e-5, f"{arch}: batch {n}, {count} slots: {diff:.3g}"
        # and the train-time export of the same weights agrees with the re-export
        assert check_parity(folder / "model.onnx", module, inputs) <= 1e-5


def test_export_command_names_missing_files(trained, tmp_path, capsys):
    folder, _ = trained["deepsets"]
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(folder / "config.yaml", partial / "config.yaml")
    code = main(["export", str(partial), "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert "transform.yaml" in err
    assert "checkpoint_best.pt" in err
    assert "config.yaml" not in err.split(": missing", 1)[1].split("(")[0]
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(InputFileError, match=r"config\.yaml"):
        export_training(tmp_path / "nothing", tmp_path / "m.onnx")


def test_export_refuses_checkpoint_of_another_network(trained, tmp_path, capsys):
    folder, _ = trained["deepsets"]
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    shutil.copy(
        trained["particlenet"][0] / "checkpoint_best.pt", other / "checkpoint_best.pt"
    )
    code = main(["export", str(other), "-o", str(tmp_path / "m.onnx")])
    assert code == 2
    assert "does not fit the deepsets network" in capsys.readouterr().err


def test_without_model_onnx_the_dataset_is_needed(trained, tmp_path):
    folder, _ = trained["particlenet"]
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "model.onnx").unlink()
    with pytest.raises(ConfigError, match="--data"):  # the test config names no dataset
        export_training(bare, tmp_path / "m.onnx")


@pytest.mark.shared_data
def test_export_reads_the_dataset_like_train(shared_data, tmp_path, capsys):
    """A run trained through the CLI: with model.onnx removed, the re-export recomputes the
    validity range from the dataset and writes the same metadata train wrote."""
    data = shared_data / "mljec" / "data.yaml"
    cfg = _write_config(tmp_path / "c.yaml", data)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "-o", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    want = read_onnx_metadata(run / "model.onnx")
    (run / "model.onnx").rename(tmp_path / "train.onnx")
    assert main(["export", str(run), "-o", str(tmp_path / "re.onnx")]) == 0
    assert read_onnx_metadata(tmp_path / "re.onnx") == want
    assert MLJEC_CONFIG["model"]["architecture"] == want["architecture"] == "mlp"
