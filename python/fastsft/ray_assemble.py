"""Assembles the unit datasets of a Ray run into one dataset, the very bytes `fastsft prep` writes.

Each work unit is a complete dataset made by the Rust pipeline from one input file (or one
round-robin share of it: `--num-shards K --shard-index k` on that file alone), so its rejects,
ids and masks are the single-machine ones by construction. What differs is only where samples
sit: here they are put back in input order (file, then line; a record's per-turn samples keep
their order), the file index in `origin.npy` becomes the index among all inputs, reject lines
name the inputs as the user gave them, and one manifest covers the whole, built field for field
as `rust/pipeline.rs` builds it (so `fingerprint` and `plan` equal a single-machine run's).

What this does not do: encode, or decide anything about records. Arrays are copied in slices of
at most `COPY_SAMPLES` samples, so memory stays bounded whatever the dataset size.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastsft.errors import DatasetFormatError

ARRAYS = ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "turns.npy")
COUNT_KEYS = ("read", "written", "rejected", "samples", "split_records", "split_samples", "truncated", "tokens", "trained_tokens")
# The order of rust/pipeline.rs's `Counts` fields, as its manifest lists them.
COUNTS_ORDER = COUNT_KEYS[:6] + ("rejected_by_reason",) + COUNT_KEYS[6:]
COPY_SAMPLES = 1 << 16
# rust/writer.rs: a numpy v1.0 header padded to 128 bytes.
HEADER_LEN = 128


@dataclass
class Unit:
    """One work unit: consecutive input files `files` (global indices) read whole, or one file
    read as share `share` of `shares` (every `shares`-th record). Once finished, `directory`
    holds a dataset, or (`rejected_only`) only the rejects of a unit in which every record was
    rejected (the pipeline writes no dataset then)."""

    files: list[int]
    share: int
    shares: int
    directory: Path
    rejected_only: dict[str, Any] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def load(self) -> None:
        if self.rejected_only is None:
            self.manifest = json.loads((self.directory / "manifest.json").read_text(encoding="utf-8"))


def pieces(units: list[Unit]) -> list[list[Unit]]:
    """Units grouped by what they cover: a run of whole files (one unit), or the shares of one file."""
    grouped: dict[tuple[int, ...], list[Unit]] = {}
    for unit in units:
        grouped.setdefault(tuple(unit.files), []).append(unit)
    return [sorted(group, key=lambda u: u.share) for _, group in sorted(grouped.items())]


class NpyOut:
    """A streaming `.npy` writer with rust/writer.rs's exact header, and the sha256 of its data."""

    def __init__(self, path: Path, descr: str, row_len: int | None = None):
        self.path, self.descr, self.row_len = path, descr, row_len
        self.file = open(path, "wb")
        self.file.write(b"\0" * HEADER_LEN)
        self.items = 0
        self.sha256 = hashlib.sha256()

    def write(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array, dtype=np.dtype(self.descr)).tobytes()
        self.items += array.size
        self.sha256.update(data)
        self.file.write(data)

    def copy_whole(self, source: np.ndarray) -> None:
        """Appends all of another `.npy` file's data (same dtype), copied by the kernel
        (`copy_file_range`: no pass through Python, and a server-side copy or reflink where the
        filesystem offers one); it is hashed from the page cache the pipeline just filled."""
        path = getattr(source, "filename", None)
        if path is None or source.dtype != np.dtype(self.descr):
            raise DatasetFormatError(f"{path}: a {source.dtype} array, expected a memory-mapped {self.descr} one")
        self.sha256.update(source.data.cast("B"))
        self.items += source.size
        self.file.flush()
        with open(path, "rb") as src:
            offset, left = int(getattr(source, "offset", HEADER_LEN)), source.nbytes
            while left:
                copied = os.copy_file_range(src.fileno(), self.file.fileno(), left, offset)
                if copied == 0:
                    raise DatasetFormatError(f"{path}: shorter than its header says")
                offset += copied
                left -= copied

    def finish(self) -> str:
        shape = f"({self.items},)" if self.row_len is None else f"({self.items // self.row_len}, {self.row_len})"
        header = f"{{'descr': '{self.descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
        header = b"\x93NUMPY\x01\x00" + (HEADER_LEN - 10).to_bytes(2, "little") + header
        header = header.ljust(HEADER_LEN - 1, b" ") + b"\n"
        self.file.seek(0)
        self.file.write(header)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.sha256.hexdigest()


def _load(directory: Path, name: str) -> np.ndarray:
    return np.load(directory / name, mmap_mode="r")


def assemble(units: list[Unit], files: list[str], absolute: list[str], tmp: Path, template: str | None = None) -> dict[str, Any]:
    """Writes the dataset made of `units` (sorted by file, share) into `tmp`; returns the counts.

    `files` are the inputs as the user named them, `absolute` as the units read them."""
    for unit in units:
        unit.load()
    with_data = [u for u in units if u.rejected_only is None]
    if not with_data:
        raise DatasetFormatError("every record of every input was rejected: no unit wrote a dataset")
    first = with_data[0].manifest
    for unit in with_data[1:]:
        for key in ("tokenizer", "template", "options", "input_ids_dtype", "format_version"):
            if unit.manifest[key] != first[key]:
                raise DatasetFormatError(
                    f"{unit.directory}: its {key} differs from {with_data[0].directory}'s; remove the work directory and run again"
                )
    descr = "<u2" if first["input_ids_dtype"] == "uint16" else "<u4"
    outs = {
        "input_ids.npy": NpyOut(tmp / "input_ids.npy", descr),
        "loss_mask.npy": NpyOut(tmp / "loss_mask.npy", "|u1"),
        "offsets.npy": NpyOut(tmp / "offsets.npy", "<i8"),
        "origin.npy": NpyOut(tmp / "origin.npy", "<i8", 2),
        "turns.npy": NpyOut(tmp / "turns.npy", "<i8"),
    }
    outs["offsets.npy"].write(np.zeros(1, dtype=np.int64))
    counts: dict[str, Any] = dict.fromkeys(COUNT_KEYS, 0)
    counts["rejected_by_reason"] = {}
    inputs: list[dict[str, Any]] = []
    tokens_so_far = 0
    with open(tmp / "rejects.jsonl", "wb") as rejects:
        for piece in pieces(units):
            tokens_so_far = _copy_samples(piece, outs, tokens_so_far)
            _copy_rejects(piece, absolute, files, rejects)
            for unit in piece:
                unit_counts = unit.rejected_only or unit.manifest["counts"]
                for key in COUNT_KEYS:
                    counts[key] += unit_counts.get(key, 0)
                for reason, n in unit_counts.get("rejected_by_reason", {}).items():
                    counts["rejected_by_reason"][reason] = counts["rejected_by_reason"].get(reason, 0) + n
            inputs.extend(_input_info(piece, files))
        rejects.flush()
        os.fsync(rejects.fileno())
    counts["rejected_by_reason"] = dict(sorted(counts["rejected_by_reason"].items()))
    counts = {key: counts[key] for key in COUNTS_ORDER}
    array_sha256 = {name: outs[name].finish() for name in ARRAYS}
    manifest = _manifest(first, inputs, counts, array_sha256, files, template)
    return {"manifest": manifest, "counts": counts}


def assemble_rejects(units: list[Unit], files: list[str], absolute: list[str], path: Path) -> dict[str, Any]:
    """For a run in which every unit rejected every record: the rejects in order, and the counts."""
    reasons: dict[str, int] = {}
    with open(path, "wb") as out:
        for piece in pieces(units):
            _copy_rejects(piece, absolute, files, out)
            for unit in piece:
                for reason, n in (unit.rejected_only or {}).get("rejected_by_reason", {}).items():
                    reasons[reason] = reasons.get(reason, 0) + n
    rejected = sum(reasons.values())
    return {"read": rejected, "written": 0, "rejected": rejected, "rejected_by_reason": dict(sorted(reasons.items()))}


def _copy_samples(piece: list[Unit], outs: dict[str, NpyOut], tokens_so_far: int) -> int:
    """Appends a piece's samples in input order; returns the token count so far."""
    first_file = piece[0].files[0]
    parts = [u for u in piece if u.rejected_only is None and u.manifest["num_samples"] > 0]
    if not parts:
        return tokens_so_far
    arrays = [{name: _load(u.directory, name) for name in ARRAYS} for u in parts]
    if len(parts) == 1:  # whole files: the unit's arrays as they are, renumbered
        a = arrays[0]
        outs["input_ids.npy"].copy_whole(a["input_ids.npy"])
        outs["loss_mask.npy"].copy_whole(a["loss_mask.npy"])
        outs["offsets.npy"].write(tokens_so_far + np.asarray(a["offsets.npy"][1:]))
        origin = np.array(a["origin.npy"], dtype=np.int64)
        origin[:, 0] += first_file  # a unit numbers its own inputs from 0
        outs["origin.npy"].write(origin)
        outs["turns.npy"].write(a["turns.npy"])
        return tokens_so_far + int(a["offsets.npy"][-1])
    # A sample's place: a unit of whole files is in order already; the shares of one file are
    # merged by line (a share holds every k-th record, so lines interleave), and the stable sort
    # keeps a record's per-turn samples in their order.
    lines = np.concatenate([a["origin.npy"][:, 1] for a in arrays])
    part_of = np.concatenate([np.full(len(a["turns.npy"]), i, dtype=np.int64) for i, a in enumerate(arrays)])
    index_in = np.concatenate([np.arange(len(a["turns.npy"]), dtype=np.int64) for a in arrays])
    order = np.argsort(lines, kind="stable")
    for start in range(0, len(order), COPY_SAMPLES):
        chosen = order[start : start + COPY_SAMPLES]
        ids, mask, lengths, origin_rows, turns = [], [], [], [], []
        # Consecutive samples from the same part are copied as one slice.
        cut = np.flatnonzero(np.diff(part_of[chosen]) != 0) + 1
        for run in np.split(chosen, cut):
            a = arrays[int(part_of[run[0]])]
            rows = index_in[run]
            if np.all(np.diff(rows) == 1):
                lo, hi = int(rows[0]), int(rows[-1]) + 1
                begin, end = int(a["offsets.npy"][lo]), int(a["offsets.npy"][hi])
                ids.append(a["input_ids.npy"][begin:end])
                mask.append(a["loss_mask.npy"][begin:end])
                lengths.append(np.diff(a["offsets.npy"][lo : hi + 1]))
            else:  # not produced by the pipeline (rows of a part are in order), kept general
                for row in rows:
                    begin, end = int(a["offsets.npy"][row]), int(a["offsets.npy"][row + 1])
                    ids.append(a["input_ids.npy"][begin:end])
                    mask.append(a["loss_mask.npy"][begin:end])
                    lengths.append(np.array([end - begin], dtype=np.int64))
            origin_rows.append(a["origin.npy"][rows])
            turns.append(a["turns.npy"][rows])
        outs["input_ids.npy"].write(np.concatenate(ids))
        outs["loss_mask.npy"].write(np.concatenate(mask))
        ends = tokens_so_far + np.cumsum(np.concatenate(lengths))
        tokens_so_far = int(ends[-1]) if len(ends) else tokens_so_far
        outs["offsets.npy"].write(ends)
        origin = np.array(np.concatenate(origin_rows), dtype=np.int64)
        origin[:, 0] += first_file  # a unit numbers its own inputs from 0
        outs["origin.npy"].write(origin)
        outs["turns.npy"].write(np.concatenate(turns))
    return tokens_so_far


def _copy_rejects(piece: list[Unit], absolute: list[str], files: list[str], out) -> None:
    """Reject lines in input order, naming each input as the user gave it (units read inputs by
    their absolute paths, which workers on other nodes or in other directories resolve alike)."""
    renames = [
        (
            b'{"file":' + json.dumps(absolute[i], ensure_ascii=False).encode() + b",",
            b'{"file":' + json.dumps(files[i], ensure_ascii=False).encode() + b",",
        )
        for i in piece[0].files
    ]
    entries: list[tuple[int, bytes]] = []
    for unit in piece:
        path = unit.directory / "rejects.jsonl"
        for raw in path.read_bytes().splitlines(keepends=True):
            for old, new in renames:
                if raw.startswith(old):
                    entries.append((int(json.loads(raw)["line"]), new + raw[len(old) :]))
                    break
            else:
                raise DatasetFormatError(f"{path}: a reject line names none of the unit's inputs")
    if len(piece) > 1:  # shares of one file
        entries.sort(key=lambda e: e[0])
    out.writelines(raw for _, raw in entries)


def _input_info(piece: list[Unit], files: list[str]) -> list[dict[str, Any]]:
    """The manifest's entries for the piece's inputs (size, sha256), named as the user gave them."""
    unit = piece[0]
    infos = unit.manifest["inputs"] if unit.rejected_only is None else unit.rejected_only["inputs"]
    if len(infos) != len(unit.files):
        raise DatasetFormatError(f"{unit.directory}: lists {len(infos)} inputs, expected {len(unit.files)}")
    return [{**info, "path": files[i]} for info, i in zip(infos, unit.files)]


def _size(path: str) -> int:
    """What the pipeline's plan records of an input: `fs::metadata(path).len()`, 0 if unreadable."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _compact(value: Any) -> bytes:
    """serde_json's `to_string`: no spaces, non-ASCII as is, keys in insertion order."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _manifest(
    first: dict[str, Any],
    inputs: list[dict[str, Any]],
    counts: dict[str, Any],
    array_sha256: dict[str, str],
    files: list[str],
    template: str | None,
) -> dict[str, Any]:
    """rust/pipeline.rs's `manifest()` for the whole run, key for key (tests compare the bytes)."""
    tokenizer_sha, template_sha, options = first["tokenizer"]["sha256"], first["template"]["sha256"], dict(first["options"])
    if template is not None:
        options["template"] = template
    fingerprint_input = {
        "format_version": first["format_version"],
        "tokenizer": tokenizer_sha,
        "template": template_sha,
        "options": options,
        "inputs": [i["sha256"] for i in inputs],
        "shard": None,
    }
    plan = {
        "tokenizer": tokenizer_sha,
        "template": template_sha,
        "options": options,
        "shard": None,
        "inputs": [[path, _size(path)] for path in files],
    }
    return {
        "format_version": first["format_version"],
        "fastsft_version": first["fastsft_version"],
        "num_samples": counts["samples"],
        "num_tokens": counts["tokens"],
        "num_trained_tokens": counts["trained_tokens"],
        "input_ids_dtype": first["input_ids_dtype"],
        "tokenizer": first["tokenizer"],
        "template": first["template"],
        "options": options,
        "inputs": inputs,
        "shard": None,
        "plan": hashlib.sha256(_compact(plan)).hexdigest(),
        "counts": counts,
        "fingerprint": hashlib.sha256(_compact(fingerprint_input)).hexdigest(),
        "array_sha256": array_sha256,
    }
