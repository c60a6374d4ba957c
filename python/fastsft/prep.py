"""Python face of the Rust pipeline: `fastsft.prep(...)` mirrors `fastsft prep`."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterable
from typing import Any

from fastsft import _core
from fastsft.config import PrepOptions


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
                raise FileNotFoundError(f"{item}: no file matches this pattern")
            files.extend(matches)
        else:
            files.append(item)
    seen: set[str] = set()
    return [f for f in files if not (f in seen or seen.add(f))]


def prep(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    tokenizer: str | os.PathLike,
    output: str | os.PathLike,
    **options: Any,
) -> dict[str, Any]:
    """Prepares `inputs` (files or globs) into the dataset directory `output`.

    `tokenizer` is a model directory with `tokenizer.json` (and usually `tokenizer_config.json`,
    whose chat template is used). Keyword options are the fields of `PrepOptions` (the CLI flags).
    Returns the summary: read, written, rejected, rejected_by_reason, tokens, trained_tokens,
    truncated, seconds, threads.

    >>> fastsft.prep(["data/*.jsonl.gz"], "models/qwen2.5", "out", max_len=4096)  # doctest: +SKIP
    """
    options.setdefault("progress", False)
    opts = PrepOptions(**options)
    kwargs = dataclasses.asdict(opts)
    return _core.prep(expand_inputs(inputs), os.fspath(tokenizer), os.fspath(output), **kwargs)
