"""The assembly step of `fastsft prep --engine ray` alone: the Rust core's (`_core.assemble_units`)
against an older Python one given as a file (the one this replaced, for the record), on the same
units, alternating.

Units are made once with `_core.prep` as the engine makes them: `--files` whole-file units, and
one file read as `--shares` round-robin shares (the merge by line). Times are wall seconds of the
assembly alone, best and median of `--repeats`.

    PYTHONPATH=python python benches/bench_ray_assemble.py --copies 6 --files 6 --shares 4 \
        --old /tmp/old_ray_assemble.py     # git show 343efb9:python/fastsft/ray_assemble.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_ray import QWEN, make_corpus
from fastsft import _core
from fastsft.config import PrepOptions
from fastsft.ray_assemble import Unit, assemble


def make_units(files: list[str], shares: int, work: Path) -> dict[str, list[Unit]]:
    options = json.loads(PrepOptions(max_len=4096, threads=1, progress=False, overwrite=True).to_core_json())
    layouts = {
        "whole files": [([i], 0, 1) for i in range(len(files))],
        f"{shares} shares of one file": [([0], k, shares) for k in range(shares)],
    }
    units: dict[str, list[Unit]] = {}
    for name, layout in layouts.items():
        units[name] = []
        for indices, share, count in layout:
            directory = work / f"{name[:5]}-{indices[0]}-{share}"
            run = {**options, "run": {**options["run"], "num_shards": count, "shard_index": share}}
            _core.prep([files[i] for i in indices], QWEN, str(directory), json.dumps(run))
            units[name].append(Unit(indices, share, count, directory))
    return units


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--shares", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--old", help="an older ray_assemble.py with assemble(units, files, absolute, tmp)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-assemble-"))
    try:
        files = make_corpus(work, args.copies, args.files)
        units = make_units(files, args.shares, work)
        old = None
        if args.old:
            spec = importlib.util.spec_from_file_location("old_ray_assemble", args.old)
            assert spec and spec.loader
            old = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = old  # dataclasses look their module up
            spec.loader.exec_module(old)
        print(f"load average {os.getloadavg()}")
        for name, layout in units.items():
            used = sorted({i for u in layout for i in u.files})
            given = [files[i] for i in used]
            times: dict[str, list[float]] = {"rust": [], **({"python (old)": []} if old else {})}
            for _ in range(args.repeats):
                out = work / "out"
                start = time.perf_counter()
                remapped = [Unit([used.index(i) for i in u.files], u.share, u.shares, u.directory) for u in layout]
                counts = assemble(
                    remapped, files=given, sizes=[os.path.getsize(f) for f in given], read_as=given, output=out,
                    overwrite=True, max_reject_fraction=None, template=None, report={},
                )  # fmt: skip
                times["rust"].append(time.perf_counter() - start)
                if old:
                    tmp = work / "old"
                    shutil.rmtree(tmp, ignore_errors=True)
                    tmp.mkdir()
                    olds = [old.Unit([used.index(i) for i in u.files], u.share, u.shares, u.directory) for u in layout]
                    start = time.perf_counter()
                    old.assemble(olds, given, given, tmp)
                    times["python (old)"].append(time.perf_counter() - start)
                    same = all(
                        (tmp / n).read_bytes() == (out / n).read_bytes() for n in ("input_ids.npy", "offsets.npy", "origin.npy")
                    )
                    assert same, "the two assemblies differ"
            print(f"{name}: {len(layout)} units, {counts['samples']:,} samples, {counts['tokens']:,} tokens")
            for method, spent in times.items():
                print(f"  {method:13s} best {min(spent):.3f} s  median {statistics.median(spent):.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
