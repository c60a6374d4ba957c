"""Start-up: `fastsft prep` of ONE conversation against `tokenizers.Tokenizer.from_file` of the same
tokenizer.json, as whole processes, side by side (the variants of a round run back to back, so
they see the same machine load), median of several rounds; wall time and peak RSS (the child's
ru_maxrss), and their ratios to the plain load.

Variants: `tokenizers` (python -c "Tokenizer.from_file(...)"), `prep cold` (FASTSFT_CACHE=0),
`prep warm` (the tokenizer cache primed once in a temporary $XDG_CACHE_HOME).

    python benches/bench_startup.py [--runs 7] [--tokenizers qwen2.5 llama3.1 gemma]

Runs whichever fastsft `python -c "import fastsft"` finds (set PYTHONPATH to measure another build).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO / "assets" / "tokenizers"
CONVERSATION = {
    "conversations": [{"from": "human", "value": "Hello, who are you?"}, {"from": "gpt", "value": "I am a helpful assistant."}]
}


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process; fails loudly if it fails."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps it: Popen.wait is not called
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed ({code}):\n{err.read().decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokenizers", nargs="+", default=["qwen2.5", "llama3.1", "gemma"])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    data = work / "one.jsonl"
    data.write_text(json.dumps(CONVERSATION) + "\n", encoding="utf-8")
    base_env = {k: v for k, v in os.environ.items() if k not in ("FASTSFT_CACHE", "FASTSFT_TOKENIZER")}
    cold_env = {**base_env, "FASTSFT_CACHE": "0"}
    warm_env = {**base_env, "XDG_CACHE_HOME": str(work / "cache")}

    def prep(tokenizer: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fastsft.cli",
            "prep",
            str(data),
            "--tokenizer",
            str(tokenizer),
            "-o",
            str(work / "out"),
            "--overwrite",
            "--no-progress",
        ]

    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.runs} rounds; medians")
    rows = []
    for name in args.tokenizers:
        tokenizer = TOKENIZERS / name
        plain = [
            sys.executable,
            "-c",
            f"from tokenizers import Tokenizer; Tokenizer.from_file({str(tokenizer / 'tokenizer.json')!r})",
        ]
        run(prep(tokenizer), warm_env)  # primes the cache (and the page cache for every variant)
        variants = {
            "tokenizers.from_file": (plain, base_env),
            "prep cold (FASTSFT_CACHE=0)": (prep(tokenizer), cold_env),
            "prep warm (cache)": (prep(tokenizer), warm_env),
        }
        samples: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        for _ in range(args.runs):
            for label, (argv, env) in variants.items():
                samples[label].append(run(argv, env))
        base_wall = statistics.median(s[0] for s in samples["tokenizers.from_file"])
        base_rss = statistics.median(s[1] for s in samples["tokenizers.from_file"])
        for label, got in samples.items():
            wall, rss = statistics.median(s[0] for s in got), statistics.median(s[1] for s in got)
            rows.append((name, label, wall, wall / base_wall, rss, rss / base_rss))
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'tokenizer':10} {'variant':30} {'wall s':>7} {'x plain':>8} {'peak RSS MB':>12} {'x plain':>8}")
    for name, label, wall, wall_ratio, rss, rss_ratio in rows:
        print(f"{name:10} {label:30} {wall:7.3f} {wall_ratio:8.2f} {rss:12.0f} {rss_ratio:8.2f}")


if __name__ == "__main__":
    main()
