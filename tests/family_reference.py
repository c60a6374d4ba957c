"""Reference ids and masks for every model family, independent of fastsft.

The record → messages rules come from tests/reference.py; this module adds what the per-family
parity suite (tests/test_parity_families.py) needs on top:

- `Family`: a tokenizer directory under assets/tokenizers and how to check it. For the two legacy
  SentencePiece tokenizers (Mistral v0.1, Phi-3) transformers 5.x tokenizes differently from the
  `tokenizers` library (assets/SOURCES.md), so the `tokenizers` library is the reference for ids
  there, and the reference mask is computed from character spans and the library's offsets.
- `generation_spans`: transformers' own rendering under a `{% generation %}`-marked copy of the
  template, with the character spans of the generation blocks.
- `span_mask`: DESIGN §3's token rule on character spans: a token is trained iff its character
  range overlaps a span (a zero-width token iff its position lies inside one), except a special
  token that starts before the span (a role header that swallows the whitespace after it).
- `trained_runs`: the text each run of consecutive trained tokens covers, for the golden tables.

It never imports fastsft.
"""

from __future__ import annotations

import bisect
import functools
import gzip
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reference import TEMPLATES, TOKENIZERS, Conversation, load_tokenizer, read_lines


@dataclass(frozen=True)
class Family:
    name: str
    end_of_turn: str  # the token that closes an assistant turn (DESIGN §3)
    legacy: bool = False  # transformers 5.x ids differ from the `tokenizers` library's

    @property
    def directory(self) -> Path:
        return TOKENIZERS / self.name

    @property
    def marked_template_path(self) -> Path:
        return TEMPLATES / f"{self.name}_generation.jinja"

    def marked_template(self) -> str:
        return self.marked_template_path.read_text(encoding="utf-8")


FAMILIES = [
    Family("qwen2.5", "<|im_end|>"),
    Family("qwen3", "<|im_end|>"),
    Family("llama3.1", "<|eot_id|>"),
    Family("mistral-7b-instruct-v0.3", "</s>"),
    Family("mistral-7b-instruct-v0.1", "</s>", legacy=True),
    Family("phi3", "<|end|>", legacy=True),
    Family("gemma", "<end_of_turn>"),
    Family("tinyllama-chat", "</s>"),
]
FAMILY = {f.name: f for f in FAMILIES}


def write_head(source: Path, target: Path, n_records: int) -> Path:
    """The first `n_records` non-blank records of `source`, at their original line numbers (blank
    lines copied too), so origin.npy's line column maps straight back to the corpus."""
    last = None
    for k, (number, _) in enumerate(read_lines(source)):
        if k == n_records:
            break
        last = number
    with (gzip.open if source.suffix == ".gz" else open)(source, "rb") as f:
        raw = [line for _, line in zip(range(last or 0), f)]
    target.write_bytes(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in raw))
    return target


# ----------------------------------------------------------------------------------------------
# transformers


@functools.cache
def hf_tokenizer(name: str):
    """Shared with tests/reference.py's `load_tokenizer` (one load per session)."""
    return load_tokenizer(TOKENIZERS / name)


@functools.cache
def lib_tokenizer(name: str):
    """The `tokenizers` library's Tokenizer for the family, with `trim_offsets` off in every
    ByteLevel post-processor (trimming gives whitespace tokens empty ranges; ids are unchanged)."""
    from tokenizers import Tokenizer

    config = json.loads((TOKENIZERS / name / "tokenizer.json").read_text(encoding="utf-8"))

    def untrim(processor: dict[str, Any] | None) -> None:
        if not processor:
            return
        if processor.get("type") == "ByteLevel":
            processor["trim_offsets"] = False
        for p in processor.get("processors") or []:
            untrim(p)

    untrim(config.get("post_processor"))
    tokenizer = Tokenizer.from_str(json.dumps(config))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _tools(conv: Conversation) -> dict[str, Any]:
    return {"tools": conv.tools} if conv.tools else {}


def hf_render(name: str, conv: Conversation, chat_template: str | None = None) -> str:
    """transformers' rendering (raises jinja2's TemplateError where the template refuses)."""
    return hf_tokenizer(name).apply_chat_template(conv.messages, chat_template=chat_template, tokenize=False, **_tools(conv))


def hf_ids(name: str, conv: Conversation) -> list[int]:
    ids = hf_tokenizer(name).apply_chat_template(conv.messages, tokenize=True, return_dict=False, **_tools(conv))
    assert isinstance(ids, list)
    return ids


def hf_assistant_mask(name: str, conv: Conversation, marked: str) -> tuple[list[int], list[int]]:
    """(input_ids, assistant_masks) from transformers under the marked template."""
    out = hf_tokenizer(name).apply_chat_template(
        conv.messages,
        chat_template=marked,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        **_tools(conv),
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


def lib_ids(name: str, text: str) -> list[int]:
    return lib_tokenizer(name).encode(text, add_special_tokens=False).ids


def generation_spans(name: str, conv: Conversation, marked: str) -> tuple[str, list[tuple[int, int]]]:
    """transformers' rendering under `marked` and the character spans of its generation blocks."""
    from transformers.utils.chat_template_utils import render_jinja_template

    tok = hf_tokenizer(name)
    rendered, indices = render_jinja_template(
        conversations=[conv.messages],
        tools=conv.tools or None,
        chat_template=marked,
        return_assistant_tokens_mask=True,
        **tok.special_tokens_map,
    )
    return rendered[0], [tuple(s) for s in indices[0]]


@functools.cache
def special_ids(name: str) -> frozenset[int]:
    tok = lib_tokenizer(name)
    return frozenset(i for i, t in tok.get_added_tokens_decoder().items() if t.special)


def span_mask(name: str, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """(ids, mask) of `text` under DESIGN §3's rule, from the `tokenizers` library's char offsets."""
    enc = lib_tokenizer(name).encode(text, add_special_tokens=False)
    special = special_ids(name)
    if not all(a <= b for a, b in spans) or not all(b <= a for (_, b), (a, _) in itertools.pairwise(spans)):
        return enc.ids, _span_mask_any_order(enc, special, spans)
    # Spans in order and disjoint: starts and ends both ascend, so for each token only the last
    # span starting before it (does it reach the token?) and the first span starting after its
    # start (does it start inside the token?) can decide; the same rule as the plain loop below.
    starts = [a for a, _ in spans]
    mask = []
    for token, (start, end) in zip(enc.ids, enc.offsets):
        before = bisect.bisect_right(starts, start) if start == end else bisect.bisect_left(starts, end)
        inside = before > 0 and spans[before - 1][1] > start
        after = bisect.bisect_right(starts, start)
        header = token in special and after < len(spans) and spans[after][0] < end
        mask.append(int(inside and not header))
    return enc.ids, mask


def _span_mask_any_order(enc, special: frozenset[int], spans: list[tuple[int, int]]) -> list[int]:
    mask = []
    for token, (start, end) in zip(enc.ids, enc.offsets):
        if start == end:
            inside = any(a <= start < b for a, b in spans)
        else:
            inside = any(start < b and end > a for a, b in spans)
        header = token in special and any(start < a < end for a, b in spans)
        mask.append(int(inside and not header))
    return mask


def trained_runs(name: str, text: str, ids: list[int], mask: list[int]) -> list[str]:
    """The text each run of consecutive trained tokens covers, from its first token's start offset
    to its last token's end offset.

    Not `decode()`: SentencePiece decoders drop the leading space of a run ("▁I" → "I"), and Phi-3's
    `<|end|>` swallows the newline after it; the covered text shows exactly which characters train.
    """
    enc = lib_tokenizer(name).encode(text, add_special_tokens=False)
    assert enc.ids == list(ids), "ids are not the `tokenizers` library's encoding of text"
    runs, start, end = [], None, None
    for (a, b), m in zip([*enc.offsets, (None, None)], [*mask, 0]):
        if m:
            start = a if start is None else start
            end = b
        elif start is not None:
            runs.append(text[start:end])
            start = None
    return runs
