"""``fastsft tiny-model``: write a small, randomly initialised causal LM around a local tokenizer.

So that demos, tests and benchmarks train with no download. The tokenizer files are copied byte
for byte (``tokenizer.json``'s sha256 is what ``fastsft train`` compares with the dataset's
manifest). The weights are random (seeded); nothing here is meant to be a useful model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
    "LICENSE",
    "NOTICE",
)
ARCHES = ("qwen2", "llama")


def tokenizer_vocab_size(tokenizer_dir: str | Path) -> int:
    """Number of ids the tokenizer can produce, added tokens included (max id + 1)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def special_token_ids(tokenizer_dir: str | Path) -> dict[str, int | None]:
    """``bos``/``eos``/``pad`` ids named by ``tokenizer_config.json`` (None when it names none)."""
    from tokenizers import Tokenizer

    d = Path(tokenizer_dir)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    cfg: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
        if (d / name).is_file():
            cfg.update(json.loads((d / name).read_text(encoding="utf-8")))
    out: dict[str, int | None] = {}
    for key in ("bos", "eos", "pad"):
        val = cfg.get(f"{key}_token")
        if isinstance(val, dict):
            val = val.get("content")
        out[key] = tok.token_to_id(val) if isinstance(val, str) else None
    return out


def build_tiny_model(
    tokenizer: str | Path,
    output: str | Path,
    arch: str = "qwen2",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    max_positions: int = 4096,
    seed: int = 0,
) -> Path:
    """Write a random ``arch`` model with the given shape and ``tokenizer``'s files to ``output``.

    The vocabulary is the tokenizer's (added tokens included) rounded up to a multiple of 64;
    embeddings are tied. Returns ``output``.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    if arch not in ARCHES:
        raise ValueError(f"--arch {arch!r}: expected one of {', '.join(ARCHES)}")
    if hidden % heads or heads % kv_heads:
        raise ValueError(f"--hidden {hidden} must be a multiple of --heads {heads}, and --heads of --kv-heads {kv_heads}")
    tokenizer, output = Path(tokenizer), Path(output)
    if not (tokenizer / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{tokenizer}: no tokenizer.json")
    vocab = -(-tokenizer_vocab_size(tokenizer) // 64) * 64
    ids = special_token_ids(tokenizer)
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"] if ids["pad"] is not None else ids["eos"],
    )
    config = Qwen2Config(**common) if arch == "qwen2" else LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copyfile(tokenizer / name, output / name)
    return output
