"""``fastsft inspect`` and ``fastsft stats``: look at prepared data before training on it.

- ``inspect``: decode samples and show which tokens train (colour on a terminal, ``[[...]]``
  markers when piped, ``<span class="trained">`` in an HTML page), with token ids on request and
  the input file and line each sample came from.
- ``stats``: sample and token counts, length percentiles, truncations, rejects by reason, the fill
  that packing would reach, and a length histogram (matplotlib, imported only for ``--plot``).

This module only reads datasets (through ``fastsft.data``); it never writes one. Decoding goes
through the extension's own tokenizer (``fastsft._core.TokenDecoder``, the ``tokenizers`` crate that
encoded the data), so ``inspect`` needs no Python tokenizer package.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.dataset import SFTDataset, resolve_dataset_dirs
from .errors import UsageError
from .data.manifest import read_manifest, sample_turn, sha256_file
from .data.packing import pack
from .extras import missing_extra
from .wording import plural

REPLACEMENT = "\ufffd"
DECODE_CONTEXT = 8
"""Tokens decoded before a run boundary to find where the boundary falls in the text: enough to
start outside a character split over tokens (4 bytes at most), and to keep decoders that strip the
leading space of a decode's first token (Metaspace: Llama 2, Mistral) from eating a real space."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all C0/C1 controls but \t and \n
_GREEN, _DIM, _RESET = "\x1b[32m", "\x1b[2m", "\x1b[0m"


class ViewError(UsageError):
    """A flag or dataset that ``inspect``/``stats`` cannot work with; the message names the fix."""


def _visible(text: str) -> str:
    """Control characters as ``\\x1b`` escapes: data must not drive the terminal (or break HTML)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def open_dataset(out: str | os.PathLike) -> SFTDataset:
    """The dataset (or parent of shard directories) at ``out``, with an error that says what to run."""
    try:
        return SFTDataset(out)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"OUT {e}; give the directory written by `fastsft prep FILES --tokenizer DIR -o {out}`"
        ) from None


# -- tokenizer and decoding -------------------------------------------------------------------------


def load_tokenizer(ds: SFTDataset, override: str | None = None) -> tuple[Any, list[str]]:
    """``(TokenDecoder, warnings)`` for decoding ``ds``.

    ``override`` (``--tokenizer``) is a model directory or a ``tokenizer.json``; without it, the
    path recorded in the manifest is used (relative paths are relative to where prep ran). A
    tokenizer whose sha256 differs from the manifest's is used with a warning; one too small for
    the ids shown is refused by ``check_ids``.
    """
    from ._core import TokenDecoder

    recorded = (ds.manifests[0].raw.get("tokenizer") or {}).get("path")
    if override is not None:
        path = Path(override)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ViewError(f"--tokenizer {override}: no tokenizer.json there; give the model directory that holds it")
    else:
        if not recorded or not Path(recorded).is_file():
            raise ViewError(
                f"the dataset's tokenizer {recorded or '(not recorded)'} (manifest.json) is not found from {os.getcwd()}; "
                "pass --tokenizer DIR, the model directory with the tokenizer.json the data was made with"
            )
        path = Path(recorded)
    warnings = []
    want = ds.tokenizer_sha256
    got = sha256_file(path)
    if want and got != want:
        flag = f"--tokenizer {override}" if override is not None else f"tokenizer {path}"
        warnings.append(
            f"{flag}: sha256 {got[:12]}… differs from the dataset's {want[:12]}… (manifest.json); "
            "decoded text may be wrong: pass --tokenizer DIR with the tokenizer the data was made with"
        )
    return TokenDecoder(str(path)), warnings


def check_ids(tok: Any, samples: list[Sample], override: str | None) -> None:
    """Refuse a tokenizer too small for the ids shown: it would decode them to nothing, silently."""
    size = tok.get_vocab_size(with_added_tokens=True)
    top = max((int(s.ids.max()) for s in samples if len(s.ids)), default=0)
    if top >= size:
        which = f"--tokenizer {override}" if override is not None else "the dataset's tokenizer"
        raise ViewError(
            f"{which} has {size:,} tokens but the data holds id {top:,}; pass --tokenizer DIR with the "
            "tokenizer the data was made with"
        )


def mask_runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """``[(start, end, trained), ...]``: maximal runs of equal mask values.

    >>> mask_runs(np.array([0, 0, 1, 1, 1, 0], np.uint8))
    [(0, 2, False), (2, 5, True), (5, 6, False)]
    """
    m = np.asarray(mask).astype(bool)
    if m.size == 0:
        return []
    cuts = (np.flatnonzero(m[1:] != m[:-1]) + 1).tolist()
    return [(s, e, bool(m[s])) for s, e in zip([0, *cuts], [*cuts, m.size])]


def decode_runs(tok: Any, ids: np.ndarray, mask: np.ndarray) -> list[tuple[str, bool]]:
    """Split the decoded sample into its runs of equal mask values: ``[(text, trained), ...]``.

    Decoding token by token is wrong: byte-level BPE splits characters over tokens (請翻譯 is
    ``請 翻 èŃ ¯``), and Metaspace decoders (Llama 2, Mistral) drop the space of a decode's first
    token. So the whole sample is decoded once, and each run boundary is mapped to a character
    offset in that text; the runs' texts concatenate to exactly the sample's decode. A boundary
    inside a character moves forward to the character's end (the character goes to the earlier run).
    """
    ids = np.asarray(ids).tolist()
    mask = np.asarray(mask)

    def dec(a: int, b: int) -> str:
        return tok.decode(ids[a:b], skip_special_tokens=False)

    full = dec(0, len(ids))
    runs = mask_runs(mask)
    pieces: list[tuple[str, bool]] = []
    p, cp = 0, 0  # the last cut: token index, and its character offset in `full`
    for k, (_, end, _) in enumerate(runs):
        if end == len(ids):
            cut: tuple[int, int] | None = (end, len(full))
        else:
            cut = _clean_cut(dec, full, p, cp, end, runs[k + 1][1])
        if cut is None:  # no character ends before the next run does: show the two as one
            continue
        text, trained = full[cp : cut[1]], bool(mask[p])
        if pieces and pieces[-1][1] == trained:  # the run between was absorbed: join its neighbours
            text = pieces.pop()[0] + text
        pieces.append((text, trained))
        p, cp = cut
    return pieces


def _clean_cut(dec: Any, full: str, p: int, cp: int, start: int, limit: int) -> tuple[int, int] | None:
    """``(b, offset)`` of the first token boundary ``b`` in ``[start, limit)`` that falls between
    characters, given the previous cut ``p`` at offset ``cp``.

    Fast path: decode ``[p - DECODE_CONTEXT, b)`` and accept the text added since ``p`` if it is what
    ``full`` holds there. Otherwise (a window that starts inside a character, a byte-fallback run)
    decode the whole prefix ``[0, b)``: ``b`` is clean when that is a prefix of ``full``.
    """
    lo = max(0, p - DECODE_CONTEXT)
    w0 = dec(lo, p)
    for b in range(start, limit):
        w1 = dec(lo, b)
        if w1.startswith(w0):
            added = w1[len(w0) :]
            if not added.endswith(REPLACEMENT) and full.startswith(added, cp):
                return b, cp + len(added)
        prefix = dec(0, b)
        if full.startswith(prefix):
            return b, len(prefix)
    return None


def token_texts(tok: Any, ids: np.ndarray) -> list[str]:
    """Each token's own text: its decode, or its raw token string when it is part of a character."""
    out = []
    for i in np.asarray(ids).tolist():
        text = tok.decode([i], skip_special_tokens=False)
        out.append((tok.id_to_token(i) or text) if REPLACEMENT in text else text)
    return out


# -- inspect ----------------------------------------------------------------------------------------


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
                esc(_visible(t))
                if i is None
                else f'<span class="tok" data-id="{i}" title="id {i}">{esc(_visible(t))}</span>'
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


def _emit(text: str) -> None:
    """Print, and stay quiet when the reader has gone (``fastsft inspect OUT | head``)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _write(path: str, flag: str, text: str) -> None:
    parent = Path(path).parent
    if not parent.is_dir():
        raise ViewError(f"{flag} {path}: directory {parent} does not exist; create it or write elsewhere")
    Path(path).write_text(text, encoding="utf-8")


# -- stats ------------------------------------------------------------------------------------------

STATS_CHUNK_TOKENS = 1 << 22
"""Tokens of ``loss_mask`` summed at a time: memory stays ~32 MiB whatever the dataset size."""
PERCENTILES = (50, 90, 99)


@dataclass
class PackFill:
    capacity: int
    packs: int
    fill: float | None
    """Packed tokens / (packs x capacity), over the samples that fit; None when none fit."""
    too_long: int
    """Samples longer than ``capacity`` (left out: packing would refuse them)."""
    too_long_tokens: int


@dataclass
class Stats:
    out: str
    lengths: np.ndarray
    trained: np.ndarray
    """Trained tokens per sample."""
    max_len: int | None
    counts: dict[str, Any] = field(default_factory=dict)
    """Summed ``counts`` of the manifests: read, rejected, rejected_by_reason, truncated."""
    pack: PackFill | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_trained(self) -> int:
        return int(self.trained.sum())


def trained_per_sample(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Trained tokens of every sample, reading ``mask`` in chunks of whole samples."""
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.int64)
    i = 0
    while i < n:
        j = int(np.searchsorted(offsets, offsets[i] + STATS_CHUNK_TOKENS, side="right")) - 1
        j = min(max(j, i + 1), n)
        lo = int(offsets[i])
        cs = np.concatenate([[0], np.cumsum(mask[lo : int(offsets[j])], dtype=np.int64)])
        out[i:j] = cs[offsets[i + 1 : j + 1] - lo] - cs[offsets[i:j] - lo]
        i = j
    return out


def pack_fill(lengths: np.ndarray, capacity: int) -> PackFill:
    """What packing ``lengths`` into ``capacity``-token packs reaches (best-fit decreasing).

    Samples over ``capacity`` are counted, not packed. Example::

        pack_fill([5, 4, 3, 2, 1, 7], 6)  ->  3 packs, fill 15 / 18 = 0.833, 1 too long (7 tokens)
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    over = lengths > capacity
    fits = lengths[~over]
    packs = pack(fits, capacity)
    return PackFill(
        capacity=capacity,
        packs=len(packs),
        fill=packs.fill_ratio if len(fits) else None,
        too_long=int(over.sum()),
        too_long_tokens=int(lengths[over].sum()),
    )


def compute_stats(out: str | os.PathLike, pack_len: int | None = None) -> Stats:
    """Stats of a dataset or of all shards under ``out``; ``pack_len`` defaults to the longest sample
    (what ``fastsft train --packing`` uses without ``--pack-len``)."""
    if pack_len is not None and pack_len <= 0:
        raise ViewError(f"--pack-len {pack_len}: must be a positive number of tokens")
    try:
        dirs = resolve_dataset_dirs(out)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"OUT {e}; give the directory written by `fastsft prep ... -o {out}`") from None
    lengths, trained, max_lens = [], [], set()
    counts: dict[str, Any] = {"read": 0, "rejected": 0, "truncated": 0, "split_records": 0, "split_samples": 0, "rejected_by_reason": {}}
    for d in dirs:
        man = read_manifest(d)
        offsets = np.load(d / "offsets.npy")
        lengths.append(np.diff(offsets))
        trained.append(trained_per_sample(np.load(d / "loss_mask.npy", mmap_mode="r"), offsets))
        c = man.raw.get("counts") or {}
        for key in ("read", "rejected", "truncated", "split_records", "split_samples"):
            counts[key] += int(c.get(key, 0))
        for reason, k in (c.get("rejected_by_reason") or {}).items():
            counts["rejected_by_reason"][reason] = counts["rejected_by_reason"].get(reason, 0) + int(k)
        max_lens.add((man.raw.get("options") or {}).get("max_len"))
    st = Stats(
        out=str(out),
        lengths=np.concatenate(lengths),
        trained=np.concatenate(trained),
        max_len=max_lens.pop() if len(max_lens) == 1 else None,
        counts=counts,
    )
    if len(st.lengths):
        st.pack = pack_fill(st.lengths, pack_len or int(st.lengths.max()))
    return st


def percentiles(values: np.ndarray) -> list[int]:
    """p50, p90, p99 (nearest rank: p% of samples have at most this many tokens) and the max."""
    if len(values) == 0:
        return [0] * (len(PERCENTILES) + 1)
    ps = np.percentile(values, PERCENTILES, method="inverted_cdf")
    return [int(p) for p in ps] + [int(values.max())]


def format_stats(st: Stats, pack_len_given: bool = False) -> str:
    n, c = len(st.lengths), st.counts
    share = st.num_trained / st.num_tokens if st.num_tokens else 0.0
    head = "".join(f"{'p' + str(p):>10}" for p in PERCENTILES) + f"{'max':>10}"

    def row(values: np.ndarray) -> str:
        return "".join(f"{x:>10,}" for x in percentiles(values))

    lines = [
        f"fastsft stats: {st.out}",
        f"  samples         {n:>14,}" + (f"   (read {c['read']:,}, rejected {c['rejected']:,})" if c["read"] else ""),
        f"  tokens          {st.num_tokens:>14,}",
        f"  trained tokens  {st.num_trained:>14,}   ({share:.1%} of tokens)",
        f"  {'per sample':<16}{head}",
        f"    {'tokens':<14}{row(st.lengths)}",
        f"    {'trained':<14}{row(st.trained)}",
        f"  truncated       {c['truncated']:>14,}" + (f"   (at --max-len {st.max_len:,})" if st.max_len else ""),
    ]
    if c.get("split_records"):
        records = c["split_records"]
        lines.append(
            f"  per-turn        {c['split_samples']:>14,}   (samples from {records:,} record{'s' * (records != 1)} split "
            "into turns, --split-turns)"
        )
    reasons = ", ".join(
        f"{r} {k:,}" for r, k in sorted(c["rejected_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
    )
    lines.append(
        f"  rejected        {c['rejected']:>14,}" + (f"   ({reasons}; details in rejects.jsonl)" if reasons else "")
    )
    if st.pack is not None:
        p = st.pack
        how = "" if pack_len_given else ", the longest sample (set it with --pack-len L)"
        fill = f"fill {p.fill:.1%}" if p.fill is not None else "no sample fits"
        lines.append(f"  packing at {p.capacity:,}{how}: {plural(p.packs, 'pack')}, {fill}")
        if p.too_long:
            lines.append(
                f"    {plural(p.too_long, 'sample')} ({plural(p.too_long_tokens, 'token')}) "
                f"{'is' if p.too_long == 1 else 'are'} longer than --pack-len {p.capacity:,} "
                f"and left out: raise --pack-len or prepare with --max-len {p.capacity:,}"
            )
    return "\n".join(lines)


def _matplotlib_figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_extra("plot", "--plot") from None
    return Figure


def plot_lengths(st: Stats, path: str, Figure: Any = None) -> None:
    """Histogram of tokens and trained tokens per sample; written with matplotlib's Agg canvas
    (``Figure``, no pyplot), so no display or global backend is touched."""
    Figure = Figure or _matplotlib_figure()
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    top = int(st.lengths.max()) if len(st.lengths) else 1
    bins = np.linspace(0, max(top, 1), 61)
    ax.hist(st.lengths, bins=bins, alpha=0.6, label=f"tokens ({st.num_tokens:,})", color="#4c72b0")
    ax.hist(st.trained, bins=bins, alpha=0.6, label=f"trained tokens ({st.num_trained:,})", color="#55a868")
    if st.max_len:
        ax.axvline(st.max_len, color="#c44e52", linestyle="--", linewidth=1, label=f"--max-len {st.max_len:,}")
    ax.set_xlabel("tokens per sample")
    ax.set_ylabel("samples")
    ax.set_title(f"{st.out}: {plural(len(st.lengths), 'sample')}")
    ax.legend()
    _check_plot_path(path, Figure)
    fig.savefig(path)


def _check_plot_path(path: str, Figure: Any) -> None:
    supported = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in supported:
        kinds = ", ".join(sorted(supported))
        raise ViewError(f"--plot {path}: unknown image type {suffix!r}; use a .png file (or {kinds})")
    parent = Path(path).parent
    if not parent.is_dir():
        raise ViewError(f"--plot {path}: directory {parent} does not exist; create it or write elsewhere")


def stats_main(args: argparse.Namespace) -> int:
    Figure = None
    if args.plot:  # fail before the work, not after
        Figure = _matplotlib_figure()
        _check_plot_path(args.plot, Figure)
    st = compute_stats(args.out, args.pack_len)
    if args.plot:
        plot_lengths(st, args.plot, Figure)
    text = format_stats(st, pack_len_given=args.pack_len is not None) + "\n"
    _emit(text + (f"  plot            {args.plot}\n" if args.plot else ""))
    return 0


# -- command line -----------------------------------------------------------------------------------

INSPECT_EPILOG = """\
examples:
  fastsft prep assets/corpora/llamafactory_glaive_toolcall_en_demo.jsonl.gz \\
      --tokenizer assets/tokenizers/qwen2.5 -o out/ --max-len 2048
  fastsft inspect out/ --index 3              # sample 3; trained runs in [[...]] (green on a terminal)
  fastsft inspect out/ --random 5 --seed 0    # 5 random samples, reproducibly
  fastsft inspect out/ --index 3 --ids        # every token as 'text':id
  fastsft inspect out/ --random 20 --html view.html

output of `fastsft inspect out/ --index 3 | less` (lines 1 and 20-30 of 54):
  sample 3 of 299 | assets/corpora/llamafactory_glaive_toolcall_en_demo.jsonl.gz line 4 | 595 tokens, 148 trained (24.9%)
  I need to calculate the area of a rectangle. The length is 5 units and the breadth is 3 units.<|im_end|>
  <|im_start|>assistant
  [[<tool_call>
  {"name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [5, 3]}}
  </tool_call><|im_end|>]]
  <|im_start|>user
  <tool_response>
  {"area": 15}
  </tool_response><|im_end|>
  <|im_start|>assistant
  [[The area of the rectangle with length 5 units and breadth 3 units is 15 square units.<|im_end|>]]
"""

STATS_EPILOG = """\
examples:
  fastsft stats out/                              # counts, length percentiles, rejects
  fastsft stats out/ --pack-len 4096 --plot lengths.png
  fastsft stats shards/                           # a parent of shard directories: all of them

output of `fastsft stats out/ --pack-len 4096` (out/ as in `fastsft inspect --help`):
  fastsft stats: out/
    samples                    299   (read 300, rejected 1)
    tokens                 163,419
    trained tokens          84,946   (52.0% of tokens)
    per sample             p50       p90       p99       max
      tokens               454       907     1,577     1,910
      trained              122       754     1,368     1,708
    truncated                    0   (at --max-len 2,048)
    rejected                     1   (no_trained_tokens 1; details in rejects.jsonl)
    packing at 4,096: 41 packs, fill 97.3%
"""


def register_cli(subparsers: Any) -> None:
    """Add the ``inspect`` and ``stats`` subcommands to an argparse ``subparsers`` object."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "inspect", help="show samples with their trained tokens highlighted",
        description="Decode prepared samples and mark the tokens that train (loss_mask 1): green on a "
        "terminal, [[...]] when piped, <span class=\"trained\"> with --html. Shows the input file and line "
        "of each sample.", epilog=INSPECT_EPILOG, formatter_class=fmt,
    )  # fmt: skip
    p.add_argument("out", metavar="OUT", help="dataset directory written by `fastsft prep` (or a parent of shards)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, metavar="I", help="sample to show (default 0)")
    which.add_argument("--random", type=int, metavar="N", help="show N samples drawn at random")
    p.add_argument("--seed", type=int, metavar="S", help="seed for --random (default: fresh, printed)")
    p.add_argument("--ids", action="store_true", help="show token boundaries and ids ('text':id)")
    p.add_argument("--html", metavar="FILE", help="write a standalone HTML page instead of printing")
    p.add_argument("--tokenizer", metavar="DIR", help="model directory with tokenizer.json (default: the manifest's)")
    p.set_defaults(func=inspect_main)

    s = subparsers.add_parser(
        "stats", help="sample, token and reject counts, length percentiles, packing fill",
        description="Counts, length percentiles (tokens and trained tokens per sample), truncations, "
        "rejects by reason, and the fill that packing would reach.", epilog=STATS_EPILOG, formatter_class=fmt,
    )  # fmt: skip
    s.add_argument("out", metavar="OUT", help="dataset directory written by `fastsft prep` (or a parent of shards)")
    s.add_argument("--pack-len", type=int, metavar="L", help="pack capacity in tokens (default: the longest sample)")
    s.add_argument("--plot", metavar="FILE.png", help="write a histogram of sample lengths (needs matplotlib: pip install 'fastsft[plot]')")
    s.set_defaults(func=stats_main)


__all__ = [
    "compute_stats", "decode_runs", "format_html", "format_sample", "format_stats", "load_sample",
    "load_tokenizer", "mask_runs", "open_dataset", "pack_fill", "plot_lengths", "register_cli",
]  # fmt: skip
