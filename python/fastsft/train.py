"""``fastsft train``: assemble a ``transformers.Trainer`` for prepared data, and run it.

This module builds inputs (model, datasets, collator, ``TrainingArguments``, DeepSpeed config)
and hands them to the Trainer, which owns the loop, checkpoints and resume. The rest lives beside
it: ``train_options.py`` (``TrainOptions``, the flags, and the checks made before anything loads),
``train_setup.py`` (distributed world, DeepSpeed, precision, loggers), ``train_trainer.py`` (the
one Trainer subclass: length-grouped sampling from known lengths, token-rate logs),
``train_exit.py`` (one-line errors, Ctrl-C) and ``tiny_model.py`` (``fastsft tiny-model``).

Nothing heavy is imported at module level: ``register_cli`` runs for every ``fastsft`` command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from .errors import FileAccessError, MissingExtraError, exit_code_for
from .tokenizer_path import resolve_tokenizer
from .train_exit import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    TrainInterrupted,
    interrupted_message,
    is_user_error,
    one_line,
    resolve_resume,
)
from .train_options import TrainOptionError, TrainOptions, TrainSetupError, check_data_fits_model, check_options
from .train_setup import (
    DEEPSPEED_PRESETS,
    deepspeed_config,
    finish_distributed,
    init_deepspeed_comm,
    prepare_distributed_env,
    reporting_integrations,
    resolve_precision,
)
from .train_setup import _flash_attn_available as _flash_attn_available  # re-exported: tests import it from here
from .train_setup import _free_port as _free_port
from .train_trainer import _trainer_class

SUMMARY_FILE = "train_summary.json"


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run ``fastsft train`` with ``opts``; return the summary (also written to ``output/train_summary.json``)."""
    check_options(opts)
    if not os.path.exists(opts.model):
        # A hub id (`Qwen/Qwen2.5-0.5B-Instruct`) from the local Hugging Face cache, never downloaded.
        from fastsft.hub import resolve_model_dir

        opts.model = os.fspath(resolve_model_dir(opts.model, model=True))
    ds_config = deepspeed_config(opts.deepspeed)
    resume = resolve_resume(opts.resume, opts.output)
    prepare_distributed_env(ds_config is not None)

    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments

    report_to = reporting_integrations(opts.report_to)

    from .data import PackedDataset, PackingCollator, PadCollator, SFTDataset, SFTSubset, split_indices

    # --- data, checked against the model before anything is loaded
    dataset = SFTDataset(opts.data)
    check_data_fits_model(dataset, opts.model)
    train_set: SFTDataset | SFTSubset
    eval_set: SFTDataset | SFTSubset | None
    if opts.eval_data:
        eval_set = SFTDataset(opts.eval_data)
        check_data_fits_model(eval_set, opts.model)
        train_set = dataset
    elif opts.eval_split > 0:
        tr, ev = split_indices(len(dataset), opts.eval_split, opts.seed)
        train_set, eval_set = dataset.select(tr), dataset.select(ev)
    else:
        train_set, eval_set = dataset, None
    if len(train_set) == 0:
        raise TrainSetupError(f"{', '.join(opts.data)}: no training samples")
    try:  # before the model loads: a bad --output should not cost a model load to find out
        Path(opts.output).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileAccessError(f"--output {opts.output}: cannot create it ({e.strerror or e})") from None

    pack_fill = None
    train_items: PackedDataset | SFTDataset | SFTSubset
    eval_items: PackedDataset | SFTDataset | SFTSubset | None
    collator: PackingCollator | PadCollator
    if opts.packing:
        pack_len = opts.pack_len or int(dataset.lengths.max())
        train_items = PackedDataset(train_set, pack_len)
        eval_items = PackedDataset(eval_set, pack_len) if eval_set is not None else None
        pack_fill = train_items.packs.fill_ratio
        collator = PackingCollator()
    else:
        if opts.pack_len is not None:
            raise TrainOptionError("--pack-len needs --packing")
        train_items, eval_items = train_set, eval_set
        collator = PadCollator(pad_token_id=_pad_token_id(dataset, opts.model))

    # --- DeepSpeed's communication, then TrainingArguments (which registers the HF DeepSpeed
    # config), both before the model loads: with ZeRO-3, from_pretrained partitions the weights
    # inside zero.Init, which reads the world size from deepspeed.comm and the config from them
    cuda = torch.cuda.is_available()
    if ds_config is not None:
        init_deepspeed_comm(cuda)
    precision = resolve_precision(opts.precision, cuda, cuda and torch.cuda.is_bf16_supported())
    do_eval = eval_items is not None and len(eval_items) > 0
    eval_steps = opts.eval_steps or opts.save_steps
    args = TrainingArguments(
        output_dir=opts.output,
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps,
        learning_rate=opts.lr,
        lr_scheduler_type=opts.lr_scheduler,
        warmup_steps=opts.warmup if opts.warmup < 1 else int(opts.warmup),
        weight_decay=opts.weight_decay,
        max_grad_norm=opts.max_grad_norm,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        seed=opts.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=opts.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if opts.gradient_checkpointing else None,
        logging_steps=opts.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=opts.save_total_limit,
        eval_strategy="steps" if do_eval else "no",
        eval_steps=eval_steps if do_eval else None,
        deepspeed=ds_config,
        use_cpu=not cuda,
        report_to=report_to,
        dataloader_num_workers=opts.num_workers if opts.num_workers is not None else (2 if cuda else 0),
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        use_cache=False,  # packed samples must not see each other: see collate.PackingCollator
    )

    attn = opts.attn
    if attn == "auto":
        attn = "flash_attention_2" if opts.packing and cuda and _flash_attn_available() else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(opts.model, attn_implementation=attn, dtype=torch.float32)
    model.config.use_cache = False
    check_data_fits_model(dataset, opts.model, embedding_rows=model.get_input_embeddings().num_embeddings)
    if opts.lora_r > 0:
        model = _apply_lora(model, opts)

    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_items,
        eval_dataset=eval_items if do_eval else None,
        data_collator=collator,
        train_lengths=None if opts.packing else train_set.lengths,
        pack_fill=pack_fill,
    )
    main = trainer.is_world_process_zero()
    if main:
        _print_banner(opts, dataset, train_items, eval_items, pack_fill, precision, attn, model, ds_config)

    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        raise TrainInterrupted(trainer.state.global_step) from None
    wall = time.perf_counter() - t0
    summary = dict(trainer.fs_summary)
    if do_eval:
        summary.update(trainer.evaluate())
    trainer.save_model(opts.output)
    if main:
        _copy_tokenizer(opts.model, opts.output)
    n_params = _num_params(model)
    summary.update(
        global_step=trainer.state.global_step,
        wall_seconds=round(wall, 2),
        num_parameters=int(n_params),
        precision=precision,
        attn_implementation=attn,
        deepspeed=opts.deepspeed,
        packing=opts.packing,
        world_size=trainer.args.world_size,
        final_loss=_last_loss(trainer.state.log_history),
        loss_history=[[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h],
    )
    if summary.get("train_tokens_per_second"):
        # 6 N flops per token (forward + backward, attention excluded): the usual MFU numerator
        summary["approx_model_tflops_per_second"] = round(6 * n_params * summary["train_tokens_per_second"] / 1e12, 4)
    if main:
        Path(opts.output, SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=float) + "\n")
        _print_summary(summary)
    return summary


def _num_params(model: Any, trainable_only: bool = False) -> int:
    # ZeRO-3 leaves empty placeholders in the module; ds_numel is the real size
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad or not trainable_only)


def _pad_token_id(dataset: Any, model_dir: str) -> int:
    """The pad id: the dataset's pad token, else the model's pad/eos id, else 0 (never trained on)."""
    from .tiny_model import special_token_ids

    pad = dataset.manifests[0].pad_token
    if pad:
        from tokenizers import Tokenizer

        tid = Tokenizer.from_file(str(resolve_tokenizer(model_dir, flag="--model"))).token_to_id(pad)
        if tid is not None:
            return int(tid)
    ids = special_token_ids(model_dir)
    return int(ids["pad"] if ids["pad"] is not None else ids["eos"] if ids["eos"] is not None else 0)


def _apply_lora(model: Any, opts: TrainOptions) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise MissingExtraError("--lora-r needs peft: pip install -r requirements-train.txt") from e
    spec = opts.lora_targets
    targets: str | list[str] = spec if spec == "all-linear" else [t.strip() for t in spec.split(",") if t.strip()]
    cfg = LoraConfig(
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha if opts.lora_alpha is not None else 2 * opts.lora_r,
        lora_dropout=opts.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def _copy_tokenizer(src: str, dst: str) -> None:
    from .tiny_model import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        if Path(src, name).is_file() and not Path(dst, name).exists():
            shutil.copyfile(Path(src, name), Path(dst, name))


def _last_loss(history: list[dict[str, Any]]) -> float | None:
    for h in reversed(history):
        if "loss" in h:
            return float(h["loss"])
    return None


def _print_banner(opts, dataset, train_items, eval_items, pack_fill, precision, attn, model, ds_config) -> None:
    n, trainable = _num_params(model), _num_params(model, trainable_only=True)
    lines = [
        f"fastsft train: {len(dataset)} samples, {dataset.num_tokens} tokens"
        + (f" ({dataset.num_trained_tokens} trained)" if dataset.num_trained_tokens is not None else "")
        + f" from {len(dataset.dirs)} dataset dir(s)",
        f"  batches: {'packing, ' + str(len(train_items)) + ' packs of <= ' + str(train_items.packs.capacity) + ' tokens, fill ' + format(pack_fill, '.3f') if opts.packing else 'pad to longest (x8), length-grouped'}"
        + (f"; eval: {len(eval_items)} items" if eval_items is not None else ""),
        f"  model: {opts.model} ({n / 1e6:.2f}M params, {trainable / 1e6:.2f}M trainable), {precision}, attn={attn}"
        + (f", deepspeed ZeRO-{ds_config['zero_optimization']['stage']}" if ds_config else ""),
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def _print_summary(s: dict[str, Any]) -> None:
    def g(k: str, fmt: str = "{}") -> str:
        return fmt.format(s[k]) if s.get(k) is not None else "-"

    fill = f"pack fill {g('pack_fill', '{:.3f}')}" if s.get("packing") else f"padding {g('padding_fraction', '{:.3f}')}"
    print(
        "fastsft train summary: "
        f"{g('global_step')} steps in {g('train_runtime', '{:.1f}')} s; "
        f"final loss {g('final_loss', '{:.4f}')}, mean loss {g('train_loss', '{:.4f}')}"
        + (f", eval loss {g('eval_loss', '{:.4f}')}" if "eval_loss" in s else "")
        + f"; {g('train_tokens')} tokens ({g('train_tokens_per_second', '{:.0f}')}/s), "
        f"{g('train_trained_tokens')} trained ({g('train_trained_tokens_per_second', '{:.0f}')}/s); {fill}",
        file=sys.stderr,
        flush=True,
    )


def train_main(args: argparse.Namespace) -> int:
    opts = TrainOptions(**{f.name: getattr(args, f.name) for f in fields(TrainOptions)})
    try:
        train(opts)
    except KeyboardInterrupt as e:
        # On a line of its own: the progress bar may have left the cursor mid-line.
        print("\n" + interrupted_message(opts.output, getattr(e, "step", None), opts.save_steps), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as e:
        if not is_user_error(e):
            raise
        print(f"fastsft train: error: {one_line(e)}", file=sys.stderr, flush=True)
        # fastsft's own errors exit with the code of their kind (fastsft/errors.py); a library's
        # error that the user caused (out of memory, a missing package) with 2.
        return exit_code_for(e) or EXIT_ERROR
    finish_distributed()
    return 0


TRAIN_EPILOG = """\
examples:
  fastsft prep assets/corpora/llamafactory_alpaca_en_demo.jsonl.gz --tokenizer m/ -o data/ --max-len 1024
  fastsft train --data data/ --model m/ --output run/ --epochs 1 --lr 1e-5 --batch-size 8
  fastsft train --data data/ --model m/ --output run/ --packing --pack-len 4096 --deepspeed zero2
  torchrun --nproc-per-node 8 -m fastsft.cli train --data data/ --model m/ --output run/ --deepspeed zero3
  fastsft train --data data/ --model m/ --output run/ --resume          # continue from run/checkpoint-*
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's example lines as written; shows the defaults that say something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and not action.required and action.option_strings:
            text += " (default: %(default)s)"
        return text


def register_cli(subparsers: Any) -> None:
    """Add the ``train`` and ``tiny-model`` subcommands to an argparse ``subparsers`` object."""
    fmt = _HelpFormatter
    p = subparsers.add_parser(
        "train", help="train a causal LM on prepared data (transformers Trainer, DeepSpeed, LoRA)",
        description="Train on datasets made by `fastsft prep`.", epilog=TRAIN_EPILOG, formatter_class=fmt,
    )  # fmt: skip
    for f in fields(TrainOptions):
        meta = f.metadata
        kw = dict(meta["argparse"])
        if "required" not in kw:
            kw["default"] = f.default if f.default_factory is MISSING else f.default_factory()
        flags = [meta["flag"]]
        if f.name == "output":
            flags.append("-o")
        if f.name == "local_rank":
            flags.append("--local-rank")
        p.add_argument(*flags, dest=f.name, help=meta["help"], **kw)
    p.set_defaults(func=train_main)

    from .tiny_model import register_cli as register_tiny_model

    register_tiny_model(subparsers, fmt)


__all__ = [
    "DEEPSPEED_PRESETS", "SUMMARY_FILE", "TrainOptionError", "TrainOptions", "TrainSetupError", "check_data_fits_model",
    "check_options", "deepspeed_config", "finish_distributed", "register_cli", "resolve_precision", "train", "train_main",
]  # fmt: skip
