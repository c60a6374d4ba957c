"""What ``fastsft train`` takes (``TrainOptions``, whose fields are its flags) and the checks made
before anything heavy loads: numbers no run can use, and data that does not fit the model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.manifest import sha256_file
from .errors import EXIT_USAGE, InputError, UsageError
from .tokenizer_path import resolve_tokenizer


class TrainSetupError(InputError):
    """The data, model or options cannot train together (the message says why and what to do)."""


class TrainOptionError(TrainSetupError, UsageError):
    """A ``fastsft train`` flag, or a combination of them, that no run can use."""

    exit_code = EXIT_USAGE


def _opt(flag: str, help: str, **argparse_kw: Any) -> dict[str, Any]:
    return {"flag": flag, "help": help, "argparse": argparse_kw}


@dataclass
class TrainOptions:
    """Everything ``fastsft train`` takes; each field's help is its ``--help`` line."""

    data: list[str] = field(
        default_factory=list,
        metadata=_opt(
            "--data", "prepared dataset directories (or parents of shard directories)", nargs="+", required=True, metavar="DIR"
        ),
    )
    model: str = field(
        default="",
        metadata=_opt("--model", "local model directory (config, weights, tokenizer.json)", required=True, metavar="DIR"),
    )
    output: str = field(
        default="", metadata=_opt("--output", "directory for checkpoints and the final model", required=True, metavar="DIR")
    )
    eval_data: list[str] | None = field(
        default=None, metadata=_opt("--eval-data", "prepared datasets to evaluate on", nargs="+", metavar="DIR")
    )
    eval_split: float = field(
        default=0.0,
        metadata=_opt("--eval-split", "hold out this fraction (<1) or number (>=1) of training samples for eval", type=float),
    )
    epochs: float = field(default=1.0, metadata=_opt("--epochs", "number of passes over the data", type=float))
    max_steps: int = field(
        default=-1, metadata=_opt("--max-steps", "stop after this many optimizer steps (overrides --epochs)", type=int)
    )
    lr: float = field(default=2e-5, metadata=_opt("--lr", "peak learning rate", type=float))
    lr_scheduler: str = field(
        default="cosine", metadata=_opt("--lr-scheduler", "schedule after warm-up (any transformers SchedulerType)")
    )
    warmup: float = field(
        default=0.03, metadata=_opt("--warmup", "warm-up steps (>=1) or fraction of all steps (<1)", type=float)
    )
    weight_decay: float = field(default=0.0, metadata=_opt("--weight-decay", "AdamW weight decay", type=float))
    max_grad_norm: float = field(default=1.0, metadata=_opt("--max-grad-norm", "gradient clipping norm", type=float))
    batch_size: int = field(
        default=4, metadata=_opt("--batch-size", "per-device batch: samples (pad) or packs (--packing) per step", type=int)
    )
    grad_accum: int = field(default=1, metadata=_opt("--grad-accum", "gradient accumulation steps", type=int))
    seed: int = field(default=42, metadata=_opt("--seed", "random seed (data order, dropout, LoRA init)", type=int))
    precision: str = field(
        default="auto",
        metadata=_opt(
            "--precision",
            "auto: bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU",
            choices=["auto", "bf16", "fp16", "fp32"],
        ),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_opt("--gradient-checkpointing", "recompute activations in backward (less memory)", action="store_true"),
    )
    logging_steps: int = field(default=10, metadata=_opt("--logging-steps", "log every N steps", type=int))
    save_steps: int = field(default=500, metadata=_opt("--save-steps", "checkpoint every N steps", type=int))
    save_total_limit: int | None = field(
        default=None, metadata=_opt("--save-total-limit", "keep at most N checkpoints", type=int)
    )
    eval_steps: int | None = field(
        default=None, metadata=_opt("--eval-steps", "evaluate every N steps (default: --save-steps)", type=int)
    )
    resume: str | None = field(
        default=None,
        metadata=_opt(
            "--resume",
            "resume from the latest checkpoint in --output, or from the checkpoint given",
            nargs="?",
            const="latest",
            metavar="CHECKPOINT",
        ),
    )
    deepspeed: str | None = field(
        default=None,
        metadata=_opt(
            "--deepspeed", "zero2, zero3, zero3-offload (shipped presets) or a DeepSpeed JSON file", metavar="PRESET|FILE"
        ),
    )
    packing: bool = field(
        default=False, metadata=_opt("--packing", "pack samples padding-free into --pack-len token rows", action="store_true")
    )
    pack_len: int | None = field(default=None, metadata=_opt("--pack-len", "tokens per pack (default: longest sample)", type=int))
    attn: str = field(
        default="auto",
        metadata=_opt("--attn", "attention implementation; auto: flash_attention_2 for packing on GPU when installed, else sdpa"),
    )
    lora_r: int = field(default=0, metadata=_opt("--lora-r", "LoRA rank; 0 trains all weights", type=int))
    lora_alpha: float | None = field(default=None, metadata=_opt("--lora-alpha", "LoRA alpha (default: 2 x rank)", type=float))
    lora_dropout: float = field(default=0.05, metadata=_opt("--lora-dropout", "LoRA dropout", type=float))
    lora_targets: str = field(
        default="all-linear", metadata=_opt("--lora-targets", "comma-separated module names, or all-linear")
    )
    num_workers: int | None = field(
        default=None, metadata=_opt("--num-workers", "DataLoader worker processes (default: 2 on GPU, 0 on CPU)", type=int)
    )
    report_to: str = field(default="none", metadata=_opt("--report-to", "none, tensorboard, wandb, ... (transformers report_to)"))
    local_rank: int = field(
        default=-1,
        metadata=_opt("--local_rank", "set by the deepspeed launcher (the rank is read from LOCAL_RANK)", type=int, metavar="N"),
    )


def check_options(opts: TrainOptions) -> None:
    """Refuse numbers no run can use, naming the flag, before anything is loaded."""
    at_least = {"--batch-size": (opts.batch_size, 1), "--grad-accum": (opts.grad_accum, 1), "--save-steps": (opts.save_steps, 1),
                "--logging-steps": (opts.logging_steps, 1), "--lora-r": (opts.lora_r, 0), "--warmup": (opts.warmup, 0),
                "--eval-split": (opts.eval_split, 0), "--weight-decay": (opts.weight_decay, 0)}  # fmt: skip
    for flag, value, low in [(f, *v) for f, v in at_least.items()] + [
        ("--num-workers", opts.num_workers, 0), ("--pack-len", opts.pack_len, 1), ("--eval-steps", opts.eval_steps, 1),
        ("--save-total-limit", opts.save_total_limit, 1),
    ]:  # fmt: skip
        if value is not None and value < low:
            raise TrainOptionError(f"{flag} {value}: must be at least {low}")
    if not opts.lr > 0:
        raise TrainOptionError(f"--lr {opts.lr}: must be positive")
    if opts.max_steps == 0 or opts.max_steps < -1:
        raise TrainOptionError(f"--max-steps {opts.max_steps}: must be positive (or -1: use --epochs)")
    if opts.max_steps == -1 and not opts.epochs > 0:
        raise TrainOptionError(f"--epochs {opts.epochs}: must be positive (or give --max-steps)")


def check_data_fits_model(dataset: Any, model_dir: str | Path, embedding_rows: int | None = None) -> None:
    """Refuse data made with another tokenizer, or with ids the model cannot embed.

    ``embedding_rows`` is the model's input-embedding size when known; otherwise ``config.json``'s
    ``vocab_size`` is used.
    """
    model_dir = Path(model_dir)
    try:
        tok = resolve_tokenizer(model_dir, flag="--model")
    except InputError:
        raise TrainSetupError(
            f"{model_dir}: no tokenizer.json, so the data's tokenizer cannot be checked; "
            "copy the tokenizer files the data was prepared with into the model directory"
        ) from None
    model_sha = sha256_file(tok)
    data_sha = dataset.tokenizer_sha256
    if data_sha != model_sha:
        raise TrainSetupError(
            f"tokenizer mismatch: {dataset.dirs[0]} was prepared with a tokenizer.json of sha256 {data_sha}, "
            f"but {tok} has sha256 {model_sha}; re-run `fastsft prep --tokenizer {model_dir}` "
            "or train the model the data was made for"
        )
    if embedding_rows is None:
        if not (model_dir / "config.json").is_file():
            raise TrainSetupError(
                f"{model_dir}: no config.json; --model must be a model directory (config.json, weights, tokenizer.json)"
            )
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        embedding_rows = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    if embedding_rows is not None and dataset.vocab_size is not None and dataset.vocab_size > embedding_rows:
        raise TrainSetupError(
            f"vocabulary too large: {dataset.dirs[0]} uses a vocabulary of {dataset.vocab_size} tokens, "
            f"but {model_dir} embeds only {embedding_rows}; resize the model's embeddings first"
        )


__all__ = ["TrainOptionError", "TrainOptions", "TrainSetupError", "check_data_fits_model", "check_options"]
