"""`fastsft prep` end to end: input formats, bad records, accounting, determinism, atomic output."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastsft

REPO = Path(__file__).resolve().parents[1]
QWEN = REPO / "assets/tokenizers/qwen2.5"
CORPORA = REPO / "assets/corpora"
DETERMINISTIC_FILES = ["input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "manifest.json", "rejects.jsonl"]

GOOD = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}


def write_jsonl(path: Path, lines: list[str | dict]) -> Path:
    path.write_text(
        "".join((l if isinstance(l, str) else json.dumps(l, ensure_ascii=False)) + "\n" for l in lines), encoding="utf-8"
    )
    return path


def load(out: Path) -> dict[str, np.ndarray]:
    return {name: np.load(out / f"{name}.npy", mmap_mode="r") for name in ("input_ids", "loss_mask", "offsets", "origin")}


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BAD_RECORDS = [
    ("{not json", "invalid_json"),
    ("[1, 2]", "not_an_object"),
    ({"text": "no chat here"}, "unknown_layout"),
    ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}, "missing_field"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}, "unknown_role"),
    ({"conversations": []}, "empty_conversation"),
    ({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}, "ends_without_assistant"),
    (
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        "non_text_content",
    ),
    ({"conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "a"}]}, "wrong_type"),
]


def test_bad_records_are_rejected_with_reasons_and_counted(tmp_path):
    lines: list[str | dict] = [GOOD]
    for record, _ in BAD_RECORDS:
        lines.append(record)
        lines.append("")  # blank lines are skipped, not counted
    lines.append(GOOD)
    data = write_jsonl(tmp_path / "bad.jsonl", lines)
    summary = fastsft.prep([data], QWEN, tmp_path / "out")
    assert (summary["read"], summary["written"], summary["rejected"]) == (len(BAD_RECORDS) + 2, 2, len(BAD_RECORDS))
    assert summary["read"] == summary["written"] + summary["rejected"]
    got = rejects(tmp_path / "out")
    # Each bad record at its own line (1-based, blank lines counted as lines), with its reason.
    assert [(r["line"], r["reason"]) for r in got] == [(2 + 2 * i, reason) for i, (_, reason) in enumerate(BAD_RECORDS)]
    assert all(r["file"] == str(data) and r["detail"] for r in got)
    unknown_role = next(r for r in got if r["reason"] == "unknown_role")
    assert "--role-map bot=assistant" in unknown_role["detail"]
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["counts"]["rejected_by_reason"] == {reason: 1 for _, reason in BAD_RECORDS}
    assert load(tmp_path / "out")["origin"].tolist() == [[0, 1], [0, len(lines)]]


def test_role_map_accepts_unusual_roles(tmp_path):
    data = write_jsonl(
        tmp_path / "roles.jsonl", [{"conversations": [{"from": "customer", "value": "q"}, {"from": "bot", "value": "a"}]}]
    )
    summary = fastsft.prep([data], QWEN, tmp_path / "out", role_map={"customer": "user", "bot": "assistant"})
    assert summary["written"] == 1


def test_same_bytes_for_any_thread_count_and_chunk_size(tmp_path):
    inputs = [CORPORA / "llamafactory_glaive_toolcall_zh_demo.jsonl.gz", CORPORA / "llamafactory_alpaca_en_demo.jsonl.gz"]
    runs = [(1, None), (2, None), (2, 7), (1, 1000)]
    digests = []
    for threads, chunk in runs:
        out = tmp_path / f"out-{threads}-{chunk}"
        fastsft.prep(inputs, QWEN, out, threads=threads, chunk_size=chunk, max_len=1024)
        digests.append({name: sha256(out / name) for name in DETERMINISTIC_FILES})
    assert all(d == digests[0] for d in digests[1:])


def test_compressed_array_bom_crlf_inputs_give_identical_samples(tmp_path):
    records = [
        GOOD,
        {"instruction": "Add", "input": "1+1", "output": "2"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    plain = tmp_path / "a.jsonl"
    plain.write_text(text)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    import zstandard

    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    (tmp_path / "d.json").write_text(json.dumps(records, indent=2))
    (tmp_path / "e.jsonl").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    reference = None
    for name in ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.json", "e.jsonl"]:
        out = tmp_path / f"out-{name}"
        summary = fastsft.prep([tmp_path / name], QWEN, out)
        assert (summary["read"], summary["written"]) == (3, 3), name
        arrays = load(out)
        assert arrays["origin"][:, 1].tolist() == [1, 2, 3], name
        ids = np.asarray(arrays["input_ids"]).tolist()
        reference = reference or ids
        assert ids == reference, name


def test_output_is_atomic_and_needs_overwrite(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [GOOD])
    out = tmp_path / "out"
    fastsft.prep([data], QWEN, out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        fastsft.prep([data], QWEN, out)
    fastsft.prep([data], QWEN, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "out"]  # no temporary left behind
    # A failing run leaves neither a dataset nor a temporary directory.
    with pytest.raises(fastsft.FastSFTError, match=r"nothing written.*first: .*bad.jsonl:1: malformed JSON"):
        fastsft.prep([write_jsonl(tmp_path / "bad.jsonl", ["{oops"])], QWEN, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if "fastsft-tmp" in p.name]


def test_missing_and_truncated_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        fastsft.prep([tmp_path / "nope.jsonl"], QWEN, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        fastsft.prep([str(tmp_path / "*.jsonl.gz")], QWEN, tmp_path / "out")
    blob = gzip.compress(("".join(json.dumps(GOOD) + "\n" for _ in range(2000))).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(fastsft.FastSFTError, match=r"cut\.jsonl\.gz.*truncated or corrupt"):
        fastsft.prep([tmp_path / "cut.jsonl.gz"], QWEN, tmp_path / "out")


def test_strict_and_reject_fraction(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"conversations": []}, GOOD])
    with pytest.raises(fastsft.FastSFTError, match=r"d.jsonl:2: empty_conversation"):
        fastsft.prep([data], QWEN, tmp_path / "out", strict=True)
    with pytest.raises(fastsft.FastSFTError, match=r"1 of 3 records rejected .*empty_conversation"):
        fastsft.prep([data], QWEN, tmp_path / "out", max_reject_fraction=0.2)
    assert fastsft.prep([data], QWEN, tmp_path / "out", max_reject_fraction=0.5)["written"] == 2


def test_max_len_truncates_or_drops(tmp_path):
    long_reply = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "word " * 200}]}
    prompt_only = {"conversations": [{"from": "human", "value": "question " * 200}, {"from": "gpt", "value": "a"}]}
    data = write_jsonl(tmp_path / "d.jsonl", [GOOD, long_reply, prompt_only])
    right = fastsft.prep([data], QWEN, tmp_path / "right", max_len=64)
    assert (right["written"], right["truncated"], right["rejected_by_reason"]) == (2, 1, {"no_trained_tokens": 1})
    arrays = load(tmp_path / "right")
    assert np.diff(arrays["offsets"]).max() == 64
    drop = fastsft.prep([data], QWEN, tmp_path / "drop", max_len=64, truncation="drop")
    assert (drop["written"], drop["rejected_by_reason"]) == (1, {"too_long": 2})


def test_manifest_records_inputs_tokenizer_and_fingerprint(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [GOOD])
    fastsft.prep([data], QWEN, tmp_path / "a")
    fastsft.prep([data], QWEN, tmp_path / "b", max_len=4096)
    a = json.loads((tmp_path / "a/manifest.json").read_text())
    b = json.loads((tmp_path / "b/manifest.json").read_text())
    assert a["format_version"] == 2
    assert a["tokenizer"]["sha256"] == sha256(QWEN / "tokenizer.json")
    assert a["tokenizer"]["vocab_size"] == 151665 and a["input_ids_dtype"] == "uint32"
    assert a["inputs"] == [{"path": str(data), "size": data.stat().st_size, "sha256": sha256(data)}]
    assert a["num_samples"] == 1 and a["num_tokens"] == int(load(tmp_path / "a")["offsets"][-1])
    assert a["fingerprint"] != b["fingerprint"]  # an option that changes the bytes changes it


def test_cli_prints_summary_and_errors_without_traceback(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"conversations": []}])
    cli = [sys.executable, "-m", "fastsft.cli"]
    done = subprocess.run(
        [*cli, "prep", str(data), "--tokenizer", str(QWEN), "-o", str(tmp_path / "out"), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "written                   1" in done.stdout and "empty_conversation 1" in done.stdout
    again = subprocess.run(
        [*cli, "prep", str(data), "--tokenizer", str(QWEN), "-o", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert again.returncode == 5  # output exists (fastsft/errors.py)
    assert "already exists; pass --overwrite" in again.stderr and "Traceback" not in again.stderr
    bad_flag = subprocess.run(
        [*cli, "prep", str(data), "--tokenizer", str(QWEN), "-o", str(tmp_path / "x"), "--role-map", "bot"],
        capture_output=True,
        text=True,
    )
    assert bad_flag.returncode == 2 and "--role-map 'bot': expected FROM=TO" in bad_flag.stderr


def test_every_shipped_corpus_accounts_for_every_record(tmp_path):
    for corpus in sorted(CORPORA.glob("*.jsonl.gz")):
        if corpus.name.startswith(("gsm8k", "belle")):
            continue  # question/answer layouts, not chat formats (need field mapping)
        summary = fastsft.prep([corpus], QWEN, tmp_path / corpus.name, max_len=4096)
        lines = sum(1 for line in gzip.open(corpus, "rt", encoding="utf-8") if line.strip())
        assert summary["read"] == lines == summary["written"] + summary["rejected"], corpus.name
        assert summary["rejected"] <= 0.01 * summary["read"], (corpus.name, summary["rejected_by_reason"])


def test_shards_union_equals_the_unsharded_run_and_finished_shards_are_kept(tmp_path, monkeypatch):
    inputs = [CORPORA / "llamafactory_identity.jsonl.gz", CORPORA / "fastchat_dummy_conversation.jsonl.gz"]
    whole = fastsft.prep(inputs, QWEN, tmp_path / "whole")
    shards = [fastsft.prep(inputs, QWEN, tmp_path / "sharded", num_shards=3, shard_index=i) for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == [f"shard-0000{i}-of-00003" for i in range(3)]
    assert sum(s["read"] for s in shards) == whole["read"]
    assert sum(s["written"] for s in shards) == whole["written"]

    def samples(out: Path) -> dict[tuple[int, int], list[int]]:
        a = load(out)
        ids, offsets = np.asarray(a["input_ids"]), a["offsets"]
        return {tuple(a["origin"][i]): ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)}

    union: dict = {}
    for shard_dir in sorted((tmp_path / "sharded").iterdir()):
        part = samples(shard_dir)
        assert not union.keys() & part.keys()
        union.update(part)
    assert union == samples(tmp_path / "whole")
    # A re-run keeps a finished shard; RANK/WORLD_SIZE select the shard when no flag does.
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    again = fastsft.prep(inputs, QWEN, tmp_path / "sharded")
    assert again["skipped"] and again["written"] == shards[1]["written"]
    with pytest.raises(fastsft.FastSFTError, match="other inputs or options"):
        fastsft.prep(inputs, QWEN, tmp_path / "sharded", max_len=100)


def test_field_mapping_gives_the_same_arrays_as_the_original_layout(tmp_path):
    original = [json.loads(line) for line in gzip.open(CORPORA / "llamafactory_glaive_toolcall_en_demo.jsonl.gz", "rt")][:40]
    renamed = [
        {
            "persona": "Be brief.",
            "dialog": [{"speaker": m["from"], "text": m["value"]} for m in r["conversations"]],
            "tools": r["tools"],
        }
        for r in original
    ]
    for r in original:
        r["system"] = "Be brief."
    a = fastsft.prep([write_jsonl(tmp_path / "a.jsonl", original)], QWEN, tmp_path / "a")
    b = fastsft.prep(
        [write_jsonl(tmp_path / "b.jsonl", renamed)],
        QWEN,
        tmp_path / "b",
        messages_field="dialog",
        role_field="speaker",
        content_field="text",
        system_field="persona",
    )
    assert a["written"] == b["written"] == 40
    for name in ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy"):
        assert sha256(tmp_path / "a" / name) == sha256(tmp_path / "b" / name), name


def test_forced_format_that_does_not_fit_says_which_fits(tmp_path):
    with pytest.raises(fastsft.FastSFTError, match="looks like an alpaca record: try --format alpaca"):
        fastsft.prep([CORPORA / "llamafactory_identity.jsonl.gz"], QWEN, tmp_path / "out", format="sharegpt")


@pytest.mark.parametrize("family", ["qwen2.5", "llama3.1"])
def test_fast_tokenizer_gives_the_same_bytes_as_the_tokenizers_crate(tmp_path, monkeypatch, family):
    """The exact fast BPE (rust/fastbpe) against the `tokenizers` crate, end to end."""
    tokenizer = REPO / "assets/tokenizers" / family
    inputs = [CORPORA / "medicalgpt_sharegpt_zh_1k.jsonl.gz", CORPORA / "llamafactory_glaive_toolcall_zh_demo.jsonl.gz"]
    fastsft.prep(inputs, tokenizer, tmp_path / "fast")
    monkeypatch.setenv("FASTSFT_TOKENIZER", "reference")
    fastsft.prep(inputs, tokenizer, tmp_path / "reference")
    for name in DETERMINISTIC_FILES:
        assert sha256(tmp_path / "fast" / name) == sha256(tmp_path / "reference" / name), name
