"""The keyword arguments of `fastsft.prep`, `fastsft.RecordEncoder` and `fastsft.encode_batch`, typed.

Generated from fastsft/config.py by `fastsft.config.write_types()`; do not edit (tests/test_options_schema.py
checks that it is current)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class EncodeKwargs(TypedDict, total=False):
    """The fields of `fastsft.config.EncodeOptions`."""

    format: Literal["sharegpt", "openai", "alpaca"] | None
    template: str | None
    role_map: dict[str, str] | None
    messages_field: str | None
    role_field: str | None
    content_field: str | None
    system_field: str | None
    max_len: int | None
    truncation: Literal["right", "drop"]
    train_on: Literal["all", "last"]
    train_eot: bool
    train_on_prompt: bool
    reasoning: Literal["train", "mask", "drop"]
    split_turns: Literal["never", "auto", "always"]
    history: Literal["template", "as-written"]
    template_args: dict[str, Any] | None
    date: str | None
    max_record_bytes: int | None


class PrepKwargs(EncodeKwargs, total=False):
    """The fields of `fastsft.config.PrepOptions`."""

    threads: int
    chunk_size: int | None
    overwrite: bool
    strict: bool
    max_reject_fraction: float | None
    progress: bool
    num_shards: int | None
    shard_index: int | None
    engine: Literal["local", "ray"]


__all__ = ["EncodeKwargs", "PrepKwargs"]
