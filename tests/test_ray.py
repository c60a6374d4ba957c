"""`fastsft.encode_batch` under Ray Data on a local Ray instance gives what `fastsft.prep` writes.

Issue 5 item 6: engines that bring their own parallelism and I/O run the same encoder. Two ways in:
`ray.data.read_json` on a shipped corpus (Ray parses the JSON; its column batches go to
`encode_batch` as they are), and `ray.data.from_items` over raw lines (the JSON text itself, bad
records included). Both are compared with `fastsft.prep` on the same file, record by record: the
same ids and mask for every sample, the same reject reason for every rejected record.

Ray Data is a test dependency (`pip install -r requirements-faults.txt`, which `make test` runs): without
it these tests fail rather than skip.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray
import ray.data

import fastsft

REPO = Path(__file__).resolve().parents[1]
QWEN = str(REPO / "assets/tokenizers/qwen2.5")
CORPORA = REPO / "assets/corpora"
MAX_LEN = 1024


@pytest.fixture(scope="module")
def local_ray():
    # Ray's workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order
    context.enable_progress_bars = False
    yield
    ray.shutdown()


def encode(batch) -> pa.Table:
    """The Ray Data batch function: any batch `encode_batch` takes → one output row per input row."""
    out = fastsft.encode_batch(batch, QWEN, max_len=MAX_LEN)
    return pa.table(
        {
            "input_ids": pa.array(out["input_ids"], type=pa.list_(pa.int64())),
            "loss_mask": pa.array([list(m) for m in out["loss_mask"]], type=pa.list_(pa.uint8())),
            "reject": pa.array(out["reject"], type=pa.string()),
        }
    )


def prep_records(path: Path, out: Path) -> list[tuple]:
    """`fastsft.prep` on `path`, as one entry per record in file order: ("sample", ids, mask) or
    ("reject", reason)."""
    summary = fastsft.prep([path], QWEN, out, max_len=MAX_LEN)
    origin, offsets = np.load(out / "origin.npy"), np.load(out / "offsets.npy")
    ids, mask = np.load(out / "input_ids.npy"), np.load(out / "loss_mask.npy")
    by_line: dict[int, tuple] = {}
    for row, line in enumerate(origin[:, 1]):
        by_line[int(line)] = (
            "sample",
            ids[offsets[row] : offsets[row + 1]].tolist(),
            mask[offsets[row] : offsets[row + 1]].tolist(),
        )
    for reject in map(json.loads, (out / "rejects.jsonl").read_text(encoding="utf-8").split("\n")[:-1]):
        by_line[reject["line"]] = ("reject", reject["reason"])
    assert len(by_line) == summary["read"]
    return [by_line[line] for line in sorted(by_line)]


def encode_lines(batch) -> pa.Table:
    """For a dataset of raw lines (`from_items(lines)` names the column "item"): the JSON texts."""
    return encode([str(line) for line in batch["item"]])


def ray_records(dataset, fn=encode) -> list[tuple]:
    rows = dataset.map_batches(fn, batch_size=64).take_all()
    return [("reject", r["reject"]) if r["reject"] else ("sample", list(r["input_ids"]), list(r["loss_mask"])) for r in rows]


def assert_same(ray_side: list[tuple], prep_side: list[tuple]) -> None:
    assert len(ray_side) == len(prep_side)
    for i, (a, b) in enumerate(zip(ray_side, prep_side)):
        assert a == b, f"record {i + 1}: Ray {a[:2]} vs prep {b[:2]}"


@pytest.mark.parametrize("corpus", ["llamafactory_glaive_toolcall_en_demo", "llamafactory_identity"])
def test_read_json_then_encode_batch_equals_prep(local_ray, tmp_path, corpus):
    """Ray parses the file (to Arrow columns) and hands column batches to encode_batch."""
    path = tmp_path / f"{corpus}.jsonl"
    path.write_bytes(gzip.decompress((CORPORA / f"{corpus}.jsonl.gz").read_bytes()))
    expected = prep_records(path, tmp_path / "out")
    got = ray_records(ray.data.read_json(str(path)))
    assert_same(got, expected)
    assert sum(r[0] == "sample" for r in got) > 0.9 * len(got)


def test_from_items_raw_lines_with_bad_records_equals_prep(local_ray, tmp_path):
    """Raw JSON lines, bad ones included: each rejected row says why, as prep's rejects.jsonl does."""
    good = gzip.decompress((CORPORA / "medicalgpt_sharegpt_zh_1k.jsonl.gz").read_bytes()).decode().split("\n")[:150]
    bad = [
        '{"messages": [',
        "[1, 2]",
        json.dumps({"question": "q", "answer": "a"}),
        json.dumps({"conversations": [{"from": "narrator", "value": "q"}, {"from": "gpt", "value": "a"}]}),
        json.dumps(
            {"messages": [{"role": "user", "content": [{"type": "image", "image": "x"}]}, {"role": "assistant", "content": "a"}]}
        ),
        json.dumps({"messages": [{"role": "system", "content": "s"}]}),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "q"},
                ]
            }
        ),
    ]
    lines = [line for i, g in enumerate(good) for line in ([g, bad[i // 20]] if i % 20 == 0 and i // 20 < len(bad) else [g])]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    expected = prep_records(path, tmp_path / "out")
    got = ray_records(ray.data.from_items(lines), encode_lines)
    assert_same(got, expected)
    reasons = [r[1] for r in got if r[0] == "reject"]
    assert {
        "invalid_json",
        "not_an_object",
        "unknown_layout",
        "unknown_role",
        "non_text_content",
        "no_assistant_message",
        "ends_without_assistant",
    } <= set(reasons)


def encode_arrow(batch) -> pa.Table:
    """The batch function with the array output: one Arrow table over flat buffers, no per-token objects."""
    return fastsft.encode_batch(batch, QWEN, max_len=MAX_LEN, output="arrow")


def test_read_json_then_arrow_output_equals_prep(local_ray, tmp_path):
    """`output="arrow"` under Ray Data: the same samples and rejects as prep, record by record."""
    path = tmp_path / "glaive.jsonl"
    path.write_bytes(gzip.decompress((CORPORA / "llamafactory_glaive_toolcall_en_demo.jsonl.gz").read_bytes()))
    expected = prep_records(path, tmp_path / "out")
    got = ray_records(ray.data.read_json(str(path)), encode_arrow)
    assert_same(got, expected)
