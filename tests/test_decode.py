"""`fastsft._core.TokenDecoder` (rust/decode.rs): what `fastsft inspect` decodes with, so that it
needs no Python `tokenizers`. Checked against the Python `tokenizers` library on the shipped
tokenizers: byte-level BPE (Qwen, Llama 3, GPT-2) and SentencePiece with byte fallback (Mistral)."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from fastsft import view
from fastsft._core import TokenDecoder
from reference import TOKENIZERS

# Characters split over tokens, a Metaspace leading space, emoji (byte fallback), special tokens.
TEXT = "[INST] 請翻譯: 今天天氣真好 🤗 [/INST] The weather is nice today.<|im_end|>\n 不客气。🤗🤗 Ünïcödé</s>"


@pytest.mark.parametrize("name", ["qwen2.5", "llama3.1", "mistral-7b-instruct-v0.1", "gpt2"])
def test_decoder_agrees_with_the_tokenizers_library(name):
    ours = TokenDecoder(str(TOKENIZERS / name))  # a model directory, as inspect passes it
    ref = Tokenizer.from_file(str(TOKENIZERS / name / "tokenizer.json"))
    assert ours.get_vocab_size() == ref.get_vocab_size(with_added_tokens=True)
    assert ours.get_vocab_size(with_added_tokens=False) == ref.get_vocab_size(with_added_tokens=False)
    ids = ref.encode(TEXT, add_special_tokens=False).ids
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    assert ours.decode(ids) == ref.decode(ids)  # the same default (skip special tokens)
    rng = np.random.default_rng(0)
    size = ref.get_vocab_size(with_added_tokens=True)
    for _ in range(20):  # random slices and random ids: partial characters, runs of specials
        a, b = sorted(rng.integers(0, len(ids) + 1, 2).tolist())
        assert ours.decode(ids[a:b], skip_special_tokens=False) == ref.decode(ids[a:b], skip_special_tokens=False)
        random_ids = rng.integers(0, size, 12).tolist()
        assert ours.decode(random_ids, skip_special_tokens=False) == ref.decode(random_ids, skip_special_tokens=False)
    for i in [*ids, 0, size - 1, size + 5]:
        assert ours.id_to_token(i) == ref.id_to_token(i), i


@pytest.mark.parametrize("name", ["qwen2.5", "mistral-7b-instruct-v0.1"])
def test_inspect_runs_are_the_same_with_either_decoder(name):
    """`view.decode_runs` and `token_texts` give the same text through the extension as through the library."""
    ours = TokenDecoder(str(TOKENIZERS / name / "tokenizer.json"))  # or the file itself
    ref = Tokenizer.from_file(str(TOKENIZERS / name / "tokenizer.json"))
    ids = np.array(ref.encode(TEXT, add_special_tokens=False).ids)
    rng = np.random.default_rng(1)
    for _ in range(10):
        mask = (rng.random(len(ids)) < 0.5).astype(np.uint8)
        assert view.decode_runs(ours, ids, mask) == view.decode_runs(ref, ids, mask)
    assert view.token_texts(ours, ids) == view.token_texts(ref, ids)


def test_missing_or_broken_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer.json: not found"):
        TokenDecoder(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"tokenizer.json: not a tokenizers file"):
        TokenDecoder(str(tmp_path))
