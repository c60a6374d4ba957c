"""``fastsft train`` and ``fastsft tiny-model`` on the CPU.

Tokenizer choice (measured on this 2-core machine): with Qwen2.5's 152k vocabulary a hidden-64,
2-layer model takes 0.5-4 s a step (the logits are batch x seq x vocab); with a 1k-token BPE
trained in-process on the shipped corpora (Qwen2.5's pre-tokenizer, special tokens and chat
template) 36 steps of batch 4 x 256 tokens take ~4 s. So the training tests use the small
tokenizer, a Qwen2-shaped tiny model, and data made by `fastsft prep` from shipped corpora; the
tokenizer-mismatch tests use the real Qwen2.5 tokenizer file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastsft.data import sha256_file
from fastsft.train import TrainOptions, TrainSetupError, check_data_fits_model, register_cli, train
from train_helpers import QWEN_TOKENIZER, ROOT, build_small_tokenizer, losses, random_samples, train_corpora, write_dataset

COMMON = {"lr": 3e-3, "warmup": 0.0, "batch_size": 4, "logging_steps": 1, "save_steps": 1000}


@pytest.fixture(scope="session")
def small_tok(tmp_path_factory) -> Path:
    return build_small_tokenizer(tmp_path_factory.mktemp("tok") / "small")


@pytest.fixture(scope="session")
def tiny_model(small_tok, tmp_path_factory) -> Path:
    from fastsft.tiny_model import build_tiny_model

    return build_tiny_model(small_tok, tmp_path_factory.mktemp("model") / "tiny", layers=2, hidden=64)


@pytest.fixture(scope="session")
def small_data(small_tok, tmp_path_factory) -> Path:
    import fastsft

    out = tmp_path_factory.mktemp("data") / "alpaca_identity"
    fastsft.prep([str(p) for p in train_corpora()], str(small_tok), str(out), max_len=256)
    return out


def _opts(data, model, out, **kw) -> TrainOptions:
    return TrainOptions(data=[str(data)], model=str(model), output=str(out), **{**COMMON, **kw})


def _parser():
    p = argparse.ArgumentParser(prog="fastsft")
    register_cli(p.add_subparsers(dest="command", required=True))
    return p


# -- refusals (no training) -----------------------------------------------------------------------


@pytest.fixture
def qwen_model_dir(tmp_path) -> Path:
    """A model directory with Qwen2.5's tokenizer.json and a config; no weights are needed to refuse."""
    d = tmp_path / "qwen_model"
    d.mkdir()
    shutil.copyfile(QWEN_TOKENIZER / "tokenizer.json", d / "tokenizer.json")
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2", "vocab_size": 151936}))
    return d


def test_mismatched_tokenizer_refused(tmp_path, qwen_model_dir):
    from fastsft.data import SFTDataset

    data = write_dataset(tmp_path / "data", random_samples(4), tokenizer_sha256="ab" * 32)
    qwen_sha = sha256_file(QWEN_TOKENIZER / "tokenizer.json")
    with pytest.raises(TrainSetupError) as err:
        check_data_fits_model(SFTDataset(data), qwen_model_dir)
    msg = str(err.value)
    assert msg.startswith("tokenizer mismatch: ")
    assert f"{data} was prepared with a tokenizer.json of sha256 {'ab' * 32}" in msg
    assert f"{qwen_model_dir / 'tokenizer.json'} has sha256 {qwen_sha}" in msg
    assert f"fastsft prep --tokenizer {qwen_model_dir}" in msg

    # through the command line: exit status 3 (an input that does not fit) and the same message, before any model is loaded
    args = _parser().parse_args(["train", "--data", str(data), "--model", str(qwen_model_dir), "-o", str(tmp_path / "o")])
    from fastsft.train import train_main

    assert train_main(args) == 3
    assert not (tmp_path / "o").exists()


def test_matching_tokenizer_accepted_and_vocab_checked(tmp_path, qwen_model_dir):
    from fastsft.data import SFTDataset

    sha = sha256_file(QWEN_TOKENIZER / "tokenizer.json")
    ok = write_dataset(tmp_path / "ok", random_samples(4), tokenizer_sha256=sha, vocab_size=151665)
    check_data_fits_model(SFTDataset(ok), qwen_model_dir)  # no error
    with pytest.raises(TrainSetupError, match=r"uses a vocabulary of 151665 tokens, but .* embeds only 1000"):
        check_data_fits_model(SFTDataset(ok), qwen_model_dir, embedding_rows=1000)
    big = write_dataset(tmp_path / "big", random_samples(4), tokenizer_sha256=sha, vocab_size=200000)
    with pytest.raises(TrainSetupError, match=r"vocabulary too large: .* 200000 tokens, but .* embeds only 151936"):
        check_data_fits_model(SFTDataset(big), qwen_model_dir)
    os.remove(qwen_model_dir / "tokenizer.json")
    with pytest.raises(TrainSetupError, match=r"no tokenizer\.json"):
        check_data_fits_model(SFTDataset(ok), qwen_model_dir)


def test_cli_help_and_launcher_args():
    p = _parser()
    for cmd in ("train", "tiny-model"):
        sub = p._subparsers._group_actions[0].choices[cmd]
        assert "example" in sub.format_help()
    a = p.parse_args(["train", "--data", "a", "b", "--model", "m", "-o", "o", "--local_rank=1", "--resume"])
    assert a.data == ["a", "b"] and a.local_rank == 1 and a.resume == "latest" and a.func.__name__ == "train_main"
    a = p.parse_args(["train", "--data", "a", "--model", "m", "--output", "o", "--local-rank", "0", "--resume", "ck"])
    assert a.resume == "ck" and a.packing is False and a.deepspeed is None
    assert TrainOptions(**{k: getattr(a, k) for k in TrainOptions.__dataclass_fields__}).batch_size == 4


def test_deepspeed_presets_leave_auto_values_and_no_optimizer():
    from fastsft.train import deepspeed_config

    for name, stage in (("zero2", 2), ("zero3", 3), ("zero3-offload", 3)):
        cfg = deepspeed_config(name)
        assert cfg["zero_optimization"]["stage"] == stage
        assert cfg["train_micro_batch_size_per_gpu"] == "auto" and cfg["bf16"]["enabled"] == "auto"
        assert "optimizer" not in cfg and "scheduler" not in cfg  # the Trainer's AdamW: no fused-Adam build
    assert deepspeed_config("zero3")["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert deepspeed_config("zero3-offload")["zero_optimization"]["offload_param"]["device"] == "cpu"
    with pytest.raises(TrainSetupError, match="neither a preset"):
        deepspeed_config("zero9")


# -- tiny-model -------------------------------------------------------------------------------------


def test_tiny_model_keeps_tokenizer_bytes(small_tok, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from fastsft.tiny_model import tokenizer_vocab_size

    args = _parser().parse_args(
        [
            "tiny-model",
            "--tokenizer",
            str(small_tok),
            "-o",
            str(tmp_path / "m"),
            "--arch",
            "llama",
            "--layers",
            "1",
            "--hidden",
            "32",
        ]
    )
    assert args.func(args) == 0
    assert sha256_file(tmp_path / "m" / "tokenizer.json") == sha256_file(small_tok / "tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    n_tok = tokenizer_vocab_size(small_tok)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 1
    rows = model.get_input_embeddings().num_embeddings
    assert rows % 64 == 0 and n_tok <= rows < n_tok + 64
    from tokenizers import Tokenizer

    im_end = Tokenizer.from_file(str(small_tok / "tokenizer.json")).token_to_id("<|im_end|>")
    assert model.config.eos_token_id == im_end is not None  # Qwen2.5's eos_token, in the small vocabulary
    out = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=False)
    assert out.logits.shape == (1, 3, rows)


# -- training ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_loss_decreases_checkpoint_and_resume(small_data, tiny_model, tmp_path):
    s = train(_opts(small_data, tiny_model, tmp_path / "run", max_steps=36, save_steps=18))
    loss = losses(s)
    assert sorted(loss) == list(range(1, 37))
    first, last = np.mean([loss[i] for i in range(1, 6)]), np.mean([loss[i] for i in range(32, 37)])
    print(f"\nloss: first five {first:.3f}, last five {last:.3f}")
    assert first > 6.5  # ~ln(vocab) at random init
    assert last < first - 0.75, (first, last)
    assert s["train_tokens"] > 0 and 0 < s["train_trained_tokens"] < s["train_tokens"]
    assert 0 <= s["padding_fraction"] < 0.1  # length-grouped batches pad little
    for step in (18, 36):
        assert (tmp_path / "run" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    logged = json.loads((tmp_path / "run" / "checkpoint-18" / "trainer_state.json").read_text())["log_history"]
    for h in (h for h in logged if "loss" in h):
        assert h["tokens_per_second"] > 0 and 0 < h["trained_tokens_per_second"] < h["tokens_per_second"]
        assert 0 <= h["padding_fraction"] < 1 and "learning_rate" in h
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert sha256_file(tmp_path / "run" / "tokenizer.json") == sha256_file(tiny_model / "tokenizer.json")

    # resume from step 18 into another directory: steps 19..36 again, on the same batches
    r = train(_opts(small_data, tiny_model, tmp_path / "resumed", max_steps=36, save_steps=18,
                    resume=str(tmp_path / "run" / "checkpoint-18")))  # fmt: skip
    again = losses(r)  # the history of steps 1..18 comes back from the checkpoint
    assert r["start_step"] == 18 and r["global_step"] == 36  # continued from the saved step, not from zero
    assert sorted(again) == list(range(1, 37))
    worst = max(abs(again[i] - loss[i]) for i in range(19, 37))
    assert worst < 1e-4, worst

    # `--resume` with no path takes the latest checkpoint in --output
    r2 = train(_opts(small_data, tiny_model, tmp_path / "run", max_steps=38, save_steps=18, resume="latest"))
    assert r2["start_step"] == 36 and sorted(losses(r2))[-3:] == [36, 37, 38]


@pytest.mark.slow
def test_packing_training_with_eval_split(small_data, tiny_model, tmp_path):
    s = train(_opts(small_data, tiny_model, tmp_path / "packed", max_steps=12, packing=True, pack_len=512,
                    batch_size=2, eval_split=0.05, eval_steps=6))  # fmt: skip
    loss = losses(s)
    assert sorted(loss) == list(range(1, 13))
    assert loss[12] < loss[1] - 0.5
    assert 0.95 < s["pack_fill"] <= 1.0  # 256-token samples into 512-token packs
    assert "eval_loss" in s and np.isfinite(s["eval_loss"])
    assert 0.9 * 12 * 2 * 512 <= s["train_tokens"] <= 12 * 2 * 512  # padding-free: only real tokens count


@pytest.mark.slow
def test_lora_trains_adapters_only(small_data, tiny_model, tmp_path):
    s = train(_opts(small_data, tiny_model, tmp_path / "lora", max_steps=4, lora_r=4, lora_targets="q_proj,v_proj",
                    gradient_checkpointing=True))  # fmt: skip
    assert len(losses(s)) == 4
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()


@pytest.fixture(scope="session")
def identity_data(small_tok, tmp_path_factory) -> Path:
    import fastsft

    out = tmp_path_factory.mktemp("data") / "identity"
    fastsft.prep([str(train_corpora()[1])], str(small_tok), str(out), max_len=256)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("packing", [False, True])
def test_token_counts_over_one_epoch(identity_data, tiny_model, tmp_path, packing):
    """One epoch sees every training sample once: the logged token counts must be exact."""
    from fastsft.data import SFTDataset, split_indices

    extra = {"packing": True, "pack_len": 512} if packing else {}
    s = train(_opts(identity_data, tiny_model, tmp_path / "o", epochs=1, eval_split=0.1, seed=3, **extra))
    ds = SFTDataset(identity_data)
    train_idx, _ = split_indices(len(ds), 0.1, seed=3)
    tokens = int(ds.lengths[train_idx].sum())
    # a sample's first token is never a target (nothing precedes it), whatever its mask says
    trained = sum(int(ds.raw(int(i))[1][1:].sum()) for i in train_idx)
    assert (s["train_tokens"], s["train_trained_tokens"]) == (tokens, trained)
    if packing:
        from fastsft.data import pack

        n_packs = len(pack(ds.lengths[train_idx], 512))
        assert s["global_step"] == -(-n_packs // 4)
        assert s["pack_fill"] == pytest.approx(tokens / (n_packs * 512), abs=1e-4)
    else:
        assert s["global_step"] == -(-len(train_idx) // 4)
        assert 0 <= s["padding_fraction"] < 0.5


def _run_cli(args: list[str], env_extra: dict | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``fastsft train ARGS``; ``launcher`` is the command up to the module name (ending in
    ``-m`` or the deepspeed launcher's ``--module``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(env_extra or {})
    cmd = (launcher or [sys.executable, "-m"]) + ["fastsft.cli", "train", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return res


def _cli_args(data, model, out, steps=6, batch=4):
    return ["--data", str(data), "--model", str(model), "-o", str(out), "--max-steps", str(steps),
            "--batch-size", str(batch), "--lr", "3e-3", "--warmup", "0", "--logging-steps", "1",
            "--save-steps", "1000"]  # fmt: skip


# ZeRO partitions and flattens the same fp32 math. One process: no reduction at all, losses agree
# to float rounding (measured: identical). Two processes: gradients are summed across ranks by
# gloo in another order; losses drift by summation order only (measured: <= 5e-7 over 4 steps for
# ZeRO-2 and ZeRO-3, under torchrun and the deepspeed launcher).
DS_TOL_ONE_PROCESS = 1e-5
DS_TOL_TWO_PROCESSES = 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_cpu_matches_plain_run(small_data, tiny_model, tmp_path, stage):
    from transformers import AutoModelForCausalLM

    plain = train(_opts(small_data, tiny_model, tmp_path / "plain", max_steps=6))
    res = _run_cli([*_cli_args(small_data, tiny_model, tmp_path / stage), "--deepspeed", stage])
    assert f"deepspeed ZeRO-{stage[-1]}" in res.stderr  # the banner: DeepSpeed really ran
    ds = json.loads((tmp_path / stage / "train_summary.json").read_text())
    a, b = losses(plain), losses(ds)
    assert sorted(b) == list(range(1, 7))
    worst = max(abs(a[i] - b[i]) for i in a)
    print(f"\n{stage}: max |loss - plain loss| over 6 steps = {worst:.2e}")
    assert worst < DS_TOL_ONE_PROCESS
    assert ds["deepspeed"] == stage and ds["world_size"] == 1
    assert ds["num_parameters"] == plain["num_parameters"]
    # the saved model loads (ZeRO-3 gathers the weights on save) and is close to the plain run's
    m_plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    m_ds = AutoModelForCausalLM.from_pretrained(tmp_path / stage)
    p_plain, p_ds = dict(m_plain.named_parameters()), dict(m_ds.named_parameters())
    assert set(p_plain) == set(p_ds)
    assert all(p_ds[k].numel() == p_plain[k].numel() > 0 for k in p_plain)  # not ZeRO-3 placeholders
    diff = max((p_plain[k] - p_ds[k]).abs().max().item() for k in p_plain)
    moved = max(
        (p_plain[k] - q).abs().max().item() for k, q in AutoModelForCausalLM.from_pretrained(tiny_model).named_parameters()
    )
    assert diff < 1e-4 < moved, (diff, moved)


@pytest.fixture(scope="module")
def plain_four_steps(small_data, tiny_model, tmp_path_factory) -> dict:
    """One process, batch 4, 4 steps: what every two-process run below must reproduce."""
    return train(_opts(small_data, tiny_model, tmp_path_factory.mktemp("plain"), max_steps=4))


def _two_process_launcher(name: str) -> list[str]:
    from fastsft.train import _free_port

    port = str(_free_port())
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port, "-m"]
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", port, "--module"]


@pytest.mark.slow
@pytest.mark.parametrize(("launcher", "stage"), [("torchrun", "zero2"), ("torchrun", "zero3"), ("deepspeed", "zero3")])
def test_two_processes_match_one(small_data, tiny_model, plain_four_steps, tmp_path, launcher, stage):
    """2 processes x batch 2 see the same samples per step as 1 x 4 (length groups are global).

    ZeRO-3 is the case that needs DeepSpeed's communication started before the model loads
    (``init_deepspeed_comm``): the weights are partitioned across the 2 ranks inside
    ``from_pretrained``. zero3-offload takes the same path plus DeepSpeed's CPU Adam, whose
    first use compiles a C++ op for minutes, so it is run by hand, not in the suite.
    """
    out = tmp_path / f"{launcher}-{stage}"
    res = _run_cli([*_cli_args(small_data, tiny_model, out, steps=4, batch=2), "--deepspeed", stage],
                   env_extra={"OMP_NUM_THREADS": "1"}, launcher=_two_process_launcher(launcher))  # fmt: skip
    assert f"deepspeed ZeRO-{stage[-1]}" in res.stderr + res.stdout
    s = json.loads((out / "train_summary.json").read_text())
    assert s["world_size"] == 2
    a, b = losses(plain_four_steps), losses(s)
    assert sorted(b) == [1, 2, 3, 4]
    worst = max(abs(a[i] - b[i]) for i in a)
    print(f"\n{launcher} x2 {stage}: max |loss - one-process loss| over 4 steps = {worst:.2e}")
    assert worst < DS_TOL_TWO_PROCESSES
    assert s["train_tokens"] == plain_four_steps["train_tokens"]
    assert s["num_parameters"] == plain_four_steps["num_parameters"]  # ZeRO-3: real sizes, not placeholders


@pytest.mark.slow
def test_ctrl_c_names_the_checkpoint_kept_and_resume_continues_from_it(small_data, tiny_model, tmp_path):
    """SIGINT mid-training: exit 130, one line naming the last complete checkpoint and --resume,
    no traceback; `--resume` then continues from that checkpoint (skipping one cut short)."""
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastsft.cli", "train", *_cli_args(small_data, tiny_model, out, steps=100000)]
    cmd[cmd.index("--save-steps") + 1] = "3"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    from subprocess_signals import sigint_as_at_a_terminal

    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, preexec_fn=sigint_as_at_a_terminal
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (out / "checkpoint-6" / "trainer_state.json").is_file():
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    said = [ln for ln in stderr.splitlines() if ln.startswith("fastsft train: interrupted")]
    assert len(said) == 1, stderr[-3000:]
    done = sorted(
        (p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()), key=lambda p: int(p.name.split("-")[1])
    )
    last = done[-1]
    assert int(last.name.split("-")[1]) >= 6
    assert f"kept {last} (the last checkpoint); resume with the same command plus --resume (or --resume {last})" in said[0]
    assert "at step " in said[0]

    # a checkpoint cut short (no trainer_state.json) is not what --resume takes
    (out / "checkpoint-99999").mkdir()
    step = int(last.name.split("-")[1])
    r = train(_opts(small_data, tiny_model, out, max_steps=step + 1, save_steps=100000, resume="latest"))
    assert r["start_step"] == step and r["global_step"] == step + 1


# (case, extra flags, what the one line says); {tmp} is the test's directory
# (name, flags, message, exit code: 2 usage, 3 input, 5 output; fastsft/errors.py)
USER_ERRORS = [
    ("zero grad accum", ["--grad-accum", "0"], "--grad-accum 0: must be at least 1", 2),
    ("zero max steps", ["--max-steps", "0"], "--max-steps 0: must be positive", 2),
    ("deepspeed file not JSON", ["--deepspeed", "{tmp}/bad.json"], "--deepspeed {tmp}/bad.json: not valid JSON", 3),
    ("resume without checkpoint", ["--resume"], "--resume: no complete checkpoint in {tmp}/run", 3),
    ("resume from a non-checkpoint", ["--resume", "{tmp}"], "--resume {tmp}: not a complete checkpoint", 3),
    ("output under a file", ["-o", "{tmp}/bad.json/run"], "--output {tmp}/bad.json/run: cannot create it (Not a directory)", 5),
    ("model without config", ["--model", "{tmp}/model"], "{tmp}/model: no config.json", 3),
    ("report to a missing package", ["--report-to", "wandb"], "--report-to wandb: wandb not installed (pip install wandb)", 2),
]


@pytest.mark.parametrize(("flags", "says", "code"), [c[1:] for c in USER_ERRORS], ids=[c[0] for c in USER_ERRORS])
def test_user_errors_are_one_line_with_their_exit_code(small_data, tiny_model, tmp_path, capsys, flags, says, code):
    import importlib.util

    from fastsft.cli import main

    if "wandb" in flags and importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "model").mkdir()
    shutil.copyfile(tiny_model / "tokenizer.json", tmp_path / "model" / "tokenizer.json")
    args = ["train", "--data", str(small_data), "--model", str(tiny_model), "-o", str(tmp_path / "run"), "--max-steps", "1"]
    assert main(args + [f.format(tmp=tmp_path) for f in flags]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastsft train: error: " + says.format(tmp=tmp_path)), err[-3:]
