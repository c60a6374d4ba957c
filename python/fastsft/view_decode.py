"""What ``fastsft inspect`` and ``fastsft stats`` share: the dataset, the tokenizer, and decoding.

Decoding goes through the extension's own tokenizer (``fastsft._core.TokenDecoder``, the
``tokenizers`` crate that encoded the data), so ``inspect`` needs no Python tokenizer package.
Samples are decoded by runs of equal mask values, never token by token (``decode_runs``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data.dataset import SFTDataset
from .data.manifest import sha256_file
from .errors import InputError, InputNotFoundError, UsageError
from .tokenizer_path import resolve_tokenizer

if TYPE_CHECKING:
    from .view_inspect import Sample

REPLACEMENT = "\ufffd"
DECODE_CONTEXT = 8
"""Tokens decoded before a run boundary to find where the boundary falls in the text: enough to
start outside a character split over tokens (4 bytes at most), and to keep decoders that strip the
leading space of a decode's first token (Metaspace: Llama 2, Mistral) from eating a real space."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all C0/C1 controls but \t and \n


class ViewError(UsageError):
    """A flag or dataset that ``inspect``/``stats`` cannot work with; the message names the fix."""


def _visible(text: str) -> str:
    """Control characters as ``\\x1b`` escapes: data must not drive the terminal (or break HTML)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def open_dataset(out: str | os.PathLike[str]) -> SFTDataset:
    """The dataset (or parent of shard directories) at ``out``, with an error that says what to run."""
    try:
        return SFTDataset(out)
    except InputNotFoundError as e:
        raise InputNotFoundError(
            f"OUT {e}; give the directory written by `fastsft prep FILES --tokenizer DIR -o {out}`"
        ) from None


# -- tokenizer and decoding -------------------------------------------------------------------------


def load_tokenizer(ds: SFTDataset, override: str | None = None) -> tuple[Any, list[str]]:
    """``(TokenDecoder, warnings)`` for decoding ``ds``.

    ``override`` (``--tokenizer``) is a model directory, a ``tokenizer.json`` or a cached hub id;
    without it, the path recorded in the manifest is used (``tokenizer_path.py`` says where it is
    looked for). A
    tokenizer whose sha256 differs from the manifest's is used with a warning; one too small for
    the ids shown is refused by ``check_ids``.
    """
    from ._core import TokenDecoder

    recorded = (ds.manifests[0].raw.get("tokenizer") or {}).get("path")
    try:
        path = resolve_tokenizer(override, recorded=recorded, dataset=ds.dirs[0])
    except InputError as e:
        raise ViewError(str(e)) from None
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
