"""The tokenizer cache ($XDG_CACHE_HOME/fastsft/tokenizers, rust/tokenizer_cache.rs) end to end: the
same bytes with it cold, warm, damaged, shared by concurrent processes, or off (FASTSFT_CACHE=0).
Rust's tests (rust/tokenizer_tests.rs) check the entries themselves."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastsft

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO / "assets/tokenizers"
DETERMINISTIC_FILES = ["input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "manifest.json", "rejects.jsonl"]
RECORDS = [
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    # Not NFC: with a NFC normalizer (Qwen) this text goes to the `tokenizers` crate, which a warm
    # start builds only then.
    {"messages": [{"role": "user", "content": "Cafe\u0301 A\u030a"}, {"role": "assistant", "content": "e\u0301te\u0301 😀"}]},
    {"messages": [{"role": "user", "content": "日本語 and   spaces\n\n"}, {"role": "assistant", "content": "  42 tokens\t"}]},
    {"messages": [{"role": "user", "content": "no reply"}]},
]


def digests(out: Path) -> dict[str, str]:
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in DETERMINISTIC_FILES}


def entries(cache_home: Path) -> list[Path]:
    directory = cache_home / "fastsft" / "tokenizers"
    return sorted(directory.iterdir()) if directory.exists() else []


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    return path


@pytest.mark.parametrize("family", ["qwen2.5", "llama3.1", "gemma"])
def test_same_bytes_cold_warm_and_off(family, data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tokenizer = TOKENIZERS / family
    monkeypatch.setenv("FASTSFT_CACHE", "0")
    fastsft.prep([data], tokenizer, tmp_path / "off")
    assert entries(tmp_path / "cache") == []  # off means not written either
    monkeypatch.delenv("FASTSFT_CACHE")
    fastsft.prep([data], tokenizer, tmp_path / "cold")
    (entry,) = entries(tmp_path / "cache")
    assert entry.name.startswith(hashlib.sha256((tokenizer / "tokenizer.json").read_bytes()).hexdigest())
    fastsft.prep([data], tokenizer, tmp_path / "warm")
    monkeypatch.setenv("FASTSFT_TOKENIZER", "reference")  # the tokenizers crate alone, no fast BPE
    fastsft.prep([data], tokenizer, tmp_path / "reference")
    want = digests(tmp_path / "off")
    assert digests(tmp_path / "cold") == want and digests(tmp_path / "warm") == want
    assert digests(tmp_path / "reference") == want
    assert json.loads((tmp_path / "warm/manifest.json").read_text())["counts"]["written"] == 3


def test_a_damaged_entry_is_rebuilt_not_trusted(data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTSFT_CACHE", raising=False)
    tokenizer = TOKENIZERS / "qwen2.5"
    fastsft.prep([data], tokenizer, tmp_path / "cold")
    (entry,) = entries(tmp_path / "cache")
    good = entry.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF
    entry.write_bytes(bytes(damaged))
    fastsft.prep([data], tokenizer, tmp_path / "damaged")
    assert entry.read_bytes() == good
    assert digests(tmp_path / "damaged") == digests(tmp_path / "cold")


def test_concurrent_processes_share_one_entry(data, tmp_path):
    cache_home = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    env.pop("FASTSFT_CACHE", None)
    script = "import sys, fastsft; fastsft.prep([sys.argv[1]], sys.argv[2], sys.argv[3])"
    tokenizer = str(TOKENIZERS / "qwen2.5")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(data), tokenizer, str(tmp_path / f"out{i}")],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    (entry,) = entries(cache_home)  # one whole entry, no temporaries left
    assert not entry.name.startswith(".")
    want = digests(tmp_path / "out0")
    assert digests(tmp_path / "out1") == want and digests(tmp_path / "out2") == want
    # A later start uses that entry and still writes the same bytes.
    before = entry.stat().st_mtime_ns
    done = subprocess.run(
        [sys.executable, "-c", script, str(data), tokenizer, str(tmp_path / "later")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert entry.stat().st_mtime_ns == before  # read, not rewritten
    assert digests(tmp_path / "later") == want
