"""`fastsft prep --engine ray`: prepares the inputs on a Ray cluster into one dataset.

The work is split into units (`plan_units`): runs of consecutive input files, about four units
per node, one on a single node (a node runs one unit at a time on all its CPUs: `_cpus_per_unit`),
and for a file
larger than a node's part one unit per round-robin share of its records (`--num-shards K
--shard-index k` of that file alone). Each unit is a Ray task (`ray_unit.py`) that runs the Rust
pipeline itself (`_core.prep`) into its own atomic directory under a work directory beside the
output (`.OUT.fastsft-ray-PLAN/`). As units finish, the driver hands them in order to the Rust
core (`ray_assemble.py`, rust/assemble.rs), which writes their samples into the one dataset while
later units still encode, then its manifest, under a temporary name renamed into place. Inputs
and output may also be on an object store (`ray_storage.py`): units are then staged there and
assembled once all are done, and the dataset uploaded.

Why the whole pipeline per unit rather than Ray Data batches through `encode_batch`: the units'
rejects, masks and bytes are the single-machine ones by construction (the same code writes them);
tokens never leave Rust on the way to disk (no Arrow or Python objects between processes, only
the finished `.npy` files on shared storage); and a finished unit is a committed directory, so a
killed worker costs its one unit (Ray retries it) and a re-run of a failed job reuses every unit
that finished. The price: with more than one unit the assembly copies the arrays once more and
hashes them (while later units encode; a run of one unit links its arrays instead); and each
share of a split file reads the whole file, skipping the other shares' records.

Atomicity (DESIGN §5): units are written under temporary names by the pipeline; the dataset is
written under `.OUT.fastsft-tmp-PID` and renamed to `OUT` only when complete; the work directory
is removed after that rename. A failed or killed job leaves at most the work directory (whose
name says what it is) and temporaries, never something at `OUT`. On an object store, which has
no rename, `manifest.json` is written last, for each unit and for the dataset: a job that fails
leaves no manifest at `OUT`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastsft import _core
from fastsft.config import PrepOptions
from fastsft.errors import (
    FastSFTError,
    FileAccessError,
    MissingExtraError,
    OutputExistsError,
    TooManyRejectsError,
    UsageError,
)
from fastsft.prep import expand_inputs
from fastsft.ray_assemble import Unit, UnitByUnit, assemble
from fastsft.ray_storage import (
    Place,
    check_bucket,
    delete_file,
    download_dir,
    exists,
    file_size_and_stamp,
    is_remote,
    list_names,
    locate,
    read_text,
    remove,
    upload_dir,
    upload_file,
    write_text,
)
from fastsft.ray_storage import expand as expand_remote
from fastsft.ray_unit import encode_unit, finished, unit_read_as
from fastsft.tokenizer_path import locate_tokenizer

# At most 1 GiB of input per unit: a share of a split file reads the whole file (skipping the
# other shares' records), so shares cost a re-read each; at this size a unit encodes for a minute
# or more on one core. About UNITS_PER_SLOT units per slot: Ray hands the next unit to whichever
# worker is free, which evens out units that take longer than their bytes say (text that costs
# more tokens per byte), and the driver assembles the finished units while the others still
# encode. At least 8 MiB (~0.5 s on one core): a worker keeps its encoder from unit to unit
# (`_core.reuse_encoders`), so a unit's start is its files and Ray's dispatch, a few ms.
# Measured in benches/RESULTS.md ("Issue 17, session 21").
DEFAULT_UNIT_BYTES = 1 << 30
MIN_UNIT_BYTES = 8 << 20
UNITS_PER_SLOT = 4
_REMOTE_ENCODE_UNIT: Any = None


def prep_on_ray(
    inputs: Any,
    tokenizer: str | os.PathLike,
    output: str | os.PathLike,
    *,
    address: str | None = None,
    unit_bytes: int = DEFAULT_UNIT_BYTES,
    max_retries: int = 3,
    filesystem: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """`fastsft.prep(..., engine="ray")`: the same dataset as `fastsft.prep`, made by Ray tasks.

    `address`: the cluster (default `RAY_ADDRESS`, else a local Ray started for this call, or the
    one this process is already connected to). Local inputs, the tokenizer and a local output must
    be on storage that every node sees; inputs and output may also be object-store URIs
    (`s3://bucket/key`, any `pyarrow.fs` filesystem: `ray_storage.py`), read and written through
    `filesystem` when given (a `pyarrow.fs.FileSystem` or an fsspec one), else the filesystem
    pyarrow makes from each URI and the environment. `unit_bytes`: input bytes per work unit;
    `threads`: the CPUs (and encoding threads) each unit's task takes (default: every CPU of the
    smallest node, one unit per node at a time); `max_retries`: how often Ray re-runs a unit whose
    worker died.
    """
    started = time.monotonic()
    options.setdefault("progress", False)
    options.pop("engine", None)
    opts = PrepOptions(**options)
    if opts.num_shards is not None or opts.shard_index is not None:
        raise UsageError("--engine ray splits the work itself: drop --num-shards/--shard-index")
    if unit_bytes < 1:
        raise UsageError(f"unit_bytes={unit_bytes}: must be 1 or more")
    files = _expand(inputs, filesystem)
    if not files:
        raise UsageError("no input files given")
    places = [locate(path, filesystem) for path in files]
    stamps = [file_size_and_stamp(place) for place in places]
    sizes = [_input_bytes(place.path) if place.local else size for place, (size, _) in zip(places, stamps)]
    out = locate(output, filesystem)
    _check_output(out, opts.overwrite)
    core_options = _core_options(opts)
    tokenizer_dir = os.path.abspath(locate_tokenizer(tokenizer))
    plan = _plan_id([[p.path if p.local else p.uri, *stamp] for p, stamp in zip(places, stamps)], tokenizer_dir, core_options)
    out_parent, out_name = out.parent_and_name()
    work = out_parent.join(f".{out_name}.fastsft-ray-{plan}")
    # Local scratch, on every node: copies of objects a unit reads, units on their way to the
    # store, and the driver's assembly of a dataset that goes to a store.
    scratch = os.path.join(tempfile.gettempdir(), f"fastsft-ray-{plan}")

    try:
        ray = _import_ray()
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False)
        try:
            cpus_per_unit = _cpus_per_unit(ray, opts.threads)
            core_options["run"]["threads"] = cpus_per_unit
            slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_unit)
            units = plan_units(sizes, work, unit_bytes, slots, scratch=scratch)
            for unit in units:
                unit.read_as = (
                    None
                    if all(places[i].local for i in unit.files)
                    else unit_read_as([places[i] for i in unit.files], scratch, unit.name)
                )
            assembly_plan: dict[str, Any] = dict(
                files=files,
                sizes=[_plan_size(place, size) for place, (size, _) in zip(places, stamps)],
                read_as=[place.path for place in places],
                overwrite=opts.overwrite or not out.local,
                max_reject_fraction=opts.max_reject_fraction,
                # The units were given a template file by its absolute path: the manifest names it as the user did.
                template=opts.template,
            )
            # Local units are assembled as they finish, in order, while later ones still encode;
            # units on a store are fetched once all are done.
            streaming = UnitByUnit(units, output=Path(out.path), **assembly_plan) if work.local and len(units) > 1 else None
            try:
                reused, nodes, unit_seconds = _run_units(
                    ray, units, places, files, tokenizer_dir, core_options, cpus_per_unit, max_retries, opts.progress, scratch,
                    on_done=streaming.add if streaming else None,
                )  # fmt: skip
            except BaseException:
                if streaming:
                    streaming.abandon()
                raise
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
            "unit_pipeline_seconds": sum(unit_seconds),
            "slowest_unit_seconds": max(unit_seconds, default=0.0),
        }
        if not work.local:
            _fetch_units(units, work)
        target = out.path if out.local else os.path.join(scratch, "dataset")
        try:
            if streaming:
                counts = streaming.finish(report)
            else:
                counts = assemble(units, output=Path(target), report=report, **assembly_plan)
        except TooManyRejectsError as error:
            if out.local:
                raise
            raise _rejects_kept_on_store(error, target, out_parent.join(f"{out_name}.rejects.jsonl")) from None
        if not out.local:
            _publish(target, out)
    finally:
        # This node's scratch (a killed worker leaves its unit's in its own node's).
        shutil.rmtree(scratch, ignore_errors=True)
    # This run's work directory, and those of earlier runs for this output with other inputs or
    # options (they can no longer be resumed into it).
    for name in list_names(out_parent):
        if name.startswith(f".{out_name}.fastsft-ray-"):
            remove(out_parent.join(name))
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


def _expand(inputs: Any, filesystem: Any) -> list[str]:
    """Local paths and globs as `fastsft prep` expands them; object-store URIs as given."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[str] = []
    for item in items:
        item = os.fspath(item)
        files.extend(expand_remote(item, filesystem) if is_remote(item) else expand_inputs(item))
    return list(dict.fromkeys(files))


def _fetch_units(units: list[Unit], work: Place) -> None:
    """The driver's copy of the finished units on a store, for the assembly (local files), each
    array checked against its unit's manifest on the way: a unit that does not match (an upload
    damaged on the way) is removed from the store, so that the next run prepares it again."""
    for unit in units:
        names = ["rejects.jsonl"] if unit.rejected_only is not None else [*UNIT_FILES]
        sums = download_dir(work.join(unit.name), os.fspath(unit.directory), names)
        if unit.rejected_only is not None:
            continue
        try:
            recorded = json.loads((unit.directory / "manifest.json").read_text(encoding="utf-8"))["array_sha256"]
        except (ValueError, KeyError, TypeError):
            recorded = {}
        damaged = sorted(name for name, sha in sums.items() if recorded.get(name) != sha)
        if damaged:
            remove(work.join(unit.name))
            raise FileAccessError(
                f"{work.join(unit.name).uri}: {', '.join(damaged)} do not match the unit's manifest (damaged on the store); "
                "the unit was removed: run the same command again to prepare it anew"
            )


def _publish(local: str, out: Place) -> None:
    """Uploads a finished dataset, `manifest.json` last. A dataset already there (replaced with
    --overwrite, as checked before the run) first loses its manifest, so that no reader takes the
    mix of old and new files for a dataset while they are replaced."""
    if exists(out.join("manifest.json")):
        delete_file(out.join("manifest.json"))
    remove(out)
    upload_dir(local, out, last="manifest.json")


def _rejects_kept_on_store(error: TooManyRejectsError, target: str, kept: Place) -> TooManyRejectsError:
    local = f"{target}.rejects.jsonl"
    upload_file(local, kept)
    renamed = TooManyRejectsError(str(error).replace(local, kept.uri), error.counts, error.read)
    return renamed


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--engine ray needs Ray on this machine and every node: pip install 'ray[data]'") from None
    return ray


def _cpus_per_unit(ray: Any, threads: int | None) -> int:
    """A unit's CPUs, which its pipeline runs as threads: `threads` when given, else every CPU of
    the smallest node that has any, so that a node runs one unit at a time on all its cores, as
    `prep` runs on one machine: one encoder per node rather than one per CPU (hundreds of MB each
    for a large vocabulary), and one unit per node where a cluster is one node. Measured on 2 CPUs
    (benches/RESULTS.md, "Issue 17, session 21"): units of 1 thread, two at once, took from 2%
    less to 17% more CPU time than `prep --threads 2` in four runs; units of 2 threads took what
    `prep` took."""
    if threads:
        return threads
    cpus = [int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    return min((c for c in cpus if c > 0), default=1)


def _core_options(opts: PrepOptions) -> dict[str, Any]:
    """`_core.prep`'s options for every unit (`{"encoder": ..., "run": ...}`, as
    `PrepOptions.to_core_json` makes them): the run's, no progress; the reject limit is checked
    over the whole run, each unit's share is set by `encode_unit`, its threads once the cluster
    is known (`_cpus_per_unit`)."""
    template = opts.template
    if template and os.path.exists(template):
        template = os.path.abspath(template)
    unit = dataclasses.replace(opts, template=template, threads=1, progress=False, overwrite=True,
                               max_reject_fraction=None, num_shards=None, shard_index=None, engine="local")  # fmt: skip
    return json.loads(unit.to_core_json())


def _plan_id(input_stamps: list[list[Any]], tokenizer_dir: str, core_options: dict[str, Any]) -> str:
    """Names the work directory: a re-run with the same inputs ([path or URI, size, mtime] each),
    tokenizer files and options finds the units it finished (and their layout); anything else
    starts afresh."""

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
    plan = [_core.__version__, input_stamps, [stamp(p) for p in tokenizer_files], options]
    return hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plan_size(place: Place, size: int) -> int:
    """What the manifest's plan records of an input as the user named it (as rust/manifest.rs's
    `plan_inputs` does for a local run): its size (a local path's, relative to this directory),
    0 if it cannot be read."""
    if not place.local:
        return size
    try:
        return os.stat(place.uri).st_size
    except OSError:
        return 0


def _input_bytes(path: str) -> int:
    if os.path.isdir(path):  # a datasets.save_to_disk directory
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
    return os.path.getsize(path)


def plan_units(sizes: list[int], work: Place | Path, unit_bytes: int, slots: int, scratch: str = "") -> list[Unit]:
    """The work units, as an earlier run of the same plan laid them out (`units.json`), or anew:
    about `UNITS_PER_SLOT` units per slot (cluster CPUs / CPUs per unit; one unit when there is
    one slot), none smaller than
    `MIN_UNIT_BYTES` (each unit pays a fixed start) nor larger than `unit_bytes`. Consecutive
    small files (of `sizes` bytes) share a unit, each in the unit its middle byte falls in. A file
    larger than a slot's share of the whole is read as shares: each share reads the whole file,
    so a file is split only as far as the slots need, never for the finer units.
    A unit's directory is in `work` when local, else (a store) the driver's copy in `scratch`."""
    if isinstance(work, Path):
        work = Place(None, os.fspath(work), os.fspath(work))
    layout_place = work.join("units.json")
    layout: list[dict[str, Any]] = []
    if exists(layout_place):
        layout = json.loads(read_text(layout_place))
    else:

        def bounded(size: int) -> int:
            return min(unit_bytes, max(min(MIN_UNIT_BYTES, unit_bytes), size))

        # One slot (one node): units would run one after another, with nothing to even out and
        # no idle CPU to assemble on; one unit is `prep` itself, its arrays linked, not copied.
        per_slot = UNITS_PER_SLOT if slots > 1 else 1
        group_size = bounded(math.ceil(sum(sizes) / (slots * per_slot)))
        split_size = bounded(math.ceil(sum(sizes) / slots))
        group: list[int] = []
        group_bytes = 0
        for index, file_bytes in enumerate(sizes):
            # A file joins the unit its middle byte falls in: no extra unit for a few files that
            # overflow (measured: 5 + 5 + 2 files on 2 CPUs, the last alone).
            fits = group_bytes + file_bytes / 2 <= group_size and group_bytes + file_bytes <= unit_bytes
            if group and (not fits or file_bytes > group_size):
                layout.append({"files": group, "share": 0, "shares": 1})
                group, group_bytes = [], 0
            if file_bytes > split_size:
                shares = math.ceil(file_bytes / split_size)
                layout.extend({"files": [index], "share": k, "shares": shares} for k in range(shares))
            elif file_bytes > group_size:
                layout.append({"files": [index], "share": 0, "shares": 1})
            else:
                group.append(index)
                group_bytes += file_bytes
        if group:
            layout.append({"files": group, "share": 0, "shares": 1})
        write_text(layout_place, json.dumps(layout))
    units = []
    for u in layout:
        name = f"unit-{u['files'][0]:05d}-{u['files'][-1]:05d}-{u['share']:05d}-of-{u['shares']:05d}"
        local = Path(work.path if work.local else os.path.join(scratch, "units")) / name
        units.append(Unit(u["files"], u["share"], u["shares"], local, staged=work.join(name)))
    return units


def _as_given(error: Exception, read_as: list[str], files: list[str]) -> Exception:
    """A unit's error naming the inputs as the user did (the units had absolute paths or copies)."""
    message = str(error)
    for full, given in zip(read_as, files):
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
    places: list[Place],
    files: list[str],
    tokenizer_dir: str,
    core_options: dict[str, Any],
    cpus_per_unit: int,
    max_retries: int,
    progress: bool,
    scratch: str,
    on_done: Callable[[Unit], None] | None = None,
) -> tuple[int, int, list[float]]:
    """Runs every unfinished unit as a Ray task; returns how many finished units were reused, on
    how many nodes the others ran, and the seconds each one's pipeline took. `on_done` is called
    with each unit in plan order, as soon as it and every unit before it are finished."""
    global _REMOTE_ENCODE_UNIT
    if _REMOTE_ENCODE_UNIT is None:
        # Made once per process: a new remote function is pickled and exported again.
        _REMOTE_ENCODE_UNIT = ray.remote(encode_unit)
    task = _REMOTE_ENCODE_UNIT.options(num_cpus=cpus_per_unit, max_retries=max_retries, retry_exceptions=False)
    pending: list[tuple[Unit, Any]] = []
    reused, nodes, unit_seconds = 0, set[str](), list[float]()
    for unit in units:
        done = finished(unit.staged)
        if done is not None:
            unit.rejected_only = done or None
            reused += 1
            pending.append((unit, None))
            continue
        inputs = [places[i] for i in unit.files]
        # Checksums a unit's manifest carries are read only when its arrays become the dataset's
        # as they are (a run of one unit) or are fetched from a store: otherwise the assembly
        # hashes the arrays it writes, and the units need not.
        array_checksums = len(units) == 1 or not unit.staged.local
        remote = task.remote(inputs, tokenizer_dir, unit.staged, scratch, unit.shares, unit.share, core_options, array_checksums)
        pending.append((unit, remote))
    try:
        # In plan order: each unit is handed to `on_done` once it and all before it are done.
        for position, (unit, ref) in enumerate(pending, 1):
            if ref is None:
                if on_done:
                    on_done(unit)
                continue
            try:
                result = ray.get(ref)
                unit.rejected_only = result["rejected_only"]
                nodes.add(result["node"])
                unit_seconds.append(result["seconds"])
                if progress:
                    print(f"fastsft prep: {position} of {len(units)} work units done", file=sys.stderr, flush=True)
            except ray.exceptions.RayTaskError as error:
                # The unit's own error (a strict reject, an unreadable input): as a local run raises it.
                cause = getattr(error, "cause", None)
                read_as = unit.read_as or [places[i].path for i in unit.files]
                given = [files[i] for i in unit.files]
                raise (_as_given(cause, read_as, given) if isinstance(cause, Exception) else error) from None
            except ray.exceptions.RayError as error:
                raise FastSFTError(
                    f"work unit {unit.name} ({files[unit.files[0]]}{' ...' if len(unit.files) > 1 else ''}) failed on the Ray cluster "
                    f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); nothing was written at the "
                    "output; run the same command again: the units that finished are kept and reused"
                ) from None
            if on_done:
                on_done(unit)
    except BaseException:
        # The other units run to their end (and are kept: a re-run reuses them) before the error is
        # raised and the caller shuts Ray down. Cancelling them is not safe in Ray 2.60: a
        # force-cancelled task's late reply, or any reply reaching a driver already shut down, trips
        # a check in its task manager (task_manager.cc, "it != submissible_tasks_.end()") that ends
        # the whole driver process with exit status 1.
        refs = [ref for _, ref in pending if ref is not None]
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), fetch_local=False)
        raise
    return reused, len(nodes), unit_seconds


# What the driver reads of a finished unit on a store.
UNIT_FILES = ("manifest.json", "input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "turns.npy", "rejects.jsonl")
# What a failed upload of a dataset can leave at the output on a store: replaced by the next run.
DATASET_FILES = frozenset(UNIT_FILES) | {"report.json"}


def _check_output(out: Place, overwrite: bool) -> None:
    """The rules of `fastsft prep -o` (rust/writer.rs), checked before any work starts; on a
    store, a prefix holding only dataset files but no manifest is an upload that did not finish."""
    if not out.local:
        if "/" not in out.path.strip("/"):
            raise UsageError(
                f"-o {out.uri}: name a prefix inside the bucket (e.g. {out.uri.rstrip('/')}/sft), not the bucket itself"
            )
        check_bucket(out)
        names = list_names(out)
        if "manifest.json" in names:
            if not overwrite:
                raise OutputExistsError(f"{out.uri} already holds a dataset; pass --overwrite to replace it")
        elif not set(names) <= DATASET_FILES:
            raise OutputExistsError(
                f"{out.uri} holds objects that are not a fastsft dataset; fastsft never replaces them: "
                "choose another output path, or remove them yourself"
            )
        return
    target = Path(out.path)
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not (target / "manifest.json").is_file():
        raise OutputExistsError(
            f"{target} exists and is neither an empty directory nor a fastsft dataset (no manifest.json); "
            "fastsft never replaces it: choose another output path, or empty or remove it yourself"
        )
    if not overwrite:
        raise OutputExistsError(f"{target} already holds a dataset; pass --overwrite to replace it")
