"""`fastsft verify` (python/fastsft/verify.py): datasets made by `fastsft.prep` from the shipped
corpora verify as identical for every family; a flipped id or mask bit, a changed input, a wrong
path are each reported as such; the sample draw is seeded; inputs are read back in every layout
prep reads (JSONL, JSON array, gzip, zstd, BOM), and shard directories are verified as a whole.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fastsft
from fastsft.verify import read_records, register_cli, verify

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO / "assets" / "corpora"
TOKENIZERS = REPO / "assets" / "tokenizers"
GENERATION_TEMPLATE = Path(__file__).resolve().parent / "templates" / "qwen2.5_generation.jinja"

# family -> (corpus, prep options): between them tools and function calls, long multi-turn Chinese
# (byte-level BPE whose offsets lie), SentencePiece with control tokens, a 256k vocabulary, truncation.
FAMILIES = {
    "qwen2.5": ("llamafactory_glaive_toolcall_en_demo", {"max_len": 768}),
    "llama3.1": ("medicalgpt_sharegpt_zh_1k", {"max_len": 1024}),
    "mistral-7b-instruct-v0.3": ("fastchat_dummy_conversation", {}),
    "gemma": ("llamafactory_alpaca_zh_demo", {"max_len": 256}),
}
LINES = 50


def head(corpus: str, path: Path, n: int = LINES) -> Path:
    """The first `n` lines of a shipped corpus, as a plain JSONL file."""
    with gzip.open(CORPORA / f"{corpus}.jsonl.gz", "rt", encoding="utf-8") as f:
        path.write_text("".join(itertools.islice(f, n)), encoding="utf-8")
    return path


def prep(inputs: list[Path], family: str, out: Path, **options: Any) -> dict[str, Any]:
    return fastsft.prep([str(p) for p in inputs], TOKENIZERS / family, out, overwrite=True, **options)


def cli(*argv: Any) -> int:
    parser = argparse.ArgumentParser(prog="fastsft")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["verify", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """{family: dataset directory} for FAMILIES, prepared once."""
    root = tmp_path_factory.mktemp("verify")
    out = {}
    for family, (corpus, options) in FAMILIES.items():
        summary = prep([head(corpus, root / f"{family}.jsonl")], family, root / family, **options)
        assert summary["written"] >= LINES // 2, summary
        out[family] = root / family
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_sample_identical(datasets, family):
    result = verify(datasets[family], sample=10_000)
    written = int(json.loads((datasets[family] / "manifest.json").read_text())["num_samples"])
    assert result["num_samples"] == result["sampled"] == written
    assert (result["checked"], result["identical"], result["different"]) == (written, written, 0), result["differences"][:1]
    assert result["skipped"] == result["ids_only"] == {} and result["warnings"] == []
    assert cli(datasets[family], "--sample", 10) == 0


# Records for the options: a per-message `train: false`, `weight: 0`, a system prompt (which
# Mistral v0.3 moves to the last user turn, so history is not a prefix), repeated replies, a reply
# that contains the end-of-turn token itself (only the generation template and ChatML keep it).
HANDMADE = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4", "train": False}, {"role": "user", "content": "and 3+3?"},
                  {"role": "assistant", "content": "6"}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "weight": 0},
                  {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "cat?"},
                  {"role": "assistant", "content": "chat"}, {"role": "user", "content": "dog?"},
                  {"role": "assistant", "content": "chien"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "real <|im_end|> inside"}]},
]  # fmt: skip
OPTION_CASES = [
    ("qwen2.5", {"train_on": "last", "train_eot": False}),
    ("qwen2.5", {"template": "chatml", "max_len": 300}),
    ("qwen2.5", {"template": str(GENERATION_TEMPLATE), "train_eot": False}),
    ("qwen2.5", {"train_on_prompt": True, "max_len": 200}),
    ("qwen2.5", {"truncation": "drop", "max_len": 700}),
    ("mistral-7b-instruct-v0.3", {"train_on": "all"}),
]


@pytest.mark.parametrize(
    ("family", "options"), OPTION_CASES, ids=[f"{f}-{'-'.join(map(str, o.values()))[-40:]}" for f, o in OPTION_CASES]
)
def test_options_identical(tmp_path, family, options):
    handmade = tmp_path / "handmade.jsonl"
    handmade.write_text("".join(json.dumps(r) + "\n" for r in HANDMADE), encoding="utf-8")
    corpus = head("llamafactory_glaive_toolcall_en_demo", tmp_path / "glaive.jsonl", 20)
    summary = prep([handmade, corpus], family, tmp_path / "out", **options)
    assert summary["written"] >= 10, summary
    result = verify(tmp_path / "out", sample=10_000)
    assert result["different"] == 0, result["differences"][0]["detail"]
    assert result["identical"] == result["checked"] == summary["written"], result["skipped"]


def test_history_that_is_not_a_prefix(tmp_path):
    """Mistral v0.3 writes the system prompt into the last user turn only, so the conversation up
    to an earlier reply is not a prefix of the whole: each turn is then found rendered alone."""
    from fastsft.verify import ReferenceEncoder

    messages = HANDMADE[2]["messages"]
    reference = ReferenceEncoder(TOKENIZERS / "mistral-7b-instruct-v0.3", {})
    whole, _ = reference.render(messages, None)
    assert not whole.startswith(reference.render(messages[:2], None, add_generation_prompt=True)[0])
    text, spans = reference.spans(messages, None)
    assert [text[s.start : s.end] for s in spans] == [" chat</s>", " chien</s>"]

    handmade = tmp_path / "handmade.jsonl"
    handmade.write_text("".join(json.dumps(r) + "\n" for r in HANDMADE), encoding="utf-8")
    summary = prep([handmade], "mistral-7b-instruct-v0.3", tmp_path / "out")
    assert summary["written"] == len(HANDMADE)
    result = verify(tmp_path / "out")
    assert (result["checked"], result["identical"]) == (len(HANDMADE), len(HANDMADE)), result["differences"][:1]


def test_spans_not_found_leave_the_mask_unchecked(tmp_path):
    """A template that marks the last user and the last assistant turn differently: neither the
    prefix rule nor a turn rendered alone finds the first reply, so only the ids are compared."""
    from fastsft.verify import ReferenceEncoder

    template = tmp_path / "odd.jinja"
    template.write_text(
        "{%- for m in messages -%}{{ '<|im_start|>' ~ m.role ~ '\\n' ~ m.content }}"
        "{%- if loop.last %}{{ ' (last)' }}{% endif %}{{ '<|im_end|>\\n' }}{%- endfor -%}"
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif -%}"
    )
    reference = ReferenceEncoder(TOKENIZERS / "qwen2.5", {"template": str(template)})
    messages = [{"role": r, "content": c} for r, c in [("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")]]
    ids, mask, why = reference.encode({"messages": messages})
    assert mask is None and "prefix" in why
    assert reference.tokenizer.decode(ids, skip_special_tokens=False).endswith("a2 (last)<|im_end|>\n")

    # fastsft finds these spans its own way (marker rendering) and writes the row: verify compares
    # its ids, says the mask went unchecked, and does not fail.
    (tmp_path / "odd.jsonl").write_text(json.dumps({"messages": messages}) + "\n")
    assert prep([tmp_path / "odd.jsonl"], "qwen2.5", tmp_path / "out", template=str(template))["written"] == 1
    result = verify(tmp_path / "out")
    assert (result["checked"], result["ids_only"]) == (0, {why: 1})
    assert cli(tmp_path / "out") == 0


def corrupt(src: Path, dst: Path, array: str, sample: int, at: int) -> int:
    """Copies a dataset and changes one value of `array` in `sample` (position `at` from its
    start); returns the position in the whole array."""
    shutil.copytree(src, dst)
    offsets = np.load(dst / "offsets.npy")
    values = np.load(dst / array)
    position = int(offsets[sample]) + at
    assert position < offsets[sample + 1]
    values[position] = values[position] ^ 1
    np.save(dst / array, values)
    return position


@pytest.mark.parametrize(("array", "kind"), [("input_ids.npy", "ids"), ("loss_mask.npy", "mask")])
def test_a_flipped_value_is_reported(datasets, tmp_path, capsys, array, kind):
    corrupt(datasets["qwen2.5"], tmp_path / "bad", array, sample=7, at=40)
    result = verify(tmp_path / "bad", sample=10_000)
    assert result["different"] == 1 and result["identical"] == result["checked"] - 1
    (difference,) = result["differences"]
    assert (difference["sample"], difference["line"], difference["kind"], difference["position"]) == (7, 8, kind, 40)
    assert cli(tmp_path / "bad", "--sample", 10_000) == 1
    out = capsys.readouterr().out
    assert "sample 7 (" in out and "qwen2.5.jsonl:8)" in out and "position 40" in out and "DIFFERENT: 1 of" in out
    assert ">     40" in out  # the side-by-side table points at the differing token


def test_sample_and_seed(datasets):
    ds = datasets["mistral-7b-instruct-v0.3"]
    first, again = verify(ds, sample=5, seed=3), verify(ds, sample=5, seed=3)
    assert first["samples"] == again["samples"] and len(first["samples"]) == 5 == first["checked"]
    assert verify(ds, sample=5, seed=4)["samples"] != first["samples"]
    whole = verify(ds, sample=10_000)
    assert [row for _, row in whole["samples"]] == list(range(whole["num_samples"]))
    with pytest.raises(SystemExit) as exit_info:
        cli(ds, "--sample", 0)
    assert exit_info.value.code == 2


def test_wrong_path_is_a_usage_error(tmp_path, capsys):
    assert cli(tmp_path / "missing") == 2
    err = capsys.readouterr().err
    assert "missing: no such dataset directory" in err and "fastsft prep" in err
    (tmp_path / "empty").mkdir()
    assert cli(tmp_path / "empty") == 2
    assert "neither a prepared dataset" in capsys.readouterr().err


def test_tokenizer_moved_or_replaced(datasets, tmp_path, capsys):
    shutil.copytree(datasets["qwen2.5"], tmp_path / "ds")
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    manifest["tokenizer"]["path"] = str(tmp_path / "moved" / "tokenizer.json")
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    assert cli(tmp_path / "ds") == 2
    assert "is not found; pass --tokenizer DIR" in capsys.readouterr().err
    assert cli(tmp_path / "ds", "--tokenizer", tmp_path / "elsewhere") == 2
    assert "elsewhere" in capsys.readouterr().err
    assert cli(tmp_path / "ds", "--tokenizer", TOKENIZERS / "qwen2.5", "--sample", 5) == 0
    # Qwen3 shares Qwen2.5's BPE but not its template: a warning, and every sample differs.
    result = verify(tmp_path / "ds", sample=5, tokenizer=TOKENIZERS / "qwen3")
    assert any("not the tokenizer the dataset was made with" in w for w in result["warnings"])
    assert result["different"] == 5


def test_changed_and_missing_inputs(tmp_path, capsys):
    corpus = head("fastchat_dummy_conversation", tmp_path / "in.jsonl", 10)
    prep([corpus], "qwen2.5", tmp_path / "out")
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[2])
    record["conversations"][1]["value"] += " (edited)"
    lines[2] = json.dumps(record) + "\n"
    corpus.write_text("".join(lines), encoding="utf-8")
    result = verify(tmp_path / "out", sample=10_000)
    assert any("changed since the dataset was made" in w for w in result["warnings"])
    assert [d["line"] for d in result["differences"]] == [3] and result["identical"] == 9
    corpus.unlink()
    assert cli(tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert "input file not found" in captured.out and "no sample could be checked" in captured.err


def test_input_layouts(tmp_path):
    """JSON arrays (malformed and empty elements numbered as prep numbers them), zstd, gzip, BOM."""
    import zstandard

    with gzip.open(CORPORA / "llamafactory_identity.jsonl.gz", "rt", encoding="utf-8") as f:
        records = [line.strip() for line in itertools.islice(f, 12)]
    array = "\ufeff[\n" + ",\n".join([*records[:4], "{bad json]", *records[4:8]]) + "\n]\n"
    (tmp_path / "array.json.zst").write_bytes(zstandard.ZstdCompressor().compress(array.encode()))
    (tmp_path / "lines.jsonl.gz").write_bytes(gzip.compress(("\ufeff" + "\n\n".join(records[8:]) + "\n").encode()))
    summary = prep([tmp_path / "array.json.zst", tmp_path / "lines.jsonl.gz"], "qwen2.5", tmp_path / "out")
    assert (summary["written"], summary["rejected"]) == (12, 1)
    result = verify(tmp_path / "out", sample=10_000)
    assert (result["checked"], result["identical"]) == (12, 12), result["differences"][:1]

    found, _ = read_records(tmp_path / "array.json.zst", {1, 5, 6, 9, 10})
    assert found[5].strip() == b"{bad json]" and json.loads(found[6]) == json.loads(records[4])
    assert 10 not in found and json.loads(found[1]) == json.loads(records[0])
    found, sha = read_records(tmp_path / "lines.jsonl.gz", {1, 3, 8})
    assert json.loads(found[3]) == json.loads(records[9]) and 8 not in found
    assert sha == fastsft.data.sha256_file(tmp_path / "lines.jsonl.gz")


def test_shards_are_verified_together(tmp_path):
    corpus = head("llamafactory_alpaca_en_demo", tmp_path / "in.jsonl", 20)
    for index in range(2):
        prep([corpus], "qwen2.5", tmp_path / "out", num_shards=2, shard_index=index)
    result = verify(tmp_path / "out", sample=10_000)
    assert result["num_samples"] == result["identical"] == 20
    assert {Path(shard).name for shard, _ in result["samples"]} == {"shard-00000-of-00002", "shard-00001-of-00002"}
    assert len(verify(tmp_path / "out", sample=6, seed=1)["samples"]) == 6


def test_array_split_does_not_depend_on_buffer_edges(tmp_path):
    """prep's reader (read back by verify through `_core.InputRecords`) splits a JSON array by
    bracket depth outside strings; escapes and brackets inside strings, an empty element, a
    malformed one and a missing closing bracket may fall on any edge of its 1 MiB read buffer."""
    from fastsft._core import InputRecords

    tricky = b' {"a": "x,]}\\"[{\\\\"}, [1, {"b": []}] ,, bad: , "s\\\\\\"" ,{"c": "\xc3\xa9"}  ]  \n'
    expected = [b' {"a": "x,]}\\"[{\\\\"}', b' [1, {"b": []}] ', b"", b" bad: ", b' "s\\\\\\"" ', b'{"c": "\xc3\xa9"}  ']
    for shift in range(9):
        filler = b'"' + b"f" * ((1 << 20) - 8 + shift) + b'"'  # the tricky part starts near the buffer's edge
        path = tmp_path / f"edge{shift}.json"
        path.write_bytes(b"[" + filler + b"," + tricky)
        got = [(file, line, record) for file, line, record in InputRecords([str(path)])]
        assert got == [(0, 1, filler), *[(0, k + 2, e) for k, e in enumerate(expected)]], shift
    (tmp_path / "open.json").write_bytes(b'[{"a": 1}, {"b"')
    assert list(InputRecords([str(tmp_path / "open.json")])) == [(0, 1, b'{"a": 1}'), (0, 2, b' {"b"')]


def test_columnar_inputs_verify_identical(tmp_path):
    """Parquet, Arrow IPC and save_to_disk inputs are read back by prep's own reader: every sample
    verifies as identical (the Python reader verify had before saw 20 of 20 as different)."""
    import datasets
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    with gzip.open(CORPORA / "llamafactory_alpaca_en_demo.jsonl.gz", "rt", encoding="utf-8") as f:
        table = pa.Table.from_pylist([json.loads(line) for line in itertools.islice(f, 20)])
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=8)  # rows cross row groups
    feather.write_feather(table, tmp_path / "in.feather")
    datasets.Dataset(InMemoryTable(table)).save_to_disk(str(tmp_path / "saved"), num_shards=2)
    for source in ("in.parquet", "in.feather", "saved"):
        summary = prep([tmp_path / source], "qwen2.5", tmp_path / f"out-{source}")
        assert summary["written"] == 20, source
        result = verify(tmp_path / f"out-{source}", sample=10_000)
        assert (result["checked"], result["identical"], result["different"]) == (20, 20, 0), (source, result["differences"][:1])
        assert not result["warnings"], result["warnings"]  # the sha256 read back is the manifest's

    found, sha = read_records(tmp_path / "in.parquet", {1, 9, 20, 21})
    assert sorted(found) == [1, 9, 20] and json.loads(found[9]) == table.slice(8, 1).to_pylist()[0]
    assert sha == json.loads((tmp_path / "out-in.parquet" / "manifest.json").read_text())["inputs"][0]["sha256"]


# Multi-turn reasoning traces: Qwen3's template drops earlier turns' reasoning, so each becomes one
# sample per trained turn (`--split-turns auto`).
REASONING_TRACES = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a}+{a}?"},
            {"role": "assistant", "content": str(2 * a), "reasoning_content": f"add {a} and {a}"},
            {"role": "user", "content": f"And {b}*{b}?"},
            {"role": "assistant", "content": str(b * b), "reasoning_content": f"multiply {b} by itself"},
        ]
    }
    for a, b in [(2, 3), (5, 7), (11, 13)]
]


def test_per_turn_samples_are_verified(tmp_path):
    """Each per-turn sample is rebuilt from transformers' prompt for its turn and the completion
    the template renders after it, and compared; `--reasoning mask` ones are skipped, said why."""
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(r) + "\n" for r in REASONING_TRACES), encoding="utf-8")
    summary = prep([traces], "qwen3", tmp_path / "out")
    assert (summary["written"], summary["samples"]) == (3, 6), summary
    result = verify(tmp_path / "out", sample=100)
    assert (result["checked"], result["identical"], result["different"]) == (6, 6, 0), result["differences"][:1]
    assert not result["skipped"], result["skipped"]

    # A flipped id in a per-turn sample is found, and named by its turn.
    ids = np.load(tmp_path / "out" / "input_ids.npy", mmap_mode="r+")
    offsets = np.load(tmp_path / "out" / "offsets.npy")
    ids[offsets[1] + 2] ^= 1
    ids.flush()
    del ids
    result = verify(tmp_path / "out", sample=100)
    assert (result["identical"], result["different"]) == (5, 1)
    assert result["differences"][0]["turn"] == 3 and result["differences"][0]["sample"] == 1

    prep([traces], "qwen3", tmp_path / "masked", reasoning="mask")
    result = verify(tmp_path / "masked", sample=100)
    assert result["checked"] == 0 and sum(result["skipped"].values()) == 6, result
