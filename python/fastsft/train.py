"""``fastsft train``: assemble a ``transformers.Trainer`` for prepared data, and run it.

This module builds inputs (model, datasets, collator, ``TrainingArguments``, DeepSpeed config)
and checks that the data fits the model; the Trainer owns the loop, checkpoints and resume.
Its one subclass adds only what the Trainer cannot be told: length-grouped sampling from lengths
we already know (the stock sampler reads every item to find them), and token counting for the
tokens/s and trained-tokens/s logs.

Nothing heavy is imported at module level: ``register_cli`` runs for every ``fastsft`` command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from ._core import FastSFTError
from .data.manifest import sha256_file
from .errors import exit_code_for
from .train_exit import EXIT_ERROR, EXIT_INTERRUPTED, TrainInterrupted, interrupted_message, is_user_error, one_line, resolve_resume

DEEPSPEED_PRESETS = {"zero2": "zero2.json", "zero3": "zero3.json", "zero3-offload": "zero3_offload.json"}
SUMMARY_FILE = "train_summary.json"


class TrainSetupError(FastSFTError):
    """The data, model or options cannot train together (the message says why and what to do)."""


def _opt(flag: str, help: str, **argparse_kw: Any) -> dict[str, Any]:
    return {"flag": flag, "help": help, "argparse": argparse_kw}


@dataclass
class TrainOptions:
    """Everything ``fastsft train`` takes; each field's help is its ``--help`` line."""

    data: list[str] = field(
        default_factory=list,
        metadata=_opt("--data", "prepared dataset directories (or parents of shard directories)", nargs="+", required=True, metavar="DIR"),
    )
    model: str = field(default="", metadata=_opt("--model", "local model directory (config, weights, tokenizer.json)", required=True, metavar="DIR"))
    output: str = field(default="", metadata=_opt("--output", "directory for checkpoints and the final model", required=True, metavar="DIR"))
    eval_data: list[str] | None = field(default=None, metadata=_opt("--eval-data", "prepared datasets to evaluate on", nargs="+", metavar="DIR"))
    eval_split: float = field(
        default=0.0, metadata=_opt("--eval-split", "hold out this fraction (<1) or number (>=1) of training samples for eval", type=float)
    )
    epochs: float = field(default=1.0, metadata=_opt("--epochs", "number of passes over the data", type=float))
    max_steps: int = field(default=-1, metadata=_opt("--max-steps", "stop after this many optimizer steps (overrides --epochs)", type=int))
    lr: float = field(default=2e-5, metadata=_opt("--lr", "peak learning rate", type=float))
    lr_scheduler: str = field(
        default="cosine", metadata=_opt("--lr-scheduler", "schedule after warm-up (any transformers SchedulerType)")
    )
    warmup: float = field(default=0.03, metadata=_opt("--warmup", "warm-up steps (>=1) or fraction of all steps (<1)", type=float))
    weight_decay: float = field(default=0.0, metadata=_opt("--weight-decay", "AdamW weight decay", type=float))
    max_grad_norm: float = field(default=1.0, metadata=_opt("--max-grad-norm", "gradient clipping norm", type=float))
    batch_size: int = field(
        default=4, metadata=_opt("--batch-size", "per-device batch: samples (pad) or packs (--packing) per step", type=int)
    )
    grad_accum: int = field(default=1, metadata=_opt("--grad-accum", "gradient accumulation steps", type=int))
    seed: int = field(default=42, metadata=_opt("--seed", "random seed (data order, dropout, LoRA init)", type=int))
    precision: str = field(
        default="auto",
        metadata=_opt("--precision", "auto: bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU", choices=["auto", "bf16", "fp16", "fp32"]),
    )
    gradient_checkpointing: bool = field(
        default=False, metadata=_opt("--gradient-checkpointing", "recompute activations in backward (less memory)", action="store_true")
    )
    logging_steps: int = field(default=10, metadata=_opt("--logging-steps", "log every N steps", type=int))
    save_steps: int = field(default=500, metadata=_opt("--save-steps", "checkpoint every N steps", type=int))
    save_total_limit: int | None = field(default=None, metadata=_opt("--save-total-limit", "keep at most N checkpoints", type=int))
    eval_steps: int | None = field(default=None, metadata=_opt("--eval-steps", "evaluate every N steps (default: --save-steps)", type=int))
    resume: str | None = field(
        default=None,
        metadata=_opt("--resume", "resume from the latest checkpoint in --output, or from the checkpoint given", nargs="?", const="latest", metavar="CHECKPOINT"),
    )
    deepspeed: str | None = field(
        default=None, metadata=_opt("--deepspeed", "zero2, zero3, zero3-offload (shipped presets) or a DeepSpeed JSON file", metavar="PRESET|FILE")
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
    local_rank: int = field(default=-1, metadata=_opt("--local_rank", "set by the deepspeed launcher (the rank is read from LOCAL_RANK)", type=int, metavar="N"))


# ------------------------------------------------------------------------------------------------
# checks


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
            raise TrainSetupError(f"{flag} {value}: must be at least {low}")
    if not opts.lr > 0:
        raise TrainSetupError(f"--lr {opts.lr}: must be positive")
    if opts.max_steps == 0 or opts.max_steps < -1:
        raise TrainSetupError(f"--max-steps {opts.max_steps}: must be positive (or -1: use --epochs)")
    if opts.max_steps == -1 and not opts.epochs > 0:
        raise TrainSetupError(f"--epochs {opts.epochs}: must be positive (or give --max-steps)")


def check_data_fits_model(dataset: Any, model_dir: str | Path, embedding_rows: int | None = None) -> None:
    """Refuse data made with another tokenizer, or with ids the model cannot embed.

    ``embedding_rows`` is the model's input-embedding size when known; otherwise ``config.json``'s
    ``vocab_size`` is used.
    """
    model_dir = Path(model_dir)
    tok = model_dir / "tokenizer.json"
    if not tok.is_file():
        raise TrainSetupError(
            f"{model_dir}: no tokenizer.json, so the data's tokenizer cannot be checked; "
            "copy the tokenizer files the data was prepared with into the model directory"
        )
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
            raise TrainSetupError(f"{model_dir}: no config.json; --model must be a model directory (config.json, weights, tokenizer.json)")
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        embedding_rows = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    if embedding_rows is not None and dataset.vocab_size is not None and dataset.vocab_size > embedding_rows:
        raise TrainSetupError(
            f"vocabulary too large: {dataset.dirs[0]} uses a vocabulary of {dataset.vocab_size} tokens, "
            f"but {model_dir} embeds only {embedding_rows}; resize the model's embeddings first"
        )


# ------------------------------------------------------------------------------------------------
# environment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_distributed_env(use_deepspeed: bool) -> None:
    """Make a launcher-less DeepSpeed run a world of one (else DeepSpeed goes looking for MPI).

    Also puts the running Python's ``bin`` on ``PATH`` when ``ninja`` is installed there but not
    on ``PATH`` (a venv used without activation): DeepSpeed JIT-compiles its ops with it.
    """
    if not use_deepspeed:
        return
    bindir = str(Path(sys.executable).parent)
    if shutil.which("ninja") is None and shutil.which("ninja", path=bindir):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    if "RANK" in os.environ:
        return
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
        MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"), MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())),
    )  # fmt: skip


def init_deepspeed_comm(cuda: bool) -> None:
    """Start DeepSpeed's communication (``deepspeed.comm``) for this process's launcher world.

    Must run before ``TrainingArguments`` and before the model loads. With ZeRO-3,
    ``from_pretrained`` builds the model inside ``deepspeed.zero.Init``, whose ``DeepSpeedConfig``
    asks ``deepspeed.comm`` for the world size; when ``deepspeed.comm`` is not started it silently
    assumes a world of one, and the batch sizes that ``TrainingArguments`` filled in for the real
    world (``train_batch_size = micro x accum x world``) fail DeepSpeed's check. On GPUs accelerate
    starts ``deepspeed.comm`` as a side effect of ``TrainingArguments``; with ``use_cpu`` it starts
    only ``torch.distributed``, so 2 CPU processes crashed there. Starting it here, on every
    device, makes CPU and GPU runs take the same path; accelerate then reuses the process group.
    """
    import deepspeed

    # gloo on CPU: what accelerate would pick without oneCCL, and what the CPU tests use
    deepspeed.init_distributed(dist_backend=None if cuda else "gloo", auto_mpi_discovery=False, verbose=False)


def deepspeed_config(spec: str | None) -> dict[str, Any] | None:
    """The DeepSpeed config for ``--deepspeed``: a shipped preset by name, or a JSON file."""
    if spec is None:
        return None
    if spec in DEEPSPEED_PRESETS:
        text = resources.files("fastsft").joinpath("deepspeed", DEEPSPEED_PRESETS[spec]).read_text(encoding="utf-8")
        return json.loads(text)
    path = Path(spec)
    if not path.is_file():
        raise TrainSetupError(f"--deepspeed {spec}: neither a preset ({', '.join(DEEPSPEED_PRESETS)}) nor a file")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainSetupError(f"--deepspeed {spec}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise TrainSetupError(f"--deepspeed {spec}: expected a JSON object (a DeepSpeed config)")
    return config


def resolve_precision(precision: str, cuda: bool, bf16_ok: bool) -> str:
    """``auto`` -> bf16 on GPUs with bf16, fp16 on older GPUs, fp32 on CPU; others pass through."""
    if precision == "fp16" and not cuda:
        raise TrainSetupError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    if precision != "auto":
        return precision
    if not cuda:
        return "fp32"
    return "bf16" if bf16_ok else "fp16"


def _flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# trainer


def _trainer_class():
    """The Trainer subclass (built lazily: importing transformers takes seconds)."""
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class FastSFTTrainer(Trainer):
        """``Trainer`` + length-grouped sampling from known lengths + token-rate logging."""

        def __init__(self, *args: Any, train_lengths=None, pack_fill: float | None = None, **kw: Any):
            super().__init__(*args, **kw)
            self._fs_lengths = None if train_lengths is None else [int(x) for x in train_lengths]
            self._fs_pack_fill = pack_fill
            # [real tokens, trained tokens, slots] since the last log and in total (this process)
            self._fs_interval = torch.zeros(3, dtype=torch.int64)
            self._fs_total = torch.zeros(3, dtype=torch.int64)
            self._fs_t_log: float | None = None
            self._fs_excluded = 0.0  # seconds spent in eval/checkpointing inside the current interval
            self.fs_summary: dict[str, Any] = {}

        def _get_train_sampler(self, train_dataset=None):
            if self._fs_lengths is None:
                return super()._get_train_sampler(train_dataset)
            # group by the global batch: each process then takes its share of similar lengths, and
            # N processes x B see the same samples per step as one process x N*B
            bs = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            return LengthGroupedSampler(bs, lengths=self._fs_lengths)

        def training_step(self, model, inputs, num_items_in_batch=None):
            if self._fs_t_log is None:
                self._fs_t_log = time.perf_counter()
                self.fs_summary["start_step"] = self.state.global_step  # > 0 when resumed
            ids, labels = inputs["input_ids"], inputs["labels"]
            real = inputs["attention_mask"].sum() if "attention_mask" in inputs else ids.numel()
            trained = (labels[..., 1:] != -100).sum()
            self._fs_interval += torch.tensor([int(real), int(trained), ids.numel()])
            return super().training_step(model, inputs, num_items_in_batch)

        def evaluate(self, *args: Any, **kw: Any):
            t = time.perf_counter()
            try:
                return super().evaluate(*args, **kw)
            finally:
                self._fs_excluded += time.perf_counter() - t

        def _save_checkpoint(self, *args: Any, **kw: Any):
            t = time.perf_counter()
            try:
                return super()._save_checkpoint(*args, **kw)
            finally:
                self._fs_excluded += time.perf_counter() - t

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs or "train_runtime" in logs:  # called on every rank at once: reduce is safe
                counts = self.accelerator.reduce(self._fs_interval.to(self.args.device), "sum").cpu()
                self._fs_total += counts
                self._fs_interval.zero_()
                now = time.perf_counter()
                if "loss" in logs and self._fs_t_log is not None:
                    dt = max(now - self._fs_t_log - self._fs_excluded, 1e-9)
                    logs["tokens_per_second"] = round(int(counts[0]) / dt, 1)
                    logs["trained_tokens_per_second"] = round(int(counts[1]) / dt, 1)
                    self._add_fill(logs, counts)
                self._fs_t_log, self._fs_excluded = now, 0.0
                if "train_runtime" in logs:
                    tot = self._fs_total
                    rt = max(float(logs["train_runtime"]), 1e-9)
                    logs["train_tokens"] = int(tot[0])
                    logs["train_trained_tokens"] = int(tot[1])
                    logs["train_tokens_per_second"] = round(int(tot[0]) / rt, 1)
                    logs["train_trained_tokens_per_second"] = round(int(tot[1]) / rt, 1)
                    self._add_fill(logs, tot)
                    self.fs_summary.update(logs)
            super().log(logs, start_time)

        def _add_fill(self, logs: dict[str, float], counts) -> None:
            if self._fs_pack_fill is not None:
                logs["pack_fill"] = round(self._fs_pack_fill, 4)
            elif int(counts[2]):
                logs["padding_fraction"] = round(1 - int(counts[0]) / int(counts[2]), 4)

    return FastSFTTrainer


# ------------------------------------------------------------------------------------------------
# assembly


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

    report_to = _report_to(opts.report_to)

    from .data import PackedDataset, PackingCollator, PadCollator, SFTDataset, split_indices

    # --- data, checked against the model before anything is loaded
    dataset = SFTDataset(opts.data)
    check_data_fits_model(dataset, opts.model)
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
        raise TrainSetupError(f"--output {opts.output}: cannot create it ({e.strerror or e})") from None

    pack_fill = None
    if opts.packing:
        pack_len = opts.pack_len or int(dataset.lengths.max())
        train_items = PackedDataset(train_set, pack_len)
        eval_items = PackedDataset(eval_set, pack_len) if eval_set is not None else None
        pack_fill = train_items.packs.fill_ratio
        collator = PackingCollator()
    else:
        if opts.pack_len is not None:
            raise TrainSetupError("--pack-len needs --packing")
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


def _report_to(spec: str) -> list[str] | str:
    """``--report-to`` as the Trainer takes it; an integration whose package is missing is refused
    now, not after the model loads (the Trainer raises then)."""
    if spec in ("none", ""):
        return []
    if spec == "all":
        return "all"
    from transformers.integrations import get_available_reporting_integrations

    names = [n.strip() for n in spec.split(",") if n.strip()]
    available = get_available_reporting_integrations()
    missing = [n for n in names if n not in available]
    if missing:
        raise TrainSetupError(
            f"--report-to {spec}: {', '.join(missing)} not installed (pip install {' '.join(missing)}); "
            f"installed: {', '.join(available) or 'none'}"
        )
    return names


def _num_params(model: Any, trainable_only: bool = False) -> int:
    # ZeRO-3 leaves empty placeholders in the module; ds_numel is the real size
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad or not trainable_only)


def _pad_token_id(dataset: Any, model_dir: str) -> int:
    """The pad id: the dataset's pad token, else the model's pad/eos id, else 0 (never trained on)."""
    from .tiny_model import special_token_ids

    pad = dataset.manifests[0].pad_token
    if pad:
        from tokenizers import Tokenizer

        tid = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json")).token_to_id(pad)
        if tid is not None:
            return int(tid)
    ids = special_token_ids(model_dir)
    return int(ids["pad"] if ids["pad"] is not None else ids["eos"] if ids["eos"] is not None else 0)


def _apply_lora(model: Any, opts: TrainOptions) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise TrainSetupError("--lora-r needs peft: pip install -r requirements-train.txt") from e
    targets: str | list[str] = opts.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
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


def tiny_model_main(args: argparse.Namespace) -> int:
    from .tiny_model import build_tiny_model

    try:
        out = build_tiny_model(
            args.tokenizer, args.output, arch=args.arch, layers=args.layers, hidden=args.hidden,
            heads=args.heads, kv_heads=args.kv_heads, intermediate=args.intermediate, seed=args.seed,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"fastsft tiny-model: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


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


def finish_distributed() -> None:
    """Leave the process group together before the interpreter exits: every rank waits for the
    others, then the group and its communication threads are torn down. Exiting with the group
    alive let one rank of a finished 2-process ZeRO-3 run on CPU abort in teardown ("terminate
    called without an active exception", SIGABRT), failing the launcher after training was done."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


TRAIN_EPILOG = """\
examples:
  fastsft prep assets/corpora/llamafactory_alpaca_en_demo.jsonl.gz --tokenizer m/ -o data/ --max-len 1024
  fastsft train --data data/ --model m/ --output run/ --epochs 1 --lr 1e-5 --batch-size 8
  fastsft train --data data/ --model m/ --output run/ --packing --pack-len 4096 --deepspeed zero2
  torchrun --nproc-per-node 8 -m fastsft.cli train --data data/ --model m/ --output run/ --deepspeed zero3
  fastsft train --data data/ --model m/ --output run/ --resume          # continue from run/checkpoint-*
"""

TINY_EPILOG = """\
example:
  fastsft tiny-model --tokenizer assets/tokenizers/qwen2.5 -o tiny/ --layers 2 --hidden 64
  fastsft tiny-model --tokenizer assets/tokenizers/qwen2.5 -o q05/ --layers 24 --hidden 896 \\
      --heads 14 --kv-heads 2 --intermediate 4864      # Qwen2.5-0.5B's shape, random weights
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

    t = subparsers.add_parser(
        "tiny-model", help="write a small random model around a local tokenizer (tests, demos)",
        description="Write a small, randomly initialised causal LM with the given tokenizer.",
        epilog=TINY_EPILOG, formatter_class=fmt,
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


__all__ = ["TrainOptions", "TrainSetupError", "check_data_fits_model", "register_cli", "train"]
