"""The fault matrix of DESIGN §5: every kind of broken input, crash and full disk, one test each.

Each case has one expected outcome: a counted reject with its reason (a line of `rejects.jsonl`
naming file, line, reason and detail), or a clear error naming the file (and line) with exit status
2 from the CLI — never a panic, a Python traceback, or an output directory that looks finished when
it is not. tests/test_prep.py checks the common reject reasons together, whole-file CRLF/BOM/.gz/
.zst/array inputs, `--strict` and shards through the Python API; here each case of issue 5's matrix
is a test of its own, with its variants, and whole-run failures go through the CLI.

Record-level cases share one `fastsft prep` run over a file holding all of them (`MATRIX`); each
case is still its own test, reading its own line's outcome.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastsft
from fastsft.errors import EXIT_INPUT, EXIT_OUTPUT, EXIT_REJECTS
from subprocess_signals import sigint_as_at_a_terminal

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO / "assets/tokenizers"
QWEN = TOKENIZERS / "qwen2.5"
GEMMA = TOKENIZERS / "gemma"
MISTRAL = TOKENIZERS / "mistral-7b-instruct-v0.1"
# Where the tokenizer does not matter (whole-run errors): TinyLlama's loads in ~0.25 s, Qwen2.5's in ~1 s.
FAST_TOKENIZER = TOKENIZERS / "tinyllama-chat"
CORPORA = REPO / "assets/corpora"
DETERMINISTIC_FILES = [
    "input_ids.npy",
    "loss_mask.npy",
    "offsets.npy",
    "origin.npy",
    "turns.npy",
    "manifest.json",
    "rejects.jsonl",
]


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


GOOD = dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]})
USER, ASSISTANT = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}

# (case, the line's bytes, expected outcome): ("sample",) or ("reject", reason, text the detail holds).
MATRIX: list[tuple[str, bytes, tuple]] = [
    # Malformed JSON
    ("malformed_json_unclosed", b'{"messages": [', ("reject", "invalid_json", "malformed JSON")),
    ("malformed_json_trailing_garbage", GOOD + b" x", ("reject", "invalid_json", "trailing characters")),
    ("malformed_json_single_quotes", b"{'messages': []}", ("reject", "invalid_json", "malformed JSON")),
    ("malformed_json_nan", b'{"messages": [], "score": NaN}', ("reject", "invalid_json", "malformed JSON")),
    ("malformed_json_number_overflow", b'{"messages": [], "x": 1e999}', ("reject", "invalid_json", "number out of range")),
    ("malformed_json_deep_nesting", b"[" * 100_000 + b"]" * 100_000, ("reject", "invalid_json", "recursion limit")),
    (
        "malformed_json_raw_control_char",
        b'{"messages": [{"role": "user", "content": "a\x00b"}]}',
        ("reject", "invalid_json", "control character"),
    ),
    # Not an object
    ("not_object_array", b"[1, 2]", ("reject", "not_an_object", "an array")),
    ("not_object_string", b'"just text"', ("reject", "not_an_object", "a string")),
    ("not_object_number", b"42", ("reject", "not_an_object", "a number")),
    ("not_object_null", b"null", ("reject", "not_an_object", "null")),
    # Missing and wrong-typed fields
    ("no_known_layout", dumps({"question": "q", "answer": "a"}), ("reject", "unknown_layout", "question, answer")),
    ("alpaca_without_output", dumps({"instruction": "Add 1+1"}), ("reject", "unknown_layout", "instruction")),
    (
        "missing_value",
        dumps({"conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]}),
        ("reject", "missing_field", "'value'"),
    ),
    ("missing_role", dumps({"messages": [{"content": "q"}, ASSISTANT]}), ("reject", "missing_field", "'role'")),
    ("messages_not_a_list", dumps({"messages": {"role": "user", "content": "q"}}), ("reject", "wrong_type", "'messages'")),
    ("message_not_an_object", dumps({"messages": ["q", ASSISTANT]}), ("reject", "wrong_type", "message 1 is a string")),
    (
        "role_not_a_string",
        dumps({"messages": [{"role": 1, "content": "q"}, ASSISTANT]}),
        ("reject", "wrong_type", "'role' is a number"),
    ),
    (
        "content_a_number",
        dumps({"conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "a"}]}),
        ("reject", "wrong_type", "a number"),
    ),
    (
        "content_an_object",
        dumps({"messages": [{"role": "user", "content": {"text": "q"}}, ASSISTANT]}),
        ("reject", "wrong_type", "an object"),
    ),
    ("tools_a_number", dumps({"tools": 3, "messages": [USER, ASSISTANT]}), ("reject", "wrong_type", "'tools'")),
    ("instruction_a_list", dumps({"instruction": ["q"], "output": "a"}), ("reject", "wrong_type", "'instruction'")),
    (
        "history_not_pairs",
        dumps({"instruction": "q", "output": "a", "history": [["only one"]]}),
        ("reject", "wrong_type", "'history'"),
    ),
    # Roles
    (
        "unknown_role",
        dumps({"conversations": [{"from": "narrator", "value": "q"}, {"from": "gpt", "value": "a"}]}),
        ("reject", "unknown_role", "--role-map narrator=assistant"),
    ),
    # null and non-text content
    # transformers drops `content: None`; Qwen2.5's template then adds a string to an undefined value.
    (
        "null_user_content",
        dumps({"messages": [{"role": "user", "content": None}, ASSISTANT]}),
        ("reject", "template_error", "undefined"),
    ),
    (
        "null_assistant_content",
        dumps({"messages": [USER, {"role": "assistant", "content": None}]}),
        ("reject", "empty_assistant_message", "message 2"),
    ),
    (
        "image_content_part",
        dumps(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "what is this?"}, {"type": "image", "image": "cat.png"}],
                    },
                    ASSISTANT,
                ]
            }
        ),
        ("reject", "non_text_content", '"image"'),
    ),
    (
        "text_content_parts",
        dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}, ASSISTANT]}),
        ("sample",),
    ),
    # Conversation shapes
    ("empty_conversation", dumps({"conversations": []}), ("reject", "empty_conversation", "no messages")),
    ("empty_messages", dumps({"messages": []}), ("reject", "empty_conversation", "no messages")),
    (
        "system_only",
        dumps({"messages": [{"role": "system", "content": "You are terse."}]}),
        ("reject", "no_assistant_message", "no assistant"),
    ),
    (
        "ends_on_user",
        dumps({"messages": [USER, ASSISTANT, USER]}),
        ("reject", "ends_without_assistant", "ends with a user message"),
    ),
    # Consecutive same roles: Qwen2.5's template renders them (Gemma's and Mistral's raise: see below).
    ("consecutive_users_qwen", dumps({"messages": [USER, {"role": "user", "content": "q2"}, ASSISTANT]}), ("sample",)),
    # Bytes
    (
        "invalid_utf8_in_string",
        b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "a"}]}',
        ("reject", "invalid_json", "invalid UTF-8 at byte"),
    ),
    ("invalid_utf8_truncated_sequence", GOOD[:-3] + b'\xe4\xbd"}]}', ("reject", "invalid_json", "invalid UTF-8 at byte")),
    (
        "lone_surrogate_escape",
        b'{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "a"}]}',
        ("reject", "invalid_json", "hex escape"),
    ),
    # A BOM is dropped at the start of a file (line 1 below); one in the middle of a file (as `cat`
    # of BOM-prefixed files leaves) is not valid JSON: a counted reject.
    ("bom_mid_file", b"\xef\xbb\xbf" + GOOD, ("reject", "invalid_json", "malformed JSON")),
    ("crlf_line", GOOD + b"\r", ("sample",)),
    ("whitespace_around_record", b" \t" + GOOD + b" \t", ("sample",)),
]


def read_lines(path: Path) -> list[str]:
    """JSON Lines, split on "\n" only (str.splitlines() would also split a detail at U+2028)."""
    return path.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """One prep run over all MATRIX lines; line 1 is a BOM + a good record, line 2 a CRLF-ended good one."""
    tmp = tmp_path_factory.mktemp("matrix")
    lines = [b"\xef\xbb\xbf" + GOOD, GOOD + b"\r"] + [line for _, line, _ in MATRIX]
    path = tmp / "matrix.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp / "out"
    summary = fastsft.prep([path], QWEN, out)
    origin = np.load(out / "origin.npy")
    offsets = np.load(out / "offsets.npy")
    ids = np.load(out / "input_ids.npy")
    samples = {int(line): ids[offsets[i] : offsets[i + 1]].tolist() for i, (_, line) in enumerate(origin)}
    rejects = {r["line"]: r for r in map(json.loads, read_lines(out / "rejects.jsonl"))}
    manifest = json.loads((out / "manifest.json").read_text())
    return {"path": path, "summary": summary, "samples": samples, "rejects": rejects, "manifest": manifest}


@pytest.mark.parametrize("case, line, expected", MATRIX, ids=[c for c, _, _ in MATRIX])
def test_record_fault(matrix, case, line, expected):
    number = 3 + [c for c, _, _ in MATRIX].index(case)
    if expected[0] == "sample":
        assert number in matrix["samples"], matrix["rejects"].get(number)
        assert number not in matrix["rejects"]
        return
    _, reason, detail = expected
    assert number not in matrix["samples"]
    reject = matrix["rejects"][number]
    assert (reject["file"], reject["line"], reject["reason"]) == (str(matrix["path"]), number, reason)
    assert detail in reject["detail"], reject["detail"]


def test_matrix_accounting(matrix):
    """read = written + rejected, in the summary and the manifest; each line counted once."""
    s, counts = matrix["summary"], matrix["manifest"]["counts"]
    assert s["read"] == len(MATRIX) + 2 == s["written"] + s["rejected"]
    assert (counts["read"], counts["written"], counts["rejected"]) == (s["read"], s["written"], s["rejected"])
    assert sorted([*matrix["samples"], *matrix["rejects"]]) == list(range(1, len(MATRIX) + 3))
    expected_reasons: dict[str, int] = {}
    for _, _, outcome in MATRIX:
        if outcome[0] == "reject":
            expected_reasons[outcome[1]] = expected_reasons.get(outcome[1], 0) + 1
    assert counts["rejected_by_reason"] == expected_reasons


def test_bom_and_crlf_lines_encode_like_plain_ones(matrix):
    """Line 1 (BOM-prefixed, at the start of the file) and line 2 (CRLF) give the plain record's ids."""
    plain = fastsft.RecordEncoder(QWEN).encode(GOOD.decode())["input_ids"]
    assert matrix["samples"][1] == matrix["samples"][2] == plain
    crlf = 3 + [c for c, _, _ in MATRIX].index("crlf_line")
    assert matrix["samples"][crlf] == plain


# Templates that raise: Gemma and Mistral v0.1 refuse non-alternating roles (and Gemma a system turn)
# with raise_exception; the reject carries the template's own message.
RAISING = [
    (
        "gemma_consecutive_users",
        GEMMA,
        [USER, {"role": "user", "content": "q2"}, ASSISTANT],
        "Conversation roles must alternate user/assistant/user/assistant/...",
    ),
    (
        "gemma_consecutive_assistants",
        GEMMA,
        [USER, ASSISTANT, ASSISTANT],
        "Conversation roles must alternate user/assistant/user/assistant/...",
    ),
    ("gemma_system_turn", GEMMA, [{"role": "system", "content": "s"}, USER, ASSISTANT], "System role not supported"),
    (
        "mistral_consecutive_users",
        MISTRAL,
        [USER, {"role": "user", "content": "q2"}, ASSISTANT],
        "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...",
    ),
    (
        "mistral_assistant_first",
        MISTRAL,
        [ASSISTANT, USER, ASSISTANT],
        "After the optional system message, conversation roles must alternate",
    ),
]


@pytest.fixture(scope="module")
def raising_runs(tmp_path_factory) -> dict[str, dict[int, dict]]:
    """One prep run per tokenizer over its RAISING records (each between two good ones)."""
    runs = {}
    for tokenizer in {t for _, t, _, _ in RAISING}:
        cases = [r for r in RAISING if r[1] == tokenizer]
        tmp = tmp_path_factory.mktemp(tokenizer.name)
        data = tmp / "d.jsonl"
        data.write_bytes(b"\n".join([GOOD, *(dumps({"messages": m}) for _, _, m, _ in cases), GOOD]) + b"\n")
        summary = fastsft.prep([data], tokenizer, tmp / "out")
        assert (summary["read"], summary["written"], summary["rejected_by_reason"]) == (
            len(cases) + 2,
            2,
            {"template_error": len(cases)},
        )
        rejects = [json.loads(line) for line in read_lines(tmp / "out/rejects.jsonl")]
        assert all(r["file"] == str(data) for r in rejects)
        runs[tokenizer.name] = {r["line"]: r for r in rejects}
    return runs


@pytest.mark.parametrize("case, tokenizer, messages, message", RAISING, ids=[r[0] for r in RAISING])
def test_template_raise_is_a_reject_with_its_message(raising_runs, case, tokenizer, messages, message):
    line = 2 + [r[0] for r in RAISING if r[1] == tokenizer].index(case)
    reject = raising_runs[tokenizer.name][line]
    assert reject["reason"] == "template_error"
    assert message in reject["detail"]


def test_jsonl_whose_first_record_is_an_array_loses_no_line(tmp_path):
    """A JSON Lines file that starts with `[`: every line is still read and counted."""
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join([dumps([USER, ASSISTANT]), GOOD, GOOD]) + b"\n")
    summary = fastsft.prep([data], FAST_TOKENIZER, tmp_path / "out")
    assert (summary["read"], summary["written"], summary["rejected_by_reason"]) == (3, 2, {"not_an_object": 1})


# ---------------------------------------------------------------------------------------------
# Whole-run errors, through the CLI: the exit code of their kind, a message naming the file, no traceback.


def cli(*args: str | Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fastsft.cli", "prep", *map(str, args), "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_clean_error(done: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """One line, no traceback, and the exit code of the kind of failure (fastsft/errors.py)."""
    assert done.returncode == code, (done.returncode, done.stderr)
    for marker in ("Traceback", "PanicException", "panicked at", "RUST_BACKTRACE"):
        assert marker not in done.stderr, done.stderr
    assert done.stderr.startswith("fastsft prep: error: "), done.stderr
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)


def assert_nothing_written(parent: Path, name: str = "out") -> None:
    assert not (parent / name).exists()
    assert not [p.name for p in parent.iterdir() if "fastsft-tmp" in p.name]


def corpus_text(records: int = 3000) -> bytes:
    return b"".join(GOOD + b"\n" for _ in range(records))


@pytest.mark.parametrize("cut", ["half", "trailer"])
def test_truncated_gzip(tmp_path, cut):
    blob = gzip.compress(corpus_text())
    (tmp_path / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2] if cut == "half" else blob[:-4])
    done = cli(tmp_path / "cut.jsonl.gz", "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out")
    assert_clean_error(done, EXIT_INPUT, "cut.jsonl.gz", "truncated or corrupt")
    assert_nothing_written(tmp_path)


def test_corrupt_gzip(tmp_path):
    blob = bytearray(gzip.compress(corpus_text()))
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "bad.jsonl.gz").write_bytes(bytes(blob))
    done = cli(tmp_path / "bad.jsonl.gz", "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out")
    assert_clean_error(done, EXIT_INPUT, "bad.jsonl.gz", "truncated or corrupt")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("cut", ["half", "last_bytes"])
def test_truncated_zstd(tmp_path, cut):
    import zstandard

    blob = zstandard.ZstdCompressor().compress(corpus_text())
    (tmp_path / "cut.jsonl.zst").write_bytes(blob[: len(blob) // 2] if cut == "half" else blob[:-3])
    done = cli(tmp_path / "cut.jsonl.zst", "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out")
    assert_clean_error(done, EXIT_INPUT, "cut.jsonl.zst", "truncated or corrupt")
    assert_nothing_written(tmp_path)


def test_missing_input_file(tmp_path):
    (tmp_path / "here.jsonl").write_bytes(GOOD + b"\n")
    done = cli(tmp_path / "here.jsonl", tmp_path / "gone.jsonl", "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out")
    assert_clean_error(done, EXIT_INPUT, f"{tmp_path / 'gone.jsonl'}: not found")
    assert_nothing_written(tmp_path)


def test_input_is_a_directory(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    done = cli(tmp_path / "dir.jsonl", "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out")
    assert_clean_error(done, EXIT_INPUT, "dir.jsonl", "not a file")
    assert_nothing_written(tmp_path)


def test_json_array_with_trailing_content_is_an_error(tmp_path):
    """Content after a top-level array's closing bracket (a JSON Lines file named .json whose first
    record is an array) is a clear error naming the file, never data silently left unread."""
    data = tmp_path / "d.json"
    data.write_bytes(b"[" + GOOD + b"]\n" + GOOD + b"\n")
    done = cli(data, "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out")
    assert_clean_error(done, EXIT_INPUT, str(data), "after the closing bracket", ".jsonl")
    assert_nothing_written(tmp_path)


def test_missing_tokenizer(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(GOOD + b"\n")
    done = cli(tmp_path / "d.jsonl", "--tokenizer", tmp_path / "no-model", "-o", tmp_path / "out")
    assert_clean_error(done, EXIT_INPUT, "no-model")
    assert_nothing_written(tmp_path)


def test_existing_output_without_overwrite_is_left_untouched(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(GOOD + b"\n")
    assert cli(data, "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out").returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    data.write_bytes(GOOD + b"\n" + GOOD + b"\n")
    done = cli(data, "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out")
    assert_clean_error(done, EXIT_OUTPUT, str(tmp_path / "out"), "already exists; pass --overwrite")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if "fastsft-tmp" in p.name]


def test_output_under_a_file(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(GOOD + b"\n")
    (tmp_path / "plain-file").write_text("x")
    done = cli(tmp_path / "d.jsonl", "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "plain-file" / "out")
    assert_clean_error(done, EXIT_OUTPUT, "plain-file")


def test_strict_names_file_and_line_of_an_invalid_utf8_record(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(GOOD + b"\n\n" + b'{"messages": [{"role": "user", "content": "\xff"}]}\n' + GOOD + b"\n")
    done = cli(data, "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out", "--strict")
    assert_clean_error(done, EXIT_REJECTS, f"{data}:3: invalid_json")
    assert_nothing_written(tmp_path)


def test_forced_format_that_does_not_fit_says_which_does(tmp_path):
    """Item 2: `--format sharegpt` on alpaca records fails, naming the layout the records have."""
    data = tmp_path / "alpaca.jsonl"
    data.write_bytes(b"".join(dumps({"instruction": f"Add {i}+1", "input": "", "output": str(i + 1)}) + b"\n" for i in range(5)))
    done = cli(data, "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out", "--format", "sharegpt")
    assert_clean_error(done, EXIT_REJECTS, "5 of 5 records rejected", f"{data}:1:", "missing 'conversations'")
    assert re.search(r"looks? like an? alpaca record.*--format alpaca", done.stderr), done.stderr
    assert_nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------
# Full disk: RLIMIT_FSIZE makes every write past N bytes fail with EFBIG (SIGXFSZ ignored, so the
# process sees the error instead of being killed).


def limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


@pytest.mark.parametrize("where", ["arrays", "manifest"])
def test_full_disk(tmp_path, where):
    data = tmp_path / "d.jsonl"
    if where == "arrays":
        # 3,000 records: input_ids.npy alone is ~400 kB; every file fails past 4 kB.
        data.write_bytes(corpus_text(3000))
        limit = 4096
    else:
        # One record: the manifest is the largest file, so only writing it fails (the last step).
        data.write_bytes(GOOD + b"\n")
        fastsft.prep([data], FAST_TOKENIZER, tmp_path / "clean")
        sizes = {p.name: p.stat().st_size for p in (tmp_path / "clean").iterdir()}
        assert max(sizes, key=sizes.get) == "manifest.json", sizes
        limit = sizes["manifest.json"] - 1
        assert all(size <= limit for name, size in sizes.items() if name != "manifest.json")
    done = cli(data, "--tokenizer", FAST_TOKENIZER, "-o", tmp_path / "out", preexec_fn=limit_file_size(limit))
    assert_clean_error(done, EXIT_OUTPUT, "File too large")
    assert re.search(r"\.out\.fastsft-tmp-\d+/(\w+\.npy|rejects\.jsonl|manifest\.json)", done.stderr), done.stderr
    if where == "manifest":
        assert "manifest.json" in done.stderr
    assert_nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------
# SIGKILL in the middle of a run, then a re-run.


def start_slow_run(tmp_path: Path, until: str = "mid-run") -> tuple[subprocess.Popen, Path, Path]:
    """Starts the CLI on 500 real conversations, slowly (one thread, small chunks: a few seconds),
    and returns (process, corpus, its temporary directory) once the run is `until`:

    - "mid-run": the first 1 MB of input_ids.npy (of ~1.9 MB) is on disk, more records to come;
    - "finishing": every record is written (input_ids.npy has its final size) and the rest of the
      directory (other arrays' final flush and fsync, manifest) is being completed."""
    corpus = tmp_path / "medical.jsonl"
    lines = gzip.decompress((CORPORA / "medicalgpt_sharegpt_zh_1k.jsonl.gz").read_bytes()).splitlines(keepends=True)
    corpus.write_bytes(b"".join(lines[:500]))
    final_size = None
    if until == "finishing":
        fastsft.prep([corpus], QWEN, tmp_path / "reference", threads=2)
        final_size = (tmp_path / "reference/input_ids.npy").stat().st_size
        shutil.rmtree(tmp_path / "reference")
    command = [
        sys.executable,
        "-m",
        "fastsft.cli",
        "prep",
        str(corpus),
        "--tokenizer",
        str(QWEN),
        "-o",
        str(tmp_path / "out"),
        "--threads",
        "1",
        "--chunk-size",
        "16",
        "--no-progress",
    ]
    # The reference tokenizer (the tokenizers crate) keeps the run slow enough to interrupt in the
    # middle even on an idle machine; the fast BPE finishes 500 conversations in a fraction of a second.
    env = {**os.environ, "FASTSFT_TOKENIZER": "reference"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint_as_at_a_terminal
    )
    ids = tmp_path / f".out.fastsft-tmp-{proc.pid}" / "input_ids.npy"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        size = ids.stat().st_size if ids.exists() else 0
        if (until == "mid-run" and size > 0) or (until == "finishing" and size == final_size):
            break
        time.sleep(0.001)
    assert proc.poll() is None, f"the run finished before it was {until}"
    if until == "mid-run":
        assert ids.stat().st_size < 1_500_000, "not in the middle of the run any more"
    return proc, corpus, ids.parent


def test_sigkill_mid_run_leaves_no_dataset_and_a_rerun_succeeds(tmp_path):
    proc, corpus, tmp_dir = start_slow_run(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["medical.jsonl", tmp_dir.name])
    assert not (tmp_dir / "manifest.json").exists()

    rerun = cli(corpus, "--tokenizer", QWEN, "-o", tmp_path / "out", "--threads", "2")
    assert rerun.returncode == 0, rerun.stderr
    fastsft.prep([corpus], QWEN, tmp_path / "clean", threads=2)
    for name in DETERMINISTIC_FILES:
        assert sha(tmp_path / "out" / name) == sha(tmp_path / "clean" / name), name
    assert json.loads((tmp_path / "out/manifest.json").read_text())["counts"]["read"] == 500
    # The re-run removed the killed run's temporary directory (its process is gone).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["medical.jsonl", "out", "clean"])


def test_ctrl_c_mid_run_cleans_up(tmp_path):
    """SIGINT (Ctrl-C) is caught between chunks: exit 130, a one-line message, nothing left behind."""
    proc, _, _ = start_slow_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medical.jsonl"]


def test_ctrl_c_while_finishing_says_what_happened(tmp_path):
    """Ctrl-C after the last record: either the run stops (no OUT, exit 130) or it completes
    (OUT, exit 0); never a complete OUT with 'nothing was written'."""
    proc, _, _ = start_slow_run(tmp_path, until="finishing")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr
    if (tmp_path / "out").exists():
        assert json.loads((tmp_path / "out/manifest.json").read_text())["counts"]["read"] == 500
        assert (proc.returncode, stderr) == (0, ""), stderr
        assert "wrote" in stdout
    else:
        assert proc.returncode == 130 and "interrupted" in stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["medical.jsonl"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# A single huge line.


@pytest.mark.parametrize(
    "reply_mb, outcome", [(50, "rejected"), (3.9, "truncated")], ids=["50MB_rejected_unread", "3.9MB_truncated"]
)
def test_huge_line_without_blowing_memory(tmp_path, reply_mb, outcome):
    """A conversation whose assistant reply is 50 MB, with --max-len 4096: rejected unread as
    too_long (over --max-record-bytes, 4 MiB by default); one just under that limit is tokenized
    and truncated to --max-len. Either way peak memory stays under 1 GB; the child runs under a
    3 GB address-space limit, so a run that would need more fails fast instead of taking the
    machine down."""
    reply = "word " * int(reply_mb * 2**20 / 5)
    big = dumps({"messages": [USER, {"role": "assistant", "content": reply}]})
    data = tmp_path / "big.jsonl"
    data.write_bytes(b"\n".join([GOOD, big, GOOD]) + b"\n")
    assert data.stat().st_size > reply_mb * 2**20
    del reply, big

    command = [
        sys.executable,
        "-m",
        "fastsft.cli",
        "prep",
        str(data),
        "--tokenizer",
        str(QWEN),
        "-o",
        str(tmp_path / "out"),
        "--max-len",
        "4096",
        "--threads",
        "2",
        "--no-progress",
    ]
    returncode, peak = run_measured(command, tmp_path, address_space=3 << 30, timeout=300)
    assert returncode == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert peak < 1 << 30, f"peak RSS {peak / 2**20:.0f} MiB"
    counts = json.loads((tmp_path / "out/manifest.json").read_text())["counts"]
    assert counts["read"] == 3 == counts["written"] + counts["rejected"]
    if outcome == "truncated":
        assert (counts["written"], counts["truncated"]) == (3, 1)
        assert np.diff(np.load(tmp_path / "out/offsets.npy")).max() == 4096
    else:
        assert counts["rejected_by_reason"] == {"too_long": 1}
        [reject] = [json.loads(line) for line in read_lines(tmp_path / "out/rejects.jsonl")]
        assert (reject["line"], reject["reason"]) == (2, "too_long")
        assert "--max-record-bytes" in reject["detail"]


# Runs the command as the child of a fresh, small interpreter and prints that child's peak RSS.
# A child forked straight from pytest would report pytest's own peak: Linux carries the forked
# parent's high-water mark over exec into the child's ru_maxrss, so a suite that loaded torch
# earlier would make fastsft look 2 GB large.
_MEASURE = """
import os, resource, subprocess, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
code = subprocess.call(sys.argv[2:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, code)
"""


def run_measured(command: list[str], tmp_path: Path, address_space: int = 0, timeout: float = 300) -> tuple[int, int]:
    """Runs `command` (output to tmp_path/stdout.txt, stderr.txt) under an `address_space` limit
    in bytes (0: none); returns its exit code and its own peak RSS in bytes."""
    with open(tmp_path / "stdout.txt", "wb") as out, open(tmp_path / "stderr.txt", "wb") as err:
        measure = subprocess.run([sys.executable, "-c", _MEASURE, str(address_space), *command], stdout=subprocess.PIPE,
                                 stderr=err, timeout=timeout, check=True)  # fmt: skip
        *printed, last = measure.stdout.decode().splitlines() or [""]
        out.write("\n".join(printed).encode())
    peak, code = map(int, last.split())
    return code, peak
