#!/usr/bin/env python
"""Thread scaling of `fastsft prep`, end to end: threads 1 and 2 alternated, 3 rounds, whole
processes, on the distinct corpus of bench_prep.py (`--corpus distinct`); prints each run's wall
seconds and CPU seconds (user + system of the child) with the load average around it, then the
medians and their ratio. The previous run's output is deleted before the clock starts, so no
run pays for removing another's dataset.

    N=60000 python benches/bench_scaling.py llama3.1 qwen3 gemma
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))
import bench_prep  # noqa: E402

work = Path(tempfile.mkdtemp(prefix="scaling_"))
corpus = work / "corpus.jsonl"
print(bench_prep.build_distinct_corpus(corpus, int(os.environ.get("N", "60000"))), flush=True)
for fam in sys.argv[1:]:
    times: dict[int, list[float]] = {1: [], 2: []}
    for rnd in range(3):
        for t in (1, 2):
            out = work / f"o{t}"
            shutil.rmtree(out, ignore_errors=True)
            load = os.getloadavg()[0]
            code = (
                f"import fastsft; fastsft.prep([{str(corpus)!r}], {str(REPO / 'assets/tokenizers' / fam)!r}, "
                f"{str(out)!r}, threads={t}, overwrite=True)"
            )
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            dt = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            times[t].append(dt)
            print(
                f"{fam} round {rnd} threads {t}: {dt:.2f} s, CPU {cpu:.2f} s (load {load:.2f} -> {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    m = {t: sorted(v)[1] for t, v in times.items()}
    print(f"{fam}: median 1 thread {m[1]:.2f} s, 2 threads {m[2]:.2f} s, scaling {m[1] / m[2]:.2f}x", flush=True)
