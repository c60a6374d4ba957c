"""fastsft's arrays against `transformers`, on every conversation of the real corpora.

- ids: `AutoTokenizer(qwen2.5).apply_chat_template(messages, tools=..., tokenize=True)`, per written
  sample (mapped back to its source record through origin.npy);
- rejects: every record fastsft rejects breaks a rule of the contract, and every record the
  reference rejects is rejected;
- masks: `return_assistant_tokens_mask=True` under tests/templates/qwen2.5_generation.jinja, a copy of
  Qwen2.5's template with `{% generation %}` blocks (checked here to render byte-identical text, and
  to mark exactly the spans a person would), both for fastsft with Qwen2.5's own template and for
  fastsft given the marked template;
- `--max-len N`: right truncation equals transformers' `truncation=True, max_length=N`; `drop`
  rejects exactly the longer rows;
- Qwen3's template: ids equal transformers', masks equal the hand-drawn DESIGN §3 mask;
- the built-in `chatml` template on hand-checked golden examples.

Corpora: the repo's real chat corpora (every record) and conftest.EDGE_LINES (hand-written records
for what they lack, one per reject rule among them). The messages come from tests/reference.py,
which re-implements the record rules independently of fastsft.
"""

from __future__ import annotations

import collections
import functools
import json
import re

import numpy as np
import pytest

from conftest import EDGE, PARITY_CORPORA, ROLE_MAP, TOKENIZERS, report, run_prep
from reference import (
    BAD_TOOL_CALL,
    EMPTY_ASSISTANT,
    EMPTY_CONVERSATION,
    LAST_NOT_ASSISTANT,
    MALFORMED_JSON,
    NO_ASSISTANT,
    NO_TRAINABLE,
    NON_STRING_CONTENT,
    NOT_OBJECT,
    TEMPLATE_ERROR,
    UNKNOWN_LAYOUT,
    UNKNOWN_ROLE,
    Reject,
    first_difference,
    load_tokenizer,
    reference_ids,
    reference_ids_and_mask,
    render,
)

# fastsft's reject codes (rejects.jsonl "reason", rust/schema.rs `RejectReason::code`) -> the
# contract rules each may stand for. Of the codes missing here, too_long is checked by
# test_truncation_drop, assistant_span_not_found is accepted only for a reply that holds <|im_end|>
# (span_may_be_unfindable), and reserved_character is never justified: no rule rejects such a record.
FASTSFT_REASONS = {
    "invalid_json": {MALFORMED_JSON},
    "not_an_object": {NOT_OBJECT},
    "unknown_layout": {UNKNOWN_LAYOUT},
    "missing_field": {UNKNOWN_LAYOUT, BAD_TOOL_CALL},
    "wrong_type": {UNKNOWN_LAYOUT, BAD_TOOL_CALL, NON_STRING_CONTENT},
    "unknown_role": {UNKNOWN_ROLE},
    "non_text_content": {NON_STRING_CONTENT},
    "empty_conversation": {EMPTY_CONVERSATION},
    "no_assistant_message": {NO_ASSISTANT},
    "ends_without_assistant": {LAST_NOT_ASSISTANT},
    "empty_assistant_message": {EMPTY_ASSISTANT},
    "template_error": {TEMPLATE_ERROR},
    "no_trained_tokens": {NO_TRAINABLE},
}

corpora = pytest.mark.parametrize("corpus", PARITY_CORPORA)

SPECIAL = ("<|im_start|>", "<|im_end|>")


def contains_special(conv) -> bool:
    """Some message text holds ChatML's own markers (tokenized as the special tokens, as transformers does)."""
    return any(s in (m["content"] or "") for m in conv.messages for s in SPECIAL)


def span_may_be_unfindable(conv) -> bool:
    """An assistant reply holds <|im_end|>: without {% generation %} blocks its span is ambiguous, and
    DESIGN §4 lets fastsft reject the row (assistant_span_not_found) rather than guess."""
    return any(m["role"] == "assistant" and "<|im_end|>" in (m["content"] or "") for m in conv.messages)


# ----------------------------------------------------------------------------------------------
# The reference's own outputs, computed once per corpus


@pytest.fixture(scope="session")
def reference_outputs(expected, qwen_tokenizer, generation_template):
    """corpus -> {line: (ids under Qwen2.5's template, ids under the marked one, assistant mask)}."""

    @functools.cache
    def compute(corpus: str) -> dict[int, tuple[list[int], list[int], list[int]]]:
        out = {}
        for line, conv in expected[corpus].conversations.items():
            ids = reference_ids(qwen_tokenizer, conv)
            marked_ids, mask = reference_ids_and_mask(qwen_tokenizer, conv, generation_template)
            out[line] = (ids, marked_ids, mask)
        return out

    return compute


def describe(tokenizer, line: int, got, want, what: str) -> str:
    i = first_difference(got, want)
    lo = max(0, (i or 0) - 8)
    return (
        f"line {line}: {what} differ at token {i} (fastsft {len(got)} tokens, transformers {len(want)})\n"
        f"    fastsft:      {list(got[lo : (i or 0) + 8])} {tokenizer.decode(list(got[lo : (i or 0) + 8]))!r}\n"
        f"    transformers: {list(want[lo : (i or 0) + 8])} {tokenizer.decode(list(want[lo : (i or 0) + 8]))!r}"
    )


# ----------------------------------------------------------------------------------------------
# The marked template itself (no fastsft involved): a wrong reference would make every mask test moot


def hand_drawn_mask(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """DESIGN §3 by hand: after each `<|im_start|>assistant\\n` through the next `<|im_end|>`."""
    spans = []
    for m in re.finditer(re.escape("<|im_start|>assistant\n"), text):
        end = text.index("<|im_end|>", m.end()) + len("<|im_end|>")
        spans.append((m.end(), end))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s < b and e > a for a, b in spans)) for s, e in enc["offset_mapping"]]
    return enc["input_ids"], mask


@corpora
def test_marked_template_renders_identical_text_and_marks_assistant_turns(
    corpus, expected, qwen_tokenizer, generation_template, reference_outputs
):
    differ, mask_differ = [], []
    for line, conv in expected[corpus].conversations.items():
        text = render(qwen_tokenizer, conv)
        if render(qwen_tokenizer, conv, generation_template) != text:
            differ.append(line)
            continue
        ids, marked_ids, mask = reference_outputs(corpus)[line]
        if contains_special(conv):
            continue  # the regex below would find the markers inside the content
        hand_ids, hand_mask = hand_drawn_mask(qwen_tokenizer, text)
        if not (ids == marked_ids == hand_ids and mask == hand_mask):
            mask_differ.append(line)
    assert not differ, f"{corpus}: the marked template renders other text on lines {differ[:20]}"
    assert not mask_differ, f"{corpus}: transformers' generation mask is not the hand-drawn one on {mask_differ[:20]}"


# ----------------------------------------------------------------------------------------------
# fastsft against the reference


def test_summary_and_arrays_are_consistent(prepared_qwen, expected):
    p, s = prepared_qwen, prepared_qwen.summary
    n = len(p.offsets) - 1
    assert p.input_ids.dtype == np.uint32  # Qwen2.5's 151,665 ids do not fit uint16
    assert p.loss_mask.dtype == np.uint8 and p.offsets.dtype == np.int64 and p.origin.dtype == np.int64
    assert p.origin.shape == (n, 2) and p.offsets[0] == 0 and p.offsets[-1] == len(p.input_ids) == len(p.loss_mask)
    assert np.all(np.diff(p.offsets) > 0)
    assert s["read"] == sum(len(e.records) for e in expected.values())
    assert s["read"] == s["written"] + s["rejected"]
    assert s["written"] == n and s["rejected"] == len(p.rejects)
    assert sum(s["rejected_by_reason"].values()) == s["rejected"]
    assert s["tokens"] == len(p.input_ids) and s["trained_tokens"] == int(np.sum(p.loss_mask, dtype=np.int64))
    assert s["truncated"] == 0  # no --max-len


@corpora
def test_rejects_are_justified(corpus, prepared_qwen, expected):
    """fastsft (Qwen2.5's own template) rejects exactly the records that break a rule."""
    exp = expected[corpus]
    got = prepared_qwen.rejects_of(corpus)
    written = set(prepared_qwen.samples(corpus))
    by_reason = collections.Counter(r["reason"] for r in got.values())
    unjustified = []
    for line, r in got.items():
        rules = FASTSFT_REASONS.get(r["reason"])
        conv = exp.conversations.get(line)
        if r["reason"] == "assistant_span_not_found" and conv is not None and span_may_be_unfindable(conv):
            continue
        if rules is None:
            unjustified.append(f"line {line}: unknown reason code {r['reason']!r} ({r.get('detail')})")
        elif line not in exp.rejects:
            unjustified.append(f"line {line}: rejected as {r['reason']!r} ({r.get('detail')}); the reference accepts it")
        elif not rules & set(exp.rejects[line].rules):
            unjustified.append(f"line {line}: rejected as {r['reason']!r}; the record breaks {exp.rejects[line].rules} instead")
    missed = sorted(set(exp.rejects) - set(got))
    report(
        "parity with transformers (Qwen2.5 template)",
        corpus,
        records=len(exp.records),
        written=len(written),
        rejected_justified=f"{len(got) - len(unjustified)}/{len(got)}",
        rejected_by_reason=", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())) or "-",
    )
    assert not unjustified, f"{corpus}:\n" + "\n".join(unjustified[:20])
    assert not missed, f"{corpus}: not rejected: " + "; ".join(f"line {i}: {exp.rejects[i]}" for i in missed[:20])
    assert written | set(got) == set(exp.records), "a record is neither written nor rejected"
    assert not written & set(got), "a record is both written and rejected"


@corpora
def test_ids_equal_transformers(corpus, prepared_qwen, expected, reference_outputs, qwen_tokenizer):
    ref = reference_outputs(corpus)
    samples = prepared_qwen.samples(corpus)
    failures, identical = [], 0
    for line, (ids, _) in samples.items():
        if line not in ref:
            failures.append(f"line {line}: written, but the reference rejects it: {expected[corpus].rejects.get(line)}")
            continue
        want = ref[line][0]
        if ids.tolist() == want:
            identical += 1
        else:
            failures.append(describe(qwen_tokenizer, line, ids.tolist(), want, "ids"))
    report("parity with transformers (Qwen2.5 template)", corpus, ids_identical=f"{identical}/{len(samples)}")
    assert samples, f"{corpus}: nothing written"
    assert not failures, f"{corpus}: {len(failures)} of {len(samples)} samples differ\n" + "\n".join(failures[:5])


@corpora
def test_masks_equal_transformers(corpus, prepared_qwen, reference_outputs, qwen_tokenizer):
    """fastsft with Qwen2.5's own template (no generation blocks: it finds the spans itself)."""
    ref = reference_outputs(corpus)
    samples = prepared_qwen.samples(corpus)
    failures, identical = [], 0
    for line, (ids, mask) in samples.items():
        if line not in ref or ids.tolist() != ref[line][0]:
            continue  # reported by test_ids_equal_transformers
        if mask.tolist() == ref[line][2]:
            identical += 1
        else:
            failures.append(describe(qwen_tokenizer, line, mask.tolist(), ref[line][2], "masks"))
    report("parity with transformers (Qwen2.5 template)", corpus, masks_identical=f"{identical}/{len(samples)}")
    assert not failures, f"{corpus}: {len(failures)} masks differ\n" + "\n".join(failures[:5])


@corpora
def test_generation_template_in_fastsft(corpus, prepared_marked, prepared_qwen, reference_outputs, qwen_tokenizer):
    """fastsft given the marked template (its `{% generation %}` path): same ids, same masks."""
    ref = reference_outputs(corpus)
    samples = prepared_marked.samples(corpus)
    not_written = sorted(set(ref) - set(samples))
    assert not not_written, f"{corpus}: valid records not written: " + "; ".join(
        f"line {i}: {prepared_marked.rejects_of(corpus).get(i)}" for i in not_written[:10]
    )
    failures, identical = [], 0
    for line, (ids, mask) in samples.items():
        if line not in ref:
            failures.append(f"line {line}: written, but the reference rejects it")
        elif ids.tolist() != ref[line][1]:
            failures.append(describe(qwen_tokenizer, line, ids.tolist(), ref[line][1], "ids"))
        elif mask.tolist() != ref[line][2]:
            failures.append(describe(qwen_tokenizer, line, mask.tolist(), ref[line][2], "masks"))
        else:
            identical += 1
    report("fastsft with the {% generation %} template", corpus, identical=f"{identical}/{len(samples)}")
    assert not failures, f"{corpus}: {len(failures)} samples differ\n" + "\n".join(failures[:5])


# ----------------------------------------------------------------------------------------------
# --max-len: right truncation keeps what transformers' `truncation=True, max_length=N` keeps; drop
# rejects the longer rows

TRUNCATION_CORPORA = ["medicalgpt_sharegpt_zh_1k", "llamafactory_glaive_toolcall_en_demo", EDGE]
MAX_LEN = 384


@pytest.fixture(scope="session")
def prepared_truncated(tmp_path_factory, corpus_paths):
    inputs = {name: corpus_paths[name] for name in TRUNCATION_CORPORA}
    base = tmp_path_factory.mktemp("truncation")
    return {
        mode: run_prep(inputs, TOKENIZERS / "qwen2.5", base / mode, max_len=MAX_LEN, truncation=mode, role_map=ROLE_MAP)
        for mode in ("right", "drop")
    }


@pytest.mark.parametrize("corpus", TRUNCATION_CORPORA)
def test_truncation_right_equals_transformers(corpus, prepared_truncated, expected, qwen_tokenizer, generation_template):
    p = prepared_truncated["right"]
    samples, rejects = p.samples(corpus), p.rejects_of(corpus)
    failures, cut = [], 0
    for line, conv in expected[corpus].conversations.items():
        try:
            want = reference_ids_and_mask(qwen_tokenizer, conv, generation_template, max_length=MAX_LEN)
        except Reject as r:
            assert r.rules == (NO_TRAINABLE,)
            if rejects.get(line, {}).get("reason") != "no_trained_tokens":
                failures.append(f"line {line}: no trained token in the first {MAX_LEN}; fastsft: {rejects.get(line)}")
            continue
        if span_may_be_unfindable(conv) and rejects.get(line, {}).get("reason") == "assistant_span_not_found":
            continue
        if line not in samples:
            failures.append(f"line {line}: not written ({rejects.get(line)})")
            continue
        ids, mask = (a.tolist() for a in samples[line])
        if (ids, mask) != want:
            failures.append(describe(qwen_tokenizer, line, ids + mask, want[0] + want[1], "ids+masks"))
        cut += len(ids) == MAX_LEN and len(reference_ids(qwen_tokenizer, conv)) > MAX_LEN
    report(f"--max-len {MAX_LEN}", corpus, written=len(samples), truncated=cut, rejected_right=len(rejects))
    assert not failures, f"{corpus}: {len(failures)} differ\n" + "\n".join(failures[:5])


def test_truncation_right_counts(prepared_truncated):
    p = prepared_truncated["right"]
    lengths = np.diff(p.offsets)
    assert lengths.max() == MAX_LEN and p.summary["truncated"] > 0
    assert p.summary["truncated"] >= int(np.sum(lengths == MAX_LEN)) - 5  # a few rows may be exactly MAX_LEN long
    assert p.summary["truncated"] <= int(np.sum(lengths == MAX_LEN))


@pytest.mark.parametrize("corpus", TRUNCATION_CORPORA)
def test_truncation_drop(corpus, prepared_truncated, expected, reference_outputs):
    p = prepared_truncated["drop"]
    samples, rejects = p.samples(corpus), p.rejects_of(corpus)
    ref = reference_outputs(corpus)
    failures = []
    for line, (ids, _, mask) in ref.items():
        if len(ids) > MAX_LEN:
            if rejects.get(line, {}).get("reason") != "too_long":
                failures.append(f"line {line}: {len(ids)} tokens > {MAX_LEN}, not rejected as too_long: {rejects.get(line)}")
        elif span_may_be_unfindable(expected[corpus].conversations[line]) and line in rejects:
            continue
        elif line not in samples:
            failures.append(f"line {line}: {len(ids)} tokens, not written: {rejects.get(line)}")
        elif [a.tolist() for a in samples[line]] != [ids, mask]:
            failures.append(f"line {line}: ids or mask differ")
    report(f"--max-len {MAX_LEN}", corpus, written_drop=len(samples), rejected_drop=len(rejects))
    assert not failures, f"{corpus}: {len(failures)} wrong\n" + "\n".join(failures[:5])


# ----------------------------------------------------------------------------------------------
# Qwen3's template (ChatML family, with <think> blocks, namespace and string methods): ids equal
# transformers', masks equal the hand-drawn DESIGN §3 mask (the think block is part of the reply)

QWEN3_CORPORA = ["medicalgpt_sharegpt_zh_1k", "llamafactory_glaive_toolcall_en_demo", "llamafactory_alpaca_zh_demo", EDGE]


@pytest.fixture(scope="session")
def prepared_qwen3(tmp_path_factory, corpus_paths):
    inputs = {name: corpus_paths[name] for name in QWEN3_CORPORA}
    return run_prep(inputs, TOKENIZERS / "qwen3", tmp_path_factory.mktemp("qwen3") / "out", role_map=ROLE_MAP)


@pytest.mark.parametrize("corpus", QWEN3_CORPORA)
def test_qwen3_ids_and_masks(corpus, prepared_qwen3, expected):
    tok = load_tokenizer(TOKENIZERS / "qwen3")
    samples, rejects = prepared_qwen3.samples(corpus), prepared_qwen3.rejects_of(corpus)
    failures, identical = [], 0
    for line, conv in expected[corpus].conversations.items():
        if line not in samples:
            if not (span_may_be_unfindable(conv) and rejects.get(line, {}).get("reason") == "assistant_span_not_found"):
                failures.append(f"line {line}: not written ({rejects.get(line)})")
            continue
        ids, mask = (a.tolist() for a in samples[line])
        want = reference_ids(tok, conv)
        if ids != want:
            failures.append(describe(tok, line, ids, want, "ids"))
        elif not contains_special(conv) and mask != hand_drawn_mask(tok, render(tok, conv))[1]:
            failures.append(describe(tok, line, mask, hand_drawn_mask(tok, render(tok, conv))[1], "masks"))
        else:
            identical += 1
    assert set(rejects) <= set(expected[corpus].rejects) | {
        line for line, r in rejects.items() if r["reason"] == "assistant_span_not_found"
    }
    report("Qwen3 template", corpus, written=len(samples), identical=f"{identical}/{len(samples)}")
    assert not failures, f"{corpus}: {len(failures)} differ\n" + "\n".join(failures[:5])


# ----------------------------------------------------------------------------------------------
# The built-in chatml template: golden examples, checked by hand
#
# Ids: 151644 <|im_start|>, 151645 <|im_end|>, 198 "\n", 8948 "system", 872 "user", 77091 "assistant".
# Mask: 1 from the first token after "<|im_start|>assistant\n" through <|im_end|>, never the "\n" after it.

SYSTEM = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]  # You are a helpful assistant.
USER, ASSISTANT = [151644, 872, 198], [151644, 77091, 198]

GOLDEN = [
    pytest.param(
        # No system message: the default one is prepended. 譯 is split over two byte-level tokens.
        {
            "messages": [
                {"role": "user", "content": "請翻譯:今天天氣真好"},
                {"role": "assistant", "content": "The weather is nice today."},
                {"role": "user", "content": "Thanks!"},
                {"role": "assistant", "content": "不客气。"},
            ]
        },
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n請翻譯:今天天氣真好<|im_end|>\n"
        "<|im_start|>assistant\nThe weather is nice today.<|im_end|>\n"
        "<|im_start|>user\nThanks!<|im_end|>\n"
        "<|im_start|>assistant\n不客气。<|im_end|>\n",
        [
            (SYSTEM, 0),
            (USER + [100792, 100712, 91048, 107, 25, 100644, 35727, 104200, 88051, 52801, 151645, 198], 0),
            (ASSISTANT, 0),
            ([785, 9104, 374, 6419, 3351, 13, 151645], 1),  # The weather is nice today.<|im_end|>
            ([198], 0),
            (USER + [12658, 0, 151645, 198], 0),  # Thanks!
            (ASSISTANT, 0),
            ([16530, 112221, 1773, 151645], 1),  # 不 客气 。<|im_end|>
            ([198], 0),
        ],
        id="zh-en-two-turns-default-system",
    ),
    pytest.param(
        # ShareGPT with its own system turn: no default system prompt.
        {
            "conversations": [
                {"from": "system", "value": "Answer briefly."},
                {"from": "human", "value": "2+2?"},
                {"from": "gpt", "value": "4"},
            ]
        },
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
        [
            ([151644, 8948, 198, 16141, 26753, 13, 151645, 198], 0),  # Answer briefly.
            (USER + [17, 10, 17, 30, 151645, 198], 0),  # 2 + 2 ?
            (ASSISTANT, 0),
            ([19, 151645], 1),  # 4<|im_end|>
            ([198], 0),
        ],
        id="sharegpt-own-system",
    ),
    pytest.param(
        # The reply starts with "\n\n": BPE merges it with the header's "\n" into one token "\n\n\n"
        # (1406) that starts in the header and overlaps the reply, so it is trained (DESIGN §3), and
        # there is no separate "\n" token after "assistant".
        {"instruction": "hi", "input": "", "output": "\n\nHello"},
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n\n\nHello<|im_end|>\n",
        [
            (SYSTEM, 0),
            (USER + [6023, 151645, 198], 0),  # hi
            ([151644, 77091], 0),
            ([1406, 9707, 151645], 1),  # "\n\n\n" Hello <|im_end|>
            ([198], 0),
        ],
        id="reply-merges-with-header-newline",
    ),
]


@pytest.mark.parametrize(("record", "text", "pieces"), GOLDEN)
def test_chatml_golden(record, text, pieces, tmp_path, qwen_dir):
    from tokenizers import Tokenizer

    want_ids = [i for ids, _ in pieces for i in ids]
    want_mask = [m for ids, m in pieces for _ in ids]
    src = tmp_path / "golden.jsonl"
    src.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    p = run_prep([src], qwen_dir, tmp_path / "out", template="chatml")
    assert p.summary["written"] == 1, p.rejects
    assert p.origin.tolist() == [[0, 1]]
    ids, mask = p.input_ids.tolist(), p.loss_mask.tolist()
    assert Tokenizer.from_file(str(qwen_dir / "tokenizer.json")).decode(ids, skip_special_tokens=False) == text
    assert ids == want_ids
    assert mask == want_mask
