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


# Characters NFC's quick check is unsure of (Devanagari nukta, Hangul jamo, a Bengali vowel sign,
# Kannada length mark) and text NFC changes (e + combining acute, the Angstrom sign): the
# byte-level path checks them exactly and sends only the changed ones to the crate.
UNSURE = ["क़िताब \u0915\u093c", "\u1100\u1161\u11a8 한국어", "বাংলা \u09be", "ಕೂ\u0cd5", "cafe\u0301 \u212b", "plain text"]


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
def test_nfc_unsure_texts_give_the_same_bytes_as_the_tokenizers_crate(tmp_path, monkeypatch, family):
    import json

    corpus = tmp_path / "unsure.jsonl"
    rows = [{"conversations": [{"from": "human", "value": a}, {"from": "gpt", "value": b}]} for a in UNSURE for b in UNSURE]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tokenizer = REPO / "assets/tokenizers" / family
    monkeypatch.setenv("FASTSFT_CACHE", "0")
    fast = fastsft.prep([corpus], tokenizer, tmp_path / "fast")
    monkeypatch.setenv("FASTSFT_TOKENIZER", "reference")
    fastsft.prep([corpus], tokenizer, tmp_path / "reference")
    assert fast["written"] == len(rows)
    assert digests(tmp_path / "fast") == digests(tmp_path / "reference")


def unnormalized(value):
    """Every string value of a record decomposed (NFD), with a combining acute accent after every
    seventh character: text NFC changes, as decomposed input from some sources is."""
    import unicodedata

    if isinstance(value, str):
        chars = unicodedata.normalize("NFD", value)
        return "".join(c + ("\u0301" if i % 7 == 6 else "") for i, c in enumerate(chars))
    if isinstance(value, list):
        return [unnormalized(v) for v in value]
    if isinstance(value, dict):
        return {k: unnormalized(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
def test_text_nfc_changes_gives_the_same_bytes_as_the_tokenizers_crate(tmp_path, monkeypatch, family):
    """Every shipped corpus made into text NFC changes: the fast path maps fastbpe's tokens back
    through NFC's alignments (rust/fastbpe/nfc_offsets.rs) and must write what the crate does."""
    import gzip
    import json

    corpus = tmp_path / "unnormalized.jsonl"
    with corpus.open("w", encoding="utf-8") as out:
        for path in CORPORA:
            for line in gzip.open(path, "rt", encoding="utf-8"):
                out.write(json.dumps(unnormalized(json.loads(line)), ensure_ascii=False) + "\n")
    tokenizer = REPO / "assets/tokenizers" / family
    monkeypatch.setenv("FASTSFT_CACHE", "0")
    fast = fastsft.prep([corpus], tokenizer, tmp_path / "fast", threads=2)
    monkeypatch.setenv("FASTSFT_TOKENIZER", "reference")
    fastsft.prep([corpus], tokenizer, tmp_path / "reference", threads=2)
    assert fast["written"] > 3000, fast
    assert digests(tmp_path / "fast") == digests(tmp_path / "reference")
