"""Parquet, Arrow IPC and ``save_to_disk`` inputs give the same arrays as the JSONL they came from.

Each shipped corpus is converted with pyarrow / ``datasets`` (as people get them from the hub) and
prepared next to its JSONL original: input ids, masks, offsets, origins (row = line: the corpora
have no blank lines), counts and rejects must be identical.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fastsft
from fastsft import FastSFTError

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT / "assets" / "corpora"
QWEN = ROOT / "assets" / "tokenizers" / "qwen2.5"
# Corpora whose records share one Arrow schema (pyarrow unifies struct fields; a field a record
# lacks becomes null, which the schema treats as absent).
NAMES = [
    "medicalgpt_sharegpt_zh_1k",
    "llamafactory_alpaca_en_demo",
    "llamafactory_alpaca_zh_demo",
    "llamafactory_glaive_toolcall_en_demo",
    "llamafactory_glaive_toolcall_zh_demo",
    "llamafactory_identity",
    "fastchat_dummy_conversation",
]


def records(name: str) -> list[dict]:
    with gzip.open(CORPORA / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def hf_dataset(table):
    from datasets.table import InMemoryTable

    return datasets.Dataset(InMemoryTable(table))


def prepared(inputs: list[Path], out: Path, **options) -> dict:
    summary = fastsft.prep([str(p) for p in inputs], str(QWEN), str(out), **options)
    arrays = {n: np.load(out / f"{n}.npy") for n in ("input_ids", "loss_mask", "offsets", "origin")}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    for r in rejects:
        r.pop("file", None)  # the input's path differs; its index is in the origin
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return {"summary": summary, "arrays": arrays, "rejects": rejects, "manifest": manifest}


def assert_same(a: dict, b: dict) -> None:
    for name in ("input_ids", "loss_mask", "offsets", "origin"):
        assert a["arrays"][name].dtype == b["arrays"][name].dtype, name
        assert np.array_equal(a["arrays"][name], b["arrays"][name]), name
    for key in ("read", "written", "rejected", "rejected_by_reason", "truncated", "tokens", "trained_tokens"):
        assert a["summary"][key] == b["summary"][key], key
    assert a["rejects"] == b["rejects"]


@pytest.mark.parametrize("name", NAMES)
def test_parquet_and_save_to_disk_match_jsonl(tmp_path, name):
    rows = records(name)
    table = pa.Table.from_pylist(rows)
    parquet = tmp_path / f"{name}.parquet"
    pq.write_table(table, parquet, row_group_size=100)  # several row groups
    saved = tmp_path / f"{name}_saved"
    hf_dataset(table).save_to_disk(str(saved), max_shard_size="200KB")  # several data files
    assert len(list(saved.glob("data-*.arrow"))) > 1 or table.nbytes < 200_000

    jsonl = prepared([CORPORA / f"{name}.jsonl.gz"], tmp_path / "jsonl", max_len=2048)
    assert jsonl["summary"]["written"] > 0
    for source in (parquet, saved):
        got = prepared([source], tmp_path / f"out_{source.name}", max_len=2048)
        assert_same(jsonl, got)
        # the manifest hashes the bytes read: the data files, in state.json order, for a directory
        (info,) = got["manifest"]["inputs"]
        assert info["size"] == (
            source.stat().st_size if source.is_file() else sum(f.stat().st_size for f in saved.glob("data-*.arrow"))
        )


def test_arrow_ipc_file_and_stream(tmp_path):
    import pyarrow.feather as feather

    name = "llamafactory_glaive_toolcall_en_demo"
    table = pa.Table.from_pylist(records(name))
    feather_path = tmp_path / "data.feather"
    feather.write_feather(table, feather_path)  # Arrow IPC file format, lz4-compressed by default
    stream_path = tmp_path / "data.arrows"
    with pa.OSFile(str(stream_path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=64):
            writer.write_batch(batch)
    jsonl = prepared([CORPORA / f"{name}.jsonl.gz"], tmp_path / "jsonl")
    assert_same(jsonl, prepared([feather_path], tmp_path / "feather"))
    assert_same(jsonl, prepared([stream_path], tmp_path / "stream"))


def test_mixed_inputs_keep_file_indices(tmp_path):
    a, b = "llamafactory_identity", "fastchat_dummy_conversation"
    parquet = tmp_path / f"{b}.parquet"
    pq.write_table(pa.Table.from_pylist(records(b)), parquet)
    jsonl = prepared([CORPORA / f"{a}.jsonl.gz", CORPORA / f"{b}.jsonl.gz"], tmp_path / "jsonl")
    mixed = prepared([CORPORA / f"{a}.jsonl.gz", parquet], tmp_path / "mixed")
    assert_same(jsonl, mixed)
    assert set(np.unique(mixed["arrays"]["origin"][:, 0])) == {0, 1}


def test_shards_of_a_saved_dataset_cover_it_once(tmp_path):
    name = "llamafactory_alpaca_en_demo"
    saved = tmp_path / "saved"
    hf_dataset(pa.Table.from_pylist(records(name))).save_to_disk(str(saved), num_shards=3)
    whole = prepared([saved], tmp_path / "whole")
    origins = []
    for i in range(2):
        out = tmp_path / "sharded"
        fastsft.prep([str(saved)], str(QWEN), str(out), num_shards=2, shard_index=i)
        (shard,) = [d for d in out.iterdir() if d.name.startswith(f"shard-{i:05d}")]
        origins.append(np.load(shard / "origin.npy"))
    rows = np.sort(np.concatenate(origins)[:, 1])
    assert np.array_equal(rows, np.sort(whole["arrays"]["origin"][:, 1]))


def test_dataset_dict_directory_names_its_splits(tmp_path):
    table = pa.Table.from_pylist(records("llamafactory_identity"))
    dd = datasets.DatasetDict({"train": hf_dataset(table), "test": hf_dataset(table)})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(FastSFTError, match=r"DatasetDict .*pass one split's directory"):
        fastsft.prep([str(tmp_path / "dd")], str(QWEN), str(tmp_path / "out"))
