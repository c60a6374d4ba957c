"""`fastsft prep --engine ray`: prepares the inputs on a Ray cluster into one dataset.

The work is split into units (`plan_units`): runs of consecutive input files, about one unit per
CPU of the cluster, and for a file larger than a unit one unit per round-robin share of its
records (`--num-shards K --shard-index k` of that file alone). Each unit is a Ray task that runs
the Rust pipeline itself (`_core.prep`) into its own atomic directory under a work directory
beside the output (`.OUT.fastsft-ray-PLAN/`). The driver then assembles the units into one
dataset (`ray_assemble.py`) in a temporary directory and renames it into place.

Why the whole pipeline per unit rather than Ray Data batches through `encode_batch`: the units'
rejects, masks and bytes are the single-machine ones by construction (the same code writes them);
tokens never leave Rust on the way to disk (no Arrow or Python objects between processes, only
the finished `.npy` files on shared storage); and a finished unit is a committed directory, so a
killed worker costs its one unit (Ray retries it) and a re-run of a failed job reuses every unit
that finished. The price: the driver copies the arrays once more while assembling (a kernel
`copy_file_range` for whole-file units, a gather for the shares of a split file) and hashes them,
serially; and each share of a split file reads the whole file, skipping the other shares' records.

Atomicity (DESIGN §5): units are written under temporary names by the pipeline; the dataset is
written under `.OUT.fastsft-tmp-PID` and renamed to `OUT` only when complete; the work directory
is removed after that rename. A failed or killed job leaves at most the work directory (whose
name says what it is) and temporaries, never something at `OUT`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fastsft import _core
from fastsft.config import PrepOptions
from fastsft.errors import (
    FastSFTError,
    InputNotFoundError,
    MissingExtraError,
    OutputExistsError,
    UsageError,
)
from fastsft.prep import expand_inputs
from fastsft.ray_assemble import Unit, assemble
from fastsft.tokenizer_path import locate_tokenizer

# At most 1 GiB of input per unit: a share of a split file reads the whole file (skipping the
# other shares' records), so shares cost a re-read each; at this size a unit encodes for a minute
# or more on one core. At least 128 MiB (~10 s on one core): a unit's start (tokenizer, template,
# files) measured ~0.3 s, which smaller units would pay too often.
DEFAULT_UNIT_BYTES = 1 << 30
MIN_UNIT_BYTES = 128 << 20


def prep_on_ray(
    inputs: Any,
    tokenizer: str | os.PathLike,
    output: str | os.PathLike,
    *,
    address: str | None = None,
    unit_bytes: int = DEFAULT_UNIT_BYTES,
    max_retries: int = 3,
    **options: Any,
) -> dict[str, Any]:
    """`fastsft.prep(..., engine="ray")`: the same dataset as `fastsft.prep`, made by Ray tasks.

    `address`: the cluster (default `RAY_ADDRESS`, else a local Ray started for this call, or the
    one this process is already connected to). Inputs, tokenizer and output must be on storage that
    every node sees. `unit_bytes`: input bytes per work unit; `threads`: the CPUs (and encoding
    threads) each unit's task takes (default 1: Ray runs as many units at once as the cluster has
    CPUs); `max_retries`: how often Ray re-runs a unit whose worker died.
    """
    started = time.monotonic()
    options.setdefault("progress", False)
    options.pop("engine", None)
    opts = PrepOptions(**options)
    if opts.num_shards is not None or opts.shard_index is not None:
        raise UsageError("--engine ray splits the work itself: drop --num-shards/--shard-index")
    if unit_bytes < 1:
        raise UsageError(f"unit_bytes={unit_bytes}: must be 1 or more")
    cpus_per_unit = opts.threads or 1
    files = expand_inputs(inputs)
    if not files:
        raise UsageError("no input files given")
    for path in files:
        if not os.path.exists(path):
            raise InputNotFoundError(f"{path}: no such file")
    absolute = [os.path.abspath(path) for path in files]
    target = Path(os.path.abspath(output))
    _check_output(target, opts.overwrite)
    core_options = _core_options(opts, cpus_per_unit)
    tokenizer_dir = os.path.abspath(locate_tokenizer(tokenizer))
    work = target.parent / f".{target.name}.fastsft-ray-{_plan_id(absolute, tokenizer_dir, core_options)}"

    ray = _import_ray()
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False)
    try:
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_unit)
        units = plan_units(absolute, work, unit_bytes, slots)
        reused, nodes, unit_seconds = _run_units(
            ray, units, absolute, files, tokenizer_dir, core_options, cpus_per_unit, max_retries, opts.progress
        )
    finally:
        if started_ray:
            ray.shutdown()
    encoded = time.monotonic()

    report = {
        "seconds": encoded - started,
        "engine": "ray",
        "units": len(units),
        "units_reused": reused,
        "nodes": nodes,
        "encode_seconds": encoded - started,
        "unit_pipeline_seconds": unit_seconds,
    }
    counts = assemble(
        units,
        files=files,
        sizes=[_plan_size(path) for path in files],
        read_as=absolute,
        output=target,
        overwrite=opts.overwrite,
        max_reject_fraction=opts.max_reject_fraction,
        # The units were given a template file by its absolute path: the manifest names it as the user did.
        template=opts.template,
        report=report,
    )
    # This run's work directory, and those of earlier runs for this output with other inputs or
    # options (they can no longer be resumed into it).
    for stale in target.parent.glob(f".{glob.escape(target.name)}.fastsft-ray-*"):
        shutil.rmtree(stale, ignore_errors=True)
    summary = dict(counts)
    summary.update(
        output=os.fspath(output),
        seconds=time.monotonic() - started,
        threads=min(slots, len(units)) * cpus_per_unit,
        skipped=False,
        engine="ray",
        units=len(units),
        units_reused=reused,
        nodes=nodes,
    )
    return summary


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--engine ray needs Ray on this machine and every node: pip install 'ray[data]'") from None
    return ray


def _core_options(opts: PrepOptions, cpus_per_unit: int) -> dict[str, Any]:
    """`_core.prep`'s options for every unit (`{"encoder": ..., "run": ...}`, as
    `PrepOptions.to_core_json` makes them): the run's, one task's threads, no progress; the reject
    limit is checked over the whole run, and each unit's share is set by `encode_unit`."""
    template = opts.template
    if template and os.path.exists(template):
        template = os.path.abspath(template)
    unit = dataclasses.replace(opts, template=template, threads=cpus_per_unit, progress=False, overwrite=True,
                               max_reject_fraction=None, num_shards=None, shard_index=None, engine="local")  # fmt: skip
    return json.loads(unit.to_core_json())


def _plan_id(absolute: list[str], tokenizer_dir: str, core_options: dict[str, Any]) -> str:
    """Names the work directory: a re-run with the same inputs (path, size, mtime), tokenizer files
    and options finds the units it finished (and their layout); anything else starts afresh."""

    def stamp(path: str) -> list[Any]:
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]

    tokenizer_files = (
        [tokenizer_dir]
        if os.path.isfile(tokenizer_dir)
        else sorted(
            os.path.join(tokenizer_dir, name)
            for name in os.listdir(tokenizer_dir)
            if os.path.isfile(os.path.join(tokenizer_dir, name))
        )
    )
    run = {k: v for k, v in core_options["run"].items() if k not in ("threads", "chunk_size")}
    options = {"encoder": core_options["encoder"], "run": run}
    plan = [_core.__version__, [stamp(p) for p in absolute], [stamp(p) for p in tokenizer_files], options]
    return hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plan_size(path: str) -> int:
    """What the manifest's plan records of an input as the user named it (as rust/manifest.rs's
    `plan_inputs` does for a local run): its size, 0 if it cannot be read."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _input_bytes(path: str) -> int:
    if os.path.isdir(path):  # a datasets.save_to_disk directory
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
    return os.path.getsize(path)


def plan_units(absolute: list[str], work: Path, unit_bytes: int, slots: int) -> list[Unit]:
    """The work units, as an earlier run of the same plan laid them out (`units.json`), or anew:
    about one unit per slot (cluster CPUs / CPUs per unit), none smaller than `MIN_UNIT_BYTES`
    (each unit pays a fixed start, ~0.3 s measured) nor larger than `unit_bytes`. Consecutive
    small files share a unit; a file larger than a unit is read as round-robin shares."""
    layout_path = work / "units.json"
    layout: list[dict[str, Any]] = []
    if layout_path.is_file():
        layout = json.loads(layout_path.read_text(encoding="utf-8"))
    else:
        sizes = [_input_bytes(path) for path in absolute]
        size = min(unit_bytes, max(min(MIN_UNIT_BYTES, unit_bytes), math.ceil(sum(sizes) / slots)))
        group: list[int] = []
        group_bytes = 0
        for index, file_bytes in enumerate(sizes):
            if group and (group_bytes + file_bytes > size or file_bytes > size):
                layout.append({"files": group, "share": 0, "shares": 1})
                group, group_bytes = [], 0
            if file_bytes > size:
                shares = math.ceil(file_bytes / size)
                layout.extend({"files": [index], "share": k, "shares": shares} for k in range(shares))
            else:
                group.append(index)
                group_bytes += file_bytes
        if group:
            layout.append({"files": group, "share": 0, "shares": 1})
        work.mkdir(parents=True, exist_ok=True)
        tmp = work / f"units.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(layout), encoding="utf-8")
        os.replace(tmp, layout_path)
    return [
        Unit(
            u["files"],
            u["share"],
            u["shares"],
            work / f"unit-{u['files'][0]:05d}-{u['files'][-1]:05d}-{u['share']:05d}-of-{u['shares']:05d}",
        )
        for u in layout
    ]


def _as_given(error: Exception, absolute: list[str], files: list[str]) -> Exception:
    """A unit's error naming the inputs as the user did (the units had their absolute paths)."""
    message = str(error)
    for full, given in zip(absolute, files):
        message = message.replace(full, given)
    if message == str(error) or len(error.args) != 1:
        return error
    try:
        renamed = type(error)(message)
    except Exception:  # noqa: BLE001 - a class that takes other arguments keeps its own message
        return error
    renamed.__dict__.update(error.__dict__)
    return renamed


def _run_units(
    ray,
    units: list[Unit],
    absolute: list[str],
    files: list[str],
    tokenizer_dir: str,
    core_options: dict[str, Any],
    cpus_per_unit: int,
    max_retries: int,
    progress: bool,
) -> tuple[int, int, float]:
    """Runs every unfinished unit as a Ray task; returns how many finished units were reused, on
    how many nodes the others ran, and the seconds their pipelines took (summed)."""
    task = ray.remote(encode_unit).options(num_cpus=cpus_per_unit, max_retries=max_retries, retry_exceptions=False)
    pending, reused, nodes, unit_seconds = [], 0, set(), 0.0
    for unit in units:
        done = _finished(unit)
        if done is not None:
            unit.rejected_only = done or None
            reused += 1
            continue
        pending.append(
            (
                unit,
                task.remote(
                    [absolute[i] for i in unit.files],
                    tokenizer_dir,
                    os.fspath(unit.directory),
                    unit.shares,
                    unit.share,
                    core_options,
                ),
            )
        )
    try:
        for position, (unit, ref) in enumerate(pending, 1):
            try:
                result = ray.get(ref)
                unit.rejected_only = result["rejected_only"]
                nodes.add(result["node"])
                unit_seconds += result["seconds"]
                if progress:
                    print(f"fastsft prep: {reused + position} of {len(units)} work units done", file=sys.stderr, flush=True)
            except ray.exceptions.RayTaskError as error:
                # The unit's own error (a strict reject, an unreadable input): as a local run raises it.
                cause = getattr(error, "cause", None)
                raise (_as_given(cause, absolute, files) if isinstance(cause, Exception) else error) from None
            except ray.exceptions.RayError as error:
                raise FastSFTError(
                    f"work unit {unit.directory.name} ({absolute[unit.files[0]]}{' ...' if len(unit.files) > 1 else ''}) failed on the Ray cluster "
                    f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); nothing was written at the "
                    "output; run the same command again: the units that finished are kept and reused"
                ) from None
    except BaseException:
        # The other units run to their end (and are kept: a re-run reuses them) before the error is
        # raised and the caller shuts Ray down. Cancelling them is not safe in Ray 2.60: a
        # force-cancelled task's late reply, or any reply reaching a driver already shut down, trips
        # a check in its task manager (task_manager.cc, "it != submissible_tasks_.end()") that ends
        # the whole driver process with exit status 1.
        refs = [ref for _, ref in pending]
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), fetch_local=False)
        raise
    return reused, len(nodes), unit_seconds


def _finished(unit: Unit) -> dict[str, Any] | None:
    """A unit finished by an earlier run: {} for a dataset, its counts when all were rejected."""
    if (unit.directory / "manifest.json").is_file():
        return {}
    marker = unit.directory / "rejected-only.json"
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8"))
    return None


def encode_unit(
    paths: list[str], tokenizer: str, directory: str, shares: int, share: int, core_options: dict[str, Any]
) -> dict[str, Any]:
    """One unit, on a Ray worker: the Rust pipeline on its inputs (or on one share of one input).

    Returns the node it ran on, and `rejected_only`: None when it wrote a dataset. When every record of the unit was rejected the pipeline
    refuses to write one and keeps the rejects beside it (`DIR.rejects.jsonl`); those records
    still count in the whole run, so the rejects are moved into the unit's directory and the
    counts returned (and kept in `rejected-only.json` for a re-run)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    kept = Path(directory + ".rejects.jsonl")
    kept.unlink(missing_ok=True)
    try:
        unit_options = {**core_options, "run": {**core_options["run"], "num_shards": shares, "shard_index": share}}
        summary = _core.prep(paths, tokenizer, directory, json.dumps(unit_options, ensure_ascii=False))
        return {"node": node, "rejected_only": None, "seconds": summary["seconds"]}
    except Exception:
        if not kept.is_file():
            raise
    return {"node": node, "rejected_only": _keep_rejected_only(paths, Path(directory), kept), "seconds": 0.0}


def _keep_rejected_only(paths: list[str], directory: Path, kept: Path) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for line in kept.read_text(encoding="utf-8").splitlines():
        reason = json.loads(line)["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    read = sum(reasons.values())
    counts = {
        "read": read,
        "rejected": read,
        "rejected_by_reason": dict(sorted(reasons.items())),
        "inputs": [_file_info(path) for path in paths],
    }
    tmp = directory.with_name(directory.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.move(kept, tmp / "rejects.jsonl")
    (tmp / "rejected-only.json").write_text(json.dumps(counts), encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    os.rename(tmp, directory)
    return counts


def _file_info(path: str) -> dict[str, Any]:
    """What the manifest lists of an input (rust/source.rs `InputInfo`): path, size, sha256."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return {"path": path, "size": size, "sha256": sha.hexdigest()}


def _check_output(target: Path, overwrite: bool) -> None:
    """The rules of `fastsft prep -o` (rust/writer.rs), checked before any work starts."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not (target / "manifest.json").is_file():
        raise OutputExistsError(
            f"{target} exists and is neither an empty directory nor a fastsft dataset (no manifest.json); "
            "fastsft never replaces it: choose another output path, or empty or remove it yourself"
        )
    if not overwrite:
        raise OutputExistsError(f"{target} already holds a dataset; pass --overwrite to replace it")
