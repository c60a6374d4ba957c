"""``fastsft verify``: re-encode a random sample of a prepared dataset with an independent engine.

For each sampled row it reads the record again from its input file, renders the conversation with
``transformers``' own Jinja rendering of the chat template, tokenizes the text with the Python
``tokenizers`` library, draws the mask by the rule of DESIGN §3 (re-implemented here in Python)
and compares ids and mask with what ``fastsft prep`` stored.

What it shares with the Rust core, on purpose: only the record reader
(``RecordEncoder.conversation``), so that both sides start from the same messages. Rendering,
tokenization, span finding, options and truncation are all done here, independently. What it
does not do: fix anything, or check rows that prep rejected (``rejects.jsonl`` says why those are).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data.dataset import resolve_dataset_dirs
from .data.manifest import read_manifest, sha256_file
from .errors import UsageError
from .extras import require
from .wording import plural

DEFAULT_SAMPLE = 200
SHOW_DIFFERENCES = 5
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


class VerifyUsageError(UsageError):
    """The dataset, its tokenizer or its inputs cannot be found or read: nothing to compare."""


class ReferenceReject(Exception):
    """The reference engine would not produce this row (fastsft stored it: that is a difference)."""


class NotCheckable(Exception):
    """The reference rules cannot find this row's spans: its ids are compared, its mask is not."""


# ----------------------------------------------------------------------------------------------
# Reading the records back from the inputs


def _resolve(path: str, dataset: Path) -> Path | None:
    """A path as the manifest records it (relative to wherever prep ran): tried as given, then
    beside the dataset and beside its parent."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else [p, dataset / p, dataset.parent / p, dataset.parent.parent / p]
    return next((c for c in candidates if c.exists()), None)


class _HashingReader(io.RawIOBase):
    """Raw file bytes through sha256, so one pass both decodes the records and hashes the file."""

    def __init__(self, f: io.BufferedReader):
        self.f, self.sha = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.f.readinto(buffer)
        self.sha.update(memoryview(buffer)[:n])
        return n

    def finish(self) -> str:
        while block := self.f.read(1 << 20):
            self.sha.update(block)
        return self.sha.hexdigest()


def _decoded_chunks(raw: _HashingReader) -> Iterator[bytes]:
    """Decompressed bytes (gzip/zstd by magic number, else plain), BOM dropped."""
    head = raw.f.peek(4)[:4]
    if head.startswith(b"\x1f\x8b"):
        stream: Any = gzip.GzipFile(fileobj=raw)
    elif head.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            import zstandard
        except ImportError:
            raise VerifyUsageError("reading .zst inputs needs zstandard (not installed): pip install 'fastsft[verify]'") from None
        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    else:
        stream = raw
    first = True
    while block := stream.read(1 << 20):
        if first:
            while len(block) < 3 and (more := stream.read(1 << 20)):
                block += more
            block, first = block.removeprefix(b"\xef\xbb\xbf"), False
        yield block


def _lines(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line, bytes) of a JSON Lines stream; blank lines are numbered like any other."""
    number, carry = 0, b""
    for chunk in chunks:
        *complete, carry = (carry + chunk).split(b"\n")
        for line in complete:
            number += 1
            yield number, line
    if carry:
        yield number + 1, carry


_ARRAY_SYNTAX = re.compile(rb'[\[\]{},"]')
_STRING_SYNTAX = re.compile(rb'[\\"]')


def _elements(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based index, bytes) of each element of a top-level JSON array, split by bracket depth
    without parsing (a malformed element is still numbered, as prep numbers it)."""
    chunks = iter(chunks)
    for chunk in chunks:
        if (at := chunk.find(b"[")) >= 0:
            chunks = _chain(chunk[at + 1 :], chunks)
            break
    else:
        return
    index, depth, in_string, escaped, element = 0, 0, False, False, bytearray()
    for chunk in chunks:
        pos = start = 0
        while pos < len(chunk):
            if in_string:
                if escaped:
                    escaped, pos = False, pos + 1
                    continue
                m = _STRING_SYNTAX.search(chunk, pos)
                if m is None:
                    break
                pos = m.end()
                escaped, in_string = m.group() == b"\\", m.group() == b"\\"
                continue
            m = _ARRAY_SYNTAX.search(chunk, pos)
            if m is None:
                break
            c, pos = m.group(), m.end()
            if c == b'"':
                in_string = True
            elif c in b"[{":
                depth += 1
            elif c in b"]}" and not (c == b"]" and depth == 0):
                depth -= 1
            elif depth == 0:  # ',' or the closing ']'
                element += chunk[start : m.start()]
                if c == b"," or element.strip():
                    index += 1
                    yield index, bytes(element)
                if c == b"]":
                    return
                element, start = bytearray(), pos
        element += chunk[start:]
    if element.strip():
        yield index + 1, bytes(element)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def read_records(path: Path, wanted: set[int]) -> tuple[dict[int, bytes], str]:
    """The records numbered `wanted` (JSONL line or array index) and the sha256 of the file,
    decoding only as far as the last wanted record."""
    found: dict[int, bytes] = {}
    with open(path, "rb") as f:
        raw = _HashingReader(f)
        chunks = _decoded_chunks(raw)
        first = next(chunks, b"")
        records = _elements if first.lstrip()[:1] == b"[" else _lines
        if wanted:
            for number, record in records(_chain(first, chunks)):
                if number in wanted:
                    found[number] = record
                    if len(found) == len(wanted):
                        break
        return found, raw.finish()


# ----------------------------------------------------------------------------------------------
# The reference engine: transformers' rendering + the tokenizers library + the mask rule


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
            raise VerifyUsageError(
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
            ends_in_eot = lambda a, b: eot is not None and text[a:b].endswith(eot)
            return text, [_Span(i, a, b - len(eot) if ends_in_eot(a, b) else b, b) for i, (a, b) in zip(assistants, blocks)]
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
            raise NotCheckable("the template does not render earlier turns as a prefix, and a turn rendered alone is not found in the whole")
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
        max_len = opt.get("max_len")
        if max_len is not None and len(ids) > max_len:
            if opt.get("truncation", "right") == "drop":
                raise ReferenceReject(f"{len(ids)} tokens > max_len {max_len} (truncation drop)")
            ids, mask = ids[:max_len], (mask[:max_len] if mask is not None else None)
        if mask is not None and not any(mask):
            raise ReferenceReject("no token is trained")
        return ids, mask, not_checkable

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


# ----------------------------------------------------------------------------------------------
# Comparing and reporting


def _pick(counts: list[int], sample: int, seed: int) -> list[tuple[int, int]]:
    """(shard, row) pairs: `sample` rows drawn without replacement over all shards, seeded."""
    total = sum(counts)
    rows = range(total) if sample >= total else sorted(np.random.default_rng(seed).choice(total, sample, replace=False))
    bounds = np.cumsum([0, *counts])
    picked = []
    for g in rows:
        shard = int(np.searchsorted(bounds, g, side="right")) - 1
        picked.append((shard, int(g - bounds[shard])))
    return picked


def _pieces(tokenizer, ids: list[int], lo: int, hi: int) -> list[str]:
    """The text of each token in ids[lo:hi], decoded in context (SentencePiece decoders drop a
    leading space at the start of a decode, and byte-level tokens may split a character)."""
    warm = max(0, lo - 4)
    previous, pieces = tokenizer.decode(ids[warm:lo], skip_special_tokens=False), []
    for k in range(lo, hi):
        text = tokenizer.decode(ids[warm : k + 1], skip_special_tokens=False)
        pieces.append(text[len(previous) :] if text.startswith(previous) else tokenizer.decode([ids[k]], skip_special_tokens=False))
        previous = text
    return pieces


def _show(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _marked(pieces: list[str], mask: list[int]) -> str:
    out, inside = [], False
    for piece, m in zip(pieces, mask):
        if m != inside:
            out.append("[[" if m else "]]")
            inside = bool(m)
        out.append(_show(piece))
    return "".join(out) + ("]]" if inside else "")


def describe_difference(tokenizer, stored: tuple[list, list], reference: tuple[list, list]) -> tuple[str, int, str]:
    """(kind, first differing position, side-by-side text around it)."""
    (s_ids, s_mask), (r_ids, r_mask) = stored, reference
    kind, at = "ids", next((k for k, (x, y) in enumerate(zip(s_ids, r_ids)) if x != y), None)
    if at is None and len(s_ids) != len(r_ids):
        at = min(len(s_ids), len(r_ids))
    if at is None:
        kind, at = "mask", next(k for k, (x, y) in enumerate(zip(s_mask, r_mask)) if x != y)
    lines = []
    sides = {"stored": (s_ids, s_mask), "reference": (r_ids, r_mask)}
    pieces = {}
    for name, (ids, mask) in sides.items():
        lo, hi = max(0, at - 12), min(len(ids), at + 12)
        pieces[name] = _pieces(tokenizer, ids, max(0, at - 3), min(len(ids), at + 4))
        text = _marked(_pieces(tokenizer, ids, lo, hi), mask[lo:hi])
        lines.append(f"    {name:<10}{'…' if lo else ''}{text}{'…' if hi < len(ids) else ''}")
    lines.append(f"    {'pos':>7}  {'stored':<32}{'reference':<32}")
    for k in range(max(0, at - 3), at + 4):
        cells = []
        for name, (ids, mask) in sides.items():
            if k < len(ids):
                piece = repr(pieces[name][k - max(0, at - 3)])[:20]
                cells.append(f"{ids[k]:>7} {'[[' + piece + ']]' if mask[k] else piece:<24}")
            else:
                cells.append(f"{'-':>7} {'':<24}")
        lines.append(f"  {'>' if k == at else ' '} {k:>6}  {cells[0]}{cells[1]}")
        if k >= max(len(s_ids), len(r_ids)) - 1:
            break
    return kind, at, "\n".join(lines)


def verify(path: str | Path, sample: int = DEFAULT_SAMPLE, seed: int = 0, tokenizer: str | Path | None = None) -> dict[str, Any]:
    """Re-encodes `sample` random rows of the dataset at `path` (or of its shards) and compares.

    Returns {"path", "num_samples", "sampled", "samples": [[shard directory, row], ...],
    "checked", "identical", "different", "ids_only": {reason: count}, "skipped": {reason: count},
    "differences": [{"shard",
    "sample", "input", "line", "kind" ("ids", "mask" or "reference rejects"), "position" (in the
    sample), "stored_len", "reference_len", "detail"}], "warnings": [...]}. "ids_only" counts the
    rows whose ids are identical but whose spans the reference rules cannot find (mask unchecked).
    Raises VerifyUsageError (a ValueError) when the dataset, tokenizer or inputs cannot be used.
    """
    if sample < 1:
        raise VerifyUsageError(f"--sample {sample}: must be at least 1")
    require("verify", "verify")  # the reference engine, before any work
    try:
        shards = resolve_dataset_dirs(path)
        manifests = [read_manifest(d) for d in shards]
    except (FileNotFoundError, ValueError) as e:
        raise VerifyUsageError(f"{e} (make one with `fastsft prep FILES --tokenizer DIR -o {path}`)") from None
    result: dict[str, Any] = {
        "path": str(path), "num_samples": sum(m.num_samples for m in manifests), "sampled": 0, "checked": 0,
        "identical": 0, "different": 0, "ids_only": Counter(), "skipped": Counter(), "differences": [], "warnings": [],
    }  # fmt: skip
    picked = defaultdict(list)
    for shard, row in _pick([m.num_samples for m in manifests], sample, seed):
        picked[shard].append(row)
    result["sampled"] = sum(map(len, picked.values()))
    result["samples"] = [[str(shards[shard]), row] for shard, rows in sorted(picked.items()) for row in rows]
    engines: dict[tuple, tuple] = {}
    for shard, rows in sorted(picked.items()):
        man, directory = manifests[shard].raw, shards[shard]
        options = man.get("options", {})
        tok_dir = _tokenizer_dir(man, directory, tokenizer)
        template_path = None
        if options.get("template") not in (None, "chatml"):
            template_path = _resolve(options["template"], directory)
            if template_path is None:
                raise VerifyUsageError(f"{directory}: template file {options['template']} not found")
        key = (str(tok_dir), json.dumps(options, sort_keys=True), str(template_path))
        if key not in engines:
            engines[key] = _load_engines(tok_dir, options, template_path, man, result["warnings"])
        reader, reference = engines[key]
        _check_shard(directory, man, rows, reader, reference, result)
    result["skipped"], result["ids_only"] = dict(result["skipped"]), dict(result["ids_only"])
    return result


def _tokenizer_dir(man: dict, directory: Path, override: str | Path | None) -> Path:
    if override is not None:
        from fastsft.prep import resolve_tokenizer

        try:  # a directory, or a hub id in the local Hugging Face cache
            p = Path(resolve_tokenizer(override))
        except FileNotFoundError as e:
            raise VerifyUsageError(str(e)) from None
        p = p.parent if p.name == "tokenizer.json" else p
        if not (p / "tokenizer.json").is_file():
            raise VerifyUsageError(f"--tokenizer {override}: no tokenizer.json there")
        return p
    recorded = (man.get("tokenizer") or {}).get("path", "")
    found = _resolve(recorded, directory) if recorded else None
    if found is None:
        raise VerifyUsageError(
            f"{directory}: the tokenizer it was made with ({recorded or 'not recorded'}) is not found; "
            "pass --tokenizer DIR (the model directory with tokenizer.json)"
        )
    return found.parent if found.is_file() else found


def _load_engines(tok_dir: Path, options: dict, template_path: Path | None, man: dict, warnings: list[str]):
    """(fastsft's record reader, the reference encoder) for a shard; warns when the tokenizer or
    template found now is not the one the dataset was made with."""
    frozen = lambda d: tuple(sorted((k, v) for k, v in (d or {}).items() if v is not None)) or None
    template = str(template_path) if template_path else options.get("template")
    from fastsft.config import EncodeOptions

    given = EncodeOptions.from_manifest(options)
    fields = {name: getattr(given, f"{name}_field") for name in ("messages", "role", "content", "system")}
    reader = _record_reader(str(tok_dir), template, given.format, frozen(given.role_map), frozen(fields))
    reference = ReferenceEncoder(tok_dir, options, template_path)
    want = (man.get("tokenizer") or {}).get("sha256")
    if want and sha256_file(tok_dir / "tokenizer.json") != want:
        warnings.append(f"{tok_dir / 'tokenizer.json'} is not the tokenizer the dataset was made with (sha256 differs)")
    want = (man.get("template") or {}).get("sha256")
    if want and options.get("template") != "chatml" and hashlib.sha256(reference.template.encode()).hexdigest() != want:
        warnings.append(f"the chat template of {tok_dir} differs from the one the dataset was made with (sha256 differs)")
    return reader, reference


# Loading a large vocabulary takes seconds (Gemma's 256k: three loads, Rust, transformers and
# tokenizers), so each loader keeps its last few results for repeated `verify` calls.
@functools.lru_cache(maxsize=4)
def _record_reader(tok_dir: str, template: str | None, format: str | None, role_map: tuple | None, fields: tuple | None):
    from fastsft import RecordEncoder

    schema: dict[str, Any] = {"format": format, "role_map": dict(role_map or ()) or None}
    for name, value in fields or ():  # custom field names (--messages-field ...)
        schema[f"{name}_field"] = value
    return RecordEncoder(tok_dir, template=template, **schema)


@functools.lru_cache(maxsize=4)
def _hf_tokenizer(tok_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


def _check_shard(directory: Path, man: dict, rows: list[int], reader, reference: ReferenceEncoder, result: dict) -> None:
    ids_all = np.load(directory / "input_ids.npy", mmap_mode="r")
    mask_all = np.load(directory / "loss_mask.npy", mmap_mode="r")
    offsets = np.load(directory / "offsets.npy", mmap_mode="r")
    origin = np.load(directory / "origin.npy", mmap_mode="r")
    turns = np.load(directory / "turns.npy", mmap_mode="r") if (directory / "turns.npy").is_file() else None
    inputs = man.get("inputs", [])
    by_file: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if turns is not None and turns[row] >= 0:
            # tests/test_reasoning.py checks per-turn samples against transformers' prompts.
            result["skipped"]["per-turn sample (--split-turns); verify re-encodes whole conversations"] += 1
            continue
        by_file[int(origin[row, 0])][int(origin[row, 1])].append(row)
    for file_index, lines in sorted(by_file.items()):
        info = inputs[file_index] if file_index < len(inputs) else {"path": f"input #{file_index}"}
        path = _resolve(info["path"], directory)
        if path is None:
            result["skipped"][f"input file not found: {info['path']}"] += sum(map(len, lines.values()))
            continue
        records, sha = read_records(path, set(lines))
        changed = info.get("sha256") not in (None, sha)
        if changed:
            result["warnings"].append(f"{path} changed since the dataset was made (sha256 differs): its records may differ")
        for line, line_rows in sorted(lines.items()):
            for row in line_rows:
                where = {"shard": str(directory), "sample": row, "input": str(path), "line": line}
                if line not in records:
                    result["skipped"]["record not found in its input (the file changed)"] += 1
                    continue
                a, b = int(offsets[row]), int(offsets[row + 1])
                stored = (ids_all[a:b].astype(np.int64).tolist(), mask_all[a:b].astype(np.int64).tolist())
                _compare(where, records[line], stored, reader, reference, changed, result)


def _compare(where: dict, record: bytes, stored: tuple, reader, reference: ReferenceEncoder, changed: bool, result: dict) -> None:
    try:
        normalized = reader.conversation(record.decode("utf-8"))
    except UnicodeDecodeError:
        normalized = {"reject": "invalid_utf8"}
    if "json" not in normalized:
        if changed:
            result["skipped"]["record no longer readable (the input changed)"] += 1
            return
        normalized = None
    try:
        if normalized is None:
            raise ReferenceReject("fastsft's own reader rejects the record now")
        ids, mask, not_checkable = reference.encode(json.loads(normalized["json"]))
    except ReferenceReject as e:
        result["checked"] += 1
        result["different"] += 1
        result["differences"].append({**where, "kind": "reference rejects", "position": None,
                                      "stored_len": len(stored[0]), "reference_len": None, "detail": f"    {e}"})  # fmt: skip
        return
    if mask is None and ids == stored[0]:
        result["ids_only"][not_checkable] += 1
        return
    result["checked"] += 1
    if (ids, mask) == stored:
        result["identical"] += 1
        return
    result["different"] += 1
    kind, at, detail = describe_difference(reference.tokenizer, stored, (ids, mask if mask is not None else stored[1]))
    result["differences"].append(
        {**where, "kind": kind, "position": at, "stored_len": len(stored[0]), "reference_len": len(ids), "detail": detail}
    )


def format_report(result: dict[str, Any], show: int = SHOW_DIFFERENCES) -> str:
    import tokenizers
    import transformers

    engine = f"transformers {transformers.__version__} + tokenizers {tokenizers.__version__}"
    lines = [f"fastsft verify: {result['path']}: {result['sampled']:,} of {plural(result['num_samples'], 'sample')} re-encoded with {engine}"]
    lines += [f"  warning: {w}" for w in dict.fromkeys(result["warnings"])]
    lines += [f"  {name:<10}{result[name]:>8,}" for name in ("checked", "identical", "different")]
    for name, label in (("ids_only", "ids only"), ("skipped", "skipped")):
        counts = result[name]
        if counts or name == "skipped":
            lines.append(f"  {label:<10}{sum(counts.values()):>8,}" + "".join(f"\n    {n:>6,}  {r}" for r, n in counts.items()))
    for d in result["differences"][:show]:
        where = f"sample {d['sample']} ({d['input']}:{d['line']})"
        if d["kind"] == "reference rejects":
            lines.append(f"\n  {where}: stored ({d['stored_len']} tokens) but the reference does not produce it:")
        else:
            lines.append(f"\n  {where}: {'token ids differ' if d['kind'] == 'ids' else 'the mask differs'} at position {d['position']} "
                         f"(stored {d['stored_len']} tokens, reference {d['reference_len']}); [[...]] = trained")  # fmt: skip
        lines.append(d["detail"])
    if len(result["differences"]) > show:
        lines.append(f"\n  ... and {plural(len(result['differences']) - show, 'more different sample')}")
    if result["different"]:
        differ = "differs" if result["different"] == 1 else "differ"
        lines.append(f"DIFFERENT: {result['different']} of {plural(result['checked'], 'checked sample')} {differ} from the reference")
    elif result["checked"] == 1:
        lines.append("OK: the 1 checked sample is identical")
    elif result["checked"]:
        lines.append(f"OK: all {plural(result['checked'], 'checked sample')} are identical")
    return "\n".join(lines)


EPILOG = """\
example:
  fastsft prep assets/corpora/llamafactory_alpaca_en_demo.jsonl.gz \\
      --tokenizer assets/tokenizers/qwen2.5 -o out/ --max-len 2048
  fastsft verify out/ --sample 500 --seed 1

exit status: 0 every checked sample is identical; 1 some sample differs; 2 the dataset, its
tokenizer or its inputs cannot be found (nothing was compared).
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def register_cli(subparsers: Any) -> None:
    """Add the ``verify`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "verify", help="re-encode random samples with transformers and compare ids and masks",
        description="Re-read N random samples from their input files, render them with transformers'\n"
        "apply_chat_template, tokenize with the tokenizers library, draw the mask by fastsft's rule\n"
        "(re-implemented in Python), and compare token ids and loss mask with what is stored.\n"
        "Prints a summary and the first differences, decoded side by side.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("out", metavar="OUT", help="dataset directory written by `fastsft prep` (or a parent of shards)")
    p.add_argument("--sample", type=_positive, default=DEFAULT_SAMPLE, metavar="N",
                   help=f"samples to check, drawn at random over all shards; all when N >= their number (default {DEFAULT_SAMPLE})")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the random draw (default 0)")
    p.add_argument("--tokenizer", metavar="DIR", help="model directory with tokenizer.json, or a hub id in the local "
                   "Hugging Face cache (default: the one the manifest records)")  # fmt: skip
    p.set_defaults(func=verify_main)


def verify_main(args: argparse.Namespace) -> int:
    import sys

    try:
        result = verify(args.out, sample=args.sample, seed=args.seed, tokenizer=args.tokenizer)
    except VerifyUsageError as e:
        print(f"fastsft verify: error: {e}", file=sys.stderr)
        return 2
    print(format_report(result))
    if result["checked"] == 0 and not result["ids_only"] and result["sampled"]:
        print("fastsft verify: error: no sample could be checked (see skipped above)", file=sys.stderr)
        return 2
    return 1 if result["different"] else 0


__all__ = ["ReferenceEncoder", "VerifyUsageError", "describe_difference", "format_report", "read_records", "register_cli", "verify"]
