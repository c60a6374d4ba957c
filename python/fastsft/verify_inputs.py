"""Reading back the records behind sampled rows, for ``fastsft verify``.

The records are read by ``prep``'s own reader (``fastsft._core.InputRecords``, ``rust/source.rs``
and ``rust/columnar.rs``), so every input kind ``prep`` accepts (JSONL or a JSON array, plain,
gzip or zstd; Parquet, Arrow IPC, ``datasets.save_to_disk`` directories) is read back, and records
are numbered as ``origin.npy`` numbers them. Only the reading is shared with the core: ``verify``
renders, tokenizes and masks on its own (``verify_reference.py``).
"""

from __future__ import annotations

from pathlib import Path

from ._core import InputRecords


def resolve_recorded(path: str, dataset: Path) -> Path | None:
    """A path as the manifest records it (relative to wherever prep ran): tried as given, then
    beside the dataset, beside its parent and beside its grandparent (a shard's parent)."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else [p, dataset / p, dataset.parent / p, dataset.parent.parent / p]
    return next((c for c in candidates if c.exists()), None)


def read_records(path: str | Path, wanted: set[int]) -> tuple[dict[int, bytes], str]:
    """The records of the input at ``path`` numbered ``wanted`` (JSONL line, JSON array element or
    columnar row, 1-based), as raw bytes (a columnar row: its JSON object), and the input's sha256
    (over every file of a ``save_to_disk`` directory), as the manifest records it.

    A file that cannot be read to its end raises the core's error naming it."""
    records = InputRecords([str(path)], only={0: set(wanted)})
    found = {line: record for _, line, record in records}
    return found, records.inputs[0]["sha256"]


__all__ = ["read_records", "resolve_recorded"]
