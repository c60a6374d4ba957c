"""`fastsft.encode_batch`: the Rust encoder as a batch function for engines that bring their own
parallelism and I/O (Ray Data, `datasets.map`, Spark). Same ids and masks as `fastsft prep`."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from fastsft import _core
from fastsft.labels import IGNORE_INDEX


@functools.lru_cache(maxsize=8)
def _encoder(tokenizer: str, template: str | None, format: str | None, role_map: tuple, fields: tuple,
             max_len: int | None, truncation: str, train_on: str, train_eot: bool,
             train_on_prompt: bool, max_record_bytes: int | None, reasoning: str, split_turns: str, history: str,
             template_args: tuple, date: str | None) -> _core.RecordEncoder:
    # One encoder per worker process and configuration: loading a tokenizer takes ~0.1-1 s.
    return _core.RecordEncoder(
        tokenizer, template=template, format=format, role_map=dict(role_map) or None, fields=dict(fields) or None, max_len=max_len,
        truncation=truncation, train_on=train_on, train_eot=train_eot, train_on_prompt=train_on_prompt,
        max_record_bytes=max_record_bytes, reasoning=reasoning, split_turns=split_turns, history=history,
        template_args=list(template_args) or None, date=date,
    )


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
    template: str | None = None,
    format: str | None = None,
    role_map: dict[str, str] | None = None,
    fields: dict[str, str] | None = None,
    max_len: int | None = None,
    truncation: str = "right",
    train_on: str = "all",
    train_eot: bool = True,
    train_on_prompt: bool = False,
    max_record_bytes: int | None = None,
    reasoning: str = "train",
    split_turns: str = "auto",
    history: str = "template",
    template_args: dict[str, Any] | None = None,
    date: str | None = None,
    threads: int = 1,
) -> dict[str, list[Any]]:
    """Encodes a batch of records; one output row per sample, in input order — one per input row,
    except records split into per-turn samples (`split_turns`), which give one row per turn.

    Returns `input_ids`, `labels` (-100 where not trained), `loss_mask`, `truncated`, `row` (the
    input row each sample comes from), `turn` (the assistant message of a per-turn sample, else
    None), and `reject` / `reject_detail` (None for rows that encoded; for rejected rows the arrays
    are empty, so engines can count and filter them — nothing disappears silently). `threads`
    defaults to 1 because engines run one call per worker already. `fields` maps
    messages/role/content/system to the record's own field names (the CLI's --messages-field
    etc.); the other options are `fastsft prep`'s.

    >>> out = encode_batch([{"messages": [{"role": "user", "content": "Hi"},
    ...                                   {"role": "assistant", "content": "Hello"}]}],
    ...                    "assets/tokenizers/qwen2.5")  # doctest: +SKIP
    """
    from fastsft.config import template_args_for_core
    from fastsft.prep import resolve_tokenizer

    encoder = _encoder(resolve_tokenizer(tokenizer), template, format, tuple(sorted((role_map or {}).items())),
                       tuple(sorted((fields or {}).items())), max_len,
                       truncation, train_on, train_eot, train_on_prompt, max_record_bytes, reasoning, split_turns, history,
                       tuple(template_args_for_core(template_args) or ()), date)
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
