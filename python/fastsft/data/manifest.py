"""Read and validate the ``manifest.json`` of a prepared dataset (DESIGN §2).

This module only reads: it checks that a directory is a complete dataset (format 1 or 2) whose array
headers agree with what its manifest says (``integrity.check_structure``), and exposes the few
fields the trainer relies on. It does not scan the token arrays (``integrity.check_dataset`` does)
and does not write manifests (the Rust writer does).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputNotFoundError
from .errors import DatasetFormatError
from .integrity import check_structure

FORMAT_VERSION = 2
"""Version 2 adds ``turns.npy`` (per-turn samples, DESIGN §3.1); version 1 is still read."""
READABLE_VERSIONS = (1, 2)
ARRAY_FILES = ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy")
_REQUIRED_KEYS = ("format_version", "num_samples", "num_tokens", "input_ids_dtype", "tokenizer")


@dataclass(frozen=True)
class Manifest:
    """The parts of ``manifest.json`` that readers use; ``raw`` keeps the whole document."""

    path: Path
    """The dataset directory (not the json file)."""
    num_samples: int
    num_tokens: int
    num_trained_tokens: int | None
    input_ids_dtype: str
    tokenizer_sha256: str | None
    """sha256 hex of the ``tokenizer.json`` bytes the data was made with."""
    vocab_size: int | None
    """Vocabulary size including added tokens; ids are all below it."""
    pad_token: str | None
    raw: dict[str, Any] = field(repr=False)


def is_dataset_dir(path: str | Path) -> bool:
    """True when ``path`` holds a ``manifest.json`` (complete datasets only: prep writes it last)."""
    return (Path(path) / "manifest.json").is_file()


def read_manifest(path: str | Path) -> Manifest:
    """Read ``path/manifest.json`` and check it against the array files next to it.

    Only the ``.npy`` headers and file sizes are read, so this is cheap for any size.

    Raises:
        FileNotFoundError: ``path`` has no ``manifest.json`` or misses an array file.
        DatasetFormatError: unknown format version, missing keys, a damaged ``.npy`` header or
            file length, or arrays whose dtype or shape disagree with the manifest.
    """
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise InputNotFoundError(
            f"{path}: no manifest.json; not a prepared dataset (make one with `fastsft prep FILES -o {path}`)"
        )
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{mpath}: invalid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise DatasetFormatError(f"{mpath}: expected a JSON object, found {type(raw).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise DatasetFormatError(f"{mpath}: missing key(s) {', '.join(missing)}")
    if raw["format_version"] not in READABLE_VERSIONS:
        raise DatasetFormatError(
            f"{mpath}: format_version {raw['format_version']!r}; this fastsft reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} "
            "(re-run `fastsft prep` with this version)"
        )
    tok = raw.get("tokenizer") or {}
    try:
        man = _manifest(path, raw, tok)
    except (TypeError, ValueError, AttributeError) as e:
        raise DatasetFormatError(f"{mpath}: a count or the tokenizer entry has the wrong type ({e})") from None
    check_structure(man)
    return man


def _manifest(path: Path, raw: dict[str, Any], tok: dict[str, Any]) -> Manifest:
    return Manifest(
        path=path,
        num_samples=int(raw["num_samples"]),
        num_tokens=int(raw["num_tokens"]),
        num_trained_tokens=(int(raw["num_trained_tokens"]) if "num_trained_tokens" in raw else None),
        input_ids_dtype=str(raw["input_ids_dtype"]),
        tokenizer_sha256=tok.get("sha256"),
        vocab_size=(int(tok["vocab_size"]) if tok.get("vocab_size") is not None else None),
        pad_token=tok.get("pad_token"),
        raw=raw,
    )


def sample_turn(man: Manifest, row: int) -> int | None:
    """The assistant message (0-based) a per-turn sample trains, or None for a whole conversation."""
    if man.raw["format_version"] < 2:
        return None
    turn = int(np.load(man.path / "turns.npy", mmap_mode="r")[row])
    return None if turn < 0 else turn


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (how manifests fingerprint ``tokenizer.json``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
