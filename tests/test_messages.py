"""Wording a user reads: counts in the singular when there is one (rust/pipeline.rs, fastsft.wording
and its callers), and a forced `--format` that does not fit the records names the missing field
without advising `--format` again (rust/schema.rs, rust/pipeline.rs `check_rejects`)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

import fastsft
from fastsft import view
from fastsft.cli import format_summary
from fastsft.verify import format_report
from fastsft.wording import plural
from reference import TOKENIZERS

TOKENIZER = TOKENIZERS / "tinyllama-chat"
RECORD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def test_plural():
    assert [plural(n, "record") for n in (0, 1, 2, 12_345)] == ["0 records", "1 record", "2 records", "12,345 records"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(2, "entry", "entries") == "2 entries"


def test_forced_format_names_the_missing_field_and_does_not_advise_format(tmp_path):
    data = tmp_path / "text.jsonl"
    data.write_text(json.dumps({"text": "Hello there"}) + "\n")
    command = [sys.executable, "-m", "fastsft.cli", "prep", str(data), "--tokenizer", str(TOKENIZER), "-o", str(tmp_path / "out"),
               "--format", "alpaca", "--no-progress"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (
        4,  # rejects (fastsft/errors.py)
        "fastsft prep: error: 1 of 1 record rejected (100.0%, nothing written); most common reason: missing_field "
        f"(1 record); first: {data}:1: the record has no 'instruction'; the records lack fields that --format alpaca reads; "
        f"every reject is listed in {data.parent / 'out.rejects.jsonl'}\n",
    )


def test_prep_summary_in_the_singular():
    summary = {"output": "out", "read": 1, "written": 1, "rejected": 0, "rejected_by_reason": {}, "truncated": 0,
               "tokens": 30, "trained_tokens": 5, "seconds": 2.0, "threads": 1, "skipped": False}  # fmt: skip
    assert format_summary(summary).splitlines()[-1] == "  throughput                0 records/s, 0.00M tokens/s (1 thread, 2.0 s)"
    kept = format_summary({**summary, "skipped": True})
    assert kept == "fastsft prep: out is already complete with the same inputs and options; kept it (1 sample)"


def test_inspect_and_stats_in_the_singular(tmp_path, capsys):
    out = tmp_path / "out"
    fastsft.prep([str(_write(tmp_path / "one.jsonl", [RECORD]))], str(TOKENIZER), str(out))
    parser = argparse.ArgumentParser(prog="fastsft")
    view.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["inspect", str(out), "--random", "1"])
    assert args.func(args) == 0
    assert capsys.readouterr().err.startswith("fastsft inspect: 1 random sample (repeat with --seed ")
    length = int(np.diff(np.load(out / "offsets.npy"))[0])
    stats = view.format_stats(view.compute_stats(out, pack_len=length - 1), pack_len_given=True)
    assert stats.splitlines()[-2:] == [
        f"  packing at {length - 1:,}: 0 packs, no sample fits",
        f"    1 sample ({length} tokens) is longer than --pack-len {length - 1} and left out: "
        f"raise --pack-len or prepare with --max-len {length - 1}",
    ]


def test_verify_report_in_the_singular():
    import tokenizers
    import transformers

    result = {"path": "out", "sampled": 1, "num_samples": 1, "checked": 1, "identical": 1, "different": 0,
              "ids_only": {}, "skipped": {}, "differences": [], "warnings": []}  # fmt: skip
    engine = f"transformers {transformers.__version__} + tokenizers {tokenizers.__version__}"
    lines = format_report(result).splitlines()
    assert (lines[0], lines[-1]) == (
        f"fastsft verify: out: 1 of 1 sample re-encoded with {engine}",
        "OK: the 1 checked sample is identical",
    )
    different = format_report({**result, "identical": 0, "different": 1}).splitlines()[-1]
    assert different == "DIFFERENT: 1 of 1 checked sample differs from the reference"


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
