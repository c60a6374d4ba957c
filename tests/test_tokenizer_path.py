"""fastsft.tokenizer_path: the one set of rules by which prep, verify, inspect, tiny-model and train
find a tokenizer: ``--tokenizer`` (a directory, its tokenizer.json, or a cached hub id), else the
path a dataset's manifest records, tried from here, then beside the dataset and its parents."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fastsft.errors import InputNotFoundError
from fastsft.tokenizer_path import locate_tokenizer, resolve_tokenizer
from test_hub import COMMIT, add_to_cache

QWEN = Path(__file__).resolve().parent.parent / "assets" / "tokenizers" / "qwen2.5"


@pytest.fixture
def layout(tmp_path, monkeypatch) -> Path:
    """tmp/work/{models/qwen/tokenizer.json, runs/out/shard-00000-of-00002}; the cwd elsewhere."""
    work = tmp_path / "work"
    (work / "models" / "qwen").mkdir(parents=True)
    shutil.copyfile(QWEN / "tokenizer.json", work / "models" / "qwen" / "tokenizer.json")
    (work / "runs" / "out" / "shard-00000-of-00002").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return work


def test_given_directory_file_or_missing(layout):
    model = layout / "models" / "qwen"
    assert resolve_tokenizer(model) == model / "tokenizer.json"
    assert resolve_tokenizer(str(model / "tokenizer.json")) == model / "tokenizer.json"
    # --tokenizer wins over what the manifest records
    assert resolve_tokenizer(model, recorded="nowhere/tokenizer.json", dataset=layout) == model / "tokenizer.json"
    with pytest.raises(InputNotFoundError, match=r"^--tokenizer .*/models: no tokenizer.json there; give the model directory"):
        resolve_tokenizer(layout / "models")
    with pytest.raises(InputNotFoundError, match=r"^--model .*/gone: no such file or directory$"):
        resolve_tokenizer(layout / "gone", flag="--model")
    with pytest.raises(FileNotFoundError):  # an InputNotFoundError is one
        resolve_tokenizer("./gone")


def test_local_path_is_kept_as_written(layout):
    """What prep passes on (and records in the manifest) is the name as the user wrote it."""
    os.chdir(layout)
    assert locate_tokenizer("models/qwen") == "models/qwen"
    assert locate_tokenizer("./models/qwen/") == "./models/qwen/"


def test_recorded_path_is_found_from_here_or_beside_the_dataset(layout):
    shard = layout / "runs" / "out" / "shard-00000-of-00002"
    recorded = "models/qwen/tokenizer.json"  # relative to where prep ran: layout
    # neither from the cwd nor beside the shard, its dataset or the dataset's parent (layout is above them)
    with pytest.raises(
        InputNotFoundError,
        match=r"the tokenizer it was made with \(models/qwen/tokenizer.json\) is not found; pass --tokenizer DIR",
    ):
        resolve_tokenizer(recorded=recorded, dataset=shard)
    assert resolve_tokenizer(recorded="../../" + recorded, dataset=shard) == shard.parent / ("../../" + recorded)
    out = layout / "runs" / "out"
    assert resolve_tokenizer(recorded="../" + recorded, dataset=out) == out.parent / ("../" + recorded)
    os.chdir(layout)  # from where prep ran: as recorded
    assert resolve_tokenizer(recorded=recorded, dataset=shard) == Path(recorded)
    # a recorded directory (older manifests) means its tokenizer.json
    assert resolve_tokenizer(recorded="models/qwen", dataset=shard) == Path("models/qwen/tokenizer.json")
    with pytest.raises(InputNotFoundError, match=r"\(not recorded in manifest.json\) is not found"):
        resolve_tokenizer(recorded=None, dataset=shard)
    with pytest.raises(InputNotFoundError, match=r"/gone/tokenizer.json\) is not found"):
        resolve_tokenizer(recorded=str(layout / "gone" / "tokenizer.json"), dataset=shard)


def test_hub_id_from_the_local_cache_only(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = add_to_cache(cache, "Qwen/Qwen2.5-7B-Instruct", QWEN, COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert resolve_tokenizer("Qwen/Qwen2.5-7B-Instruct") == snapshot / "tokenizer.json"
    with pytest.raises(
        InputNotFoundError, match=r"^--tokenizer Org/NotCached-1B: not a local directory, and the hub id .* is not in"
    ):
        resolve_tokenizer("Org/NotCached-1B")
