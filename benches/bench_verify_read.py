"""How fast ``fastsft verify`` reads back the records behind its sampled rows (``read_records``).

Times ``fastsft.verify.read_records`` fetching 200 records spread over a 200,000-line JSONL file,
gzip- and zstd-compressed (the shipped alpaca corpus repeated), best of 3, with whichever fastsft is
importable: run it once with ``PYTHONPATH`` at a checkout before issue 14 (verify's own Python
reader) and once after (prep's reader, ``_core.InputRecords``) to compare.

    python benches/bench_verify_read.py /tmp/verify-read     # the inputs are written there once
"""

from __future__ import annotations

import gzip
import random
import sys
import time
from pathlib import Path

import zstandard

from fastsft.verify import read_records

CORPUS = Path(__file__).resolve().parent.parent / "assets" / "corpora" / "llamafactory_alpaca_en_demo.jsonl.gz"
LINES, WANTED, REPEAT = 200_000, 200, 3


def main() -> None:
    where = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/verify-read")
    where.mkdir(parents=True, exist_ok=True)
    gz, zst = where / "big.jsonl.gz", where / "big.jsonl.zst"
    if not (gz.exists() and zst.exists()):
        with gzip.open(CORPUS, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        body = b"".join(lines[i % len(lines)] for i in range(LINES))
        gz.write_bytes(gzip.compress(body, 6))
        zst.write_bytes(zstandard.ZstdCompressor().compress(body))
    wanted = set(random.Random(0).sample(range(1, LINES + 1), WANTED))
    for path in (gz, zst):
        times = []
        for _ in range(REPEAT):
            t0 = time.perf_counter()
            found, _ = read_records(path, wanted)
            times.append(time.perf_counter() - t0)
        assert len(found) == WANTED
        print(f"{path.name} ({path.stat().st_size / 1e6:.1f} MB): {min(times):.2f} s (best of {REPEAT})")


if __name__ == "__main__":
    main()
