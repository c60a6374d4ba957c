#!/usr/bin/env python
"""Encoding alone (no file I/O, no start-up): `RecordEncoder.encode_batch` over the shipped corpora
repeated 3 times, one thread, best of 3. Run it once per build, alternating builds:

    PYTHONPATH=<old checkout>/python python benches/encode_ab.py old
    PYTHONPATH=python python benches/encode_ab.py new
"""

import gzip
import sys
import time
from pathlib import Path

import fastsft._core as core

REPO = Path(__file__).resolve().parent.parent
records = []
for path in sorted((REPO / "assets" / "corpora").glob("*.jsonl.gz")):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        records += [line for line in f if line.strip()]
records *= 3
encoder = core.RecordEncoder(str(REPO / "assets" / "tokenizers" / "qwen2.5"))
encoder.encode_batch(records[:2000], 1)
best = float("inf")
for _ in range(3):
    started = time.perf_counter()
    encoder.encode_batch(records, 1)
    best = min(best, time.perf_counter() - started)
print(f"{sys.argv[1] if len(sys.argv) > 1 else ''} {len(records)} records best {best:.3f} s")
