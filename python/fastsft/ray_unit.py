"""One work unit of `fastsft prep --engine ray`, as a Ray task runs it on a worker.

The unit's inputs are read where they are when local (shared storage), or streamed from the
object store into a local scratch directory first (`read_as` names those copies; the reject lines
name them, and the assembly renames them back to the URIs). The Rust pipeline (`_core.prep`)
writes the unit: in place when the work directory is local (the pipeline's own temporary name
and rename make it atomic), else into scratch, then uploaded under the unit's staging prefix with
`manifest.json` last (an object store has no rename: that file's presence marks the unit done).
Scratch is removed when the task ends, whatever happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from fastsft import _core
from fastsft.ray_storage import Place, download, exists, read_text, upload_dir, write_text

# The marker of a finished unit in which every record was rejected (the pipeline writes no
# dataset then): its counts and inputs, beside its rejects.jsonl.
REJECTED_ONLY = "rejected-only.json"


def unit_read_as(inputs: list[Place], scratch: str, name: str) -> list[str]:
    """The local paths a unit reads its inputs as: a local input itself, an object's copy in the
    unit's scratch directory (its name kept: formats are told by extension)."""
    return [
        place.path if place.local else os.path.join(scratch, name, "in", f"{k:05d}-{os.path.basename(place.path)}")
        for k, place in enumerate(inputs)
    ]


def finished(unit_place: Place) -> dict[str, Any] | None:
    """A unit finished by an earlier run: {} for a dataset, its counts when all were rejected."""
    if exists(unit_place.join("manifest.json")):
        return {}
    marker = unit_place.join(REJECTED_ONLY)
    if exists(marker):
        counts: dict[str, Any] = json.loads(read_text(marker))
        return counts
    return None


def encode_unit(
    inputs: list[Place],
    tokenizer: str,
    unit_place: Place,
    scratch: str,
    shares: int,
    share: int,
    core_options: dict[str, Any],
    array_checksums: bool = True,
) -> dict[str, Any]:
    """One unit, on a Ray worker: the Rust pipeline on its inputs (or on one share of one input).
    `array_checksums=False` when the assembly copies the unit's arrays (and hashes them) anyway.

    Returns the node it ran on, the pipeline's seconds, and `rejected_only`: None when it wrote a
    dataset. When every record of the unit was rejected the pipeline refuses to write one and
    keeps the rejects beside it (`DIR.rejects.jsonl`); those records still count in the whole run,
    so the rejects are kept in the unit's directory with its counts (`rejected-only.json`)."""
    import ray

    # A worker runs unit after unit: the encoder loaded for the first serves the next ones.
    _core.reuse_encoders(True)
    node = ray.get_runtime_context().get_node_id()
    _, name = unit_place.parent_and_name()
    local_scratch = os.path.join(scratch, name)
    try:
        paths = unit_read_as(inputs, scratch, name)
        for place, path in zip(inputs, paths):
            if not place.local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                download(place, path)
        directory = unit_place.path if unit_place.local else os.path.join(local_scratch, "out")
        kept = Path(directory + ".rejects.jsonl")
        kept.unlink(missing_ok=True)
        unit_options = {**core_options, "run": {**core_options["run"], "num_shards": shares, "shard_index": share}}
        try:
            summary = _core.prep(paths, tokenizer, directory, json.dumps(unit_options, ensure_ascii=False), array_checksums)
            result: dict[str, Any] = {"node": node, "rejected_only": None, "seconds": summary["seconds"]}
        except Exception:
            if not kept.is_file():
                raise
            result = {"node": node, "rejected_only": _keep_rejected_only(paths, Path(directory), kept), "seconds": 0.0}
        if not unit_place.local:
            upload_dir(directory, unit_place, last="manifest.json" if result["rejected_only"] is None else REJECTED_ONLY)
        return result
    finally:
        shutil.rmtree(local_scratch, ignore_errors=True)


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
    tmp.mkdir(parents=True)
    shutil.move(kept, tmp / "rejects.jsonl")
    write_text(Place(None, os.fspath(tmp / REJECTED_ONLY), REJECTED_ONLY), json.dumps(counts))
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
