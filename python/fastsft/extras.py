"""Optional dependencies: which ``pip install 'fastsft[EXTRA]'`` brings what a command needs.

``pip install .`` brings numpy only, and with it ``prep``, ``inspect`` (decoding through the
extension) and ``stats`` work. The commands that need more check for it before doing any work and
stop with one line naming the extra (``MissingExtraError``), never with a traceback. The extras
themselves are declared in pyproject.toml; ``tests/test_readme.py`` checks that the two agree.
"""

from __future__ import annotations

import importlib

EXTRAS: dict[str, tuple[str, ...]] = {
    "plot": ("matplotlib",),  # fastsft stats --plot
    "verify": ("transformers", "tokenizers", "jinja2"),  # fastsft verify: the reference engine
}
"""Extra name → the modules it must make importable."""


class MissingExtraError(ImportError):
    """A command needs an optional dependency that is not installed; the message says which extra."""


def missing_extra(extra: str, needed_by: str, missing: list[str] | None = None) -> MissingExtraError:
    """The error for ``needed_by`` (a command or flag) when ``extra``'s modules (or ``missing``) are absent.

    >>> str(missing_extra("plot", "--plot"))
    "--plot needs matplotlib (not installed): pip install 'fastsft[plot]'"
    """
    names = ", ".join(missing or EXTRAS[extra])
    return MissingExtraError(f"{needed_by} needs {names} (not installed): pip install 'fastsft[{extra}]'")


def require(extra: str, needed_by: str) -> None:
    """Raise ``MissingExtraError`` unless every module of ``extra`` imports."""
    missing = []
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise missing_extra(extra, needed_by, missing)
