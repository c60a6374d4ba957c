"""Training throughput: fastsft train vs TRL's SFTTrainer, padded vs packed, same model and data.

Four runs, each in its own process (so peak memory is its own), on the same prepared dataset and
the same model, for the same number of optimizer steps:

- **fastsft pad**: ``fastsft.train.train`` (what ``fastsft train`` runs): length-grouped batches
  padded to the longest sample (rounded up to 8);
- **fastsft packed**: the same with ``--packing`` (best-fit-decreasing packs of ``pack_len``
  tokens, ``position_ids`` restarting per sample, no padding);
- **TRL pad**: ``trl.SFTTrainer`` on ``fastsft.to_hf_dataset`` (the same tokens and labels),
  TRL's own collator padding each batch;
- **TRL packed**: the same with ``packing=True`` (TRL's BFD packing, padding-free, ``max_length``
  = ``pack_len``).

Reported per run: tokens/s (real tokens, padding excluded), trained tokens/s (tokens whose label
the loss sees), the fraction of slots that are padding, peak memory (GPU: ``max_memory_allocated``;
CPU: the process's max RSS), and, on a GPU whose bf16 peak is in ``PEAK_BF16_TFLOPS``, MFU =
6 x parameters x tokens/s / peak (attention FLOPs excluded, as in the usual MFU numerator).
Times are HF ``Trainer``'s ``train_runtime`` for both (the whole loop, first step included);
tokens are counted in ``training_step`` by the same code for both. Each method runs ``--repeat``
times, the methods interleaved (ABCDABCD), and the fastest run of each is reported: on a shared
machine the fastest is the one least disturbed by other work.

Presets:

- ``cpu`` (default): a 1k-token BPE trained in-process on the shipped corpora (as the tests do),
  a 2-layer, hidden-64 Qwen2-shaped model from ``fastsft tiny-model``, fp32, sdpa; seconds a run.
- ``gpu``: Qwen2.5's tokenizer and a Qwen2.5-0.5B-shaped model from ``fastsft tiny-model``
  (24 layers, hidden 896, 14 heads, 2 KV heads, MLP 4864: ~494M parameters, random weights), bf16,
  flash-attention 2 (varlen, for packing) when installed, else sdpa.

    python benches/bench_train.py                 # cpu preset
    python benches/bench_train.py --preset gpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests"))

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(tokenizer="small-bpe", threads=1, layers=2, hidden=64, heads=4, kv_heads=2, intermediate=None, max_len=256,
                steps=30, batch=4, pack_len=1024, pack_batch=1, corpora=["llamafactory_alpaca_en_demo", "llamafactory_identity"]),
    "gpu": dict(tokenizer="qwen2.5", threads=None, layers=24, hidden=896, heads=14, kv_heads=2, intermediate=4864, max_len=2048,
                steps=40, batch=8, pack_len=8192, pack_batch=2, corpora=None),
}  # fmt: skip
"""Per preset: model shape, prep ``--max-len``, optimizer steps, samples per padded batch, pack
length and packs per packed batch (a packed batch holds about as many tokens as a padded one).
``threads``: torch CPU threads per run; 1 on CPU because a tiny model's steps are short parallel
regions that stall when another process holds a core (measured: the same run took 11 s and 33 s
on the shared 2-core machine with torch's default 2 threads)."""

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
"""Dense bf16 tensor-core peaks from NVIDIA's data sheets (SXM parts), matched in the device name."""

METHODS = ("fastsft pad", "fastsft packed", "TRL pad", "TRL packed")


# ------------------------------------------------------------------------------------------------
# setup (once, in the parent)


def prepare(preset: dict[str, Any], work: Path) -> tuple[Path, Path]:
    """Tokenizer, model and dataset for ``preset`` under ``work``; returns ``(model_dir, data_dir)``."""
    import fastsft
    from fastsft.tiny_model import build_tiny_model
    from train_helpers import CORPORA, QWEN_TOKENIZER, build_small_tokenizer

    if preset["tokenizer"] == "small-bpe":
        tok = build_small_tokenizer(work / "tokenizer")
    else:
        tok = QWEN_TOKENIZER
    model = build_tiny_model(
        tok, work / "model", layers=preset["layers"], hidden=preset["hidden"], heads=preset["heads"],
        kv_heads=preset["kv_heads"], intermediate=preset["intermediate"],
    )  # fmt: skip
    names = preset["corpora"]
    corpora = sorted(CORPORA.glob("*.jsonl.gz")) if names is None else [CORPORA / f"{n}.jsonl.gz" for n in names]
    data = work / "data"
    fastsft.prep([str(c) for c in corpora], str(tok), str(data), max_len=preset["max_len"], max_reject_fraction=1.0)
    return Path(model), data


# ------------------------------------------------------------------------------------------------
# one run (in a child process)


def _count(counts, inputs) -> None:
    """[real tokens, trained tokens, slots] of one batch, as ``fastsft.train`` counts them."""
    ids, labels = inputs["input_ids"], inputs["labels"]
    real = inputs["attention_mask"].sum() if "attention_mask" in inputs else ids.numel()
    counts[0] += int(real)
    counts[1] += int((labels[..., 1:] != -100).sum())
    counts[2] += ids.numel()


def run_fastsft(cfg: dict[str, Any], packed: bool) -> dict[str, Any]:
    from fastsft.train import TrainOptions, train

    opts = TrainOptions(
        data=[cfg["data"]], model=cfg["model"], output=cfg["out"], max_steps=cfg["steps"], lr=1e-4, warmup=0.0,
        batch_size=cfg["pack_batch"] if packed else cfg["batch"], packing=packed,
        pack_len=cfg["pack_len"] if packed else None, logging_steps=10, save_steps=10**9, seed=0,
    )  # fmt: skip
    s = train(opts)
    slots = s["train_tokens"] / (1 - s["padding_fraction"]) if s.get("padding_fraction") else s["train_tokens"]
    return dict(steps=s["global_step"], runtime=s["train_runtime"], tokens=s["train_tokens"],
                trained=s["train_trained_tokens"], slots=slots, params=s["num_parameters"],
                attn=s["attn_implementation"], final_loss=s["final_loss"])  # fmt: skip


def run_trl(cfg: dict[str, Any], packed: bool) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from fastsft.interop import to_hf_dataset
    from fastsft.train import _flash_attn_available, resolve_precision

    cuda = torch.cuda.is_available()
    precision = resolve_precision("auto", cuda, cuda and torch.cuda.is_bf16_supported())
    attn = "flash_attention_2" if packed and cuda and _flash_attn_available() else "sdpa"
    counts = [0, 0, 0]

    class CountingSFTTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            _count(counts, inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    args = SFTConfig(
        output_dir=cfg["out"], max_steps=cfg["steps"], learning_rate=1e-4, warmup_steps=0, lr_scheduler_type="cosine",
        per_device_train_batch_size=cfg["pack_batch"] if packed else cfg["batch"], seed=0,
        bf16=precision == "bf16", fp16=precision == "fp16", logging_steps=10, save_strategy="no", report_to="none",
        use_cpu=not cuda, dataloader_num_workers=2 if cuda else 0,
        max_length=cfg["pack_len"] if packed else None, packing=packed, packing_strategy="bfd",
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32, attn_implementation=attn)
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
    trainer = CountingSFTTrainer(model=model, args=args, train_dataset=to_hf_dataset(cfg["data"]), processing_class=tokenizer)
    metrics = trainer.train().metrics
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return dict(steps=trainer.state.global_step, runtime=metrics["train_runtime"], tokens=counts[0], trained=counts[1],
                slots=counts[2], params=sum(p.numel() for p in model.parameters()), attn=attn,
                final_loss=losses[-1] if losses else None)  # fmt: skip


def worker(method: str, cfg: dict[str, Any]) -> None:
    import torch

    packed = method.endswith("packed")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = (run_fastsft if method.startswith("fastsft") else run_trl)(cfg, packed)
    if torch.cuda.is_available():
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["peak_mem_kind"] = "GPU allocated"
        result["device"] = torch.cuda.get_device_name()
    else:
        result["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["peak_mem_kind"] = "max RSS"
        result["device"] = "cpu"
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------
# report


def peak_tflops(device: str) -> float | None:
    for name, tflops in PEAK_BF16_TFLOPS.items():
        if name in device:
            return tflops
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--steps", type=int, help="optimizer steps per run (default: the preset's)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD")
    ap.add_argument("--repeat", type=int, default=2, help="runs per method; the fastest is reported (default: 2)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (model, data, runs)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.config))
        return

    preset = dict(PRESETS[args.preset])
    if args.steps:
        preset["steps"] = args.steps
    work = Path(tempfile.mkdtemp(prefix="fastsft-bench-train-"))
    t = time.perf_counter()
    model, data = prepare(preset, work)
    setup_s = time.perf_counter() - t
    from fastsft.data import SFTDataset

    ds = SFTDataset(data)
    print(
        f"command: python benches/bench_train.py --preset {args.preset} --repeat {args.repeat}"
        + (f" --steps {args.steps}" if args.steps else "")
    )
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}; load average {os.getloadavg()}")
    print(f"date:    {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"data:    {len(ds):,} samples, {ds.num_tokens:,} tokens ({ds.num_trained_tokens:,} trained), longest {int(ds.lengths.max())}; "
          f"{preset['steps']} steps a run; torch threads {preset['threads'] or 'default'}; pad batch {preset['batch']}, packed batch {preset['pack_batch']} x {preset['pack_len']} tokens "
          f"(setup {setup_s:.0f} s)")  # fmt: skip

    best: dict[str, dict[str, Any]] = {}
    for run, method in [(r, m) for r in range(args.repeat) for m in args.methods]:
        cfg = dict(preset, model=str(model), data=str(data), out=str(work / f"{method.replace(' ', '-')}-{run}"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}
        if preset["threads"]:
            env["OMP_NUM_THREADS"] = str(preset["threads"])
        proc = subprocess.run([sys.executable, __file__, "--worker", method, "--config", json.dumps(cfg)],
                              capture_output=True, text=True, env=env)  # fmt: skip
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{method}: failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        if method not in best or result["runtime"] < best[method]["runtime"]:
            best[method] = result
    rows = [(m, best[m]) for m in args.methods if m in best]

    if rows:
        device = rows[0][1]["device"]
        peak = peak_tflops(device)
        print(
            f"device:  {device}; params {rows[0][1]['params'] / 1e6:.2f}M"
            + (f"; MFU against {peak} TFLOPS bf16 dense" if peak else "; MFU: - (no known peak for this device)")
        )
        print()
        print(
            f"| method | attention | steps | s | tokens/s | trained tokens/s | padding | peak mem MB ({rows[0][1]['peak_mem_kind']}) | MFU | final loss |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for method, r in rows:
            tps = r["tokens"] / r["runtime"]
            mfu = f"{6 * r['params'] * tps / (peak * 1e12):.1%}" if peak else "-"
            pad = 1 - r["tokens"] / r["slots"] if r["slots"] else 0.0
            loss = f"{r['final_loss']:.3f}" if r["final_loss"] is not None else "-"
            print(f"| {method} | {r['attn']} | {r['steps']} | {r['runtime']:.2f} | {tps:,.0f} | {r['trained'] / r['runtime']:,.0f} | "
                  f"{pad:.1%} | {r['peak_mem_mb']:,.0f} | {mfu} | {loss} |")  # fmt: skip
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
