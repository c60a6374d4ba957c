"""Packing: group samples into packs of at most ``capacity`` tokens, and serve each pack as one row.

The bin packing itself (best-fit decreasing, deterministic) is Rust, ``fastsft._core.pack``; this
module converts lengths to and from its little-endian int64 buffers, checks inputs so that errors
name the flag at fault, and offers ``PackedDataset``, whose item ``j`` is pack ``j`` concatenated
with ``position_ids`` that restart at every sample. It does not shuffle (the Trainer's sampler
shuffles packs) and does not pad (packs are fed padding-free, see ``collate.PackingCollator``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError
from .dataset import IGNORE_INDEX, _torch


class _Samples(Protocol):
    lengths: np.ndarray

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Packs:
    """Result of ``pack``: pack ``j`` holds sample indices ``order[bounds[j]:bounds[j+1]]``."""

    order: np.ndarray
    bounds: np.ndarray
    capacity: int
    num_tokens: int

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, j: int) -> np.ndarray:
        return self.order[self.bounds[j] : self.bounds[j + 1]]

    @property
    def fill_ratio(self) -> float:
        """Tokens placed / (packs x capacity): 1.0 means no slot is left empty."""
        return self.num_tokens / (len(self) * self.capacity) if len(self) else 1.0


def pack(lengths: np.ndarray | list[int], capacity: int) -> Packs:
    """Place samples of ``lengths`` into packs of at most ``capacity`` tokens (best-fit decreasing).

    Every index appears in exactly one pack; the result depends only on ``lengths`` and
    ``capacity``. Example::

        pack([5, 4, 3, 2, 1], capacity=6)  ->  packs {0, 4}, {1, 3}, {2}   (6 + 6 + 3 tokens)

    Raises:
        UsageError: a length exceeds ``capacity`` (the message names the sample and ``--pack-len``)
            or ``capacity`` is not positive.
    """
    from fastsft import _core

    lens = np.ascontiguousarray(lengths, dtype="<i8")
    if lens.ndim != 1:
        raise ValueError("lengths must be 1-D")
    if capacity <= 0:
        raise UsageError(f"--pack-len must be positive, got {capacity}")
    if lens.size and lens.max() > capacity:
        i = int(lens.argmax())
        raise UsageError(
            f"sample {i} has {int(lens[i])} tokens, more than --pack-len {capacity}: "
            f"raise --pack-len or prepare the data with --max-len {capacity}"
        )
    if lens.size and lens.min() < 0:
        raise ValueError("lengths must be non-negative")
    order, bounds = _core.pack(np.ascontiguousarray(lens, dtype=np.int64), int(capacity))
    return Packs(order=order, bounds=bounds, capacity=int(capacity), num_tokens=int(lens.sum()))


def pack_rows(samples: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate ``(input_ids, loss_mask)`` samples into one padding-free row.

    ``position_ids`` restart at 0 at every sample, and the first label of every sample is
    ``IGNORE_INDEX``: the model shifts labels left, so that label is what the *previous* sample's
    last token would otherwise be trained to predict. Example, samples ``[11,12,13]`` (mask
    ``[0,1,1]``) and ``[21,22]`` (mask ``[1,1]``)::

        input_ids    = [  11, 12, 13,   21, 22]
        labels       = [-100, 12, 13, -100, 22]
        position_ids = [   0,  1,  2,    0,  1]

    A sample's own first label never counts either (nothing precedes it), so each sample's loss is
    exactly the loss it has alone.
    """
    ids = np.concatenate([s[0] for s in samples]).astype(np.int64)
    mask = np.concatenate([s[1] for s in samples]).astype(bool)
    starts = np.cumsum([0] + [len(s[0]) for s in samples[:-1]])
    mask[starts] = False
    pos = np.concatenate([np.arange(len(s[0]), dtype=np.int64) for s in samples])
    return {"input_ids": ids, "labels": np.where(mask, ids, IGNORE_INDEX), "position_ids": pos}


class PackedDataset:
    """Packs of an ``SFTDataset`` (or subset) as items: ``{input_ids, labels, position_ids}``.

    ``packs = pack(samples.lengths, pack_len)`` is computed once, in the constructor; items are
    built from memory-mapped slices on access, so workers stay cheap and fork-safe.
    """

    def __init__(self, samples: _Samples, pack_len: int):
        self.samples = samples
        self.packs = pack(samples.lengths, pack_len)
        self.lengths = (
            np.add.reduceat(samples.lengths[self.packs.order], self.packs.bounds[:-1])
            if len(self.packs)
            else np.zeros(0, np.int64)
        )

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, j: int) -> dict[str, Any]:
        row = pack_rows([self.samples.raw(int(i)) for i in self.packs[int(j)]])
        torch = _torch()
        return row if torch is None else {k: torch.from_numpy(v) for k, v in row.items()}
