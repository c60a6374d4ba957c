"""Collators: turn a list of items (samples or packs) into one batch of int64 tensors.

- ``PadCollator``: pad to the longest item, rounded up to a multiple of 8 (tensor-core friendly);
  padding gets ``pad_token_id`` in ``input_ids``, ``IGNORE_INDEX`` in ``labels``, 0 in
  ``attention_mask``.
- ``PackingCollator``: padding-free; concatenate every item into a single row ``[1, total]`` with
  ``position_ids`` restarting at each sample, no ``attention_mask``. Attention implementations
  read the sample boundaries from ``position_ids`` (flash-attention varlen; SDPA/eager/flex via a
  block-diagonal mask in ``transformers.masking_utils``), so no sample attends to another.

Neither tokenizes nor shuffles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from .dataset import IGNORE_INDEX, _torch


def _np(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _to_tensors(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    torch = _torch()
    return batch if torch is None else {k: torch.from_numpy(v) for k, v in batch.items()}


class PadCollator:
    """Pad a list of ``{input_ids, labels[, attention_mask]}`` items to one ``[B, T]`` batch.

    ``T`` is the longest item rounded up to ``pad_to_multiple_of``. Example with
    ``pad_token_id=0``, ``pad_to_multiple_of=4``::

        items:  input_ids [5, 6, 7]   labels [-100, 6, 7]
                input_ids [8, 9]      labels [-100, 9]
        batch:  input_ids      [[5, 6, 7, 0], [8, 9, 0, 0]]
                labels         [[-100, 6, 7, -100], [-100, 9, -100, -100]]
                attention_mask [[1, 1, 1, 0], [1, 1, 0, 0]]
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        if pad_to_multiple_of < 1:
            raise UsageError("pad_to_multiple_of must be >= 1")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = int(pad_to_multiple_of)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        ids = [_np(it["input_ids"]) for it in items]
        labels = [_np(it["labels"]) for it in items]
        m = self.pad_to_multiple_of
        width = -(-max(len(x) for x in ids) // m) * m
        out_ids = np.full((len(items), width), self.pad_token_id, dtype=np.int64)
        out_labels = np.full((len(items), width), IGNORE_INDEX, dtype=np.int64)
        attn = np.zeros((len(items), width), dtype=np.int64)
        for r, (x, y) in enumerate(zip(ids, labels)):
            out_ids[r, : len(x)] = x
            out_labels[r, : len(y)] = y
            attn[r, : len(x)] = 1
        return _to_tensors({"input_ids": out_ids, "labels": out_labels, "attention_mask": attn})


class PackingCollator:
    """Concatenate items into one padding-free row ``[1, total]`` with restarting ``position_ids``.

    Items are packs from ``PackedDataset`` (which carry ``position_ids``) or plain samples (whose
    positions are ``0..len-1``). The first label of every sample is ``IGNORE_INDEX``, so the last
    token of one sample is never trained to predict the first token of the next. Example::

        items:  input_ids [5, 6, 7]  labels [-100, 6, 7]  (a sample)
                input_ids [8, 9]     labels [8, 9]        (a sample whose first label was set)
        batch:  input_ids    [[5, 6, 7, 8, 9]]
                labels       [[-100, 6, 7, -100, 9]]
                position_ids [[0, 1, 2, 0, 1]]

    The model must run with ``use_cache=False`` (the Trainer does): with a cache, transformers
    builds a plain causal mask and packed samples see each other.
    """

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        ids, labels, pos = [], [], []
        for it in items:
            x = _np(it["input_ids"]).astype(np.int64)
            y = _np(it["labels"]).astype(np.int64).copy()
            p = _np(it["position_ids"]).astype(np.int64) if "position_ids" in it else np.arange(len(x), dtype=np.int64)
            y[p == 0] = IGNORE_INDEX
            ids.append(x)
            labels.append(y)
            pos.append(p)
        return _to_tensors(
            {
                "input_ids": np.concatenate(ids)[None, :],
                "labels": np.concatenate(labels)[None, :],
                "position_ids": np.concatenate(pos)[None, :],
            }
        )
