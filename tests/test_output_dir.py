"""Where `fastsft prep` may write (rust/writer.rs `OutputDir`): a new path or an empty directory;
an existing dataset only with --overwrite; anything else never, and no message advises a flag that
would then be refused. Through the command line, as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from reference import TOKENIZERS

TOKENIZER = TOKENIZERS / "tinyllama-chat"  # the fastest shipped tokenizer to load
RECORD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def prep(tmp_path: Path, out: Path | str, *flags: str) -> subprocess.CompletedProcess:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(RECORD) + "\n")
    command = [
        sys.executable,
        "-m",
        "fastsft.cli",
        "prep",
        str(data),
        "--tokenizer",
        str(TOKENIZER),
        "-o",
        str(out),
        "--no-progress",
        *flags,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def no_temporaries(parent: Path) -> bool:
    return not [p.name for p in parent.iterdir() if "fastsft-tmp" in p.name]


def test_an_empty_directory_is_an_output_and_then_a_dataset(tmp_path):
    out = tmp_path / "emptyout"
    out.mkdir()
    done = prep(tmp_path, out)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == 1
    assert no_temporaries(tmp_path)
    # Now it is a dataset: replaced only when asked, and the message says how.
    again = prep(tmp_path, out)
    assert (again.returncode, again.stderr) == (5, f"fastsft prep: error: {out} already exists; pass --overwrite to replace it\n")
    assert prep(tmp_path, out, "--overwrite").returncode == 0
    assert no_temporaries(tmp_path)


def test_a_directory_with_other_files_is_never_replaced_and_no_flag_is_advised(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for flags in [(), ("--overwrite",)]:
        done = prep(tmp_path, out, *flags)
        assert (done.returncode, done.stderr) == (
            2,
            f"fastsft prep: error: {out} exists and is neither an empty directory nor a fastsft dataset "
            "(no manifest.json); fastsft never replaces it: choose another output path, or empty or remove it yourself\n",
        ), flags
    assert [p.name for p in out.iterdir()] == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"
    assert no_temporaries(tmp_path)


def test_a_file_or_the_current_directory_is_refused(tmp_path):
    (tmp_path / "out.txt").write_text("x")
    done = prep(tmp_path, tmp_path / "out.txt", "--overwrite")
    assert done.returncode == 2 and "is neither an empty directory nor a fastsft dataset" in done.stderr
    assert (tmp_path / "out.txt").read_text() == "x"
    done = prep(tmp_path, ".")
    assert (done.returncode, done.stderr) == (
        2,
        "fastsft prep: error: -o .: name the output directory itself (e.g. -o out/demo), not the current or a parent directory\n",
    )
    assert no_temporaries(tmp_path)
