"""Dataset descriptions (data.yaml), the describe command, and the hash split."""

from __future__ import annotations

import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import yaml

from jec_coffea.cli import main
from jec_coffea.data.dataset import (
    DatasetDescription,
    FileEntry,
    describe_files,
    file_sha256,
    resolve_path,
)
from jec_coffea.data.jet_table import JetTable
from jec_coffea.data.split import SPLITS, select_split, split_of, splitmix64
from jec_coffea.errors import ConfigError, InputFileError

pytestmark = pytest.mark.filterwarnings(
    # coffea_missing_luminosityBlock.root is read with a warning by design (DESIGN.md)
    "ignore:.*no luminosityBlock branch.*:UserWarning"
)

PROVENANCE_SHA = {
    "pfnano/coffea_pfnano.root": "504f10f40146005184a1365dcf8b6c8235983597567fab04d1b4b6cc25603939",
    "nanoaod/coffea_nano_dy.root": "159b17b34b4d13ea4960d36fb9b01f2a505cc1a5a8de0fb3cfa185154543c81c",
}
"""sha256 quoted in ../shared/data/PROVENANCE.md."""


@pytest.fixture
def shard_copy(shared_data, tmp_path) -> Path:
    """A writable copy of the ml-jec folder (data.yaml + shards) to damage in tests."""
    dest = tmp_path / "mljec"
    shutil.copytree(shared_data / "mljec", dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


# ------------------------------------------------------------------------- describe


@pytest.mark.shared_data
def test_describe_counts_layouts_and_sha256(shared_data):
    from jec_coffea.data.reader import read_jet_table

    paths = [shared_data / rel for rel in PROVENANCE_SHA] + [
        shared_data / "mljec" / "shards" / "2.root",
        shared_data / "pfnano" / "cmsjet_nano106X_on_mini106X_2017_mc_NANO.root",
    ]
    desc = describe_files(paths)
    got = {
        Path(e.path).name: (e.layout, e.tree, e.n_events, e.n_jets) for e in desc.files
    }
    assert got == {
        "coffea_pfnano.root": ("pfnano", "Events", 10, 64),
        "coffea_nano_dy.root": ("nanoaod", "Events", 40, 188),
        "2.root": ("mljec", "Jets", None, 10),
        "cmsjet_nano106X_on_mini106X_2017_mc_NANO.root": (
            "pfnano_old",
            "Events",
            100,
            884,
        ),
    }
    for rel, sha in PROVENANCE_SHA.items():
        assert desc.files[list(PROVENANCE_SHA).index(rel)].sha256 == sha
    # the cheap count agrees with the number of rows of the jet table
    for entry in desc.files:
        assert len(read_jet_table(entry.path)) == entry.n_jets
    assert desc.n_jets == 64 + 188 + 10 + 884


@pytest.mark.shared_data
def test_describe_round_trip_through_the_cli(shard_copy, capsys):
    shards = sorted(str(p) for p in (shard_copy / "shards").glob("*.root"))
    out = shard_copy / "described.yaml"
    assert main(["describe", *shards, "-o", str(out)]) == 0
    text = out.read_text()
    assert "shards/1.root" in text  # relative to the yaml's folder
    assert str(shard_copy) not in text
    loaded = DatasetDescription.load(out)
    direct = describe_files(shards)
    assert [e.model_dump(exclude={"path"}) for e in loaded.files] == [
        e.model_dump(exclude={"path"}) for e in direct.files
    ]
    assert loaded.paths() == shards
    assert loaded.to_fileset("qcd") == {"qcd": {"files": dict.fromkeys(shards, "Jets")}}
    loaded.verify()
    assert main(["describe", "--verify", str(out)]) == 0
    assert "50 jets, OK" in capsys.readouterr().out
    # the folder is relocatable: move it and verify again
    moved = shard_copy.parent / "moved"
    shard_copy.rename(moved)
    DatasetDescription.load(moved / "described.yaml").verify()


@pytest.mark.shared_data
def test_mljec_data_yaml_is_read(shared_data):
    desc = DatasetDescription.load(shared_data / "mljec" / "data.yaml")
    assert [e.n_jets for e in desc.files] == [10] * 5
    assert desc.paths() == [
        str(shared_data / "mljec" / "shards" / f"{i}.root") for i in range(1, 6)
    ]
    desc.verify()  # counts only: ml-jec's format has no checksums
    fileset = desc.to_fileset("mljec")["mljec"]["files"]
    assert set(fileset.values()) == {"Jets"}  # tree of the detected layout


# ------------------------------------------------------------------------- bad data.yaml


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.shared_data
def test_bad_descriptions_give_clear_errors(shard_copy, capsys):
    good = describe_files([shard_copy / "shards" / "1.root"])
    good.save(shard_copy / "good.yaml")
    raw = yaml.safe_load((shard_copy / "good.yaml").read_text())

    # unknown key, with the nearest valid key
    bad = dict(raw, files=[dict(raw["files"][0], n_jet=10)])
    path = _write(shard_copy / "typo.yaml", bad)
    with pytest.raises(
        ConfigError,
        match=r"typo\.yaml: unknown key 'n_jet' at files\[0\]\.n_jet \(did you mean 'n_jets'\?\)",
    ):
        DatasetDescription.load(path)
    with pytest.raises(ConfigError, match=r"unknown key 'count2'"):
        DatasetDescription.load(
            _write(
                shard_copy / "mljec_typo.yaml", [{"path": "shards/1.root", "count2": 3}]
            )
        )
    with pytest.raises(ConfigError, match=r"bad_layout\.yaml: files\[0\]\.layout"):
        DatasetDescription.load(
            _write(
                shard_copy / "bad_layout.yaml",
                {"files": [{"path": "x.root", "layout": "nano"}]},
            )
        )
    (shard_copy / "broken.yaml").write_text("files: [\n")
    twice = {"files": [{"path": "a.root"}, {"path": "a.root"}]}
    with pytest.raises(ConfigError, match=r"twice\.yaml: .*'a\.root' is listed twice"):
        DatasetDescription.load(_write(shard_copy / "twice.yaml", twice))
    with pytest.raises(ConfigError, match="invalid YAML"):
        DatasetDescription.load(shard_copy / "broken.yaml")
    with pytest.raises(InputFileError, match=r"nothere\.yaml: no such file"):
        DatasetDescription.load(shard_copy / "nothere.yaml")

    # counts that disagree: every disagreement is listed, naming the yaml and the file
    bad = dict(raw, files=[dict(raw["files"][0], n_jets=11, layout="nanoaod")])
    path = _write(shard_copy / "counts.yaml", bad)
    with pytest.raises(ConfigError) as err:
        DatasetDescription.load(path).verify()
    msg = str(err.value)
    assert "counts.yaml: 2 disagreement(s)" in msg
    assert "shards/1.root: n_jets is 11 in the description but 10 in the file" in msg
    assert "layout is nanoaod" in msg

    # a file whose bytes changed: sha256 disagrees
    bad = dict(raw, files=[dict(raw["files"][0], sha256="0" * 64)])
    path = _write(shard_copy / "sha.yaml", bad)
    with pytest.raises(
        ConfigError,
        match=r"shards/1\.root: sha256 000000000000\.\.\. in the description",
    ):
        DatasetDescription.load(path).verify()
    DatasetDescription.load(path).verify(check_sha256=False)

    # a missing file
    bad = dict(raw, files=[dict(raw["files"][0], path="shards/9.root")])
    path = _write(shard_copy / "missing.yaml", bad)
    with pytest.raises(
        InputFileError,
        match=r"shards/9\.root: listed in .*missing\.yaml but no such file",
    ):
        DatasetDescription.load(path).verify()

    # through the command line: exit status 2 and one line naming the file
    assert main(["describe", "--verify", str(path)]) == 2
    err_text = capsys.readouterr().err
    assert "9.root" in err_text
    assert "Traceback" not in err_text
    assert main(["describe"]) == 2
    assert main(["describe", str(shard_copy / "nothing.root")]) == 2
    assert "nothing.root: no such file" in capsys.readouterr().err


def test_file_entry_and_paths():
    with pytest.raises(ValueError, match="sha256"):
        FileEntry(path="a.root", sha256="xyz")
    assert resolve_path("a/b.root", "/data") == "/data/a/b.root"
    assert resolve_path("/abs/b.root", "/data") == "/abs/b.root"
    assert resolve_path("../b.root", "https://host/x/y") == "https://host/x/b.root"
    assert resolve_path("root://eos//f.root", "/data") == "root://eos//f.root"
    with pytest.raises(InputFileError, match="no such file"):
        file_sha256("/nonexistent/file.root")
    # remote protocols without their fsspec extra name the package to install
    with pytest.raises(InputFileError, match="fsspec-xrootd"):
        file_sha256("root://localhost//store/file.root")


# ------------------------------------------------------------------------- split


def _ids(n: int, seed: int = 1) -> ak.Array:
    rng = np.random.default_rng(seed)
    return ak.Array(
        {
            "run": rng.integers(1, 400_000, n).astype(np.uint32),
            "luminosityBlock": rng.integers(1, 3000, n).astype(np.uint32),
            "event": rng.integers(0, 2**40, n).astype(np.uint64),
        }
    )


def test_splitmix64_reference_values():
    # first outputs of the reference generator seeded with 0 (state increments by gamma)
    out = splitmix64(np.arange(3, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    assert [int(v) for v in out] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


def test_split_fractions_and_stability():
    n = 1_000_000
    jets = _ids(n)
    names = split_of(jets)
    for name, frac in zip(SPLITS, (0.6, 0.2, 0.2), strict=True):
        observed = np.mean(names == name)
        assert abs(observed - frac) < 5 * np.sqrt(frac * (1 - frac) / n), name
    # same ids -> same split, independent of order and chunking
    perm = np.random.default_rng(7).permutation(n)
    np.testing.assert_array_equal(split_of(jets[perm]), names[perm])
    np.testing.assert_array_equal(
        np.concatenate([split_of(jets[:1000]), split_of(jets[1000:5000])]), names[:5000]
    )
    # configurable fractions, including as a mapping
    other = split_of(jets, fractions={"train": 0.8, "val": 0.1, "test": 0.1})
    assert abs(np.mean(other == "train") - 0.8) < 0.005
    # a train jet stays train when the train fraction grows (nested splits)
    assert np.all(other[names == "train"] == "train")
    # the seed changes the assignment
    assert np.mean(split_of(jets, seed=1) == names) < 0.5
    # all jets of one event share a split
    event = ak.Array(
        {"run": [5, 5, 5], "luminosityBlock": [7, 7, 7], "event": [9, 9, 9]}
    )
    assert len(set(split_of(event))) == 1


def test_split_without_event_ids_uses_sha_and_entry():
    n = 200_000
    jets = ak.Array({"entry": np.arange(n, dtype=np.int64)})
    a = split_of(jets, file_sha256="ab" * 32)
    b = split_of(jets, file_sha256="cd" * 32)
    np.testing.assert_array_equal(a, split_of(jets, file_sha256="ab" * 32))
    assert np.mean(a == b) < 0.5  # another file, another assignment
    assert abs(np.mean(a == "val") - 0.2) < 0.005
    with pytest.raises(ConfigError, match="need the file's sha256"):
        split_of(jets)
    with pytest.raises(ConfigError, match="neither 'event' nor 'entry'"):
        split_of(ak.Array({"pt_raw": [1.0]}))
    with pytest.raises(ConfigError, match="summing to 1"):
        split_of(jets, fractions=(0.5, 0.2, 0.2), file_sha256="ab" * 32)
    with pytest.raises(ConfigError, match="unknown split"):
        split_of(jets, fractions={"training": 1.0}, file_sha256="ab" * 32)
    with pytest.raises(ConfigError, match="unknown split 'validation'"):
        select_split(jets, "validation", file_sha256="ab" * 32)


@pytest.mark.shared_data
def test_split_of_real_tables(shared_data):
    from jec_coffea.data.reader import read_jet_table

    shard = str(shared_data / "mljec" / "shards" / "3.root")
    table = read_jet_table(shard)
    names = split_of(table)  # sha256 of the source file, entries
    np.testing.assert_array_equal(
        names, split_of(table.jets, file_sha256=file_sha256(shard))
    )
    test = select_split(table, "test")
    assert isinstance(test, JetTable)
    assert test.source == shard
    assert len(test) == np.sum(names == "test")
    nano = read_jet_table(str(shared_data / "nanoaod" / "coffea_nano_dy.root"))
    per_jet = split_of(nano)
    # jets of the same event are never split between train and test
    event = ak.to_numpy(nano.jets.event)
    for e in np.unique(event)[:20]:
        assert len(set(per_jet[event == e])) == 1
