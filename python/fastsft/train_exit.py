"""How ``fastsft train`` stops when it cannot finish: a one-line error (fastsft's own errors with the
exit code of their kind, ``fastsft/errors.py``; a library's error the user caused with 2) or Ctrl-C
(exit 130).

A user can cause: bad options, damaged or mismatched data, an incomplete model directory, a
missing optional package (peft, flash-attn, wandb), a batch that does not fit in memory. Each is
reported as one line saying what is wrong. Anything else is a bug in fastsft or a library and
keeps its traceback.

Ctrl-C says what was kept, the last complete checkpoint in ``--output``, and how to resume. A
checkpoint counts as complete once its ``trainer_state.json`` exists: the Trainer writes it after
the weights, optimizer and RNG states, so a checkpoint cut short by Ctrl-C or a kill lacks it.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastsft._core import FastSFTError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C inside the training loop, with the optimizer step it reached."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


def is_user_error(error: BaseException) -> bool:
    """True for errors that come from what the user gave (see the module docstring)."""
    if isinstance(error, (FastSFTError, ValueError, OSError, ImportError)):
        return True
    try:
        import torch
    except ImportError:
        return False
    return isinstance(error, torch.OutOfMemoryError)


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (libraries' messages often span several)."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__
    if type(error).__name__ == "OutOfMemoryError":
        return f"out of memory ({text}); lower --batch-size or --pack-len, add --gradient-checkpointing, or use --deepspeed zero3"
    if isinstance(error, ModuleNotFoundError) and error.name and "pip install" not in text:
        return f"{text} (pip install {error.name.split('.')[0]}; the training extras: pip install -r requirements-train.txt)"
    return text


def complete_checkpoints(output: str | Path) -> list[Path]:
    """``output``'s ``checkpoint-N`` directories that hold ``trainer_state.json``, by step."""
    out = Path(output)
    if not out.is_dir():
        return []
    found = []
    for child in out.iterdir():
        m = _CHECKPOINT.match(child.name)
        if m and (child / "trainer_state.json").is_file():
            found.append((int(m.group(1)), child))
    return [path for _, path in sorted(found)]


def resolve_resume(resume: str | None, output: str | Path) -> str | None:
    """The checkpoint ``--resume`` means: ``latest`` is the last complete one in ``output``
    (the Trainer's own choice, the highest number, may be one that Ctrl-C cut short)."""
    from fastsft.train_options import TrainSetupError

    if resume is None:
        return None
    if resume == "latest":
        done = complete_checkpoints(output)
        if not done:
            raise TrainSetupError(f"--resume: no complete checkpoint in {output} (checkpoint-N with trainer_state.json); "
                                  "drop --resume to start from the beginning")  # fmt: skip
        return str(done[-1])
    if not (Path(resume) / "trainer_state.json").is_file():
        raise TrainSetupError(f"--resume {resume}: not a complete checkpoint (no trainer_state.json in it)")
    return resume


def interrupted_message(output: str | Path, step: int | None, save_steps: int) -> str:
    """What Ctrl-C kept and how to go on, in one line."""
    where = "before training started" if step is None else f"at step {step}"
    done = complete_checkpoints(output)
    if not done:
        return (f"fastsft train: interrupted {where}, before the first checkpoint (one every --save-steps {save_steps}); "
                f"no checkpoint in {output} to resume from: run the command again to start over")  # fmt: skip
    last = done[-1]
    return (f"fastsft train: interrupted {where}; kept {last} (the last checkpoint); "
            f"resume with the same command plus --resume (or --resume {last})")  # fmt: skip
