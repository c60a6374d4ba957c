"""What the writer's checksums cost `fastsft prep`: two builds, alternating, on the same corpus.

Runs ``fastsft.prep`` (1 thread) ``--repeat`` times with each of two package directories, in
turn (ABAB...), each in its own process, and prints wall and CPU seconds of every run and the
minimum of each build. Build A: a ``python/`` tree whose ``_core`` does not record
``array_sha256``; build B: one that does (this worktree).

    python benches/bench_writer_checksums.py --before /tmp/pkg_before --after python \\
        --corpus corpus.jsonl --tokenizer assets/tokenizers/qwen2.5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="PYTHONPATH of the build without checksums")
    ap.add_argument("--after", required=True, help="PYTHONPATH of the build with checksums")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    builds = {"before (no checksums)": args.before, "after (sha256 while writing)": args.after}
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in builds}
    out = os.path.join(tempfile.mkdtemp(prefix="fastsft-ab-"), "out")
    for _ in range(args.repeat):
        for name, path in builds.items():
            shutil.rmtree(out, ignore_errors=True)
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            code = (f"import fastsft; fastsft.prep([{args.corpus!r}], {args.tokenizer!r}, {out!r}, threads=1, "
                    "progress=False, max_reject_fraction=1.0)")  # fmt: skip
            subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": path}, check=True)
            wall = time.perf_counter() - t
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            m = json.load(open(os.path.join(out, "manifest.json")))
            results[name].append((wall, cpu))
            print(
                f"{name}: wall {wall:.2f} s, cpu {cpu:.2f} s, tokens {m['num_tokens']:,}, array_sha256 {'array_sha256' in m}",
                flush=True,
            )
    size = sum(os.path.getsize(os.path.join(out, n)) for n in ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy"))
    for name, runs in results.items():
        print(f"{name}: min wall {min(w for w, _ in runs):.2f} s, min cpu {min(c for _, c in runs):.2f} s")
    print(f"array bytes per run: {size:,}; load average {os.getloadavg()}")
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)


if __name__ == "__main__":
    main()
