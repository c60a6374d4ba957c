"""Helpers for the data and training tests: write small prepared datasets with numpy, and find
the real ones made by ``fastsft prep`` when the extension is built."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QWEN_TOKENIZER = ROOT / "assets" / "tokenizers" / "qwen2.5"
CORPORA = ROOT / "assets" / "corpora"


def write_dataset(
    out: Path,
    samples: Sequence[tuple[Sequence[int], Sequence[int]]],
    tokenizer_sha256: str = "0" * 64,
    vocab_size: int = 1000,
    pad_token: str | None = None,
    checksums: bool = True,
) -> Path:
    """Write ``samples`` (``(ids, mask)`` pairs) as a format-1 dataset directory, as prep would
    (``checksums=False``: as prep did before it recorded ``array_sha256``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if vocab_size <= 65536 else np.uint32
    ids = np.concatenate([np.asarray(s[0], dtype=dtype) for s in samples]) if samples else np.zeros(0, dtype)
    mask = np.concatenate([np.asarray(s[1], dtype=np.uint8) for s in samples]) if samples else np.zeros(0, np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(s[0]) for s in samples])]).astype(np.int64)
    origin = np.stack([np.zeros(len(samples), np.int64), np.arange(1, len(samples) + 1)], axis=1)
    np.save(out / "input_ids.npy", ids)
    np.save(out / "loss_mask.npy", mask)
    np.save(out / "offsets.npy", offsets)
    np.save(out / "origin.npy", origin.reshape(len(samples), 2))
    (out / "rejects.jsonl").write_text("")
    manifest = {
        "format_version": 1,
        "fastsft_version": "test",
        "num_samples": len(samples),
        "num_tokens": len(ids),
        "num_trained_tokens": int(mask.sum()),
        "input_ids_dtype": np.dtype(dtype).name,
        "tokenizer": {
            "sha256": tokenizer_sha256,
            "vocab_size": vocab_size,
            "bos_token": None,
            "eos_token": "<eos>",
            "pad_token": pad_token,
        },
        "template": {"name": "test", "sha256": "0" * 64},
        "options": {},
        "inputs": [],
        "counts": {"read": len(samples), "written": len(samples), "rejected": 0, "rejected_by_reason": {}, "truncated": 0},
        "fingerprint": "0" * 64,
    }
    if checksums:
        manifest["array_sha256"] = {name: data_sha256(out / name) for name in ARRAYS}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


ARRAYS = ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy")


def data_sha256(npy: Path) -> str:
    """sha256 of an .npy file's data bytes (after its header), as the Rust writer records it."""
    import hashlib

    with open(npy, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        read_header(f)
        return hashlib.sha256(f.read()).hexdigest()


def random_samples(n: int, seed: int = 0, min_len: int = 3, max_len: int = 40, vocab: int = 1000):
    """``n`` random ``(ids, mask)`` samples; each mask has at least one trained token."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        L = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(0, vocab, L)
        mask = (rng.random(L) < 0.5).astype(np.uint8)
        mask[-1] = 1
        out.append((ids.tolist(), mask.tolist()))
    return out


def have_core() -> bool:
    try:
        from fastsft import _core  # noqa: F401
    except ImportError:
        return False
    return True


def build_small_tokenizer(out: Path, vocab_size: int = 1024, max_lines: int = 300) -> Path:
    """A byte-level BPE of ``vocab_size`` tokens, trained in-process on the shipped corpora, with
    Qwen2.5's pre-tokenizer, special tokens and chat template.

    Why: a tiny model's step time on CPU is dominated by the vocabulary (logits are batch x seq x
    vocab); at Qwen's 152k a hidden-64 model takes ~0.5-4 s a step on 2 cores, at ~1k it takes
    tens of milliseconds, which is what lets CI run 30+ steps, resume and DeepSpeed runs.
    """
    import gzip

    from transformers import AutoTokenizer

    def texts():
        for f in sorted(CORPORA.glob("*.jsonl.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if i >= max_lines:
                        break
                    yield line

    base = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    small = base.train_new_from_iterator(texts(), vocab_size=vocab_size)
    small.save_pretrained(str(out))
    return Path(out)


def train_corpora() -> list[Path]:
    """The corpora the training tests prepare: short English instructions and the identity set."""
    return [CORPORA / "llamafactory_alpaca_en_demo.jsonl.gz", CORPORA / "llamafactory_identity.jsonl.gz"]


def losses(summary: dict) -> dict[int, float]:
    """{step: loss} from a ``train_summary.json``."""
    return {int(s): float(v) for s, v in summary["loss_history"]}
