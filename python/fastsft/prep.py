"""Python face of the Rust pipeline: `fastsft.prep(...)` mirrors `fastsft prep`."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterable
from typing import Any, Unpack

from fastsft import _core
from fastsft.config import PrepOptions
from fastsft.errors import InputNotFoundError, UsageError
from fastsft.options_types import PrepKwargs
from fastsft.tokenizer_path import locate_tokenizer


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Paths and glob patterns → sorted, de-duplicated files, in the order given.

    A pattern that matches nothing is an error naming it (a typo must not silently drop data)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise InputNotFoundError(f"{item}: no file matches this pattern")
            files.extend(matches)
        else:
            files.append(item)
    return list(dict.fromkeys(files))  # de-duplicated, first occurrence kept


def prep(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    tokenizer: str | os.PathLike,
    output: str | os.PathLike,
    **options: Unpack[PrepKwargs],
) -> dict[str, Any]:
    """Prepares `inputs` (files or globs) into the dataset directory `output`.

    `tokenizer` is a model directory with `tokenizer.json` (and usually `tokenizer_config.json`,
    whose chat template is used). Keyword options are the fields of `PrepOptions` (the CLI flags).
    Returns the summary: read, written, rejected, rejected_by_reason, tokens, trained_tokens,
    truncated, seconds, threads.

    >>> fastsft.prep(["data/*.jsonl.gz"], "models/qwen2.5", "out", max_len=4096)  # doctest: +SKIP
    """
    if options.get("engine") == "ray":  # the same dataset, made by Ray tasks (fastsft/ray_engine.py)
        from fastsft.ray_engine import prep_on_ray

        return prep_on_ray(inputs, tokenizer, output, **options)
    options.setdefault("progress", False)
    opts = PrepOptions(**options)
    num_shards, shard_index = shard_from_environment(opts.num_shards, opts.shard_index)
    opts = dataclasses.replace(opts, num_shards=num_shards, shard_index=shard_index)
    output = os.fspath(output)
    if num_shards > 1:
        output = os.path.join(output, shard_dir_name(shard_index, num_shards))
    return dict(_core.prep(expand_inputs(inputs), locate_tokenizer(tokenizer), output, opts.to_core_json()))


def shard_dir_name(index: int, count: int) -> str:
    """`shard-00003-of-00008`: sorts in shard order, and says how many shards make the whole."""
    return f"shard-{index:05d}-of-{count:05d}"


def shard_from_environment(num_shards: int | None, shard_index: int | None) -> tuple[int, int]:
    """Explicit flags, else a Slurm job array, else a torchrun-style RANK/WORLD_SIZE, else (1, 0)."""
    if num_shards is not None:
        return num_shards, shard_index or 0
    env = os.environ
    for count_var, index_var in (("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID"), ("WORLD_SIZE", "RANK")):
        if env.get(count_var, "").isdigit() and int(env[count_var]) > 1:
            if not env.get(index_var, "").isdigit():
                raise UsageError(f"{count_var}={env[count_var]} is set but {index_var} is not; pass --num-shards/--shard-index")
            count, index = int(env[count_var]), int(env[index_var])
            if count_var.startswith("SLURM"):
                # Array task ids start at SLURM_ARRAY_TASK_MIN (often 0 or 1).
                index -= int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
            if not 0 <= index < count:
                raise UsageError(f"{index_var}={env[index_var]} is outside 0..{count - 1} ({count_var}={count})")
            return count, index
    return 1, 0
