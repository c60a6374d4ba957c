"""Reasoning and agent conversations (DESIGN §3.1): the inference view, exactly.

For every accepted sample the reference is `transformers`: a whole-conversation sample has the ids
of `apply_chat_template(messages, tokenize=True)`; every trained turn starts right after the ids of
`apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=True)` (the prompt the model
sees at inference); and its trained tokens decode to exactly the completion the model generates,
written out by hand below (golden strings). The public templates under `tests/templates/public/`
(sources and licences in its README) run on the shipped tokenizers of their vocabularies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fastsft
from fastsft import _core
from public_models import build_models


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("reasoning_models"))


_HF: dict[Path, object] = {}


def hf(directory: Path):
    from transformers import AutoTokenizer

    if directory not in _HF:
        _HF[directory] = AutoTokenizer.from_pretrained(str(directory))
    return _HF[directory]


def hf_ids(directory: Path, messages, *, generation_prompt=False, **kwargs) -> list[int]:
    return hf(directory).apply_chat_template(
        messages, tokenize=True, return_dict=False, add_generation_prompt=generation_prompt, **kwargs
    )


def encode(directory: Path, record: dict, **options) -> dict:
    return fastsft.RecordEncoder(str(directory), **options).encode(record)


def trained_runs(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of trained tokens."""
    runs, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def assert_exact(directory: Path, messages: list[dict], out: dict, completions: list[str], **kwargs) -> None:
    """Every sample: prompts equal transformers' generation prompts, trained text equals the golden
    completions (one per trained turn, in order), whole samples equal transformers' rendering."""
    assert "reject" not in out, out
    tok = hf(directory)
    golden = iter(completions)
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for sample in out["samples"]:
        ids, mask = sample["input_ids"], sample["loss_mask"]
        runs = trained_runs(mask)
        if sample["turn"] is None:
            assert ids == hf_ids(directory, messages, **kwargs)
            turns = assistants[: len(runs)] if len(runs) == len(assistants) else assistants[-len(runs) :]
        else:
            turns = [sample["turn"]]
            assert len(runs) == 1 and runs[0][1] == len(ids), "a per-turn sample ends with its completion"
        for (start, end), turn in zip(runs, turns, strict=True):
            assert ids[:start] == hf_ids(directory, messages[:turn], generation_prompt=True, **kwargs)
            assert tok.decode(ids[start:end]) == next(golden)
    assert next(golden, None) is None, "fewer trained turns than golden completions"


Q = {"role": "user", "content": "What is 2+2?"}
Q2 = {"role": "user", "content": "And 3+3?"}
REASONED = {"role": "assistant", "content": "4", "reasoning_content": "add two and two"}
REASONED2 = {"role": "assistant", "content": "6", "reasoning_content": "add three and three"}
INLINE = {"role": "assistant", "content": "<think>\nadd two and two\n</think>\n\n4"}
MID_THOUGHT = {"role": "assistant", "content": "add two and two\n</think>\n\n4"}


def test_qwen3_trains_the_reasoning_transformers_renders(models):
    out = encode(models["qwen3"], {"messages": [Q, REASONED]})
    assert len(out["samples"]) == 1 and out["turn"] is None
    assert_exact(models["qwen3"], [Q, REASONED], out, ["<think>\nadd two and two\n</think>\n\n4<|im_end|>"])


def test_qwen3_multi_turn_reasoning_is_split_per_turn_or_rejected(models):
    messages = [Q, REASONED, Q2, REASONED2]
    out = encode(models["qwen3"], {"messages": messages})
    assert [s["turn"] for s in out["samples"]] == [1, 3]
    assert_exact(
        models["qwen3"],
        messages,
        out,
        [
            "<think>\nadd two and two\n</think>\n\n4<|im_end|>",
            "<think>\nadd three and three\n</think>\n\n6<|im_end|>",
        ],
    )
    never = encode(models["qwen3"], {"messages": messages}, split_turns="never")
    assert never["reject"] == "needs_split_turns"
    assert "without its reasoning" in never["detail"] and "--split-turns" in never["detail"]


def test_plain_multi_turn_chat_stays_one_sample(models):
    messages = [Q, {"role": "assistant", "content": "4"}, Q2, {"role": "assistant", "content": "6"}]
    out = encode(models["qwen3"], {"messages": messages})
    assert len(out["samples"]) == 1 and out["turn"] is None
    always = encode(models["qwen3"], {"messages": messages}, split_turns="always")
    assert [s["turn"] for s in always["samples"]] == [1, 3]
    assert_exact(models["qwen3"], messages, always, ["<think>\n\n</think>\n\n4<|im_end|>", "<think>\n\n</think>\n\n6<|im_end|>"])


@pytest.mark.parametrize("assistant", [INLINE, REASONED], ids=["inline", "reasoning_content"])
def test_qwq_prompt_opens_the_reasoning_block(models, assistant):
    # QwQ reads only `content`: a reasoning_content field is written inline, as QwQ generates it.
    out = encode(models["qwq"], {"messages": [Q, assistant]})
    assert out["turn"] is None
    assert_exact(models["qwq"], [Q, INLINE], out, ["add two and two\n</think>\n\n4<|im_end|>"])


def test_qwq_multi_turn_and_plain_replies(models):
    messages = [Q, INLINE, Q2, {"role": "assistant", "content": "<think>\nadd three and three\n</think>\n\n6"}]
    out = encode(models["qwq"], {"messages": messages})
    assert [s["turn"] for s in out["samples"]] == [1, 3]
    assert_exact(
        models["qwq"], messages, out, ["add two and two\n</think>\n\n4<|im_end|>", "add three and three\n</think>\n\n6<|im_end|>"]
    )
    plain = encode(models["qwq"], {"messages": [Q, {"role": "assistant", "content": "4"}]})
    assert plain["reject"] == "missing_reasoning" and "<think>" in plain["detail"]


@pytest.mark.parametrize("assistant", [INLINE, MID_THOUGHT, REASONED], ids=["inline", "mid-thought", "reasoning_content"])
def test_deepseek_r1_distill_trains_reasoning_the_template_strips(models, assistant):
    out = encode(models["r1"], {"messages": [Q, assistant]})
    assert [s["turn"] for s in out["samples"]] == [1]
    assert_exact(
        models["r1"],
        [Q, assistant if assistant is not REASONED else INLINE],
        out,
        ["add two and two\n</think>\n\n4<｜end▁of▁sentence｜>"],
    )


def test_qwen3_thinking_only_template(models):
    out = encode(models["qwen3-thinking"], {"messages": [Q, REASONED]})
    assert out["turn"] is None
    assert_exact(models["qwen3-thinking"], [Q, REASONED], out, ["add two and two\n</think>\n\n4<|im_end|>"])


# Per family: what is trained under --reasoning train / mask / drop (None: rejected, with the code).
POLICIES = [
    ("qwen3", "train", "<think>\nadd two and two\n</think>\n\n4<|im_end|>"),
    ("qwen3", "mask", "\n\n4<|im_end|>"),
    ("qwen3", "drop", "<think>\n\n</think>\n\n4<|im_end|>"),
    ("qwq", "train", "add two and two\n</think>\n\n4<|im_end|>"),
    ("qwq", "mask", "\n\n4<|im_end|>"),
    ("qwq", "drop", "missing_reasoning"),
    ("r1", "train", "add two and two\n</think>\n\n4<｜end▁of▁sentence｜>"),
    ("r1", "mask", "\n\n4<｜end▁of▁sentence｜>"),
    ("r1", "drop", "missing_reasoning"),
    ("qwen3-thinking", "train", "add two and two\n</think>\n\n4<|im_end|>"),
    ("qwen3-thinking", "mask", "\n\n4<|im_end|>"),
    ("qwen2.5", "train", "<think>\nadd two and two\n</think>\n\n4<|im_end|>"),
    # No `</think>` token in Qwen2.5: `>` and the newlines after it are one token, which holds
    # reasoning markup and so does not train.
    ("qwen2.5", "mask", "4<|im_end|>"),
    ("qwen2.5", "drop", "4<|im_end|>"),
]


@pytest.mark.parametrize(("family", "policy", "trained"), POLICIES)
def test_reasoning_policies(models, family, policy, trained):
    out = encode(models[family], {"messages": [Q, REASONED]}, reasoning=policy)
    if trained == "missing_reasoning":
        assert out["reject"] == trained and "--reasoning drop" in out["detail"]
        return
    assert "reject" not in out, out
    (sample,) = out["samples"]
    ids, mask = sample["input_ids"], sample["loss_mask"]
    assert hf(models[family]).decode([t for t, m in zip(ids, mask) if m]) == trained


def test_numbers_keep_their_exact_text(models):
    call = {
        "type": "function",
        "function": {
            "name": "f",
            "arguments": json.dumps(
                {"big": 123456789012345678901234567890, "neg": -99999999999999999999, "one": 1.0, "e": 1e16, "small": 1e-07}
            ),
        },
    }
    messages = [
        Q,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "ok"},
        {"role": "assistant", "content": "done"},
    ]
    record = '{"messages": ' + json.dumps(messages)[:-1] + "]}"
    out = fastsft.RecordEncoder(str(models["qwen2.5"])).render(record)
    assert (
        '"arguments": {"big": 123456789012345678901234567890, "neg": -99999999999999999999, "one": 1.0, "e": 1e+16, "small": 1e-07}'
        in out["text"]
    )
    parsed = json.loads(record)["messages"]
    for m in parsed:
        for c in m.get("tool_calls", []):
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    assert_exact(
        models["qwen2.5"],
        parsed,
        encode(models["qwen2.5"], json.loads(record)),
        [
            '<tool_call>\n{"name": "f", "arguments": {"big": 123456789012345678901234567890, "neg": -99999999999999999999, '
            '"one": 1.0, "e": 1e+16, "small": 1e-07}}\n</tool_call><|im_end|>',
            "done<|im_end|>",
        ],
    )
    too_big = encode(models["qwen2.5"], {"messages": [Q, {"role": "assistant", "content": "x", "n": 10**40}]})
    assert too_big["reject"] == "wrong_type" and "128 bits" in too_big["detail"]


def test_tool_call_ids_reach_the_template(models):
    call = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "abcDEF123", "name": "get_weather", "content": "21 C"},
        {"role": "assistant", "content": "It is 21 C."},
    ]
    out = encode(models["nemo"], {"messages": messages})
    assert_exact(
        models["nemo"],
        messages,
        out,
        ['[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]</s>', "It is 21 C.</s>"],
    )
    wrong = [*messages[:2], {**messages[2], "tool_call_id": "short"}, messages[3]]
    rejected = encode(models["nemo"], {"messages": wrong})
    assert rejected["reject"] == "template_error" and "length 9" in rejected["detail"]


def test_null_content_is_left_out_as_transformers_does(models):
    out = encode(models["qwen2.5"], {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "hi"}]})
    assert out["reject"] == "template_error"
    # transformers 5 drops `content: None` from the message: Mistral-Nemo's `content|string` prints "".
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {"name": "f", "arguments": {}}}],
        },
        {"role": "tool", "tool_call_id": "abcDEF123", "content": None},
        {"role": "assistant", "content": "ok"},
    ]
    rendered = fastsft.RecordEncoder(str(models["nemo"])).render(json.dumps({"messages": messages}))
    assert '[TOOL_RESULTS]{"content": , "call_id": "abcDEF123"}[/TOOL_RESULTS]' in rendered["text"]
    assert rendered["text"] == hf(models["nemo"]).apply_chat_template(messages, tokenize=False)


def test_template_args_and_pinned_date(models):
    messages = [Q, {"role": "assistant", "content": "4"}]
    out = encode(models["qwen3"], {"messages": messages}, template_args={"enable_thinking": False})
    assert_exact(models["qwen3"], messages, out, ["4<|im_end|>"], enable_thinking=False)
    pinned = fastsft.RecordEncoder(str(models["llama3.2"]), date="2024-07-26").render(json.dumps({"messages": messages}))
    assert "Today Date: 26 Jul 2024\n" in pinned["text"]
    local = fastsft.RecordEncoder(str(models["llama3.2"])).render(json.dumps({"messages": messages}))
    assert f"Today Date: {time.strftime('%d %b %Y')}\n" in local["text"]
    with pytest.raises(_core.FastSFTError, match="YYYY-MM-DD"):
        fastsft.RecordEncoder(str(models["llama3.2"]), date="26 Jul 2024")


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastsft.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_prep_records_options_splits_and_turns(models, tmp_path):
    data = tmp_path / "traces.jsonl"
    lines = [{"messages": [Q, REASONED, Q2, REASONED2]}, {"messages": [Q, {"role": "assistant", "content": "4"}]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    out = tmp_path / "out"
    run = _run_cli(
        "prep",
        str(data),
        "--tokenizer",
        str(models["qwen3"]),
        "-o",
        str(out),
        "--template-arg",
        "enable_thinking=true",
        "--date",
        "2024-07-26",
        "--no-progress",
    )
    assert run.returncode == 0, run.stderr
    assert "(3 samples; 1 record split into 2 per-turn samples)" in run.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["num_samples"] == 3
    assert manifest["options"]["template_args"] == {"enable_thinking": True}
    assert manifest["options"]["date"] == "2024-07-26" and manifest["options"]["split_turns"] == "auto"
    assert manifest["counts"]["split_records"] == 1 and manifest["counts"]["split_samples"] == 2
    import numpy as np

    assert np.load(out / "turns.npy").tolist() == [1, 3, -1]
    assert np.load(out / "origin.npy").tolist() == [[0, 1], [0, 1], [0, 2]]
    shown = _run_cli("inspect", str(out), "--index", "1")
    assert shown.returncode == 0, shown.stderr
    assert "line 1, turn of message 4" in shown.stdout
    stats = _run_cli("stats", str(out))
    assert stats.returncode == 0, stats.stderr
    assert "per-turn                     2   (samples from 1 record split into turns, --split-turns)" in stats.stdout


def test_all_rejected_run_keeps_its_rejects(models, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "no conversation"}\n{"messages": []}\n', encoding="utf-8")
    out = tmp_path / "out"
    run = _run_cli(
        "prep", str(data), "--tokenizer", str(models["qwen2.5"]), "-o", str(out), "--max-reject-fraction", "1", "--no-progress"
    )
    assert run.returncode == 4  # rejects (fastsft/errors.py)
    kept = tmp_path / "out.rejects.jsonl"
    assert str(kept) in run.stderr and not out.exists()
    rejects = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["unknown_layout", "empty_conversation"]


def test_a_panic_in_one_record_is_a_counted_reject(models, tmp_path):
    data = tmp_path / "data.jsonl"
    good = {"messages": [Q, {"role": "assistant", "content": "4"}]}
    bad = {"messages": [Q, {"role": "assistant", "content": "PANIC-HERE"}]}
    data.write_text("".join(json.dumps(r) + "\n" for r in [good, bad, good]), encoding="utf-8")
    out = tmp_path / "out"
    run = _run_cli(
        "prep",
        str(data),
        "--tokenizer",
        str(models["qwen2.5"]),
        "-o",
        str(out),
        "--no-progress",
        env={"FASTSFT_TEST_FORGE_PANIC": "PANIC-HERE"},
    )
    assert run.returncode == 0, run.stderr
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "internal_error")]
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == 2


def test_history_as_written_keeps_earlier_reasoning_in_one_sample(models):
    messages = [Q, REASONED, Q2, REASONED2]
    out = encode(models["qwen3"], {"messages": messages}, history="as-written")
    (sample,) = out["samples"]
    assert sample["turn"] is None
    tok = hf(models["qwen3"])
    assert tok.decode(sample["input_ids"]) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nadd two and two\n</think>\n\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n<think>\nadd three and three\n</think>\n\n6<|im_end|>"
    )
    runs = trained_runs(sample["loss_mask"])
    assert [tok.decode(sample["input_ids"][a:b]) for a, b in runs] == [
        "<think>\nadd two and two\n</think>\n\n4<|im_end|>",
        "<think>\nadd three and three\n</think>\n\n6<|im_end|>",
    ]
    assert sample["input_ids"][: runs[0][0]] == hf_ids(models["qwen3"], messages[:1], generation_prompt=True)
