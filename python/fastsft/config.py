"""Options of `fastsft prep`, defined once: the Python API, the CLI flags and their `--help`
text all come from the dataclass below."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


def _opt(default, help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None, **kw):
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, **kw})


@dataclass
class PrepOptions:
    """Everything that shapes a `fastsft prep` run besides inputs, tokenizer and output."""

    format: str | None = _opt(
        None,
        "Input layout for every record; detected per record when omitted "
        "('conversations' → sharegpt, 'messages' → openai, 'instruction'+'output' → alpaca).",
        choices=("sharegpt", "openai", "alpaca"),
    )
    template: str | None = _opt(
        None,
        "Chat template: omitted = the model's own (tokenizer_config.json or chat_template.jinja); "
        "'chatml' = the built-in ChatML layout; or a path to a .jinja file.",
        metavar="chatml|FILE.jinja",
    )
    role_map: dict[str, str] = _opt(
        None,
        "Rename unusual roles, e.g. --role-map bot=assistant --role-map customer=user.",
        metavar="FROM=TO",
    )
    messages_field: str | None = _opt(None, "Field holding the list of messages, for unusual layouts (default: conversations / messages).")
    role_field: str | None = _opt(None, "Field of a message holding its role (default: from / role).")
    content_field: str | None = _opt(None, "Field of a message holding its text (default: value / content).")
    system_field: str | None = _opt(None, "Top-level field holding a system prompt (default: system).")
    max_len: int | None = _opt(None, "Longest sample in tokens; longer ones are cut (--truncation right) or rejected (drop).")
    truncation: str = _opt("right", "What to do with samples over --max-len.", choices=("right", "drop"))
    train_on: str = _opt("all", "Which assistant turns are trained: every one, or only the last.", choices=("all", "last"))
    train_eot: bool = _opt(True, "Train the end-of-turn token that closes each reply (--no-train-eot to mask it).")
    train_on_prompt: bool = _opt(False, "Train on every token, prompts included.")
    reasoning: str = _opt(
        "train",
        "Assistant reasoning (reasoning_content/reasoning/thinking fields, or <think>…</think> in the content): "
        "train it like the rest of the reply, render it but mask it, or drop it.",
        choices=("train", "mask", "drop"),
    )
    split_turns: str = _opt(
        "auto",
        "One sample per trained turn (the template's prompt for that turn + what the model generates): "
        "'auto' only when one rendering cannot hold every turn as generated (history reasoning stripped), "
        "'never' rejects such conversations, 'always' splits every one.",
        choices=("never", "auto", "always"),
    )
    history: str = _opt(
        "template",
        "Earlier assistant turns in the prompt of a later one: as the template renders them (it may drop their reasoning; "
        "each turn's prompt is then exactly apply_chat_template(messages[:i], add_generation_prompt=True)), "
        "or as the model wrote them ('as-written': reasoning kept, one sample per conversation).",
        choices=("template", "as-written"),
    )
    template_args: dict[str, object] = _opt(
        None,
        "A keyword argument of the chat template, as apply_chat_template(**kwargs) takes it, with a JSON value: "
        "--template-arg enable_thinking=false (repeatable).",
        flag="--template-arg",
        metavar="NAME=JSON",
    )
    date: str | None = _opt(
        None,
        "Pin the date the template's strftime_now() reports (YYYY-MM-DD) for reproducible runs; default: today, local time.",
        metavar="YYYY-MM-DD",
    )
    max_record_bytes: int | None = _opt(
        None, "Reject records larger than this many bytes unread (default 4 MiB: tokenizing needs ~100x the text in memory)."
    )
    threads: int = _opt(0, "Worker threads; 0 = every core. The output does not depend on it.")
    chunk_size: int | None = _opt(None, "Records per chunk (memory/speed trade-off; the output does not depend on it).")
    overwrite: bool = _opt(
        False, "Replace an existing fastsft dataset at the output path. Other directories are never replaced; an empty one is used without this flag."
    )
    strict: bool = _opt(False, "Stop at the first rejected record with its file, line and reason.")
    max_reject_fraction: float | None = _opt(
        None, "Fail the run when more than this fraction of records is rejected (default: fail only if all are)."
    )
    progress: bool = _opt(True, "Show a progress line on stderr.")
    num_shards: int | None = _opt(
        None,
        "Split the records into this many shards and prepare one (--shard-index): OUT/shard-IIIII-of-NNNNN/. "
        "Default: from SLURM_ARRAY_TASK_COUNT/SLURM_ARRAY_TASK_ID or WORLD_SIZE/RANK when set, else 1. "
        "Finished shards are kept on re-runs.",
    )
    shard_index: int | None = _opt(None, "Which shard to prepare, 0-based (with --num-shards).")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ValueError(f"--{f.name.replace('_', '-')} {value!r}: expected one of {', '.join(choices)}")
        if self.max_len is not None and self.max_len <= 0:
            raise ValueError(f"--max-len {self.max_len}: must be a positive number of tokens")
        if self.max_record_bytes is not None and self.max_record_bytes <= 0:
            raise ValueError(f"--max-record-bytes {self.max_record_bytes}: must be positive")
        if self.threads < 0:
            raise ValueError(f"--threads {self.threads}: must be 0 (every core) or more")
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise ValueError(f"--chunk-size {self.chunk_size}: must be positive")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"--num-shards {self.num_shards}: must be 1 or more")
        if self.shard_index is not None and self.num_shards is None:
            raise ValueError("--shard-index needs --num-shards")
        if self.shard_index is not None and not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard-index {self.shard_index}: must be in 0..{self.num_shards - 1} for --num-shards {self.num_shards}")
        if self.max_reject_fraction is not None and not 0.0 <= self.max_reject_fraction <= 1.0:
            raise ValueError(f"--max-reject-fraction {self.max_reject_fraction}: must be between 0 and 1")


FIELD_OPTIONS = ("messages_field", "role_field", "content_field", "system_field")


def field_mapping(options: dict) -> dict[str, str] | None:
    """Pops the four --*-field options into the `fields` mapping the extension takes."""
    fields = {name.removesuffix("_field"): options.pop(name) for name in FIELD_OPTIONS if name in options}
    fields = {k: v for k, v in fields.items() if v is not None}
    return fields or None


def parse_template_args(pairs: list[str] | None) -> dict[str, object] | None:
    """`["enable_thinking=false", 'name="x"']` → `{"enable_thinking": False, "name": "x"}`; the
    value is JSON; a bare word that is not JSON is taken as a string."""
    if not pairs:
        return None
    args: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--template-arg {pair!r}: expected NAME=JSON, e.g. --template-arg enable_thinking=false")
        try:
            args[name] = json.loads(text)
        except json.JSONDecodeError:
            args[name] = text
    return args


def template_args_for_core(args: dict[str, object] | None) -> list[tuple[str, str]] | None:
    """Keyword arguments as (name, JSON text) pairs: the extension reads numbers exactly."""
    if not args:
        return None
    return [(name, json.dumps(value, ensure_ascii=False)) for name, value in args.items()]


def parse_role_map(pairs: list[str] | None) -> dict[str, str] | None:
    """`["bot=assistant", ...]` → `{"bot": "assistant"}`; names the bad pair on error."""
    if not pairs:
        return None
    mapping: dict[str, str] = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"--role-map {pair!r}: expected FROM=TO, e.g. --role-map bot=assistant")
        mapping[source] = target
    return mapping
