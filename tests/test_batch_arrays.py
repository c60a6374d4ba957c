"""`encode_batch(output="arrays" | "arrow")` gives exactly the samples of the list output (issue 17):
the same ids, labels and masks per sample, the same rows, turns, truncation flags and rejects, with
per-turn samples (a Qwen3 reasoning trace split into turns) and rejected records in the batch."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import fastsft
from fastsft.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
QWEN3 = str(REPO / "assets/tokenizers/qwen3")
TRACE = {
    "messages": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "add two and two"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "add three and three"},
    ]
}


def batch() -> list[str]:
    lines = (
        gzip.decompress((REPO / "assets/corpora/llamafactory_glaive_toolcall_en_demo.jsonl.gz").read_bytes())
        .decode()
        .splitlines()[:40]
    )
    return lines[:10] + ['{"messages": [', json.dumps(TRACE), "[1, 2]"] + lines[10:]


def test_arrays_equal_lists_sample_by_sample():
    records = batch()
    lists = fastsft.encode_batch(records, QWEN3, max_len=300)
    arrays = fastsft.encode_batch(records, QWEN3, max_len=300, output="arrays")
    offsets = arrays["offsets"]
    assert len(offsets) - 1 == len(lists["input_ids"]) == len(records) + 1  # the trace gave 2 samples
    for i in range(len(offsets) - 1):
        span = slice(offsets[i], offsets[i + 1])
        assert arrays["input_ids"][span].tolist() == lists["input_ids"][i]
        assert arrays["labels"][span].tolist() == lists["labels"][i]
        assert arrays["loss_mask"][span].tolist() == lists["loss_mask"][i]
    assert arrays["row"].tolist() == lists["row"]
    assert arrays["turn"].tolist() == [-1 if t is None else t for t in lists["turn"]]
    assert arrays["truncated"].tolist() == lists["truncated"]
    assert arrays["reject"] == lists["reject"] and arrays["reject_detail"] == lists["reject_detail"]
    assert arrays["reject"][10:14] == ["invalid_json", None, None, "not_an_object"]
    assert arrays["turn"][11:13].tolist() == [1, 3]
    assert any(arrays["truncated"])
    assert arrays["input_ids"].dtype == np.uint32 and arrays["labels"].dtype == np.int64


def test_arrow_table_is_the_same_samples():
    records = batch()
    lists = fastsft.encode_batch(records, QWEN3, max_len=300)
    table = fastsft.encode_batch(records, QWEN3, max_len=300, output="arrow")
    assert table.column("input_ids").to_pylist() == lists["input_ids"]
    assert table.column("labels").to_pylist() == lists["labels"]
    assert table.column("reject").to_pylist() == lists["reject"]


def test_unknown_output_is_a_usage_error():
    with pytest.raises(UsageError, match="output='dict': expected lists, arrays or arrow"):
        fastsft.encode_batch(batch()[:1], QWEN3, output="dict")
