"""``SFTDataset``: random access to prepared samples, straight from the memory-mapped ``.npy`` files.

What it does: resolves one or more dataset directories (or parents of shard directories), checks
their manifests agree on the tokenizer, and serves sample ``i`` as ``input_ids``/``labels``/
``attention_mask``. What it does not: tokenize, pack or pad (``packing.py``, ``collate.py``).

Fork safety: the token arrays are opened lazily, per process (the pid is checked on every access),
so DataLoader workers, whether forked or spawned, each map the files themselves. Nothing here runs
Rust or threads; ``__getitem__`` is two slices and a ``where``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputNotFoundError, UsageError
from ..labels import IGNORE_INDEX
from .integrity import check_dataset, check_offsets
from .manifest import DatasetFormatError, Manifest, is_dataset_dir, read_manifest

PathLike = str | os.PathLike


def _torch():
    try:
        import torch
    except ImportError:  # numpy-only installs still read datasets
        return None
    return torch


def resolve_dataset_dirs(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Expand ``paths`` into dataset directories.

    A path that holds ``manifest.json`` is a dataset; otherwise its immediate subdirectories that
    are datasets are its shards, sorted by name (``shard-00000``, ``shard-00001``, ...).

    >>> resolve_dataset_dirs(["out/"])  # doctest: +SKIP
    [PosixPath('out/shard-00000'), PosixPath('out/shard-00001')]
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    dirs: list[Path] = []
    for p in map(Path, paths):
        if is_dataset_dir(p):
            dirs.append(p)
        elif p.is_dir():
            shards = sorted((c for c in p.iterdir() if c.is_dir() and is_dataset_dir(c)), key=lambda c: c.name)
            if not shards:
                raise InputNotFoundError(f"{p}: neither a prepared dataset (no manifest.json) nor a directory of dataset shards")
            dirs.extend(shards)
        else:
            raise InputNotFoundError(f"{p}: no such dataset directory")
    if not dirs:
        raise UsageError("no dataset given")
    return dirs


class SFTDataset:
    """Samples of one or more prepared datasets, concatenated in the order given.

    Item ``i`` is a dict of three 1-D int64 tensors (numpy arrays when torch is not installed):

    - ``input_ids``: the token ids;
    - ``labels``: ``input_ids`` where ``loss_mask`` is 1, else ``IGNORE_INDEX`` (unshifted: the
      model shifts);
    - ``attention_mask``: ones.

    Example (a sample of 5 tokens whose last 3 are the assistant reply)::

        input_ids      = [151644, 872, 198, 9707, 151645]
        loss_mask      = [     0,   0,   1,    1,      1]
        labels         = [  -100,-100, 198, 9707, 151645]
        attention_mask = [     1,   1,   1,    1,      1]

    Opening checks every dataset against its manifest (``integrity.check_dataset``: one read of
    the arrays, offsets, trained-token count, id range) and raises ``DatasetFormatError``, one
    line naming the file, when something is wrong; ``check=False`` skips the read of the token
    arrays (headers, dtypes and lengths are always checked).

    Attributes:
        lengths: int64 array, the token count of every sample (for samplers and packing).
        manifests: one ``Manifest`` per dataset directory.
    """

    def __init__(self, paths: PathLike | Sequence[PathLike], *, check: bool = True):
        self.dirs = resolve_dataset_dirs(paths)
        self.manifests: list[Manifest] = [read_manifest(d) for d in self.dirs]
        shas = {m.tokenizer_sha256 for m in self.manifests}
        if len(shas) > 1:
            listing = "; ".join(f"{m.path}: {m.tokenizer_sha256}" for m in self.manifests)
            raise DatasetFormatError(f"datasets were made with different tokenizers ({listing}); train on one at a time")
        # offsets are small (8 bytes a sample) and needed everywhere: read them eagerly.
        self._offsets = [np.array(np.load(d / "offsets.npy", mmap_mode="r"), dtype=np.int64) for d in self.dirs]
        for man, offsets in zip(self.manifests, self._offsets):
            if check:
                check_dataset(man, offsets)
            else:
                check_offsets(man, offsets)  # already in memory: always checked
        self.lengths = np.concatenate([np.diff(o) for o in self._offsets]) if self._offsets else np.zeros(0, np.int64)
        counts = np.array([m.num_samples for m in self.manifests], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])  # global index of each shard's first sample
        self._pid: int | None = None
        self._arrays: list[tuple[np.ndarray, np.ndarray]] = []

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def tokenizer_sha256(self) -> str | None:
        return self.manifests[0].tokenizer_sha256

    @property
    def vocab_size(self) -> int | None:
        sizes = [m.vocab_size for m in self.manifests if m.vocab_size is not None]
        return max(sizes) if sizes else None

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_trained_tokens(self) -> int | None:
        total = 0
        for m in self.manifests:
            if m.num_trained_tokens is None:
                return None
            total += m.num_trained_tokens
        return total

    def __len__(self) -> int:
        return int(self._starts[-1])

    # -- access -----------------------------------------------------------------------------------
    def _open(self) -> list[tuple[np.ndarray, np.ndarray]]:
        pid = os.getpid()
        if self._pid != pid:  # first access in this process (or a forked worker): map the files here
            self._arrays = [
                (np.load(d / "input_ids.npy", mmap_mode="r"), np.load(d / "loss_mask.npy", mmap_mode="r")) for d in self.dirs
            ]
            self._pid = pid
        return self._arrays

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, local index)`` of global sample ``index``."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return shard, index - int(self._starts[shard])

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, loss_mask)`` of sample ``index`` as int64 and uint8 numpy arrays (copies)."""
        shard, local = self.locate(index)
        ids, mask = self._open()[shard]
        lo, hi = self._offsets[shard][local], self._offsets[shard][local + 1]
        return ids[lo:hi].astype(np.int64), np.array(mask[lo:hi], dtype=np.uint8)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ids, mask = self.raw(int(index))
        labels = np.where(mask.astype(bool), ids, IGNORE_INDEX)
        item = {"input_ids": ids, "labels": labels, "attention_mask": np.ones_like(ids)}
        torch = _torch()
        if torch is None:
            return item
        return {k: torch.from_numpy(v) for k, v in item.items()}

    def __getstate__(self) -> dict[str, Any]:
        # Spawned workers get the paths and offsets, never live memmaps.
        state = self.__dict__.copy()
        state["_pid"] = None
        state["_arrays"] = []
        return state

    def select(self, indices: Sequence[int] | np.ndarray) -> SFTSubset:
        """A view of the samples at ``indices`` (in that order), e.g. a train or eval split."""
        return SFTSubset(self, indices)

    def __repr__(self) -> str:
        return f"SFTDataset({len(self)} samples, {self.num_tokens} tokens, {len(self.dirs)} dir(s))"


class SFTSubset:
    """Samples ``indices`` of an ``SFTDataset``, with the same item format, ``lengths`` and ``raw``."""

    def __init__(self, base: SFTDataset, indices: Sequence[int] | np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.ndim != 1:
            raise ValueError("indices must be 1-D")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise IndexError(f"indices out of range for {len(base)} samples")
        self.lengths = base.lengths[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.base.raw(int(self.indices[index]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.base[int(self.indices[index])]

    def __repr__(self) -> str:
        return f"SFTSubset({len(self)} of {len(self.base)} samples)"


def split_indices(n: int, eval_size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into sorted ``(train, eval)`` index arrays, reproducibly for a seed.

    ``eval_size`` below 1 is a fraction of ``n`` (rounded, at least 1 when positive); from 1 up it
    is a count. Both parts are sorted so that the train part reads the files in order.

    >>> split_indices(10, 0.2, seed=0)[1].size
    2
    """
    if eval_size < 0:
        raise UsageError(f"--eval-split must be >= 0, got {eval_size}")
    k = round(eval_size * n) if eval_size < 1 else int(eval_size)
    if eval_size > 0:
        k = max(k, 1)
    if k >= n:
        raise UsageError(f"--eval-split {eval_size} leaves no training samples out of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])
