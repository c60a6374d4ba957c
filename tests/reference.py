"""An independent Python reference for what `fastsft prep` must produce, built on `transformers`.

It re-implements, without sharing code with the Rust core, the rules that turn a raw corpus record
into chat `messages` (+ `tools`) and decide whether the record is rejected; the token ids and the
assistant mask then come from `transformers`' own `apply_chat_template`. The parity tests compare
fastsft's arrays against what this module computes.

What it does not do: it never imports `fastsft`, and it does not guess fastsft's reject codes; it
names the rules a record breaks (`Reject.rules`) and the tests map fastsft's codes onto them.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"
CORPORA = ASSETS / "corpora"
TOKENIZERS = ASSETS / "tokenizers"
TEMPLATES = Path(__file__).resolve().parent / "templates"

# The rules of the contract under which a record is rejected (one name per rule).
MALFORMED_JSON = "malformed_json"
NOT_OBJECT = "not_object"
UNKNOWN_LAYOUT = "unknown_layout"  # no known format, or a required field missing / of the wrong type
UNKNOWN_ROLE = "unknown_role"
NON_STRING_CONTENT = "non_string_content"
BAD_TOOL_CALL = "bad_tool_call"  # a function_call / tool_call whose JSON cannot be read
EMPTY_CONVERSATION = "empty_conversation"
NO_ASSISTANT = "no_assistant"
LAST_NOT_ASSISTANT = "last_not_assistant"
EMPTY_ASSISTANT = "empty_assistant"
TEMPLATE_ERROR = "template_error"
NO_TRAINABLE = "no_trainable"
TOO_LONG = "too_long"  # only with --truncation drop

RULES = (
    MALFORMED_JSON,
    NOT_OBJECT,
    UNKNOWN_LAYOUT,
    UNKNOWN_ROLE,
    NON_STRING_CONTENT,
    BAD_TOOL_CALL,
    EMPTY_CONVERSATION,
    NO_ASSISTANT,
    LAST_NOT_ASSISTANT,
    EMPTY_ASSISTANT,
    TEMPLATE_ERROR,
    NO_TRAINABLE,
    TOO_LONG,
)

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "function_call",  # an assistant turn that calls a tool
    "observation": "tool",
    "tool": "tool",
}
OPENAI_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


class Reject(Exception):
    """A record that must not be written. `rules` lists every rule it breaks (first = first found)."""

    def __init__(self, *rules: str, detail: str = ""):
        assert rules and all(r in RULES for r in rules), rules
        super().__init__(f"{'/'.join(rules)}: {detail}")
        self.rules = tuple(rules)
        self.detail = detail


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Reading corpora


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) for each non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                yield number, raw.decode("utf-8", errors="surrogateescape")


def read_records(path: str | Path) -> dict[int, str]:
    """{line number: raw line} of a corpus file (non-blank lines only)."""
    return dict(read_lines(path))


# ----------------------------------------------------------------------------------------------
# Record -> Conversation


def parse_tools(tools: Any) -> list[dict[str, Any]]:
    """Top-level `tools`: a JSON string or a list; items lacking "type" wrapped as functions."""
    if tools is None:
        return []
    if isinstance(tools, str):
        if not tools.strip():
            return []
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise Reject(UNKNOWN_LAYOUT, detail=f"tools is not valid JSON: {e}") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise Reject(UNKNOWN_LAYOUT, detail="tools is not a list of objects")
    return [t if "type" in t else {"type": "function", "function": t} for t in tools]


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _sharegpt_tool_call(value: str) -> dict[str, Any]:
    try:
        call = json.loads(value)
    except json.JSONDecodeError as e:
        raise Reject(BAD_TOOL_CALL, detail=f"function_call value is not JSON: {e}") from None
    if not isinstance(call, dict) or "name" not in call:
        raise Reject(BAD_TOOL_CALL, detail="function_call value lacks a name")
    return {
        "type": "function",
        "function": {"name": call["name"], "arguments": _maybe_json(call.get("arguments"))},
    }


def _map_role(role: Any, aliases: dict[str, str], role_map: dict[str, str]) -> str:
    if isinstance(role, str) and role in role_map:
        role = role_map[role]
    if not isinstance(role, str) or role not in aliases:
        raise Reject(UNKNOWN_ROLE, detail=f"role {role!r}")
    return aliases[role]


def _from_sharegpt(record: dict, role_map: dict[str, str]) -> Conversation:
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise Reject(UNKNOWN_LAYOUT, detail="conversations is not a list")
    messages: list[dict[str, Any]] = []
    system = record.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for turn in turns:
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise Reject(UNKNOWN_LAYOUT, detail=f"turn {turn!r} lacks from/value")
        role = _map_role(turn["from"], SHAREGPT_ROLES, role_map)
        value = turn["value"]
        if not isinstance(value, str):
            raise Reject(NON_STRING_CONTENT, detail=f"value {value!r}")
        if role == "function_call":
            messages.append({"role": "assistant", "content": "", "tool_calls": [_sharegpt_tool_call(value)]})
        else:
            messages.append({"role": role, "content": value})
    return Conversation(messages, parse_tools(record.get("tools")))


def _openai_content(content: Any) -> str | None:
    # None stays None (so `m["content"]` may be None in these messages): transformers (5.x) drops
    # None-valued keys from each message, so the template sees the content undefined.
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise Reject(NON_STRING_CONTENT, detail=f"content part {part!r}")
            parts.append(part["text"])
        return "".join(parts)
    raise Reject(NON_STRING_CONTENT, detail=f"content {content!r}")


def _openai_tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise Reject(BAD_TOOL_CALL, detail=f"tool call {call!r}")
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    return {**call, "function": function}


def _from_openai(record: dict, role_map: dict[str, str]) -> Conversation:
    turns = record["messages"]
    if not isinstance(turns, list):
        raise Reject(UNKNOWN_LAYOUT, detail="messages is not a list")
    messages = []
    for turn in turns:
        if not isinstance(turn, dict) or "role" not in turn:
            raise Reject(UNKNOWN_LAYOUT, detail=f"message {turn!r} lacks a role")
        message: dict[str, Any] = {
            "role": _map_role(turn["role"], OPENAI_ROLES, role_map),
            "content": _openai_content(turn.get("content")),
        }
        tool_calls = turn.get("tool_calls")
        if tool_calls:
            if not isinstance(tool_calls, list):
                raise Reject(BAD_TOOL_CALL, detail="tool_calls is not a list")
            message["tool_calls"] = [_openai_tool_call(c) for c in tool_calls]
        messages.append(message)
    return Conversation(messages, parse_tools(record.get("tools")))


def _from_alpaca(record: dict) -> Conversation:
    instruction, output = record["instruction"], record.get("output")
    inp = record.get("input", "")
    if inp is None:
        inp = ""
    for name, value in (("instruction", instruction), ("input", inp), ("output", output)):
        if not isinstance(value, str):
            raise Reject(NON_STRING_CONTENT if value is not None else UNKNOWN_LAYOUT, detail=f"{name} {value!r}")
    messages: list[dict[str, Any]] = []
    system = record.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for pair in record.get("history") or []:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise Reject(UNKNOWN_LAYOUT, detail=f"history entry {pair!r}")
        if not all(isinstance(x, str) for x in pair):
            raise Reject(NON_STRING_CONTENT, detail=f"history entry {pair!r}")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    messages.append({"role": "user", "content": f"{instruction}\n{inp}" if inp else instruction})
    messages.append({"role": "assistant", "content": output})
    return Conversation(messages)


def detect_format(record: dict) -> str | None:
    if "conversations" in record:
        return "sharegpt"
    if "messages" in record:
        return "openai"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


def to_conversation(line: str, fmt: str | None = None, role_map: dict[str, str] | None = None) -> Conversation:
    """A raw JSONL line -> Conversation, or raise Reject naming every rule the record breaks."""
    try:
        line.encode("utf-8")  # read_lines keeps invalid UTF-8 as lone surrogates: reject it here
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeError) as e:
        raise Reject(MALFORMED_JSON, detail=str(e)) from None
    if not isinstance(record, dict):
        raise Reject(NOT_OBJECT, detail=type(record).__name__)
    fmt = fmt or detect_format(record)
    role_map = role_map or {}
    try:
        if fmt == "sharegpt":
            conv = _from_sharegpt(record, role_map)
        elif fmt == "openai":
            conv = _from_openai(record, role_map)
        elif fmt == "alpaca":
            conv = _from_alpaca(record)
        else:
            raise Reject(UNKNOWN_LAYOUT, detail=f"keys {sorted(record)}")
    except KeyError as e:
        raise Reject(UNKNOWN_LAYOUT, detail=f"missing {e}") from None
    check_conversation(conv)
    return conv


def check_conversation(conv: Conversation) -> None:
    """The conversation-level reject rules; every broken rule is listed."""
    messages = conv.messages
    if not messages:
        raise Reject(EMPTY_CONVERSATION, NO_ASSISTANT, LAST_NOT_ASSISTANT, detail="no messages")
    broken = []
    if not any(m["role"] == "assistant" for m in messages):
        broken.append(NO_ASSISTANT)
    if messages[-1]["role"] != "assistant":
        broken.append(LAST_NOT_ASSISTANT)
    if any(m["role"] == "assistant" and not m["content"] and not m.get("tool_calls") for m in messages):
        broken.append(EMPTY_ASSISTANT)
    if broken:
        raise Reject(*broken, detail=f"roles {[m['role'] for m in messages]}")


# ----------------------------------------------------------------------------------------------
# Conversation -> ids, mask (transformers)


def load_tokenizer(directory: str | Path):
    """transformers' tokenizer of a model directory, loaded once per session (tests only read it)."""
    return _load_tokenizer(str(Path(directory).resolve()))


@functools.cache
def _load_tokenizer(directory: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def marked_template() -> str:
    return (TEMPLATES / "qwen2.5_generation.jinja").read_text(encoding="utf-8")


def _template_kwargs(conv: Conversation) -> dict[str, Any]:
    return {"tools": conv.tools} if conv.tools else {}


def render(tokenizer, conv: Conversation, chat_template: str | None = None) -> str:
    return tokenizer.apply_chat_template(conv.messages, chat_template=chat_template, tokenize=False, **_template_kwargs(conv))


def reference_ids(tokenizer, conv: Conversation) -> list[int]:
    """Token ids exactly as `apply_chat_template(messages, tools=..., tokenize=True)` gives them.

    transformers 5.x returns a BatchEncoding by default (`return_dict=True`); `return_dict=False`
    gives the plain list of ids.
    """
    from jinja2.exceptions import TemplateError

    try:
        ids = tokenizer.apply_chat_template(conv.messages, tokenize=True, return_dict=False, **_template_kwargs(conv))
    except TemplateError as e:
        raise Reject(TEMPLATE_ERROR, detail=str(e)) from None
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids), type(ids)
    return ids


def reference_ids_and_mask(
    tokenizer, conv: Conversation, chat_template: str, max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """(input_ids, assistant_masks) from `return_assistant_tokens_mask=True` under `chat_template`,
    truncated on the right to `max_length` tokens by transformers when given."""
    from jinja2.exceptions import TemplateError

    truncation = {"truncation": True, "max_length": max_length} if max_length else {}
    try:
        out = tokenizer.apply_chat_template(
            conv.messages,
            chat_template=chat_template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            **truncation,
            **_template_kwargs(conv),
        )
    except TemplateError as e:
        raise Reject(TEMPLATE_ERROR, detail=str(e)) from None
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    assert len(ids) == len(mask)
    if not any(mask):
        raise Reject(NO_TRAINABLE, detail="the mask is all zeros")
    return ids, mask


def first_difference(a, b) -> int | None:
    """Index of the first position where two sequences differ (or where the shorter ends)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
