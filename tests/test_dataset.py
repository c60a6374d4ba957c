"""SFTDataset and manifest reading, on datasets written with numpy in the format-1 layout."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from fastsft.data import IGNORE_INDEX, DatasetFormatError, SFTDataset, read_manifest, split_indices
from train_helpers import random_samples, write_dataset

SAMPLES = [
    ([5, 6, 7, 8], [0, 0, 1, 1]),
    ([9, 10], [1, 1]),
    ([11, 12, 13], [0, 1, 0]),
]


def test_items_and_labels(tmp_path):
    ds = SFTDataset(write_dataset(tmp_path / "d", SAMPLES))
    assert len(ds) == 3
    assert ds.lengths.tolist() == [4, 2, 3]
    assert ds.num_tokens == 9 and ds.num_trained_tokens == 5
    item = ds[0]
    assert item["input_ids"].dtype == torch.int64
    assert item["input_ids"].tolist() == [5, 6, 7, 8]
    assert item["labels"].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 7, 8]
    assert item["attention_mask"].tolist() == [1, 1, 1, 1]
    assert ds[2]["labels"].tolist() == [IGNORE_INDEX, 12, IGNORE_INDEX]
    assert ds[-1]["input_ids"].tolist() == [11, 12, 13]
    with pytest.raises(IndexError):
        ds[3]


def test_numpy_items_without_torch(tmp_path, monkeypatch):
    import fastsft.data.dataset as dmod

    monkeypatch.setattr(dmod, "_torch", lambda: None)
    item = SFTDataset(write_dataset(tmp_path / "d", SAMPLES))[1]
    assert isinstance(item["labels"], np.ndarray) and item["labels"].dtype == np.int64
    assert item["labels"].tolist() == [9, 10]


def test_uint32_ids_survive(tmp_path):
    ds = SFTDataset(write_dataset(tmp_path / "d", [([70000, 151645], [0, 1])], vocab_size=151665))
    assert read_manifest(tmp_path / "d").input_ids_dtype == "uint32"
    assert ds[0]["labels"].tolist() == [IGNORE_INDEX, 151645]


def test_shards_sorted_by_name_and_lists_concatenate(tmp_path):
    # written out of order: the reader must sort shard directories by name
    write_dataset(tmp_path / "out" / "shard-00001", [([3, 4], [1, 1])])
    write_dataset(tmp_path / "out" / "shard-00000", [([1], [1]), ([2, 2], [0, 1])])
    (tmp_path / "out" / "not-a-shard").mkdir()
    ds = SFTDataset(tmp_path / "out")
    assert [d.name for d in ds.dirs] == ["shard-00000", "shard-00001"]
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == [[1], [2, 2], [3, 4]]
    assert ds.locate(2) == (1, 0)
    both = SFTDataset([tmp_path / "out" / "shard-00001", tmp_path / "out" / "shard-00000"])
    assert [both[i]["input_ids"].tolist() for i in range(3)] == [[3, 4], [1], [2, 2]]


def test_empty_parent_and_missing_dir_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a prepared dataset"):
        SFTDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such dataset directory"):
        SFTDataset(tmp_path / "nope")


def test_shards_with_different_tokenizers_refused(tmp_path):
    write_dataset(tmp_path / "a", SAMPLES, tokenizer_sha256="a" * 64)
    write_dataset(tmp_path / "b", SAMPLES, tokenizer_sha256="b" * 64)
    with pytest.raises(DatasetFormatError, match="different tokenizers"):
        SFTDataset([tmp_path / "a", tmp_path / "b"])


def _edit_manifest(path, **changes):
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))


def test_manifest_validation(tmp_path):
    d = write_dataset(tmp_path / "d", SAMPLES)
    man = read_manifest(d)
    assert (man.num_samples, man.num_tokens, man.vocab_size) == (3, 9, 1000)
    _edit_manifest(d, format_version=3)
    with pytest.raises(DatasetFormatError, match="format_version 3"):
        read_manifest(d)
    # Version 2 adds turns.npy: a version-2 manifest without it is an incomplete dataset.
    _edit_manifest(d, format_version=2)
    with pytest.raises(FileNotFoundError, match=r"missing turns\.npy"):
        read_manifest(d)
    _edit_manifest(d, format_version=1, num_tokens=10)
    with pytest.raises(DatasetFormatError, match="num_tokens=10"):
        read_manifest(d)
    _edit_manifest(d, num_tokens=9, input_ids_dtype="uint32")
    with pytest.raises(DatasetFormatError, match="dtype uint16"):
        read_manifest(d)
    _edit_manifest(d, input_ids_dtype="uint16")
    os.remove(d / "origin.npy")
    with pytest.raises(FileNotFoundError, match=r"missing origin\.npy"):
        read_manifest(d)


def test_lazy_open_per_process_and_pickle_without_arrays(tmp_path):
    ds = SFTDataset(write_dataset(tmp_path / "d", random_samples(50, seed=1)))
    assert ds._arrays == []  # nothing mapped until first access
    ref = [ds[i]["input_ids"].tolist() for i in range(len(ds))]
    assert ds._pid == os.getpid()
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._arrays == [] and clone._pid is None
    assert clone[7]["input_ids"].tolist() == ref[7]


def test_forked_dataloader_workers_read_the_same(tmp_path):
    ds = SFTDataset(write_dataset(tmp_path / "d", random_samples(40, seed=2)))
    ds[0]  # map in the parent first: workers must not reuse the parent's maps blindly
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork", shuffle=False)
    got = [it["labels"].tolist() for it in loader]
    assert got == [ds[i]["labels"].tolist() for i in range(len(ds))]


def test_select_and_split(tmp_path):
    ds = SFTDataset(write_dataset(tmp_path / "d", random_samples(20, seed=3)))
    tr, ev = split_indices(len(ds), 0.25, seed=0)
    assert len(ev) == 5 and len(tr) == 15
    assert sorted(tr.tolist() + ev.tolist()) == list(range(20))
    assert (split_indices(20, 0.25, seed=0)[1] == ev).all()
    assert not (split_indices(20, 0.25, seed=1)[1] == ev).all()
    assert len(split_indices(20, 3, seed=0)[1]) == 3
    sub = ds.select(ev)
    assert len(sub) == 5
    assert sub.lengths.tolist() == ds.lengths[ev].tolist()
    assert sub[1]["input_ids"].tolist() == ds[int(ev[1])]["input_ids"].tolist()
    with pytest.raises(ValueError, match="leaves no training samples"):
        split_indices(4, 4, seed=0)
