"""Per-core speed of `fastsft prep --engine ray` against `fastsft prep`, and of `encode_batch`'s
array output against its list output (issue 17).

The corpus: the shipped chat corpora (assets/corpora) copied `--copies` times, each copy made
distinct (a copy number written into the first message's text), as `--files` plain JSONL files.
Both preps run with one encoding thread; the Ray run on a local Ray of one CPU (`ray.init(num_cpus=1)`,
started before the clock: start-up excluded, as for `prep`, whose process start is not timed
either). Each configuration runs `--repeats` times in alternation; best and median times are
printed (the machine may be shared: the median says more there).

    PYTHONPATH=python python benches/bench_ray.py --copies 6 --files 6 --repeats 7
    PYTHONPATH=python python benches/bench_ray.py --copies 60 --files 12 --repeats 3 --cpus 2 --small-units 0 --no-batch

The second is the larger corpus (60 copies: ~216,000 records, ~410 MB, ~92M tokens), with a Ray
of 2 CPUs against `prep --threads 2`: Ray plans one unit per CPU there (units of ~200 MB).
`--corpus distinct` uses instead bench_prep.py's corpus of distinct real text (translations from
the machine's gettext catalogues, no two records alike, built here and never committed):

    PYTHONPATH=python python benches/bench_ray.py --corpus distinct --conversations 110000 --files 12 --repeats 5 --cpus 2 --small-units 0 --no-batch
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import fastsft

REPO = Path(__file__).resolve().parents[1]
QWEN = str(REPO / "assets/tokenizers/qwen2.5")
CHAT = [
    "medicalgpt_sharegpt_zh_1k",
    "llamafactory_alpaca_en_demo",
    "llamafactory_alpaca_zh_demo",
    "llamafactory_glaive_toolcall_en_demo",
    "llamafactory_glaive_toolcall_zh_demo",
]


def distinct(record: str, copy: int) -> str:
    """The record with `copy` written into its first message's text (so no two copies tokenize alike)."""
    data = json.loads(record)
    for key in ("conversations", "messages"):
        if data.get(key):
            field = "value" if key == "conversations" else "content"
            data[key][0][field] = f"[{copy}] {data[key][0][field]}"
            return json.dumps(data, ensure_ascii=False)
    if "instruction" in data:
        data["instruction"] = f"[{copy}] {data['instruction']}"
    return json.dumps(data, ensure_ascii=False)


def make_corpus(directory: Path, copies: int, files: int) -> list[str]:
    """`copies` distinct copies of the chat corpora in `files` plain JSONL files of about equal
    record counts, written as they are made (memory holds one copy's records, whatever `copies`)."""
    records = []
    for name in CHAT:
        lines = gzip.decompress((REPO / "assets/corpora" / f"{name}.jsonl.gz").read_bytes()).decode().splitlines()
        records.extend(line for line in lines if line.strip())
    total = copies * len(records)
    per_file = -(-total // files)
    paths = [directory / f"part-{i}.jsonl" for i in range(files)]
    outs = [open(path, "w", encoding="utf-8") for path in paths]
    try:
        written = 0
        for copy in range(copies):
            for record in records:
                outs[written // per_file].write(distinct(record, copy) + "\n")
                written += 1
    finally:
        for out in outs:
            out.close()
    return [str(path) for path in paths]


def make_distinct_corpus(directory: Path, conversations: int, files: int) -> list[str]:
    """bench_prep.py's distinct corpus of `conversations` records, cut into `files` plain JSONL
    files of consecutive records."""
    import sys

    sys.path.insert(0, str(REPO / "benches"))
    import bench_prep

    whole = directory / "distinct.jsonl"
    print(bench_prep.build_distinct_corpus(whole, conversations), flush=True)
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    whole.unlink()
    per_file = -(-len(lines) // files)
    paths = [directory / f"part-{i}.jsonl" for i in range(files)]
    for i, path in enumerate(paths):
        path.write_text("".join(lines[i * per_file : (i + 1) * per_file]), encoding="utf-8")
    return [str(path) for path in paths]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) of this process ("driver") and of every process below it: the
    Ray workers ("workers") and the daemons that `ray.init` started ("daemons"). On a shared
    machine wall time depends on the neighbours' load; CPU time much less, so tokens per
    CPU-second is the steadier per-core measure."""
    import psutil

    spent = {"driver": sum(os.times()[:2]), "workers": 0.0, "daemons": 0.0}
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            # Ray names its workers' processes `ray::IDLE`, `ray::encode_unit`, ...
            kind = (
                "workers"
                if any(part.startswith("ray::") or "default_worker.py" in part for part in child.cmdline())
                else "daemons"
            )
            spent[kind] += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return spent


def cpu_timed(fn, cpu: list[dict[str, float]]) -> float:
    """Wall seconds of `fn()`; appends its CPU seconds (this process tree, by kind) to `cpu`."""
    before = cpu_seconds()
    seconds = timed(fn)
    after = cpu_seconds()
    cpu.append({kind: after[kind] - before[kind] for kind in after})
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256, help="records per encode_batch call")
    parser.add_argument("--small-units", type=int, default=16 << 20, help="unit_bytes of a third run with many units (0: none)")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of the local Ray, and prep's threads")
    parser.add_argument("--no-batch", action="store_true", help="skip the encode_batch timings")
    parser.add_argument(
        "--unit-threads",
        type=int,
        default=0,
        help="CPUs (and encoding threads) per Ray work unit (0: the engine's default, a node's CPUs)",
    )
    parser.add_argument(
        "--corpus", choices=["copies", "distinct"], default="copies", help="shipped corpora copied, or distinct real text"
    )
    parser.add_argument("--conversations", type=int, default=110_000, help="records of the distinct corpus")
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        if args.corpus == "distinct":
            files = make_distinct_corpus(work, args.conversations, args.files)
        else:
            files = make_corpus(work, args.copies, args.files)
        size = sum(os.path.getsize(f) for f in files)
        options = {"max_len": 4096, "threads": args.unit_threads, "overwrite": True}
        prep_options = {**options, "threads": args.cpus}  # Ray: one CPU per unit, `--cpus` units at once
        # Ray lowers its workers' priority (niceness 15) so that its own daemons stay responsive; on
        # a machine shared with other work that alone slows them against `prep` at niceness 0.
        # Per-core speed is compared at equal priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {"prep": [], "ray": [], **({"ray-small-units": []} if args.small_units else {})}
        cpu: dict[str, list[dict[str, float]]] = {name: [] for name in times}
        units, reports = {}, []
        for _ in range(args.repeats):
            times["prep"].append(cpu_timed(lambda: fastsft.prep(files, QWEN, work / "local", **prep_options), cpu["prep"]))
            times["ray"].append(
                cpu_timed(
                    lambda: units.update(ray=fastsft.prep(files, QWEN, work / "ray", engine="ray", **options)["units"]),
                    cpu["ray"],
                )
            )
            reports.append(json.loads((work / "ray" / "report.json").read_text()))
            if not args.small_units:
                continue
            times["ray-small-units"].append(
                cpu_timed(
                    lambda: units.update(
                        small=fastsft.prep(files, QWEN, work / "ray-small", engine="ray", unit_bytes=args.small_units, **options)[
                            "units"
                        ]
                    ),
                    cpu["ray-small-units"],
                )
            )
        best = {name: min(t) for name, t in times.items()}
        median = {name: statistics.median(t) for name, t in times.items()}
        report = {
            key: statistics.median(r[key] for r in reports)
            for key in ("unit_pipeline_seconds", "slowest_unit_seconds", "encode_seconds", "assemble_seconds")
        }
        manifest = json.loads((work / "local" / "manifest.json").read_text())
        same = all(
            (work / "local" / n).read_bytes() == (work / "ray" / n).read_bytes()
            for n in ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "rejects.jsonl", "manifest.json")
        )
        ray.shutdown()
        tokens, read = manifest["num_tokens"], manifest["counts"]["read"]
        print(
            f"corpus: {read:,} records in {len(files)} files, {size / 1e6:.1f} MB, {tokens:,} tokens; {args.cpus} CPU(s); "
            f"load average before {load_before}, after {os.getloadavg()}"
        )
        for name, seconds in best.items():
            print(
                f"  {name:15s} wall: best {seconds:6.2f} s  {tokens / seconds / 1e6:.2f}M tokens/s  {best['prep'] / seconds:.3f}x prep;  "
                f"median {median[name]:6.2f} s  {tokens / median[name] / 1e6:.2f}M tokens/s  {median['prep'] / median[name]:.3f}x prep"
                + (f"  ({units[name.replace('ray-small-units', 'small')]} units)" if name != "prep" else "")
            )
        total_cpu = {name: statistics.median(sum(c.values()) for c in spent) for name, spent in cpu.items()}
        for name, spent in cpu.items():
            parts = ", ".join(f"{kind} {statistics.median(c[kind] for c in spent):.2f} s" for kind in spent[0])
            print(
                f"  {name:15s} CPU time (process tree): median {total_cpu[name]:6.2f} s  "
                f"{tokens / total_cpu[name] / 1e6:.2f}M tokens per CPU-second  "
                f"{total_cpu['prep'] / total_cpu[name]:.3f}x prep  ({parts})"
            )
        print(
            f"  identical files: {same}; Ray runs (medians): until every unit was done {report['encode_seconds']:.2f} s "
            f"(the slowest unit's pipeline {report['slowest_unit_seconds']:.2f} s, all units' {report['unit_pipeline_seconds']:.2f} s); "
            f"assembling {report['assemble_seconds']:.2f} s in all, {median['ray'] - report['encode_seconds']:.2f} s of it after the last unit"
        )

        if args.no_batch:
            return
        lines = [line for f in files[:1] for line in Path(f).read_text(encoding="utf-8").splitlines()]
        batches = [lines[i : i + args.batch] for i in range(0, len(lines), args.batch)]
        fastsft.encode_batch(batches[0][:2], QWEN, max_len=4096)  # load the encoder before timing
        batch_tokens = sum(int(fastsft.encode_batch(b, QWEN, max_len=4096, output="arrays")["offsets"][-1]) for b in batches)
        for output in ("lists", "arrays", "arrow"):
            seconds = min(
                timed(lambda output=output: [fastsft.encode_batch(b, QWEN, max_len=4096, output=output) for b in batches])
                for _ in range(args.repeats)
            )
            print(
                f"  encode_batch output={output:6s}: {len(lines):,} records, {seconds:6.2f} s  {batch_tokens / seconds / 1e6:.2f}M tokens/s"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
