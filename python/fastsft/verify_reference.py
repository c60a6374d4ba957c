"""The reference engine of ``fastsft verify``: what prep should have written, computed without fastsft.

A conversation (as ``RecordEncoder.conversation`` normalizes it) is rendered with ``transformers``'
own Jinja rendering of the chat template (the function ``apply_chat_template`` calls), tokenized
with the Python ``tokenizers`` library, and masked by the rule of DESIGN §3, re-implemented here.
Nothing here calls the Rust core: a bug there cannot hide by being repeated here.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .errors import MissingExtraError

PROBE_REPLY = "fastsft probe reply"
CHATML_EOT = "<|im_end|>"

# Jinja twin of the built-in ChatML renderer (rust/template/builtin.rs): a default system turn
# unless the conversation opens with one, tool schemas appended to that system turn, tool calls as
# `<tool_call>` JSON lines. Each assistant turn is a `{% generation %}` block, so its span is known
# exactly (a reply that contains "<|im_end|>" itself included), as the native renderer knows it.
# Newlines are written as '\n' literals so that trim_blocks/lstrip_blocks cannot eat them.
CHATML_TEMPLATE = (
    "{%- macro tool_list() -%}{%- if tools -%}{{ '\\n\\n# Tools\\n\\n<tools>' }}{%- for tool in tools -%}"
    "{{ '\\n' ~ (tool | tojson) }}{%- endfor -%}{{ '\\n</tools>' }}{%- endif -%}{%- endmacro -%}"
    "{%- if not messages or messages[0].role != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.' }}{{ tool_list() }}{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{%- generation -%}{{ m.content }}"
    "{%- for call in m.tool_calls or [] -%}"
    "{%- set f = call.function if call.function is defined else call -%}"
    "{%- if not loop.first or m.content -%}{{ '\\n' }}{%- endif -%}"
    "{{ '<tool_call>\\n{\"name\": ' ~ ((f.name if f.name is string else '') | tojson) ~ ', \"arguments\": ' "
    "~ ((f.arguments if f.arguments is defined else {}) | tojson) ~ '}\\n</tool_call>' }}"
    "{%- endfor -%}{{ '<|im_end|>' }}{%- endgeneration -%}{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' ~ m.role ~ '\\n' ~ m.content }}"
    "{%- if loop.first and m.role == 'system' -%}{{ tool_list() }}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


class ReferenceReject(Exception):
    """The reference engine would not produce this row (fastsft stored it: that is a difference)."""


class NotCheckable(Exception):
    """The reference rules cannot find this row's spans: its ids are compared, its mask is not."""


@functools.lru_cache(maxsize=4)
def _reference_tokenizer(tokenizer_json: str):
    """The tokenizers-library tokenizer with trim_offsets off (byte-level BPE would otherwise
    report zero-width or trimmed offsets, as Llama 3's does), and its special token ids."""
    from tokenizers import Tokenizer

    config = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    processors = [config.get("post_processor") or {}]
    while processors:
        p = processors.pop()
        if p.get("type") == "ByteLevel":
            p["trim_offsets"] = False
        processors += p.get("processors") or []
    special = {t["content"]: t["id"] for t in config.get("added_tokens", []) if t.get("special")}
    return Tokenizer.from_str(json.dumps(config)), special


@dataclass
class _Span:
    message: int
    start: int
    eot_start: int
    end: int


class ReferenceEncoder:
    """Encodes normalized conversations the way DESIGN §3/§4 says fastsft must, without fastsft."""

    def __init__(self, tokenizer_dir: Path, options: dict[str, Any], template_path: Path | None = None):
        try:  # the function apply_chat_template calls, which also returns the generation indices
            from transformers.utils.chat_template_utils import render_jinja_template
        except ImportError:
            raise MissingExtraError(
                "fastsft verify needs a transformers with chat_template_utils.render_jinja_template (tested: 5.24): "
                "pip install 'fastsft[verify]'"
            ) from None
        self._render_jinja = render_jinja_template
        self.options = options
        self.hf = _hf_tokenizer(str(tokenizer_dir))
        self.template_kwargs = dict(self.hf.special_tokens_map)  # what apply_chat_template passes
        self.tokenizer, special = _reference_tokenizer(str(tokenizer_dir / "tokenizer.json"))
        self.special, self.special_ids = list(special), set(special.values())
        choice = options.get("template")
        if choice == "chatml":
            self.template = CHATML_TEMPLATE
        elif choice is not None:
            self.template = Path(template_path or choice).read_text(encoding="utf-8")
        else:
            self.template = self.hf.get_chat_template()
        self.has_generation = bool(GENERATION_TAG.search(self.template))
        self.end_of_turn = CHATML_EOT if choice == "chatml" else self._probe_end_of_turn(special)

    def render(self, messages: list[dict], tools: list | None, add_generation_prompt: bool = False, spans: bool = False):
        """(text, generation indices or None), exactly as `apply_chat_template` renders it."""
        kwargs = self.template_kwargs
        try:
            texts, indices = self._render_jinja(
                conversations=[messages], tools=tools, chat_template=self.template,
                return_assistant_tokens_mask=spans, add_generation_prompt=add_generation_prompt, **kwargs,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a template may fail with any Python error: the verdict is its own
            raise ReferenceReject(f"transformers cannot render it: {type(e).__name__}: {e}") from None
        return texts[0], (indices[0] if spans else None)

    def _probe_end_of_turn(self, special: dict[str, int]) -> str | None:
        """The earliest special token after a probe reply (ties: the longest), as DESIGN §3 defines
        the end-of-turn marker: `<|im_end|>`, `<|eot_id|>`, `</s>`, `<end_of_turn>`, ..."""
        user, reply = {"role": "user", "content": "fastsft probe question"}, {"role": "assistant", "content": PROBE_REPLY}
        for probe in ([user, reply], [{"role": "system", "content": "fastsft probe system"}, user, reply]):
            try:
                text, _ = self.render(probe, None)
            except ReferenceReject:
                continue
            at = text.rfind(PROBE_REPLY)
            if at < 0:
                continue
            after = text[at + len(PROBE_REPLY) :]
            found = [(after.find(t), -len(t), t) for t in special if t in after]
            return min(found)[2] if found else None
        return None

    def spans(self, messages: list[dict], tools: list | None) -> tuple[str, list[_Span]]:
        """The rendered text and each assistant message's span in it (DESIGN §3).

        With `{% generation %}` blocks, transformers' own generation indices. Otherwise the prefix
        rule: `render(messages[:i], add_generation_prompt=True)` must start the full text, and the
        span runs from its end through the first end-of-turn token. For templates that do not
        re-render history as a prefix (Mistral v0.3 moves the system prompt to the last user turn),
        the turn is rendered on its own (`messages[:i+1]`) and found in the full text after the
        previous span, behind its header; when that fails too the mask is not checkable."""
        assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if self.has_generation:
            text, blocks = self.render(messages, tools, spans=True)
            if len(blocks) != len(assistants):
                raise ReferenceReject(f"{len(blocks)} generation blocks for {len(assistants)} assistant messages")
            eot = self.end_of_turn

            def before_eot(a: int, b: int) -> int:
                return b - len(eot) if eot is not None and text[a:b].endswith(eot) else b

            return text, [_Span(i, a, before_eot(a, b), b) for i, (a, b) in zip(assistants, blocks)]
        text, _ = self.render(messages, tools)
        eot = self.end_of_turn
        if eot is None:
            raise ReferenceReject("the template closes assistant turns with no special token")
        spans: list[_Span] = []
        for i in assistants:
            previous_end = spans[-1].end if spans else 0
            prompt, _ = self.render(messages[:i], tools, add_generation_prompt=True)
            if text.startswith(prompt) and len(prompt) >= previous_end:
                start = len(prompt)
            else:
                start = self._locate_turn(messages[: i + 1], tools, prompt, text, previous_end)
            eot_start = text.find(eot, start)
            if eot_start < 0:
                raise ReferenceReject(f"no {eot} after assistant message {i + 1}")
            spans.append(_Span(i, start, eot_start, eot_start + len(eot)))
        return text, spans

    def _locate_turn(self, upto: list[dict], tools: list | None, prompt: str, text: str, after: int) -> int:
        """Where the last turn of `upto` starts in the full text: the turn rendered alone (from its
        header, the generation prompt's text from its last special token on, through the first
        end-of-turn token) and found, header first, after the previous span."""
        eot = self.end_of_turn or ""
        alone, _ = self.render(upto, tools)
        header_at = max((prompt.rfind(t) for t in self.special), default=-1)
        header = prompt[header_at:] if header_at >= 0 else ""
        start = alone.rfind(header) + len(header) if header and header in alone else -1
        close = alone.find(eot, start) if start >= 0 else -1
        found = text.find(header + alone[start : close + len(eot)], after) if close >= 0 else -1
        if found < 0:
            raise NotCheckable(
                "the template does not render earlier turns as a prefix, and a turn rendered alone is not found in the whole"
            )
        return found + len(header)

    def encode(self, conversation: dict) -> tuple[list[int], list[int] | None, str | None]:
        """Normalized conversation (`RecordEncoder.conversation`) → (ids, mask, None) under the
        options, or (ids, None, why) when the spans cannot be found by the rules above."""
        messages = [{k: v for k, v in m.items() if k != "train"} for m in conversation["messages"]]
        tools = conversation.get("tools") or None
        opt = self.options
        spans: list[_Span] | None = []
        not_checkable = None
        if opt.get("train_on_prompt"):
            text, _ = self.render(messages, tools)
        else:
            try:
                text, spans = self.spans(messages, tools)
            except NotCheckable as e:
                text, spans, not_checkable = self.render(messages, tools)[0], None, str(e)
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        ids = list(encoding.ids)
        mask: list[int] | None = None
        if opt.get("train_on_prompt"):
            mask = [1] * len(ids)
        elif spans is not None:
            last = max((s.message for s in spans), default=None)
            trained = [
                (s.start, s.end if opt.get("train_eot", True) else s.eot_start)
                for s in spans
                if conversation["messages"][s.message].get("train") is not False
                and (opt.get("train_on", "all") == "all" or s.message == last)
            ]
            mask = self.mask(ids, encoding.offsets, [t for t in trained if t[0] < t[1]])
        ids, mask = self._truncated(ids, mask)
        return ids, mask, not_checkable

    def encode_turn(self, conversation: dict, turn: int) -> tuple[list[int], list[int]]:
        """A per-turn sample (`--split-turns`, DESIGN §3.1) → (ids, mask): transformers' prompt for
        the messages before assistant message `turn` (`add_generation_prompt=True`), tokenized
        alone, then the completion tokenized alone: what the template renders for that message
        after that prompt, through the first end-of-turn token. Raises NotCheckable where this
        reference does not re-implement fastsft's rule: a template that renders the message
        differently from the prompt it builds (a prompt that opens a reasoning block), or
        `--reasoning mask|drop`, `--history as-written`, `--train-on-prompt`."""
        opt = self.options
        if opt.get("train_on_prompt") or opt.get("reasoning", "train") != "train" or opt.get("history", "template") != "template":
            raise NotCheckable("per-turn sample under --reasoning mask/drop, --history as-written or --train-on-prompt")
        messages = [{k: v for k, v in m.items() if k != "train"} for m in conversation["messages"]]
        tools = conversation.get("tools") or None
        eot = self.end_of_turn
        if eot is None:
            raise ReferenceReject("the template closes assistant turns with no special token")
        prompt, _ = self.render(messages[:turn], tools, add_generation_prompt=True)
        full, _ = self.render(messages[: turn + 1], tools)
        if not full.startswith(prompt):
            raise NotCheckable("per-turn sample whose template renders the reply apart from its own prompt")
        eot_at = full.find(eot, len(prompt))
        if eot_at < 0:
            raise ReferenceReject(f"no {eot} after assistant message {turn + 1}")
        completion = full[len(prompt) : eot_at + len(eot)]
        first = self.tokenizer.encode(prompt, add_special_tokens=False)
        second = self.tokenizer.encode(completion, add_special_tokens=False)
        ids = list(first.ids) + list(second.ids)
        offsets = list(first.offsets) + [(a + len(prompt), b + len(prompt)) for a, b in second.offsets]
        end = len(prompt) + len(completion) - (0 if opt.get("train_eot", True) else len(eot))
        ids, mask = self._truncated(ids, self.mask(ids, offsets, [(len(prompt), end)]))
        return ids, cast("list[int]", mask)  # a mask given is a mask returned

    def _truncated(self, ids: list[int], mask: list[int] | None) -> tuple[list[int], list[int] | None]:
        """`--max-len` and `--truncation` applied, and a sample with nothing trained refused."""
        max_len = self.options.get("max_len")
        if max_len is not None and len(ids) > max_len:
            if self.options.get("truncation", "right") == "drop":
                raise ReferenceReject(f"{len(ids)} tokens > max_len {max_len} (truncation drop)")
            ids, mask = ids[:max_len], (mask[:max_len] if mask is not None else None)
        if mask is not None and not any(mask):
            raise ReferenceReject("no token is trained")
        return ids, mask

    def mask(self, ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
        """1 where a token's character range overlaps a trained span (a zero-width token counts
        at its position), except a special token that starts before the span."""
        mask, j = [0] * len(ids), 0
        for k, (token, (start, end)) in enumerate(zip(ids, offsets)):
            while j < len(spans) and spans[j][1] <= start:
                j += 1
            if j == len(spans):
                break
            a, b = spans[j]
            overlaps = a <= start < b if start == end else (start < b and end > a)
            mask[k] = int(overlaps and not (start < a and token in self.special_ids))
        return mask


# Loading a large vocabulary takes seconds (Gemma's 256k), so the last few are kept for repeated
# `verify` calls.
@functools.lru_cache(maxsize=4)
def _hf_tokenizer(tok_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


__all__ = ["CHATML_TEMPLATE", "NotCheckable", "ReferenceEncoder", "ReferenceReject"]
