"""`fastsft.encode_batch`: the Rust encoder as a batch function for engines that bring their own
parallelism and I/O (Ray Data, `datasets.map`, Spark). Same ids and masks as `fastsft prep`."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Unpack

from fastsft import _core
from fastsft.config import EncodeOptions
from fastsft.errors import UsageError
from fastsft.labels import IGNORE_INDEX
from fastsft.options_types import EncodeKwargs


@functools.lru_cache(maxsize=8)
def _encoder(tokenizer: str, options_json: str) -> _core.RecordEncoder:
    # One encoder per worker process and configuration: loading a tokenizer takes ~0.1-1 s.
    return _core.RecordEncoder(tokenizer, options_json)


def _records(batch: Sequence[Any] | Mapping[str, Sequence[Any]]) -> list[str]:
    """A list of records (dicts or JSON strings), or a column batch `{"field": [v0, v1, ...]}` as
    `datasets.map(batched=True)` and Ray Data's `map_batches` pass them."""
    if isinstance(batch, Mapping):
        columns = {k: list(v) for k, v in batch.items()}
        n = len(next(iter(columns.values()), []))
        rows = [{k: _plain(v[i]) for k, v in columns.items()} for i in range(n)]
    else:
        rows = list(batch)
    return [row if isinstance(row, str) else json.dumps(_plain(row), ensure_ascii=False) for row in rows]


def _plain(value: Any) -> Any:
    """numpy arrays/scalars (as Ray and pandas hand them over) → lists and Python scalars."""
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def encode_batch(
    records: Sequence[Any] | Mapping[str, Sequence[Any]],
    tokenizer: str | os.PathLike,
    *,
    threads: int = 1,
    output: Literal["lists", "arrays", "arrow"] = "lists",
    **options: Unpack[EncodeKwargs],
) -> Any:
    """Encodes a batch of records; one output row per sample, in input order — one per input row,
    except records split into per-turn samples (`split_turns`), which give one row per turn.

    Returns `input_ids`, `labels` (-100 where not trained), `loss_mask`, `truncated`, `row` (the
    input row each sample comes from), `turn` (the assistant message of a per-turn sample, else
    None), and `reject` / `reject_detail` (None for rows that encoded; for rejected rows the arrays
    are empty, so engines can count and filter them — nothing disappears silently). `threads`
    defaults to 1 because engines run one call per worker already. The other keyword options are
    those of `fastsft prep` that change what is written (`fastsft.config.EncodeOptions`).

    `output="arrays"` gives the same samples as flat numpy arrays with `offsets` (no Python object
    per token: what engines moving batches between processes want), `output="arrow"` as a
    `pyarrow.Table` of list columns over those arrays (`fastsft/batch_arrays.py`).

    >>> out = encode_batch([{"messages": [{"role": "user", "content": "Hi"},
    ...                                   {"role": "assistant", "content": "Hello"}]}],
    ...                    "assets/tokenizers/qwen2.5")  # doctest: +SKIP
    """
    from fastsft.tokenizer_path import locate_tokenizer

    encoder = _encoder(locate_tokenizer(tokenizer), EncodeOptions(**options).to_core_json())
    if output in ("arrays", "arrow"):
        from fastsft.batch_arrays import arrays_to_arrow, encode_arrays

        arrays = encode_arrays(encoder, _records(records), threads)
        return arrays if output == "arrays" else arrays_to_arrow(arrays)
    if output != "lists":
        raise UsageError(f"output={output!r}: expected lists, arrays or arrow")
    out = encoder.encode_batch(_records(records), threads)
    labels = [[t if m else IGNORE_INDEX for t, m in zip(ids, mask)] for ids, mask in zip(out["input_ids"], out["loss_mask"])]
    return {
        "input_ids": out["input_ids"],
        "labels": labels,
        "loss_mask": [list(mask) for mask in out["loss_mask"]],
        "truncated": out["truncated"],
        "row": out["row"],
        "turn": out["turn"],
        "reject": out["reject"],
        "reject_detail": out["detail"],
    }
