"""`encode_batch(..., output="arrays" | "arrow")`: a batch's samples as flat arrays, no Python
object per token.

The list output builds one Python int per token and its labels in a Python loop: half of
`fastsft prep`'s speed on one core (issue 17). Here the Rust encoder hands back one buffer per
array (`_core.encode_batch_arrays`), viewed by numpy without a copy; labels are one vectorized
`where`. `"arrow"` wraps the same buffers as Arrow list columns (one row per sample), the batch
format Ray Data's `map_batches` and `datasets` move between processes without converting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastsft import _core
from fastsft.labels import IGNORE_INDEX


def encode_arrays(encoder: _core.RecordEncoder, records: list[str], threads: int) -> dict[str, Any]:
    """Sample `i` is `input_ids[offsets[i]:offsets[i+1]]` (likewise `loss_mask`, `labels`); a
    rejected record is one sample with no tokens and its reason in `reject[i]`.

    >>> out = encode_arrays(encoder, ['{"messages": [...]}', "[1, 2]"], 1)  # doctest: +SKIP
    >>> out["offsets"], out["reject"]                                       # doctest: +SKIP
    (array([ 0, 21,  21]), [None, 'not_an_object'])
    """
    flat = _core.encode_batch_arrays(encoder, records, threads)
    ids = np.frombuffer(flat["input_ids"], dtype="<u4")
    mask = np.frombuffer(flat["loss_mask"], dtype=np.uint8)
    return {
        "input_ids": ids,
        "loss_mask": mask,
        "labels": np.where(mask != 0, ids.astype(np.int64), IGNORE_INDEX),
        "offsets": np.frombuffer(flat["offsets"], dtype="<i8"),
        "row": np.frombuffer(flat["row"], dtype="<i8"),
        "turn": np.frombuffer(flat["turn"], dtype="<i8"),
        "truncated": np.frombuffer(flat["truncated"], dtype=np.uint8).astype(bool),
        "reject": flat["reject"],
        "reject_detail": flat["detail"],
    }


def arrays_to_arrow(out: dict[str, Any]):
    """The arrays as a `pyarrow.Table`, one row per sample: `input_ids` (uint32), `labels` (int64)
    and `loss_mask` (uint8) as large-list columns over the same buffers, plus the per-sample
    columns. `turn` is -1 for a whole conversation."""
    import pyarrow as pa

    offsets = pa.array(out["offsets"], type=pa.int64())

    def lists(values: np.ndarray) -> pa.LargeListArray:
        return pa.LargeListArray.from_arrays(offsets, pa.array(values))

    return pa.table(
        {
            "input_ids": lists(out["input_ids"]),
            "labels": lists(out["labels"]),
            "loss_mask": lists(out["loss_mask"]),
            "truncated": pa.array(out["truncated"]),
            "row": pa.array(out["row"]),
            "turn": pa.array(out["turn"]),
            "reject": pa.array(out["reject"], type=pa.string()),
            "reject_detail": pa.array(out["reject_detail"], type=pa.string()),
        }
    )
