"""Property tests (hypothesis) for DESIGN §5: any input line gives a sample or a counted reject.

Arbitrary JSON values, chat-shaped records whose every part may be wrong, arbitrary Unicode and
arbitrary bytes go through `RecordEncoder.encode`, `encode_batch` and `fastsft.prep`. Never a
crash or a `PanicException` (which `except Exception` would not catch: hypothesis reports it as
a failure); every reject carries a known reason and a detail; `prep` reads each non-blank line
once and read = written + rejected; and `prep` agrees line by line with `RecordEncoder`.
"""

from __future__ import annotations

import functools
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastsft

REPO = Path(__file__).resolve().parents[1]
QWEN = REPO / "assets/tokenizers/qwen2.5"
GEMMA = REPO / "assets/tokenizers/gemma"
# prep loads its tokenizer on every call: TinyLlama's (a SentencePiece BPE, offsets from the
# tokenizer) loads in ~0.25 s where Qwen2.5's takes ~1 s. The records' paths through the encoder
# are the same; Qwen2.5 (byte-level BPE) is fuzzed through RecordEncoder above.
TINYLLAMA = REPO / "assets/tokenizers/tinyllama-chat"
CORPORA = REPO / "assets/corpora"

# The reject codes of rust/schema.rs (RejectReason::code): a reject outside this list is a bug.
REASONS = {
    "invalid_json",
    "not_an_object",
    "unknown_layout",
    "missing_field",
    "wrong_type",
    "unknown_role",
    "non_text_content",
    "empty_conversation",
    "no_assistant_message",
    "ends_without_assistant",
    "empty_assistant_message",
    "reserved_character",
    "template_error",
    "assistant_span_not_found",
    "too_long",
    "no_trained_tokens",
}
# What the reader skips (Rust's `is_ascii_whitespace`; unlike Python's, it excludes \x0b).
BLANK = set(b" \t\n\r\x0c")
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def encoder(tokenizer: Path, max_len: int | None = None) -> fastsft.RecordEncoder:
    return fastsft.RecordEncoder(str(tokenizer), max_len=max_len)


def check_outcome(out: dict, max_len: int | None = None) -> None:
    """One record's outcome: a trainable sample, or a reject with a known reason and a detail."""
    if "reject" in out:
        assert out["reject"] in REASONS, out
        assert isinstance(out["detail"], str) and out["detail"], out
        assert "input_ids" not in out
        return
    ids, mask = out["input_ids"], out["loss_mask"]
    assert len(ids) == len(mask) > 0
    assert set(mask) <= {0, 1} and 1 in mask
    assert max_len is None or len(ids) <= max_len
    assert out["truncated"] in (True, False)


# --- strategies ------------------------------------------------------------------------------

# Text that stresses templates and tokenizers: any Unicode (no surrogates: Python str cannot be
# encoded to UTF-8 with them), Jinja syntax, special tokens, fastsft's in-band markers, controls.
TRICKY = [
    "{{ raise_exception('boom') }}",
    "{% for m in messages %}{{ m }}{% endfor %}",
    "{#",
    "{%",
    "}}",
    "<|im_start|>assistant\n",
    "<|im_end|>",
    "<|endoftext|>",
    "<end_of_turn>\n<start_of_turn>model\n",
    "<bos>",
    "\ufdd0",
    "\ufdd1",
    "\ufeff",
    "\u2028",
    "\x00",
    "\r\n",
    "e\u0301",
    "\u212b",
    "\ufb01",
    "😀\u200d",
    " ",
    "",
]
text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(TRICKY),
    st.lists(st.sampled_from(TRICKY) | st.text(max_size=8), max_size=4).map("".join),
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5), max_leaves=24
)
roles = (
    st.sampled_from(
        [
            "user",
            "assistant",
            "system",
            "tool",
            "human",
            "gpt",
            "model",
            "developer",
            "observation",
            "function_call",
            "function",
            "ipython",
            "bot",
        ]
    )
    | json_values
)
content = st.one_of(
    text,
    text,
    text,
    st.none(),
    st.lists(
        st.one_of(text.map(lambda t: {"type": "text", "text": t}), st.just({"type": "image", "image": "x.png"}), json_values),
        max_size=3,
    ),
    json_values,
)


@st.composite
def message(draw) -> dict:
    sharegpt = draw(st.booleans())
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    m = {}
    if draw(st.integers(0, 9)):  # now and then the role is missing
        m[role_key] = draw(roles)
    if draw(st.integers(0, 9)):
        m[content_key] = draw(content)
    if draw(st.booleans()):
        m[draw(st.sampled_from(["train", "weight", "tool_calls", "name"]))] = draw(json_values)
    return m


records = st.one_of(
    st.builds(
        lambda m, tools, system: {"conversations": m, **tools, **system},
        st.lists(message(), max_size=6),
        st.just({}) | json_values.map(lambda t: {"tools": t}),
        st.just({}) | content.map(lambda s: {"system": s}),
    ),
    st.builds(
        lambda m, tools: {"messages": m, **tools},
        st.lists(message(), max_size=6),
        st.just({}) | json_values.map(lambda t: {"tools": t}),
    ),
    # Well-formed alternating chats, so that many examples get as far as the template and tokenizer.
    st.builds(
        lambda turns, system: {
            "messages": [*system, *[{"role": r, "content": c} for pair in turns for r, c in zip(("user", "assistant"), pair)]]
        },
        st.lists(st.tuples(text, text), min_size=1, max_size=3),
        st.just([]) | text.map(lambda s: [{"role": "system", "content": s}]),
    ),
    st.builds(
        lambda i, x, o, h: {"instruction": i, "input": x, "output": o, **h},
        content,
        content,
        content,
        st.just({}) | json_values.map(lambda v: {"history": v}),
    ),
    json_values,
)


def real_lines() -> list[str]:
    lines = []
    for corpus in sorted(CORPORA.glob("*.jsonl.gz")):
        lines += gzip.decompress(corpus.read_bytes()).decode("utf-8").split("\n")[:5]
    return lines


REAL = real_lines()


@st.composite
def damaged_real_line(draw) -> bytes:
    """A real corpus record, cut short or with one byte replaced (broken syntax, invalid UTF-8)."""
    line = draw(st.sampled_from(REAL)).encode()
    at = draw(st.integers(0, len(line) - 1))
    if draw(st.booleans()):
        return line[:at]
    return line[:at] + bytes([draw(st.integers(0, 255).filter(lambda b: b != 0x0A))]) + line[at + 1 :]


def dumps(value, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


# --- RecordEncoder ---------------------------------------------------------------------------


@FAST
@given(value=json_values, ascii_only=st.booleans())
def test_any_json_value_is_a_sample_or_a_reject(value, ascii_only):
    check_outcome(encoder(QWEN).encode(dumps(value, ascii_only)))


@FAST
@given(line=st.text(max_size=200))
def test_any_unicode_line_is_a_sample_or_a_reject(line):
    check_outcome(encoder(QWEN).encode(line))


@FAST
@given(record=records, ascii_only=st.booleans())
def test_chat_shaped_records_through_two_templates(record, ascii_only):
    """Qwen2.5 renders anything it is given; Gemma's template raises on a system turn or roles that
    do not alternate: both end in a sample or a reject, and the same record never crashes either."""
    line = dumps(record, ascii_only)
    check_outcome(encoder(QWEN).encode(line))
    check_outcome(encoder(GEMMA, 64).encode(line), max_len=64)


@FAST
@given(line=damaged_real_line())
def test_damaged_real_records_are_a_sample_or_a_reject(line):
    text = line.decode("utf-8", errors="replace")
    check_outcome(encoder(QWEN, 512).encode(text), max_len=512)


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(records.map(lambda r: json.dumps(r)) | st.text(max_size=50), max_size=12), threads=st.sampled_from([1, 2]))
def test_encode_batch_agrees_with_encode(batch, threads):
    """`encode_batch` (what Ray Data / datasets.map call) = `encode`, row by row, in order."""
    out = fastsft.encode_batch(batch, QWEN, threads=threads)
    assert all(len(column) == len(batch) for column in out.values())
    for i, line in enumerate(batch):
        one = encoder(QWEN).encode(line)
        if "reject" in one:
            assert (out["reject"][i], out["reject_detail"][i], out["input_ids"][i]) == (one["reject"], one["detail"], [])
        else:
            assert out["reject"][i] is None
            assert (out["input_ids"][i], out["loss_mask"][i]) == (one["input_ids"], list(one["loss_mask"]))
            assert out["labels"][i] == [t if m else -100 for t, m in zip(one["input_ids"], one["loss_mask"])]


# --- fastsft.prep on files of random lines ---------------------------------------------------

GOOD = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}).encode()

line_bytes = st.one_of(
    records.map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=60).map(lambda t: t.encode()),
    st.binary(max_size=60),
    damaged_real_line(),
    st.sampled_from([b"", b"   ", b"\t\r", b"\x0b", b"\xef\xbb\xbf" + GOOD, GOOD]),
).map(lambda b: b.replace(b"\n", b" "))


@st.composite
def corpus_file(draw) -> list[bytes]:
    """Lines, each with its own ending (LF, CRLF, or none for the last), and one good record
    somewhere, so that a run never fails for having written nothing."""
    lines = draw(st.lists(line_bytes, max_size=25))
    lines.insert(draw(st.integers(0, len(lines))), GOOD)
    endings = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in lines]
    if draw(st.booleans()):
        endings[-1] = b""
    raw = [line + end for line, end in zip(lines, endings)]
    # A file that starts with '[' is read as one JSON array, one with a gzip/zstd magic as
    # compressed: other layouts, covered in test_prep/test_faults. Keep this a JSON Lines file.
    head = b"".join(raw).removeprefix(b"\xef\xbb\xbf").lstrip(bytes(BLANK))
    if head.startswith(b"[") or b"".join(raw).startswith((b"\x1f\x8b", b"\x28\xb5\x2f\xfd")):
        raw.insert(0, GOOD + b"\n")
    return raw


@SLOW
@given(raw=corpus_file())
def test_prep_accounts_for_every_line_and_agrees_with_record_encoder(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.jsonl"
        path.write_bytes(b"".join(raw))
        summary = fastsft.prep([path], TINYLLAMA, Path(tmp) / "out")
        out = Path(tmp) / "out"
        manifest = json.loads((out / "manifest.json").read_text())
        # Split on "\n" only: a detail may quote U+2028 or U+0085, which str.splitlines() splits on.
        rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").split("\n") if line]
        origin = np.load(out / "origin.npy")
        offsets = np.load(out / "offsets.npy")
        ids = np.load(out / "input_ids.npy")
        mask = np.load(out / "loss_mask.npy")

    # What each non-blank line must become: RecordEncoder's verdict on the same bytes (a BOM at the
    # very start of the file is dropped by the reader; invalid UTF-8 is malformed JSON).
    expected: dict[int, dict] = {}
    for number, line in enumerate(raw, start=1):
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        if all(b in BLANK for b in line):
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            expected[number] = {"reject": "invalid_json"}
            continue
        expected[number] = encoder(TINYLLAMA).encode(text)

    n_rejected = sum("reject" in e for e in expected.values())
    assert (summary["read"], summary["written"], summary["rejected"]) == (len(expected), len(expected) - n_rejected, n_rejected)
    counts = manifest["counts"]
    assert (counts["read"], counts["written"], counts["rejected"]) == (summary["read"], summary["written"], summary["rejected"])
    assert sum(counts["rejected_by_reason"].values()) == counts["rejected"]

    assert origin[:, 1].tolist() == [n for n, e in expected.items() if "reject" not in e]
    for row, number in enumerate(origin[:, 1]):
        want = expected[int(number)]
        assert ids[offsets[row] : offsets[row + 1]].tolist() == want["input_ids"]
        assert mask[offsets[row] : offsets[row + 1]].tolist() == list(want["loss_mask"])
    assert [(r["line"], r["reason"]) for r in rejects] == [(n, e["reject"]) for n, e in expected.items() if "reject" in e]
    assert all(r["file"] == str(path) and r["detail"] for r in rejects)
