"""The process a ``fastsft train`` run needs: a distributed world (of one without a launcher),
DeepSpeed's communication and config, the precision, the attention kernel, the loggers; and leaving
the world at the end. Heavy packages are imported inside the functions that need them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import MissingExtraError
from .train_options import TrainOptionError, TrainSetupError

DEEPSPEED_PRESETS = {"zero2": "zero2.json", "zero3": "zero3.json", "zero3-offload": "zero3_offload.json"}


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
        raise TrainOptionError(f"--deepspeed {spec}: neither a preset ({', '.join(DEEPSPEED_PRESETS)}) nor a file")
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
        raise TrainOptionError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
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


def reporting_integrations(spec: str) -> list[str] | str:
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
        raise MissingExtraError(
            f"--report-to {spec}: {', '.join(missing)} not installed (pip install {' '.join(missing)}); "
            f"installed: {', '.join(available) or 'none'}"
        )
    return names


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


__all__ = [
    "DEEPSPEED_PRESETS", "deepspeed_config", "finish_distributed", "init_deepspeed_comm", "prepare_distributed_env",
    "reporting_integrations", "resolve_precision",
]  # fmt: skip
