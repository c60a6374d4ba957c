"""``fastsft inspect``: prepared samples decoded, with the tokens that train marked.

Colour on a terminal, ``[[...]]`` markers when piped, ``<span class="trained">`` in an HTML page;
token ids on request; the input file and line each sample came from.
"""

from __future__ import annotations

import argparse
import html
import os
import secrets
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data.dataset import SFTDataset
from .data.manifest import sample_turn
from .view_decode import (
    ViewError,
    _emit,
    _visible,
    _write,
    check_ids,
    decode_runs,
    load_tokenizer,
    mask_runs,
    open_dataset,
    token_texts,
)
from .wording import plural

_GREEN, _DIM, _RESET = "\x1b[32m", "\x1b[2m", "\x1b[0m"


@dataclass(frozen=True)
class Sample:
    index: int
    ids: np.ndarray
    mask: np.ndarray
    source: str
    """Input file path as recorded in the manifest (or ``file #k`` if it is missing there)."""
    line: int
    shard: str | None
    """Shard directory name when the dataset has several."""
    turn: int | None = None
    """For a per-turn sample (``--split-turns``): the 0-based index of the assistant message it trains."""


def load_sample(ds: SFTDataset, index: int) -> Sample:
    shard, local = ds.locate(index)
    ids, mask = ds.raw(index)
    file_index, line = (int(x) for x in np.load(ds.dirs[shard] / "origin.npy", mmap_mode="r")[local])
    inputs = ds.manifests[shard].raw.get("inputs") or []
    source = str(inputs[file_index]["path"]) if 0 <= file_index < len(inputs) else f"file #{file_index}"
    turn = sample_turn(ds.manifests[shard], local)
    return Sample(index, ids, mask, source, line, ds.dirs[shard].name if len(ds.dirs) > 1 else None, turn)


def choose_indices(n: int, index: int | None, random: int | None, seed: int | None) -> list[int]:
    """The samples to show: ``--index I`` (default 0) or ``--random N`` with ``--seed S``."""
    if n == 0:
        raise ViewError("the dataset has no samples")
    if random is not None:
        if random < 1:
            raise ViewError(f"--random {random}: give how many samples to draw, 1 or more")
        return sorted(np.random.default_rng(seed).choice(n, size=min(random, n), replace=False).tolist())
    if seed is not None:
        raise ViewError(f"--seed {seed}: only used with --random N; add --random N or drop --seed")
    index = 0 if index is None else index
    if not 0 <= index < n:
        raise ViewError(f"--index {index}: the dataset has {plural(n, 'sample')} ({0}..{n - 1})")
    return [index]


def _header(s: Sample, n: int) -> str:
    where = f" ({s.shard})" if s.shard else ""
    trained = int(s.mask.sum())
    share = trained / len(s.ids) if len(s.ids) else 0.0
    return (
        f"sample {s.index:,} of {n:,}{where} | {s.source} line {s.line}"
        + (f", turn of message {s.turn + 1}" if s.turn is not None else "")
        + " | "
        f"{plural(len(s.ids), 'token')}, {trained:,} trained ({share:.1%})"
    )


Run = tuple[bool, list[tuple[str, "int | None"]]]


def sample_runs(tok: Any, s: Sample, ids: bool = False) -> list[Run]:
    """``[(trained, [(text, id), ...]), ...]``: per run, its decoded text (``id`` None), or with
    ``ids`` each of its tokens' own text and id. Both views render from this."""
    if not ids:
        return [(trained, [(text, None)]) for text, trained in decode_runs(tok, s.ids, s.mask)]
    texts, id_list = token_texts(tok, s.ids), s.ids.tolist()
    return [(trained, list(zip(texts[a:b], id_list[a:b]))) for a, b, trained in mask_runs(s.mask)]


def format_sample(tok: Any, s: Sample, n: int, *, color: bool = False, ids: bool = False) -> str:
    """One sample for the terminal: a header line, then the text with trained runs marked.

    Plain (``color=False``), trained runs are wrapped in ``[[`` ``]]``; in colour they are green.
    With ``ids``, each token is shown as ``'text':id``, followed by a space, or a line break when
    the token holds one.
    """
    out = [_header(s, n), "\n"]
    for trained, tokens in sample_runs(tok, s, ids):
        if not ids:
            out.append(_mark(_visible(tokens[0][0]), trained, color))
            continue
        shown = [f"{_visible(repr(t))}:{_DIM}{i}{_RESET}" if color else f"{_visible(repr(t))}:{i}" for t, i in tokens]
        seps = ["\n" if "\n" in t else " " for t, _ in tokens]
        body = "".join(x + sep for x, sep in zip(shown[:-1], seps)) + shown[-1]
        out.append(_mark(body, trained, color) + seps[-1])
    text = "".join(out)
    if ids:
        text = text.rstrip(" ")
    return text if text.endswith("\n") else text + "\n"


def _mark(text: str, trained: bool, color: bool) -> str:
    if not trained:
        return text
    if color:  # re-open the colour after any id's reset
        return _GREEN + text.replace(_RESET, _RESET + _GREEN) + _RESET
    return f"[[{text}]]"


_CSS = """\
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
pre { white-space: pre-wrap; word-break: break-word; font: 13px/1.5 ui-monospace, monospace;
      background: #fafafa; border: 1px solid #ddd; padding: 1em; }
.trained, .key-trained { background: #c9f2c7; }
.tok { border-right: 1px solid #bbb; }
.tok::after { content: attr(data-id); font-size: 65%; color: #888; vertical-align: sub; }
.meta { color: #555; }
"""


def format_html(tok: Any, samples: list[Sample], n: int, title: str, *, ids: bool = False) -> str:
    """A standalone page: one ``<section>`` per sample, trained runs in ``<span class="trained">``.

    With ``ids``, each token is a ``<span class="tok" data-id=...>`` (the id is drawn by CSS, so
    the page text stays the decoded text).
    """
    esc = html.escape
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f"<title>fastsft inspect: {esc(title)}</title>\n<style>\n{_CSS}</style>\n</head>\n<body>\n",
        f"<h1>fastsft inspect: {esc(title)}</h1>\n",
        (
            '<p class="meta"><span class="key-trained">highlighted</span> tokens are trained (loss_mask 1); '
            "the rest are context only.</p>\n"
        ),
    ]
    for s in samples:
        parts.append(f'<section>\n<h2>sample {s.index:,}</h2>\n<p class="meta">{esc(_header(s, n))}</p>\n<pre>')
        for trained, tokens in sample_runs(tok, s, ids):
            body = "".join(
                esc(_visible(t)) if i is None else f'<span class="tok" data-id="{i}" title="id {i}">{esc(_visible(t))}</span>'
                for t, i in tokens
            )
            parts.append(f'<span class="trained">{body}</span>' if trained else body)
        parts.append("</pre>\n</section>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def inspect_main(args: argparse.Namespace) -> int:
    ds = open_dataset(args.out)
    seed = args.seed
    if args.random is not None and seed is None:
        seed = secrets.randbelow(1_000_000)  # printed below, so the draw can be repeated
    indices = choose_indices(len(ds), args.index, args.random, seed)
    tok, warnings = load_tokenizer(ds, args.tokenizer)
    for w in warnings:
        print(f"fastsft inspect: warning: {w}", file=sys.stderr)
    samples = [load_sample(ds, i) for i in indices]
    check_ids(tok, samples, args.tokenizer)
    if args.random is not None and args.seed is None:
        print(f"fastsft inspect: {plural(len(samples), 'random sample')} (repeat with --seed {seed})", file=sys.stderr)
    if args.html:
        page = format_html(tok, samples, len(ds), str(args.out), ids=args.ids)
        _write(args.html, "--html", page)
        print(f"fastsft inspect: wrote {args.html} ({plural(len(samples), 'sample')})")
        return 0
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    _emit("\n".join(format_sample(tok, s, len(ds), color=color, ids=args.ids) for s in samples))
    return 0
