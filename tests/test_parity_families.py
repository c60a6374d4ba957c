"""Every model family's own chat template, against `transformers` (issue 4's parity suite).

For each tokenizer under assets/tokenizers (family_reference.FAMILIES) and each chat corpus (the
first N_RECORDS records of each, plus conftest's hand-written edge cases), `fastsft.prep` runs once
per family and is checked against an independent reference (tests/reference.py for the record →
messages rules, `transformers` 5.x for the rendering):

- ids: `tokenizers`' encoding of transformers' rendering, and (except Mistral v0.1 and Phi-3, whose
  legacy SentencePiece tokenizers transformers 5.x tokenizes differently, assets/SOURCES.md)
  `apply_chat_template(tokenize=True)` itself;
- rejects: a record transformers refuses is rejected as template_error with its message; a record
  it renders is written unless the reject is justified; at most 1% rejects per family;
- masks: tests/templates/<family>_generation.jinja, a `{% generation %}`-marked copy of each template
  (checked to render byte-identical text and to mark exactly header-end → end-of-turn), gives the
  reference mask: transformers' `assistant_masks`, and DESIGN §3's rule on its character spans and
  the `tokenizers` library's offsets;
- fastsft given the marked copy (its `{% generation %}` path): the same ids and masks;
- golden tables: per family, the text of each trained run of a hand-checked conversation;
- hand-written conversations for what the corpora lack (whitespace, reasoning blocks, headers and
  end-of-turn tokens inside text), every family; known fastsft bugs are strict xfails;
- options (train_on, "train": false, train_eot, train_on_prompt) on Qwen2.5 and Llama 3.1;
- Llama 3's byte-level offsets on whitespace, split multi-byte characters and emoji;
- GPT-2 (no template): a clear error, and `--template chatml`.
"""

from __future__ import annotations

import collections
import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from jinja2.exceptions import TemplateError

from conftest import PARITY_CORPORA, ROLE_MAP, TOKENIZERS, Expected, report, run_prep
from family_reference import (
    FAMILIES,
    FAMILY,
    Family,
    generation_spans,
    hf_assistant_mask,
    hf_ids,
    hf_render,
    hf_tokenizer,
    lib_ids,
    lib_tokenizer,
    span_mask,
    trained_runs,
    write_head,
)
from reference import Conversation, Reject, first_difference, read_records, to_conversation
from test_parity_transformers import FASTSFT_REASONS

N_RECORDS = 150  # per corpus: the suite prepares 8 families x 8 corpora
families = pytest.mark.parametrize("family", [f.name for f in FAMILIES])


# ----------------------------------------------------------------------------------------------
# Inputs, fastsft's outputs and the reference, each computed once per session


@pytest.fixture(scope="session")
def family_inputs(tmp_path_factory, corpus_paths) -> dict[str, Path]:
    """{corpus: the first N_RECORDS records of it, at their original line numbers}."""
    base = tmp_path_factory.mktemp("family_inputs")
    return {name: write_head(corpus_paths[name], base / f"{name}.jsonl", N_RECORDS) for name in PARITY_CORPORA}


@pytest.fixture(scope="session")
def family_expected(family_inputs) -> dict[str, Expected]:
    result = {}
    for name, path in family_inputs.items():
        exp = Expected(read_records(path))
        for line, text in exp.records.items():
            try:
                exp.conversations[line] = to_conversation(text, role_map=ROLE_MAP)
            except Reject as r:
                exp.rejects[line] = r
        result[name] = exp
    return result


@pytest.fixture(scope="session")
def prepared_family(tmp_path_factory, family_inputs):
    """family -> every corpus through `fastsft.prep` with the family's own template, in one run."""
    base = tmp_path_factory.mktemp("family_prep")

    @functools.cache
    def prepare(family: str):
        return run_prep(family_inputs, TOKENIZERS / family, base / family, role_map=ROLE_MAP, overwrite=True)

    return prepare


@dataclass
class Ref:
    """transformers' verdict on one conversation under one family's template."""

    text: str | None = None  # None: the template refused it
    error: str | None = None  # the TemplateError message
    ids: list[int] | None = None  # `tokenizers`' encoding of text
    hf_ids: list[int] | None = None  # apply_chat_template(tokenize=True), non-legacy families only
    marked_text: str | None = None
    spans: list[tuple[int, int]] | None = None  # generation blocks of the marked template
    mask: list[int] | None = None  # DESIGN §3 on `spans` and the library's offsets
    hf_mask: list[int] | None = None  # transformers' assistant_masks, non-legacy families only


@pytest.fixture(scope="session")
def family_reference(family_expected):
    """(family, corpus) -> {line: Ref} for every conversation the record rules accept."""

    @functools.cache
    def compute(family: str, corpus: str) -> dict[int, Ref]:
        fam = FAMILY[family]
        marked = fam.marked_template()
        out = {}
        for line, conv in family_expected[corpus].conversations.items():
            try:
                text = hf_render(family, conv)
            except TemplateError as e:
                out[line] = Ref(error=str(e))
                continue
            ref = Ref(text=text, ids=lib_ids(family, text))
            ref.marked_text, ref.spans = generation_spans(family, conv, marked)
            ref.mask = span_mask(family, text, ref.spans)[1]
            if not fam.legacy:
                ref.hf_ids = hf_ids(family, conv)
                marked_ids, ref.hf_mask = hf_assistant_mask(family, conv, marked)
                assert marked_ids == ref.hf_ids
            out[line] = ref
        return out

    return compute


def describe(line: int, got: list[int], want: list[int], what: str) -> str:
    i = first_difference(got, want)
    lo = max(0, (i or 0) - 6)
    return (
        f"line {line}: {what} differ at token {i} (fastsft {len(got)}, reference {len(want)}): "
        f"fastsft {list(got[lo : (i or 0) + 6])}, reference {list(want[lo : (i or 0) + 6])}"
    )


def reply_holds_end_of_turn(fam: Family, conv: Conversation) -> bool:
    """A reply containing the end-of-turn string: without {% generation %} its span is ambiguous,
    and DESIGN §4 lets fastsft reject the row (assistant_span_not_found) rather than guess."""
    return any(m["role"] == "assistant" and fam.end_of_turn in (m["content"] or "") for m in conv.messages)


# ----------------------------------------------------------------------------------------------
# The marked templates themselves (no fastsft): a wrong reference would make every mask test moot

# What ends the assistant header: the generation prompt, or for Mistral (which has none) `[/INST]`.
HEADER_END = {
    "qwen2.5": "<|im_start|>assistant\n",
    "qwen3": "<|im_start|>assistant\n",
    "llama3.1": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral-7b-instruct-v0.3": "[/INST]",
    "mistral-7b-instruct-v0.1": "[/INST]",
    "phi3": "<|assistant|>\n",
    "gemma": "<start_of_turn>model\n",
    "tinyllama-chat": "<|assistant|>\n",
}


@families
def test_header_is_the_generation_prompt(family):
    prompt, tokenizer = [{"role": "user", "content": "hi"}], hf_tokenizer(family)
    without = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=False)
    with_prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    if family == "phi3":  # it closes a conversation with <|endoftext|> when not prompting
        without = without.removesuffix(tokenizer.eos_token)
    assert with_prompt.startswith(without)
    generation_prompt = with_prompt[len(without) :]
    if family.startswith("mistral"):
        assert generation_prompt == "" and without.endswith(HEADER_END[family])
    else:
        assert generation_prompt == HEADER_END[family]


@families
def test_marked_template_renders_identical_text_and_marks_each_turn(family, family_expected, family_reference):
    fam = FAMILY[family]
    checked, failures = 0, []
    for corpus in PARITY_CORPORA:
        for line, ref in family_reference(family, corpus).items():
            if ref.text is None:
                continue
            conv = family_expected[corpus].conversations[line]
            replies = [m for m in conv.messages if m["role"] == "assistant"]
            if ref.marked_text != ref.text:
                failures.append(f"{corpus}:{line}: the marked template renders other text")
            elif len(ref.spans) != len(replies):
                failures.append(f"{corpus}:{line}: {len(ref.spans)} generation blocks for {len(replies)} replies")
            else:
                for (a, b), reply in zip(ref.spans, replies):
                    span = ref.text[a:b]
                    if not (ref.text[:a].endswith(HEADER_END[family]) and span.endswith(fam.end_of_turn)):
                        failures.append(f"{corpus}:{line}: span {span[:40]!r}...{span[-40:]!r}")
                    elif (reply["content"] or "").strip() and reply["content"].strip() not in span:
                        failures.append(f"{corpus}:{line}: the reply is not inside its span")
            checked += 1
    assert checked > 500, checked
    assert not failures, f"{family}: {len(failures)} conversations\n" + "\n".join(failures[:10])


# ----------------------------------------------------------------------------------------------
# fastsft against the reference


RECORD_RULE_REASONS = set(FASTSFT_REASONS) - {"template_error"}


@families
def test_rejects_match_transformers(family, prepared_family, family_expected, family_reference):
    """Written unless transformers refuses (then template_error, same message) or the reject is
    justified; records the record rules reject are rejected for one of the rules they break."""
    fam, p = FAMILY[family], prepared_family(family)
    failures, totals = [], collections.Counter()
    for corpus in PARITY_CORPORA:
        exp, refs = family_expected[corpus], family_reference(family, corpus)
        written, rejects = p.samples(corpus), p.rejects_of(corpus)
        counts = collections.Counter(records=len(exp.records), accepted=len(written))
        for line in exp.records:
            got = rejects.get(line)
            if got:
                reason = got["reason"]
                counts[reason if reason in ("template_error", "assistant_span_not_found") else "record_rules"] += 1
            if line in written and got:
                failures.append(f"{corpus}:{line}: both written and rejected")
            elif line in exp.rejects:
                if got is None:
                    failures.append(f"{corpus}:{line}: written; the record breaks {exp.rejects[line].rules}")
                elif not FASTSFT_REASONS.get(got["reason"], set()) & set(exp.rejects[line].rules):
                    failures.append(f"{corpus}:{line}: rejected as {got['reason']}; it breaks {exp.rejects[line].rules}")
            elif refs[line].text is None:
                counts["transformers_refuses"] += 1
                # An undefined value (a null content left out, as transformers does) fails in both
                # engines with their own wording; raise_exception messages must match exactly.
                undefined = "has no attribute" in refs[line].error or "is undefined" in refs[line].error
                if got is None or got["reason"] != "template_error" or (not undefined and got.get("detail") != refs[line].error):
                    failures.append(f"{corpus}:{line}: transformers: TemplateError({refs[line].error!r}); fastsft: {got}")
            else:
                counts["transformers_renders"] += 1
                if got is None:
                    ids, mask = (a.tolist() for a in written[line])
                    counts["identical"] += ids == refs[line].ids and mask == refs[line].mask
                    continue
                counts["rejected_of_those"] += 1
                if not (got["reason"] == "assistant_span_not_found" and reply_holds_end_of_turn(fam, exp.conversations[line])):
                    failures.append(f"{corpus}:{line}: transformers renders it; fastsft rejects: {got}")
        totals += counts
        report(f"{family}: fastsft vs transformers", corpus, **table_row(counts))
    report("every family: fastsft vs transformers, all corpora", family, **table_row(totals))
    assert not failures, f"{family}: {len(failures)} records\n" + "\n".join(failures[:10])
    assert totals["transformers_renders"] > 500
    assert totals["identical"] == totals["accepted"], "see test_ids_equal_transformers / test_masks_equal_generation_reference"
    assert totals["rejected_of_those"] <= 0.01 * totals["transformers_renders"], (
        f"{family}: fastsft rejects {totals['rejected_of_those']} of {totals['transformers_renders']} records transformers renders"
    )


def table_row(counts: collections.Counter) -> dict:
    return {
        "records": counts["records"],
        "transformers renders": counts["transformers_renders"],
        "accepted": counts["accepted"],
        "rejected: record rules": counts["record_rules"],
        "template_error": counts["template_error"],
        "assistant_span_not_found": counts["assistant_span_not_found"],
        "identical (ids+mask)": f"{counts['identical']}/{counts['accepted']}",
    }


@families
def test_ids_equal_transformers(family, prepared_family, family_reference):
    p, fam = prepared_family(family), FAMILY[family]
    failures, total = [], 0
    for corpus in PARITY_CORPORA:
        refs = family_reference(family, corpus)
        for line, (ids, _) in p.samples(corpus).items():
            total += 1
            ref = refs.get(line)
            if ref is None or ref.text is None:
                failures.append(f"{corpus}:{line}: written, but the reference refuses it")
                continue
            ids = ids.tolist()
            if ids != ref.ids:
                failures.append(f"{corpus}:{line}: " + describe(line, ids, ref.ids, "ids (tokenizers library)"))
            elif not fam.legacy and ids != ref.hf_ids:
                failures.append(f"{corpus}:{line}: " + describe(line, ids, ref.hf_ids, "ids (apply_chat_template)"))
    assert total > 500, total
    assert not failures, f"{family}: {len(failures)} of {total} samples differ\n" + "\n".join(failures[:10])


@families
def test_masks_equal_generation_reference(family, prepared_family, family_reference):
    """fastsft (the template's own, unmarked: it finds the spans itself) against the marked copy:
    DESIGN §3 on its spans, and transformers' `assistant_masks` where transformers' ids agree."""
    p, fam = prepared_family(family), FAMILY[family]
    failures, total, trained = [], 0, 0
    for corpus in PARITY_CORPORA:
        refs = family_reference(family, corpus)
        for line, (ids, mask) in p.samples(corpus).items():
            ref = refs.get(line)
            if ref is None or ref.text is None or ids.tolist() != ref.ids:
                continue  # reported by test_ids_equal_transformers
            total += 1
            mask = mask.tolist()
            trained += sum(mask)
            if mask != ref.mask:
                failures.append(f"{corpus}:{line}: " + describe(line, mask, ref.mask, "masks (DESIGN §3 on the spans)"))
            elif not fam.legacy and mask != ref.hf_mask:
                failures.append(f"{corpus}:{line}: " + describe(line, mask, ref.hf_mask, "masks (assistant_masks)"))
    assert total > 500 and trained > 0
    assert not failures, f"{family}: {len(failures)} of {total} masks differ\n" + "\n".join(failures[:10])


@families
def test_marked_template_in_fastsft(family, tmp_path_factory, family_inputs, family_reference):
    """fastsft given the marked copy (its `{% generation %}` path): every record transformers
    renders is written, even a reply holding the end-of-turn token, with the reference ids and mask."""
    fam = FAMILY[family]
    out = tmp_path_factory.mktemp("family_marked") / family
    p = run_prep(family_inputs, fam.directory, out, template=str(fam.marked_template_path), role_map=ROLE_MAP)
    failures, total = [], 0
    for corpus in PARITY_CORPORA:
        samples, rejects = p.samples(corpus), p.rejects_of(corpus)
        for line, ref in family_reference(family, corpus).items():
            if ref.text is None:
                continue
            total += 1
            if line not in samples:
                failures.append(f"{corpus}:{line}: not written: {rejects.get(line)}")
                continue
            ids, mask = (a.tolist() for a in samples[line])
            if ids != ref.ids:
                failures.append(f"{corpus}:{line}: " + describe(line, ids, ref.ids, "ids"))
            elif mask != ref.mask:
                failures.append(f"{corpus}:{line}: " + describe(line, mask, ref.mask, "masks"))
    assert total > 500
    assert not failures, f"{family}: {len(failures)} of {total} differ\n" + "\n".join(failures[:10])


# ----------------------------------------------------------------------------------------------
# Golden tables, checked by hand against DESIGN §3: the text each run of trained tokens covers
# (family_reference.trained_runs) runs from the end of the assistant header through the
# end-of-turn token, never the header, the newline after the end-of-turn token, or other turns.

PIRATE = {"role": "system", "content": "You are a pirate."}
TWO_TURNS = [
    {"role": "user", "content": "Hello, who are you?"},
    {"role": "assistant", "content": "I am a helpful assistant."},
    {"role": "user", "content": "你好吗？"},
    {"role": "assistant", "content": "我很好，谢谢！"},
]
GOLDEN = {
    "qwen2.5": (
        (
            "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello, who are you?<|im_end|>\n"
            "<|im_start|>assistant\nI am a helpful assistant.<|im_end|>\n<|im_start|>user\n你好吗？<|im_end|>\n"
            "<|im_start|>assistant\n我很好，谢谢！<|im_end|>\n"
        ),
        ["I am a helpful assistant.<|im_end|>", "我很好，谢谢！<|im_end|>"],
    ),
    # The last reply (after the last user turn) gets an empty think block, which the model
    # generates: it trains. The earlier reply is rendered without one.
    "qwen3": (
        (
            "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello, who are you?<|im_end|>\n"
            "<|im_start|>assistant\nI am a helpful assistant.<|im_end|>\n<|im_start|>user\n你好吗？<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n我很好，谢谢！<|im_end|>\n"
        ),
        ["I am a helpful assistant.<|im_end|>", "<think>\n\n</think>\n\n我很好，谢谢！<|im_end|>"],
    ),
    "llama3.1": (
        (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\nYou are a pirate.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Hello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            "I am a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n你好吗？<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n我很好，谢谢！<|eot_id|>"
        ),
        ["I am a helpful assistant.<|eot_id|>", "我很好，谢谢！<|eot_id|>"],
    ),
    # No generation prompt: the reply starts right after [/INST], with the space the template
    # writes (the first token, "▁I", holds it). v0.3 renders the system message only inside the
    # last user turn, and only when the conversation ends with that turn: here it is dropped, as
    # transformers drops it.
    "mistral-7b-instruct-v0.3": (
        "<s>[INST] Hello, who are you?[/INST] I am a helpful assistant.</s>[INST] 你好吗？[/INST] 我很好，谢谢！</s>",
        [" I am a helpful assistant.</s>", " 我很好，谢谢！</s>"],
    ),
    "mistral-7b-instruct-v0.1": (
        (
            "<s> [INST] You are a pirate.\n\nHello, who are you? [/INST] I am a helpful assistant.</s>"
            " [INST] 你好吗？ [/INST] 我很好，谢谢！</s>"
        ),
        [" I am a helpful assistant.</s>", " 我很好，谢谢！</s>"],
    ),
    # <|assistant|> and <|end|> are rstrip added tokens: each swallows the newline after it, so the
    # header token does not train and <|end|>'s token covers "<|end|>\n". <|endoftext|> does not train.
    "phi3": (
        (
            "<|system|>\nYou are a pirate.<|end|>\n<|user|>\nHello, who are you?<|end|>\n"
            "<|assistant|>\nI am a helpful assistant.<|end|>\n<|user|>\n你好吗？<|end|>\n"
            "<|assistant|>\n我很好，谢谢！<|end|>\n<|endoftext|>"
        ),
        ["I am a helpful assistant.<|end|>\n", "我很好，谢谢！<|end|>\n"],
    ),
    # No system role (the template raises): the same conversation without it.
    "gemma": (
        (
            "<bos><start_of_turn>user\nHello, who are you?<end_of_turn>\n<start_of_turn>model\n"
            "I am a helpful assistant.<end_of_turn>\n<start_of_turn>user\n你好吗？<end_of_turn>\n"
            "<start_of_turn>model\n我很好，谢谢！<end_of_turn>\n"
        ),
        ["I am a helpful assistant.<end_of_turn>", "我很好，谢谢！<end_of_turn>"],
    ),
    "tinyllama-chat": (
        (
            "<|system|>\nYou are a pirate.</s>\n<|user|>\nHello, who are you?</s>\n<|assistant|>\n"
            "I am a helpful assistant.</s>\n<|user|>\n你好吗？</s>\n<|assistant|>\n我很好，谢谢！</s>\n"
        ),
        ["I am a helpful assistant.</s>", "我很好，谢谢！</s>"],
    ),
}


@families
def test_golden_trained_runs(family):
    text, runs = GOLDEN[family]
    messages = TWO_TURNS if family == "gemma" else [PIRATE, *TWO_TURNS]
    conv = Conversation(messages)
    assert hf_render(family, conv) == text
    out = record_encoder(family).encode(json.dumps({"messages": messages}))
    ids, mask = out["input_ids"], list(out["loss_mask"])
    assert ids == lib_ids(family, text)
    assert trained_runs(family, text, ids, mask) == runs
    # The reference agrees (so the golden runs and the parity tests check the same rule).
    _, spans = generation_spans(family, conv, FAMILY[family].marked_template())
    assert span_mask(family, text, spans) == (ids, mask)


# ----------------------------------------------------------------------------------------------
# Options, on a template that renders replies as written (Qwen2.5) and one that trims them (Llama 3.1)

OPTION_REPLIES = {
    # family: (first reply, second reply, how the template renders them, end-of-turn token id)
    "qwen2.5": ("Alpha reply.", "Beta 🦙", ("Alpha reply.", "Beta 🦙"), 151645),
    "llama3.1": ("  Alpha reply. \n", "\tBeta 🦙\n", ("Alpha reply.", "Beta 🦙"), 128009),
}


def option_record(family: str, first: dict | None = None, second: dict | None = None) -> str:
    a, b, _, _ = OPTION_REPLIES[family]
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "First?"},
                {"role": "assistant", "content": a, **(first or {})},
                {"role": "user", "content": "Second?"},
                {"role": "assistant", "content": b, **(second or {})},
            ]
        },
        ensure_ascii=False,
    )


def encode(family: str, record: str, **options) -> dict:
    return options_encoder(family, tuple(sorted(options.items()))).encode(record)


@functools.cache
def options_encoder(family: str, options: tuple):
    """One encoder per family and options for the session (loading one is what costs)."""
    import fastsft

    return fastsft.RecordEncoder(str(TOKENIZERS / family), **dict(options))


def runs_of(family: str, out: dict) -> list[str]:
    text = lib_tokenizer(family).decode(out["input_ids"], skip_special_tokens=False)
    return trained_runs(family, text, out["input_ids"], list(out["loss_mask"]))


@pytest.mark.parametrize("family", list(OPTION_REPLIES))
def test_options(family):
    _, _, (a, b), eot_id = OPTION_REPLIES[family]
    eot = FAMILY[family].end_of_turn
    default = encode(family, option_record(family))
    ids, mask = default["input_ids"], list(default["loss_mask"])
    assert runs_of(family, default) == [a + eot, b + eot]

    # train_on="last": only the last reply.
    assert runs_of(family, encode(family, option_record(family), train_on="last")) == [b + eot]

    # A message flagged "train": false (or "weight": 0) does not train; the other still does.
    for flag in ({"train": False}, {"weight": 0}):
        off_first = encode(family, option_record(family, first=flag))
        assert off_first["input_ids"] == ids and runs_of(family, off_first) == [b + eot]
        assert runs_of(family, encode(family, option_record(family, second=flag))) == [a + eot]
    # Nothing left to train: rejected, never written with an all-zero mask.
    both = encode(family, option_record(family, second={"train": False}), train_on="last")
    assert both.get("reject") == "no_trained_tokens", both

    # train_eot=False drops exactly the end-of-turn token of each reply.
    no_eot = encode(family, option_record(family), train_eot=False)
    assert no_eot["input_ids"] == ids and runs_of(family, no_eot) == [a, b]
    dropped = [i for i, (m, n) in enumerate(zip(mask, no_eot["loss_mask"])) if m != n]
    assert len(dropped) == 2 and all(ids[i] == eot_id and mask[i] == 1 for i in dropped)

    # train_on_prompt=True trains every token.
    everything = encode(family, option_record(family), train_on_prompt=True)
    assert everything["input_ids"] == ids and list(everything["loss_mask"]) == [1] * len(ids)


# ----------------------------------------------------------------------------------------------
# Byte-level BPE offsets (Llama 3, Qwen): whitespace-only tokens, characters split over several
# tokens, emoji. fastsft's masks must not depend on the offsets the tokenizer reports: checked on the
# shipped tokenizer.json and on a copy whose ByteLevel post-processor trims offsets (as many published
# Llama 3 and GPT-2 files do), which reports whitespace tokens as zero-width.

TRICKY_REPLIES = [
    "  \n  leading and trailing whitespace  \n\n",
    "a  \n\n  b\t\tc",
    "譯 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ẞ",  # characters split over two or three byte-level tokens
    "👩\u200d👩\u200d👧 🦙🦙 x\u200d",  # ZWJ sequences, 4-byte emoji
    "\u3000\u00a0Hello\u2028 ",  # Unicode whitespace, trimmed by Llama's template
    "🦙",
    " ",
    "\n\nHello",  # Qwen: merges with the header's newline into one token
    "end  ",
]
TRICKY = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": reply}] for reply in TRICKY_REPLIES] + [
    [
        {"role": "system", "content": " sys "},
        *[
            m
            for reply in TRICKY_REPLIES
            for m in ({"role": "user", "content": f" {reply} "}, {"role": "assistant", "content": reply})
        ],
    ]
]


@pytest.fixture(scope="session")
def trimming_copies(tmp_path_factory):
    """family -> a copy of its tokenizer directory whose ByteLevel post-processor trims offsets."""
    base = tmp_path_factory.mktemp("trim_offsets")

    @functools.cache
    def make(family: str) -> Path:
        directory = base / family
        shutil.copytree(TOKENIZERS / family, directory)
        config = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))

        def trim(processor: dict) -> None:
            if processor.get("type") == "ByteLevel":
                processor["trim_offsets"] = True
            for p in processor.get("processors") or []:
                trim(p)

        trim(config["post_processor"])
        (directory / "tokenizer.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        return directory

    return make


@pytest.mark.parametrize("family", ["llama3.1", "qwen2.5"])
def test_byte_level_offsets(family, trimming_copies):
    from tokenizers import Tokenizer

    import fastsft

    trimmed_dir = trimming_copies(family)
    trimmed = Tokenizer.from_file(str(trimmed_dir / "tokenizer.json"))
    encoders = [fastsft.RecordEncoder(str(TOKENIZERS / family)), fastsft.RecordEncoder(str(trimmed_dir))]
    marked = FAMILY[family].marked_template()
    zero_width_in_spans = 0
    for messages in TRICKY:
        conv = Conversation(messages)
        text, spans = generation_spans(family, conv, marked)
        assert text == hf_render(family, conv)
        want = span_mask(family, text, spans)
        hf = hf_assistant_mask(family, conv, marked)
        assert hf == want, f"the reference disagrees with transformers on {messages[-1]['content']!r}"
        for encoder in encoders:
            out = encoder.encode(json.dumps({"messages": messages}))
            assert (out["input_ids"], list(out["loss_mask"])) == want, f"{messages[-1]['content']!r}"
        offsets = trimmed.encode(text, add_special_tokens=False).offsets
        zero_width_in_spans += sum(1 for s, e in offsets if s == e and any(a <= s < b for a, b in spans))
    assert zero_width_in_spans > 0  # the trimming copy does report zero-width tokens inside replies


# ----------------------------------------------------------------------------------------------
# Hand-written conversations for what the corpora lack, every family: each is written with the
# reference's ids and mask, or rejected only where the reject is justified (a reply holding the
# end-of-turn token) or is a known fastsft bug (strict xfail: the test fails once it is fixed).


def _u(content: str) -> dict:
    return {"role": "user", "content": content}


def _a(content: str) -> dict:
    return {"role": "assistant", "content": content}


def _s(content: str) -> dict:
    return {"role": "system", "content": content}


HAND_WRITTEN = {
    "python-only whitespace at the end": [_u("q"), _a("Hello\x1c")],
    "python-only whitespace at the start": [_u("q"), _a("\x1fHello")],
    "no-break spaces around": [_u("q"), _a("\u00a0Hello\u00a0")],
    "system, two turns": [_s("Sys."), _u("q1"), _a("a1"), _u("q2"), _a("1 2 3")],
    "system, digit replies": [_s("Sys."), _u("q1"), _a("1"), _u("q2"), _a("2")],
    "system, replies with outer whitespace": [_s("Sys."), _u("q1"), _a("  spaced  "), _u("q2"), _a("\nnl")],
    "system, whitespace-only reply": [_s("s"), _u("q1"), _a(" "), _u("q2"), _a("x")],
    "whitespace-only reply": [_u("q1"), _a(" "), _u("q2"), _a("x")],
    "reasoning in the last reply": [_u("q1"), _a("<think>\nhmm\n</think>\n\nans1"), _u("q2"), _a("<think>r2</think>ans2")],
    "reasoning in an earlier reply": [_u("q1"), _a("<think>r1</think>ans1"), _u("q2"), _a("ans2")],
    "reply holds other templates' headers": [
        _u("q"),
        _a(
            "<|im_start|>assistant\nx <|start_header_id|>assistant<|end_header_id|>\n\n y [/INST] z <|assistant|>\n <start_of_turn>model\n"
        ),
    ],
    "user turn holds end-of-turn tokens": [_u("a <|eot_id|> b <|im_end|> c </s> d <|end|> e <end_of_turn>"), _a("ok")],
    "reply holds the end-of-turn tokens": [_u("q"), _a("a <|eot_id|> b <|im_end|> c </s> d <|end|> e <end_of_turn> f")],
    "identical replies": [_u("q"), _a("same"), _u("q"), _a("same")],
    "reply is a substring of the user turn": [_u("ok ok"), _a("ok"), _u("ok"), _a("o")],
    "reply is the Mistral header": [_u("q"), _a("[/INST]")],
    "tabs and trailing newline": [_u("q"), _a("\t\tcode\n\t\tmore\n")],
    "CRLF": [_u("q\r\n"), _a("line1\r\nline2\r\n")],
}
# Known fastsft bugs, as strict xfails (the test fails once a bug is fixed). None open.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@functools.cache
def record_encoder(family: str):
    import fastsft

    return fastsft.RecordEncoder(str(TOKENIZERS / family))


@pytest.mark.parametrize(
    ("family", "case"),
    [
        pytest.param(f.name, case, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[f.name, case])])
        if (f.name, case) in KNOWN_BUGS
        else (f.name, case)
        for f in FAMILIES
        for case in HAND_WRITTEN
    ],
)
def test_hand_written_conversations(family, case):
    messages = HAND_WRITTEN[case]
    conv = Conversation(messages)
    out = record_encoder(family).encode(json.dumps({"messages": messages}))
    try:
        text = hf_render(family, conv)
    except TemplateError as e:
        assert (out.get("reject"), out.get("detail")) == ("template_error", str(e))
        return
    if "reject" in out and reply_holds_end_of_turn(FAMILY[family], conv):
        assert out["reject"] == "assistant_span_not_found"
        return
    if "reject" not in out and out["turn"] is not None:
        # Split into per-turn samples (DESIGN §3.1): only where the whole rendering loses reasoning
        # an earlier reply wrote (Qwen3 renders history without it). Each sample starts with
        # transformers' own prompt for its turn; tests/test_reasoning.py checks the completions.
        thoughts = [m["content"].split("</think>")[0].split("<think>")[-1] for m in messages[:-1] if "</think>" in m["content"]]
        assert any(t.strip() and t.strip() not in text for t in thoughts), "split although the rendering holds every turn"
        tok = hf_tokenizer(family)
        for sample in out["samples"]:
            prompt = tok.apply_chat_template(
                messages[: sample["turn"]], add_generation_prompt=True, tokenize=True, return_dict=False
            )
            assert sample["input_ids"][: len(prompt)] == prompt
            assert not any(sample["loss_mask"][: len(prompt)]) and all(sample["loss_mask"][len(prompt) :])
        return
    _, spans = generation_spans(family, conv, FAMILY[family].marked_template())
    ids, mask = span_mask(family, text, spans)
    assert "reject" not in out, out
    assert out["input_ids"] == ids
    assert trained_runs(family, text, ids, list(out["loss_mask"])) == trained_runs(family, text, ids, mask)
    assert list(out["loss_mask"]) == mask


# ----------------------------------------------------------------------------------------------
# GPT-2 ships no chat template: a clear error naming the way out, and --template chatml works


def test_gpt2_without_template_names_chatml(tmp_path):
    import fastsft

    src = tmp_path / "chat.jsonl"
    src.write_text(option_record("qwen2.5") + "\n", encoding="utf-8")
    with pytest.raises(fastsft.FastSFTError, match=r"no chat template.*--template chatml"):
        fastsft.prep([str(src)], str(TOKENIZERS / "gpt2"), str(tmp_path / "out"), overwrite=True)
    with pytest.raises(fastsft.FastSFTError, match=r"--template chatml"):
        fastsft.RecordEncoder(str(TOKENIZERS / "gpt2"))


def test_gpt2_with_chatml(tmp_path, family_inputs, family_expected):
    """The built-in ChatML layout on a tokenizer without ChatML special tokens: `<|im_start|>` and
    `<|im_end|>` are plain text. ids are the `tokenizers` library's encoding of the ChatML text; the
    mask trains from after `<|im_start|>assistant\\n` through `<|im_end|>` (DESIGN §3)."""
    corpus = "llamafactory_glaive_toolcall_en_demo"
    p = run_prep({corpus: family_inputs[corpus]}, TOKENIZERS / "gpt2", tmp_path / "out", template="chatml", role_map=ROLE_MAP)
    samples = p.samples(corpus)
    assert len(samples) == len(family_expected[corpus].conversations) > 100
    tokenizer = lib_tokenizer("gpt2")
    header, end = "<|im_start|>assistant\n", "<|im_end|>"
    for line, (ids, mask) in samples.items():
        ids, mask = ids.tolist(), mask.tolist()
        text = tokenizer.decode(ids)
        assert lib_ids("gpt2", text) == ids, line
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n")
        spans, at = [], 0
        while (at := text.find(header, at)) >= 0:
            at += len(header)
            spans.append((at, text.index(end, at) + len(end)))
        conv = family_expected[corpus].conversations[line]
        assert len(spans) == sum(m["role"] == "assistant" for m in conv.messages)
        assert mask == span_mask("gpt2", text, spans)[1], line
