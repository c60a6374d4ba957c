#!/usr/bin/env python
"""Peak memory of `fastsft prep` on corpora larger than memory should matter (DESIGN §6, issue 5 item 7).

    python benches/bench_memory.py [--sizes-gb 0.5 2] [--tokenizer assets/tokenizers/qwen2.5]
                                   [--max-len 4096] [--work DIR] [--write benches/MEMORY.md]

Builds plain JSONL corpora of each size by repeating the repo's real chat corpora (ShareGPT, Alpaca
and tool-call files: the ones `prep` reads without field mapping), runs `fastsft prep` on each in its
own subprocess (the CLI, as a user would), and reports that subprocess's peak RSS (`ru_maxrss` of
the rusage `os.wait4` returns for it: the one child, not the largest of all children) and its
throughput. Target: under 1 GB, and the same for 0.5 GB as for 2 GB (the pipeline holds the
tokenizer and a few chunks, whatever the corpus size). The generated corpora and outputs are
deleted at the end, whatever happens. The table (with the command, machine and date) is printed
and written to `--write`.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO / "assets/corpora"
# The chat corpora (gsm8k and belle are question/answer files that need field mapping).
CHAT_CORPORA = [
    "medicalgpt_sharegpt_zh_1k",
    "llamafactory_alpaca_zh_demo",
    "llamafactory_alpaca_en_demo",
    "llamafactory_glaive_toolcall_en_demo",
    "llamafactory_glaive_toolcall_zh_demo",
    "llamafactory_identity",
    "fastchat_dummy_conversation",
]
GB = 10**9


def build_corpus(path: Path, size: int) -> int:
    """Writes the real corpora again and again until the file holds at least `size` bytes; returns
    the number of records."""
    block = b"".join(gzip.decompress((CORPORA / f"{name}.jsonl.gz").read_bytes()) for name in CHAT_CORPORA)
    block = b"".join(line.rstrip(b"\r\n") + b"\n" for line in block.splitlines() if line.strip())
    per_block = block.count(b"\n")
    copies = -(-size // len(block))
    with open(path, "wb") as f:
        for _ in range(copies):
            f.write(block)
    return copies * per_block


def run_measured(command: list[str], log: Path) -> tuple[int, float, int]:
    """(exit status, wall seconds, peak RSS in bytes) of one subprocess."""
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - started, usage.ru_maxrss * 1024


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.5, 2.0], help="corpus sizes, in GB (10^9 bytes)")
    parser.add_argument("--tokenizer", default=str(REPO / "assets/tokenizers/qwen2.5"))
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0, help="prep --threads (0: every core)")
    parser.add_argument("--work", default=None, help="where the corpora are generated (default: a temporary directory)")
    parser.add_argument("--write", default=str(REPO / "benches/MEMORY.md"), help="markdown file for the table ('' to skip)")
    args = parser.parse_args()

    import fastsft

    work = Path(tempfile.mkdtemp(prefix="fastsft-memory-", dir=args.work))
    rows = []
    load_before = os.getloadavg()
    revision = commit()  # before the runs: the code they measured
    try:
        for size_gb in args.sizes_gb:
            corpus = work / f"corpus-{size_gb:g}GB.jsonl"
            out = work / f"out-{size_gb:g}GB"
            records = build_corpus(corpus, int(size_gb * GB))
            size = corpus.stat().st_size
            command = [
                sys.executable,
                "-m",
                "fastsft.cli",
                "prep",
                str(corpus),
                "--tokenizer",
                args.tokenizer,
                "-o",
                str(out),
                "--max-len",
                str(args.max_len),
                "--threads",
                str(args.threads),
                "--no-progress",
            ]
            print(f"{size / GB:.2f} GB, {records:,} records: {' '.join(command)}", flush=True)
            status, seconds, peak = run_measured(command, work / f"log-{size_gb:g}GB.txt")
            log = (work / f"log-{size_gb:g}GB.txt").read_text(errors="replace")
            print(log, flush=True)
            if status != 0:
                print(f"fastsft prep failed with exit status {status}", file=sys.stderr)
                return 1
            counts = json.loads((out / "manifest.json").read_text())["counts"]
            rows.append(
                {
                    "corpus": f"{size / GB:.2f} GB",
                    "records": counts["read"],
                    "tokens": counts["tokens"],
                    "seconds": seconds,
                    "peak_rss_mib": peak / 2**20,
                    "mb_per_s": size / 1e6 / seconds,
                    "records_per_s": counts["read"] / seconds,
                    "tokens_per_s": counts["tokens"] / seconds,
                }
            )
            assert counts["read"] == records == counts["written"] + counts["rejected"], counts
            shutil.rmtree(out)
            corpus.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load_after = os.getloadavg()
    header = "| corpus | records | tokens | wall s | peak RSS MiB | MB/s | records/s | M tokens/s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    lines = [
        f"| {r['corpus']} | {r['records']:,} | {r['tokens']:,} | {r['seconds']:.0f} | {r['peak_rss_mib']:.0f} | "
        f"{r['mb_per_s']:.2f} | {r['records_per_s']:,.0f} | {r['tokens_per_s'] / 1e6:.2f} |"
        for r in rows
    ]
    table = "\n".join([header, *lines])
    ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] if len(rows) > 1 else 1.0
    argv = " ".join(["python", "benches/bench_memory.py", *sys.argv[1:]])
    report = (
        f"# `fastsft prep` peak memory against corpus size\n\n"
        f"Command: `{argv}` (each run: `fastsft prep CORPUS --tokenizer {Path(args.tokenizer).relative_to(REPO) if Path(args.tokenizer).is_relative_to(REPO) else args.tokenizer} "
        f"--max-len {args.max_len} --threads {args.threads} --no-progress`, in its own subprocess)\n\n"
        f"Machine: {machine()}; load average (1, 5, 15 min) {' '.join(f'{x:.1f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.1f}' for x in load_after)} after (other work on the machine slows the throughput columns; "
        f"peak RSS does not depend on it)\n\n"
        f"Date: {datetime.date.today().isoformat()}; fastsft {fastsft.__version__} at {revision}\n\n"
        f"Corpus: the repo's chat corpora ({', '.join(CHAT_CORPORA)}) repeated, plain JSONL. Peak RSS: `ru_maxrss` of "
        f"the prep subprocess (`os.wait4`). Target: under 1 GB, and not growing with the corpus.\n\n"
        f"{table}\n\n"
        f"Peak RSS of the largest corpus / the smallest: {ratio:.2f}.\n"
    )
    print(report)
    if args.write:
        Path(args.write).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
