"""The SentencePiece families end to end: `fastsft prep` with fastbpe's ids and offsets (the
default) writes the same bytes as with the `tokenizers` crate alone (FASTSFT_TOKENIZER=reference),
on every shipped corpus. The offsets themselves are compared token by token in
tests/fastbpe_offsets.rs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import fastsft

REPO = Path(__file__).resolve().parents[1]
CORPORA = sorted((REPO / "assets/corpora").glob("*.jsonl.gz"))
TIMED = "report.json"  # timings: the only file allowed to differ


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir()) if p.name != TIMED}


@pytest.mark.parametrize("family", ["gemma", "mistral-7b-instruct-v0.3", "phi3", "tinyllama-chat"])
def test_fast_offsets_give_the_same_bytes_as_the_tokenizers_crate(tmp_path, monkeypatch, family):
    tokenizer = REPO / "assets/tokenizers" / family
    monkeypatch.setenv("FASTSFT_CACHE", "0")
    fast = fastsft.prep(CORPORA, tokenizer, tmp_path / "fast", threads=2)
    monkeypatch.setenv("FASTSFT_TOKENIZER", "reference")
    reference = fastsft.prep(CORPORA, tokenizer, tmp_path / "reference", threads=2)
    assert fast["written"] > 3000, fast  # every corpus that renders, not a handful of rows
    assert fast["trained_tokens"] == reference["trained_tokens"]
    assert digests(tmp_path / "fast") == digests(tmp_path / "reference")
