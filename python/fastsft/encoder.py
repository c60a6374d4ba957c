"""`fastsft.RecordEncoder`: the Rust encoder, one record (or one batch) at a time, with the options
of `fastsft prep` as keyword arguments (for tests, `inspect`, `verify`, and engines that bring their
own parallelism)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Unpack

from fastsft import _core
from fastsft.config import EncodeOptions
from fastsft.options_types import EncodeKwargs


class RecordEncoder:
    """Loads the tokenizer and template once; `encode`/`render` a record (a JSON text or a dict).

    Keyword options are the fields of `fastsft.config.EncodeOptions` (the `fastsft prep` flags that
    change what is written). `encode` returns `{"input_ids": list, "loss_mask": uint8 array,
    "truncated", "turn", "samples": [...]}` or `{"reject": code, "detail": text}`.
    """

    def __init__(self, tokenizer: str | os.PathLike, **options: Unpack[EncodeKwargs]):
        from fastsft.tokenizer_path import locate_tokenizer

        self.options = EncodeOptions(**options)
        self._core = _core.RecordEncoder(locate_tokenizer(tokenizer), self.options.to_core_json())

    def encode(self, record: str | Mapping[str, Any]) -> _core.Encoded:
        return self._core.encode(_text(record))

    def encode_batch(self, records: list[str], threads: int = 1) -> _core.EncodedBatch:
        return self._core.encode_batch(records, threads)

    def render(self, record: str | Mapping[str, Any]) -> _core.Rendered:
        return self._core.render(_text(record))

    def conversation(self, record: str | Mapping[str, Any]) -> _core.Conversation:
        return self._core.conversation(_text(record))

    @property
    def tokenizer_sha256(self) -> str:
        return self._core.tokenizer_sha256


def _text(record: str | Mapping[str, Any]) -> str:
    return record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)


__all__ = ["RecordEncoder"]
