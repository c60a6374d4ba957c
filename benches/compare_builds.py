#!/usr/bin/env python
"""Two builds of fastsft, side by side in one run: the same output bytes, and how fast.

    python benches/compare_builds.py --old /path/to/old/python --new python [--repeat 20] [--rounds 3]

`--old`/`--new` are directories that hold a `fastsft` package with its built extension (a checkout's
`python/` after a build). For every shipped tokenizer (each with its own chat template), both builds
prepare the shipped corpora and the four arrays (`input_ids`, `loss_mask`, `offsets`, `origin`) and
the rejects must be byte-identical. Then both prepare the corpora repeated `--repeat` times with
the Qwen2.5 tokenizer on one thread, alternating old/new for `--rounds` rounds; the table gives the
median wall time of each and the ratio. The machine's load average is printed before and after:
other work on it skews the times (the alternation spreads that over both builds).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPORA = sorted((REPO / "assets" / "corpora").glob("*.jsonl.gz"))
FAMILIES = [
    "qwen2.5",
    "qwen3",
    "llama3.1",
    "mistral-7b-instruct-v0.1",
    "mistral-7b-instruct-v0.3",
    "phi3",
    "gemma",
    "tinyllama-chat",
]
COMPARED = ["input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "rejects.jsonl"]

PREP = """
import json, sys, time
import fastsft
inputs, tokenizer, out, threads = json.loads(sys.argv[1])
t = time.perf_counter()
s = fastsft.prep(inputs, tokenizer, out, threads=threads, max_reject_fraction=1.0, overwrite=True)
print(json.dumps({"seconds": time.perf_counter() - t, "written": s["written"], "rejected": s["rejected"], "tokens": s["tokens"]}))
"""


def prep(pythonpath: Path, inputs: list[str], tokenizer: Path, out: Path, threads: int = 1) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    run = subprocess.run(
        [sys.executable, "-c", PREP, json.dumps([inputs, str(tokenizer), str(out), threads])],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(f"prep with {pythonpath} failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    builds = {"old": args.old.resolve(), "new": args.new.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = [str(p) for p in CORPORA]
        print(f"{'tokenizer':26} {'samples':>8} {'rejected':>8}  identical")
        different = 0
        for family in FAMILIES:
            tokenizer = REPO / "assets" / "tokenizers" / family
            results = {name: prep(path, inputs, tokenizer, tmp / f"{family}-{name}") for name, path in builds.items()}
            same = [f for f in COMPARED if digest(tmp / f"{family}-old" / f) == digest(tmp / f"{family}-new" / f)]
            ok = len(same) == len(COMPARED)
            different += not ok
            print(
                f"{family:26} {results['new']['written']:>8,} {results['new']['rejected']:>8,}  "
                f"{'yes' if ok else 'NO: ' + ', '.join(sorted(set(COMPARED) - set(same)))}"
            )
        big = tmp / "repeated.jsonl.gz"
        with gzip.open(big, "wt", encoding="utf-8") as out:
            for _ in range(args.repeat):
                for corpus in CORPORA:
                    with gzip.open(corpus, "rt", encoding="utf-8") as f:
                        out.writelines(line for line in f if line.strip())
        times: dict[str, list[float]] = {"old": [], "new": []}
        tokens = 0
        for _ in range(args.rounds):
            for name, path in builds.items():
                r = prep(path, [str(big)], REPO / "assets" / "tokenizers" / "qwen2.5", tmp / f"big-{name}")
                times[name].append(r["seconds"])
                tokens = r["tokens"]
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(
            f"\nQwen2.5, shipped corpora x{args.repeat} ({tokens:,} tokens), 1 thread, median of {args.rounds} alternating runs:"
        )
        print(
            f"  old {old:.2f} s ({tokens / old / 1e6:.2f}M tokens/s)   new {new:.2f} s ({tokens / new / 1e6:.2f}M tokens/s)"
            f"   new/old time {new / old:.3f}"
        )
        print(f"  all runs: old {[round(t, 2) for t in times['old']]}  new {[round(t, 2) for t in times['new']]}")
    print(f"load average after: {os.getloadavg()}   ({time.strftime('%Y-%m-%d %H:%M')})")
    if different:
        raise SystemExit(f"{different} tokenizer(s) gave different bytes")


if __name__ == "__main__":
    main()
