"""Where a command finds its tokenizer: one set of rules for ``prep``, ``verify``, ``inspect`` and ``train``.

- ``--tokenizer NAME`` (or a model directory): an existing local path is taken as it is given (a
  directory holding ``tokenizer.json``, or that file); anything else is a hub id looked up in the
  local Hugging Face cache only, never downloaded (``hub.py``).
- No ``--tokenizer``, on a prepared dataset: the path its manifest records, which is relative to
  wherever ``prep`` ran. It is tried as given (from the current directory), then beside the dataset,
  beside its parent and beside its grandparent (a shard's dataset), so a dataset moved together
  with its tokenizer still finds it.

Each failure is one :class:`~fastsft.errors.InputNotFoundError` (a ``FileNotFoundError``) saying
what was looked for and what to pass.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputNotFoundError

TOKENIZER_FILE = "tokenizer.json"


def locate_tokenizer(name: str | os.PathLike[str], flag: str = "--tokenizer") -> str:
    """``name`` as given when it exists locally (so what ``prep`` records in the manifest is what the
    user typed), else the directory of the hub id ``name`` in the local Hugging Face cache."""
    given = os.fspath(name)
    if os.path.exists(given):
        return given
    try:
        from .hub import resolve_model_dir

        return os.fspath(resolve_model_dir(given))
    except ImportError:  # huggingface_hub is the interop extra
        raise InputNotFoundError(
            f"{flag} {given}: not a local directory; to use a hub id from the local cache, pip install 'fastsft[interop]'"
        ) from None
    except FileNotFoundError as e:
        raise InputNotFoundError(f"{flag} {e}" if str(e).startswith(given) else str(e)) from None


def recorded_path(recorded: str, dataset: Path) -> Path | None:
    """A path as a manifest records it, found by the rules of the module docstring, or None."""
    p = Path(recorded)
    if p.is_absolute():
        return p if p.exists() else None
    candidates = [p, dataset / p, dataset.parent / p, dataset.parent.parent / p]
    return next((c for c in candidates if c.exists()), None)


def resolve_tokenizer(
    given: str | os.PathLike[str] | None = None,
    *,
    recorded: str | None = None,
    dataset: str | os.PathLike[str] | None = None,
    flag: str = "--tokenizer",
) -> Path:
    """The ``tokenizer.json`` a command reads: ``given`` (``--tokenizer``) when set, else the path a
    dataset's manifest ``recorded``, found from ``dataset`` (the rules of the module docstring).

    >>> resolve_tokenizer("assets/tokenizers/qwen2.5")            # doctest: +SKIP
    PosixPath('assets/tokenizers/qwen2.5/tokenizer.json')
    >>> resolve_tokenizer(recorded="assets/tokenizers/qwen2.5/tokenizer.json", dataset="out/demo")  # doctest: +SKIP
    PosixPath('assets/tokenizers/qwen2.5/tokenizer.json')
    """
    if given is not None:
        path = Path(locate_tokenizer(given, flag))
        path = path / TOKENIZER_FILE if path.is_dir() else path
        if not path.is_file():
            raise InputNotFoundError(
                f"{flag} {os.fspath(given)}: no {TOKENIZER_FILE} there; give the model directory that holds it"
            )
        return path
    where = Path(dataset) if dataset is not None else Path.cwd()
    found = recorded_path(recorded, where) if recorded else None
    if found is not None and found.is_dir():
        found = found / TOKENIZER_FILE
    if found is None or not found.is_file():
        raise InputNotFoundError(
            f"{where}: the tokenizer it was made with ({recorded or 'not recorded in manifest.json'}) is not found; "
            f"pass {flag} DIR, the model directory with the {TOKENIZER_FILE} the data was made with"
        )
    return found


__all__ = ["TOKENIZER_FILE", "locate_tokenizer", "recorded_path", "resolve_tokenizer"]
