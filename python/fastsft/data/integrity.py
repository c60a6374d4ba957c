"""Integrity of a prepared dataset: are its arrays exactly what its manifest says?

Two levels, both one pass over the array files (read in chunks, never mapped whole):

- ``check_dataset(man, offsets)`` runs whenever ``SFTDataset`` opens a dataset, so ``fastsft train``
  refuses damaged data before any model loads: every ``.npy`` header parses and its data is all
  there; dtypes and lengths agree with ``manifest.json``; offsets start at 0, grow by at least one
  token a sample and end at the token count; the mask holds only 0/1 and marks exactly the
  manifest's ``num_trained_tokens``; every id is below the manifest's vocabulary size.
- ``checksums=True`` (``fastsft check``) also compares the sha256 of each array's data bytes with
  the ``array_sha256`` that the Rust writer recorded while writing (``rust/writer.rs``).
  Datasets made before checksums existed have none: that part is skipped, with a note.

Each failure raises ``DatasetFormatError`` with one line naming the file and what is wrong.

Speed (measured by ``benches/bench_integrity.py``, see ``benches/RESULTS.md``): the reductions
(``max``, ``count_nonzero``) run at 15-25 GiB/s in memory, so the pass is bound by reading the
files; files are scanned in parallel threads (numpy and hashlib release the GIL).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DatasetFormatError, InputNotFoundError

if TYPE_CHECKING:
    from .manifest import Manifest

NPY_MAGIC = b"\x93NUMPY"
CHUNK_BYTES = 16 << 20
"""Bytes read per step: large enough that per-call overhead vanishes, small enough to stay in cache."""
DAMAGED = "the dataset is damaged; re-run `fastsft prep` (or copy it again)"


@dataclass(frozen=True)
class NpyArray:
    """Where an ``.npy`` file's data is, and what its header declares."""

    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    data_offset: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize

    def memmap(self) -> np.ndarray:
        """The array, memory-mapped read-only (only after ``read_npy_header`` accepted the file)."""
        if self.count == 0:
            return np.zeros(self.shape, self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.data_offset, shape=self.shape)


def read_npy_header(path: Path) -> NpyArray:
    """Parse ``path``'s ``.npy`` header and check that exactly the data it declares follows.

    Raises ``DatasetFormatError`` (one line, naming the file) for an empty file, a file that is
    not ``.npy``, a truncated or unreadable header, and data shorter or longer than declared.
    """
    size = path.stat().st_size
    if size == 0:
        raise DatasetFormatError(f"{path}: empty file (0 bytes), expected a .npy array; {DAMAGED}")
    with open(path, "rb") as f:
        prefix = f.read(12)
        if prefix[: len(NPY_MAGIC)] != NPY_MAGIC[: len(prefix)]:
            raise DatasetFormatError(f"{path}: not a .npy file (starts with {prefix[:6]!r}, not {NPY_MAGIC!r}); {DAMAGED}")
        major = prefix[6] if len(prefix) > 6 else None
        header_field = {1: 2, 2: 4, 3: 4}.get(major or 1)
        if header_field is None:
            raise DatasetFormatError(f"{path}: .npy format version {major}, which this numpy cannot read; {DAMAGED}")
        start = 8 + header_field
        if size < start:
            raise DatasetFormatError(f"{path}: truncated .npy header ({size} bytes); {DAMAGED}")
        header_len = int.from_bytes(prefix[8:start], "little")
        if size < start + header_len:
            raise DatasetFormatError(
                f"{path}: truncated .npy header (declares {header_len} header bytes, the file has {size - start}); {DAMAGED}"
            )
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read(f)
        except (ValueError, SyntaxError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DatasetFormatError(f"{path}: unreadable .npy header ({reason}); {DAMAGED}") from None
        data_offset = f.tell()
    if fortran_order or dtype.hasobject:
        raise DatasetFormatError(f"{path}: .npy header declares a Fortran-ordered or object array; {DAMAGED}")
    arr = NpyArray(path, dtype, tuple(int(n) for n in shape), data_offset)
    have = size - data_offset
    if have != arr.nbytes:
        what = "truncated" if have < arr.nbytes else "longer than its header says"
        raise DatasetFormatError(
            f"{path}: {what}: the header declares {arr.dtype.name}{_shape(arr.shape)} ({arr.nbytes:,} data bytes) "
            f"but {have:,} bytes follow it; {DAMAGED}"
        )
    return arr


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def check_structure(man: Manifest) -> dict[str, NpyArray]:
    """Headers only (cheap for any size): each array is intact and has the manifest's dtype and length."""
    from .manifest import ARRAY_FILES

    arrays: dict[str, NpyArray] = {}
    names = [*ARRAY_FILES, "turns.npy"] if man.raw.get("format_version", 1) >= 2 else list(ARRAY_FILES)
    for name in names:
        if not (man.path / name).is_file():
            raise InputNotFoundError(f"{man.path}: missing {name}; the dataset is incomplete (re-run `fastsft prep`)")
        arrays[name] = read_npy_header(man.path / name)
    n, t = man.num_samples, man.num_tokens
    ids = arrays["input_ids.npy"]
    if man.input_ids_dtype not in ("uint16", "uint32"):
        raise DatasetFormatError(
            f"{man.path / 'manifest.json'}: input_ids_dtype {man.input_ids_dtype!r}, expected uint16 or uint32"
        )
    if ids.dtype != np.dtype(man.input_ids_dtype):
        raise DatasetFormatError(
            f"{ids.path}: dtype {ids.dtype.name}, but manifest.json says input_ids_dtype {man.input_ids_dtype}; {DAMAGED}"
        )
    expected = {
        "input_ids.npy": (ids.dtype, (t,), f"num_tokens={t}"),
        "loss_mask.npy": (np.dtype(np.uint8), (t,), f"num_tokens={t}"),
        "offsets.npy": (np.dtype(np.int64), (n + 1,), f"num_samples={n}, so {n + 1} offsets"),
        "origin.npy": (np.dtype(np.int64), (n, 2), f"num_samples={n}"),
    }
    if "turns.npy" in arrays:  # format 2: the turn of each per-turn sample, -1 for whole conversations
        expected["turns.npy"] = (np.dtype(np.int64), (n,), f"num_samples={n}")
    for name, (dtype, shape, why) in expected.items():
        a = arrays[name]
        if a.dtype != dtype or a.shape != shape:
            raise DatasetFormatError(
                f"{a.path}: {a.dtype.name}{_shape(a.shape)}, but manifest.json says {why}: "
                f"expected {dtype.name}{_shape(shape)}; {DAMAGED}"
            )
    return arrays


def check_offsets(man: Manifest, offsets: np.ndarray) -> None:
    """Offsets start at 0, grow by at least one token per sample (prep never writes an empty
    sample) and end at ``num_tokens``."""
    path = man.path / "offsets.npy"
    if offsets[0] != 0:
        raise DatasetFormatError(f"{path}: offsets[0] is {offsets[0]}, expected 0; {DAMAGED}")
    steps = np.diff(offsets)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0])
        what = "decrease" if steps[i] < 0 else "repeat (an empty sample)"
        raise DatasetFormatError(
            f"{path}: offsets[{i}]={offsets[i]} then offsets[{i + 1}]={offsets[i + 1]}: offsets must grow, "
            f"these {what}; {DAMAGED}"
        )
    if offsets[-1] != man.num_tokens:
        raise DatasetFormatError(
            f"{path}: the last offset is {offsets[-1]}, but manifest.json says num_tokens={man.num_tokens}; {DAMAGED}"
        )


def _chunks(arr: NpyArray, hasher: Any = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(first item index, items)`` of ``arr`` in chunks read into one reused buffer."""
    item = arr.dtype.itemsize
    buf = bytearray(max(item, CHUNK_BYTES - CHUNK_BYTES % item))
    view = memoryview(buf)
    with open(arr.path, "rb", buffering=0) as f:
        f.seek(arr.data_offset)
        done = 0
        while done < arr.nbytes:
            want = min(len(buf), arr.nbytes - done)
            got = 0
            while got < want:
                n = f.readinto(view[got:want])
                if not n:
                    raise DatasetFormatError(f"{arr.path}: truncated while being read (the file changed?); {DAMAGED}")
                got += n
            if hasher is not None:
                hasher.update(view[:got])
            yield done // item, np.frombuffer(buf, arr.dtype, count=got // item)
            done += got


def _scan_ids(arr: NpyArray, vocab_size: int | None, offsets: np.ndarray, hasher: Any) -> None:
    limit = vocab_size if vocab_size is not None and vocab_size <= np.iinfo(arr.dtype).max else None
    for start, chunk in _chunks(arr, hasher):
        if limit is not None and chunk.size and chunk.max() >= limit:
            pos = start + int(np.argmax(chunk >= limit))
            sample = int(np.searchsorted(offsets, pos, side="right")) - 1
            value = int(chunk[pos - start])
            raise DatasetFormatError(
                f"{arr.path}: token id {value} at position {pos} (sample {sample}) is not below the vocabulary "
                f"size {vocab_size} (manifest.json tokenizer.vocab_size); {DAMAGED}"
            )


def _scan_mask(arr: NpyArray, expected_trained: int | None, hasher: Any) -> None:
    trained = 0
    for start, chunk in _chunks(arr, hasher):
        if chunk.size and chunk.max() > 1:
            pos = start + int(np.argmax(chunk > 1))
            raise DatasetFormatError(
                f"{arr.path}: value {chunk[pos - start]} at position {pos}; a loss mask holds only 0 and 1; {DAMAGED}"
            )
        trained += int(np.count_nonzero(chunk))
    if expected_trained is not None and trained != expected_trained:
        raise DatasetFormatError(
            f"{arr.path}: {trained:,} tokens are marked trained, but manifest.json says num_trained_tokens={expected_trained}; {DAMAGED}"
        )


def _scan_plain(arr: NpyArray, hasher: Any) -> None:
    for _ in _chunks(arr, hasher):
        pass


def check_dataset(man: Manifest, offsets: np.ndarray | None = None, checksums: bool = False) -> list[str]:
    """Check ``man``'s dataset (see the module docstring); return notes (e.g. checksums absent).

    ``offsets``: the offsets already read (``SFTDataset`` keeps them), else they are read here.
    """
    arrays = check_structure(man)
    if offsets is None:
        offsets = np.asarray(arrays["offsets.npy"].memmap(), dtype=np.int64)
    check_offsets(man, offsets)
    recorded: dict[str, str] = man.raw.get("array_sha256") or {}
    notes: list[str] = []
    want_hash = checksums and bool(recorded)
    if checksums and not recorded:
        notes.append(f"{man.path}: no checksums in manifest.json (made by an older fastsft); contents checked, checksums skipped")
    hashers = {name: hashlib.sha256() if want_hash else None for name in arrays}
    jobs: list[Callable[[], None]] = [
        lambda: _scan_ids(arrays["input_ids.npy"], man.vocab_size, offsets, hashers["input_ids.npy"]),
        lambda: _scan_mask(arrays["loss_mask.npy"], man.num_trained_tokens, hashers["loss_mask.npy"]),
    ]
    if want_hash:  # offsets were already checked; their bytes (and origin's) only need hashing
        jobs += [lambda: _scan_plain(arrays["offsets.npy"], hashers["offsets.npy"]),
                 lambda: _scan_plain(arrays["origin.npy"], hashers["origin.npy"])]  # fmt: skip
        if "turns.npy" in arrays:
            jobs.append(lambda: _scan_plain(arrays["turns.npy"], hashers["turns.npy"]))
    _run_all(jobs)
    if want_hash:
        for name, h in hashers.items():
            assert h is not None  # want_hash
            want = recorded.get(name)
            if want is None:
                notes.append(f"{man.path / name}: no checksum in manifest.json; skipped")
            elif h.hexdigest() != want:
                raise DatasetFormatError(
                    f"{man.path / name}: sha256 of its data is {h.hexdigest()}, manifest.json records {want}; "
                    f"the file changed after it was written; {DAMAGED}"
                )
    return notes


def _run_all(jobs: list[Callable[[], None]]) -> None:
    """Run ``jobs`` in threads (one file each); re-raise the first failure in job order."""
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        for job in jobs:
            job()
        return
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job) for job in jobs]
        for fut in futures:
            fut.result()
