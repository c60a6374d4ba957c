"""How long the integrity checks take on a large prepared dataset.

Synthesizes a format-1 dataset of ``--gb`` GB of arrays (uint16 ids, so 3 bytes a token, plus
offsets and origin for ~500-token samples) in a scratch directory, then times:

- ``open``: what ``SFTDataset`` (so ``fastsft train``) runs before any model loads
  (``check_dataset``: headers, offsets, trained-token count, id range);
- ``check``: what ``fastsft check`` runs (the same, plus the sha256 of every array);

each with the files in the page cache ("warm") and after asking the kernel to drop this
dataset's pages (``posix_fadvise(DONTNEED)``, this dataset's files only: "cold", read from disk).

    python benches/bench_integrity.py --gb 6 --dir /tmp/fastsft-integrity
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from fastsft.data.integrity import check_dataset  # noqa: E402
from fastsft.data.manifest import read_manifest  # noqa: E402

ARRAYS = ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy")


def synthesize(out: Path, tokens: int, vocab: int = 32000, mean_len: int = 500) -> None:
    """Write the dataset in 64M-token pieces (bounded memory), recording checksums as prep does."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lengths = rng.integers(mean_len // 2, mean_len * 3 // 2, tokens // mean_len + 1)
    ends = np.cumsum(lengths)
    lengths = lengths[: int(np.searchsorted(ends, tokens)) + 1]
    lengths[-1] -= int(lengths.sum()) - tokens
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = len(lengths)
    origin = np.stack([np.zeros(n, np.int64), np.arange(1, n + 1, dtype=np.int64)], axis=1)
    sums = {}
    piece = 64 << 20
    trained = 0
    for name, dtype in (("input_ids.npy", np.uint16), ("loss_mask.npy", np.uint8)):
        mm = np.lib.format.open_memmap(out / name, mode="w+", dtype=dtype, shape=(tokens,))
        h = hashlib.sha256()
        for start in range(0, tokens, piece):
            stop = min(tokens, start + piece)
            if name == "input_ids.npy":
                chunk = rng.integers(0, vocab, stop - start, dtype=np.uint16)
            else:
                chunk = (rng.random(stop - start) < 0.6).astype(np.uint8)
                trained += int(np.count_nonzero(chunk))
            mm[start:stop] = chunk
            h.update(chunk.tobytes())
        mm.flush()
        del mm
        sums[name] = h.hexdigest()
    for name, arr in (("offsets.npy", offsets), ("origin.npy", origin)):
        np.save(out / name, arr)
        sums[name] = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    manifest = {
        "format_version": 1, "fastsft_version": "bench", "num_samples": n, "num_tokens": tokens,
        "num_trained_tokens": trained, "input_ids_dtype": "uint16",
        "tokenizer": {"sha256": "0" * 64, "vocab_size": vocab}, "array_sha256": sums,
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))


def drop_cache(d: Path) -> None:
    for name in ARRAYS:
        fd = os.open(d / name, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(d: Path, checksums: bool) -> float:
    t = time.perf_counter()
    notes = check_dataset(read_manifest(d), checksums=checksums)
    assert not notes, notes
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=6.0, help="GB of arrays to synthesize")
    ap.add_argument("--dir", default="/tmp/fastsft-integrity", help="scratch directory (removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the synthesized dataset")
    args = ap.parse_args()
    d = Path(args.dir)
    tokens = int(args.gb * 1e9 / 3)  # uint16 id + uint8 mask
    if not (d / "manifest.json").is_file():
        t = time.perf_counter()
        synthesize(d, tokens)
        print(f"synthesized {tokens:,} tokens in {time.perf_counter() - t:.0f} s")
    size = sum((d / n).stat().st_size for n in ARRAYS)
    print(f"command: python benches/bench_integrity.py --gb {args.gb}")
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, {platform.platform()}")
    print(f"date:    {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"dataset: {size / 1e9:.2f} GB of arrays ({tokens:,} tokens, uint16 ids)")
    print("| check | cache | seconds | GB/s |")
    print("|---|---|---|---|")
    try:
        for checksums, label in ((False, "open (SFTDataset)"), (True, "fastsft check (+ sha256)")):
            drop_cache(d)
            cold = timed(d, checksums)
            warm = timed(d, checksums)
            for cache, s in (("cold", cold), ("warm", warm)):
                print(f"| {label} | {cache} | {s:.2f} | {size / 1e9 / s:.2f} |")
    finally:
        if not args.keep:
            shutil.rmtree(d)


if __name__ == "__main__":
    main()
