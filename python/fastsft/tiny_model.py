"""``fastsft tiny-model``: write a small, randomly initialised causal LM around a local tokenizer.

So that demos, tests and benchmarks train with no download. The tokenizer files are copied byte
for byte (``tokenizer.json``'s sha256 is what ``fastsft train`` compares with the dataset's
manifest). The weights are random (seeded); nothing here is meant to be a useful model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from .errors import InputError, UsageError
from .tokenizer_path import resolve_tokenizer

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
        raise UsageError(f"--arch {arch!r}: expected one of {', '.join(ARCHES)}")
    if hidden % heads or heads % kv_heads:
        raise UsageError(f"--hidden {hidden} must be a multiple of --heads {heads}, and --heads of --kv-heads {kv_heads}")
    tokenizer, output = resolve_tokenizer(tokenizer).parent, Path(output)
    vocab = -(-tokenizer_vocab_size(tokenizer) // 64) * 64
    ids = special_token_ids(tokenizer)
    common = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate or 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": True,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"] if ids["pad"] is not None else ids["eos"],
    }
    config = Qwen2Config(**common) if arch == "qwen2" else LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copyfile(tokenizer / name, output / name)
    return output


def tiny_model_main(args: argparse.Namespace) -> int:
    try:
        out = build_tiny_model(
            args.tokenizer, args.output, arch=args.arch, layers=args.layers, hidden=args.hidden,
            heads=args.heads, kv_heads=args.kv_heads, intermediate=args.intermediate, seed=args.seed,
        )  # fmt: skip
    except (UsageError, InputError) as e:
        print(f"fastsft tiny-model: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


TINY_EPILOG = """\
example:
  fastsft tiny-model --tokenizer assets/tokenizers/qwen2.5 -o tiny/ --layers 2 --hidden 64
  fastsft tiny-model --tokenizer assets/tokenizers/qwen2.5 -o q05/ --layers 24 --hidden 896 \\
      --heads 14 --kv-heads 2 --intermediate 4864      # Qwen2.5-0.5B's shape, random weights
"""


def register_cli(subparsers: Any, formatter_class: type[argparse.HelpFormatter] = argparse.RawDescriptionHelpFormatter) -> None:
    """Add the ``tiny-model`` subcommand to an argparse ``subparsers`` object."""
    t = subparsers.add_parser(
        "tiny-model", help="write a small random model around a local tokenizer (tests, demos)",
        description="Write a small, randomly initialised causal LM with the given tokenizer.",
        epilog=TINY_EPILOG, formatter_class=formatter_class,
    )  # fmt: skip
    t.add_argument("--tokenizer", required=True, help="directory with tokenizer.json (and tokenizer_config.json)")
    t.add_argument("-o", "--output", required=True, help="directory to write the model to")
    t.add_argument("--arch", default="qwen2", choices=["qwen2", "llama"], help="model architecture")
    t.add_argument("--layers", type=int, default=2, help="number of layers")
    t.add_argument("--hidden", type=int, default=64, help="hidden size")
    t.add_argument("--heads", type=int, default=4, help="attention heads")
    t.add_argument("--kv-heads", type=int, default=2, help="key/value heads")
    t.add_argument("--intermediate", type=int, default=None, help="MLP size (default: 4 x hidden)")
    t.add_argument("--seed", type=int, default=0, help="weight-init seed")
    t.set_defaults(func=tiny_model_main)
