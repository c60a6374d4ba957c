"""fastsft.hub: hub ids resolved through a local cache in the hub's own layout, never downloaded."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import huggingface_hub  # noqa: F401  (a test dependency: fail, not skip, without it)
import pytest

from fastsft.hub import resolve_model_dir

TOKENIZERS = Path(__file__).resolve().parent.parent / "assets" / "tokenizers"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def add_to_cache(cache: Path, repo_id: str, source: Path, commit: str, ref: str | None = "main") -> Path:
    """Lay ``source``'s files out as the hub does: blobs by hash, snapshot symlinks, ``refs/<ref>``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(Path("../..") / "blobs" / blob.name)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    add_to_cache(cache, "Qwen/Qwen2.5-7B-Instruct", TOKENIZERS / "qwen2.5", COMMIT)
    add_to_cache(cache, "Qwen/Qwen2.5-7B-Instruct", TOKENIZERS / "qwen3", OLD_COMMIT, ref="v1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_local_directory_is_returned_as_is(cache):
    local = TOKENIZERS / "qwen2.5"
    assert resolve_model_dir(local) == local
    assert resolve_model_dir(str(local)) == local


def test_hub_id_resolves_to_the_cached_snapshot(cache):
    got = resolve_model_dir("Qwen/Qwen2.5-7B-Instruct")
    assert got == cache / "models--Qwen--Qwen2.5-7B-Instruct" / "snapshots" / COMMIT
    # The file behind the symlink is the shipped tokenizer, byte for byte.
    assert (got / "tokenizer.json").read_bytes() == (TOKENIZERS / "qwen2.5" / "tokenizer.json").read_bytes()


def test_revision_follows_its_ref_or_commit(cache):
    by_ref = resolve_model_dir("Qwen/Qwen2.5-7B-Instruct", revision="v1")
    by_commit = resolve_model_dir("Qwen/Qwen2.5-7B-Instruct", revision=OLD_COMMIT)
    assert by_ref == by_commit == cache / "models--Qwen--Qwen2.5-7B-Instruct" / "snapshots" / OLD_COMMIT
    assert (by_ref / "tokenizer.json").read_bytes() == (TOKENIZERS / "qwen3" / "tokenizer.json").read_bytes()


def test_hf_home_is_used_when_hub_cache_is_unset(tmp_path, monkeypatch):
    home = tmp_path / "hf_home"
    add_to_cache(home / "hub", "meta-llama/Llama-3.1-8B-Instruct", TOKENIZERS / "llama3.1", COMMIT)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = resolve_model_dir("meta-llama/Llama-3.1-8B-Instruct")
    assert got == home / "hub" / "models--meta-llama--Llama-3.1-8B-Instruct" / "snapshots" / COMMIT


def test_resolved_snapshot_loads_in_prep(cache, tmp_path):
    import fastsft

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    via_hub = fastsft.prep([str(corpus)], str(resolve_model_dir("Qwen/Qwen2.5-7B-Instruct")), str(tmp_path / "a"))
    local = fastsft.prep([str(corpus)], str(TOKENIZERS / "qwen2.5"), str(tmp_path / "b"))
    assert via_hub["written"] == local["written"] == 1
    assert (tmp_path / "a" / "input_ids.npy").read_bytes() == (tmp_path / "b" / "input_ids.npy").read_bytes()


def test_uncached_id_says_how_to_download(cache):
    with pytest.raises(FileNotFoundError) as err:
        resolve_model_dir("Org/NotCached-1B")
    msg = str(err.value)
    assert "Org/NotCached-1B" in msg
    assert str(cache) in msg
    assert "hf download Org/NotCached-1B --include '*.json' --include '*.jinja'" in msg
    assert "never downloads" in msg


def test_uncached_model_suggests_the_whole_snapshot(cache):
    with pytest.raises(FileNotFoundError, match=r"`hf download Org/NotCached-1B`"):
        resolve_model_dir("Org/NotCached-1B", model=True)


def test_unknown_revision_is_not_found(cache):
    with pytest.raises(FileNotFoundError, match=r"Qwen/Qwen2.5-7B-Instruct@v9 is not in .*--revision v9"):
        resolve_model_dir("Qwen/Qwen2.5-7B-Instruct", revision="v9")


def test_snapshot_without_required_file(cache):
    # The cached "model" has tokenizer files only: train --model needs config.json too.
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        resolve_model_dir("Qwen/Qwen2.5-7B-Instruct", model=True)


def test_missing_local_path_is_not_taken_for_a_hub_id(cache):
    for name in ("./no/such/dir", "/no/such/dir", "a/b/c", "~/nothing-here"):
        with pytest.raises(FileNotFoundError, match="no such file or directory"):
            resolve_model_dir(name)


def test_invalid_hub_id(cache):
    with pytest.raises(FileNotFoundError, match="not a hub id"):
        resolve_model_dir("bad id with spaces")
