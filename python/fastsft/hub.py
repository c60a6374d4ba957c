"""Hub ids → local directories, through the local Hugging Face cache only (never a download).

``--tokenizer Qwen/Qwen2.5-7B-Instruct`` (and ``--model`` in ``train``) should work for anyone who
already has the model in their cache (``HF_HOME`` / ``HF_HUB_CACHE``), as ``transformers`` does,
without fastsft reaching the network: preparation runs on cluster nodes that often have none, and a
silent download would make a run depend on what the hub holds today. So resolution is
``huggingface_hub.snapshot_download(local_files_only=True)``, the hub's own cache logic (``refs/``,
``snapshots/<commit>/``, incomplete-snapshot checks), and an id that is not cached is a
``FileNotFoundError`` that prints the command that downloads it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from fastsft.errors import InputNotFoundError

__all__ = ["MODEL_FILES", "TOKENIZER_FILES", "TOKENIZER_PATTERNS", "resolve_model_dir"]

#: What a tokenizer needs from a hub snapshot (checked for completeness when the cache lists it).
TOKENIZER_PATTERNS: tuple[str, ...] = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.*",
    "config.json",
)
#: Files that must be there for each use.
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json",)
MODEL_FILES: tuple[str, ...] = ("config.json", "tokenizer.json")


def _looks_like_path(name: str) -> bool:
    """A name no hub id can have: absolute, relative with ./ or ~, or more than one slash."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def _cache_dir() -> str | None:
    """The hub cache as the environment names it now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return os.environ["HUGGINGFACE_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default (~/.cache/huggingface/hub)


def download_hint(repo_id: str, *, model: bool = False, revision: str | None = None) -> str:
    """The shell command that puts what fastsft needs of ``repo_id`` into the cache."""
    cmd = ["hf", "download", repo_id]
    if revision:
        cmd += ["--revision", revision]
    if not model:
        cmd += ["--include", "*.json", "--include", "*.jinja"]
    return " ".join(shlex.quote(c) for c in cmd)


def resolve_model_dir(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    model: bool = False,
    required: Sequence[str] | None = None,
) -> Path:
    """A local directory for ``name_or_path``: the directory itself, or the cached hub snapshot.

    - An existing local path is returned as it is (the caller checks its contents).
    - Otherwise ``name_or_path`` is a hub id (``Qwen/Qwen2.5-7B-Instruct``), looked up in the local
      Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)
      at ``revision`` (default ``main``); never downloaded. ``model=False`` (``--tokenizer``) needs
      the tokenizer files only; ``model=True`` (``train --model``) the whole snapshot.
    - ``required`` files (default ``tokenizer.json``, plus ``config.json`` for a model) must be in
      the snapshot.

    Raises ``FileNotFoundError`` naming what was looked for, where, and the ``hf download`` command
    that fetches it.

    >>> resolve_model_dir("assets/tokenizers/qwen2.5")   # doctest: +SKIP
    PosixPath('assets/tokenizers/qwen2.5')
    >>> resolve_model_dir("Qwen/Qwen2.5-7B-Instruct")    # doctest: +SKIP
    PosixPath('/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/a09a3545...')
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        return path
    if not name or _looks_like_path(name):
        raise InputNotFoundError(f"{name}: no such file or directory")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, IncompleteSnapshotError, LocalEntryNotFoundError

    cache = _cache_dir()
    where = cache or "the default Hugging Face cache (~/.cache/huggingface/hub)"
    hint = download_hint(name, model=model, revision=revision)
    try:
        snapshot = snapshot_download(
            name,
            revision=revision,
            cache_dir=cache,
            local_files_only=True,
            allow_patterns=None if model else list(TOKENIZER_PATTERNS),
        )
    except HFValidationError as err:
        raise InputNotFoundError(f"{name}: not a local directory, and not a hub id ({err})") from None
    except LocalEntryNotFoundError as err:
        # Not cached at that revision, or (IncompleteSnapshotError, a subclass) cached with files
        # missing according to the cache's own listing of the repo.
        detail = "is incomplete" if isinstance(err, IncompleteSnapshotError) else "is not"
        raise InputNotFoundError(
            f"{name}: not a local directory, and the hub id {name}"
            f"{'@' + revision if revision else ''} {detail} in {where}. fastsft never downloads; "
            f"fetch it first with `{hint}` (with the same HF_HOME/HF_HUB_CACHE), or pass a local directory"
        ) from None

    snapshot_dir = Path(snapshot)
    needed = tuple(required) if required is not None else (MODEL_FILES if model else TOKENIZER_FILES)
    missing = [f for f in needed if not (snapshot_dir / f).exists()]
    if missing:
        raise InputNotFoundError(
            f"{name}: the cached snapshot {snapshot_dir} has no {', '.join(missing)}; "
            f"fetch it with `{hint}` (with the same HF_HOME/HF_HUB_CACHE), or pass a local directory"
        )
    return snapshot_dir
