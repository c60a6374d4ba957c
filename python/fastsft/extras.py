"""Optional dependencies: which ``pip install 'fastsft[EXTRA]'`` brings what a command needs.

``pip install .`` brings numpy only, and with it ``prep``, ``inspect`` (decoding through the
extension) and ``stats`` work. The commands that need more check for it before doing any work and
stop with one line naming the extra (``MissingExtraError``), never with a traceback. The extras
themselves are declared in pyproject.toml; ``tests/test_readme.py`` checks that the two agree.
"""

from __future__ import annotations

import importlib

from fastsft.errors import MissingExtraError  # defined with every other error; imported from here too

EXTRAS: dict[str, tuple[str, ...]] = {
    "plot": ("matplotlib",),  # fastsft stats --plot
    "verify": ("transformers", "tokenizers", "jinja2"),  # fastsft verify: the reference engine
    "train": ("torch", "transformers", "accelerate", "deepspeed", "peft", "safetensors"),  # fastsft train, tiny-model
    "interop": ("huggingface_hub", "datasets", "pyarrow"),  # hub ids, to_hf_dataset
}
"""Extra name → the modules it must make importable."""

INSTALL = {"train": "pip install torch && pip install 'fastsft[train]'"}
"""How to install an extra, where plain ``pip install 'fastsft[EXTRA]'`` is not enough: DeepSpeed's
build imports torch, so torch goes first (README: `fastsft train`)."""


def missing_extra(extra: str, needed_by: str, missing: list[str] | None = None) -> MissingExtraError:
    """The error for ``needed_by`` (a command or flag) when ``extra``'s modules (or ``missing``) are absent.

    >>> str(missing_extra("plot", "--plot"))
    "--plot needs matplotlib (not installed): pip install 'fastsft[plot]'"
    """
    names = ", ".join(missing or EXTRAS[extra])
    install = INSTALL.get(extra, f"pip install 'fastsft[{extra}]'")
    return MissingExtraError(f"{needed_by} needs {names} (not installed): {install}")


def extra_for(error: ModuleNotFoundError) -> str | None:
    """The extra that provides the module ``error`` failed to import, if one does.

    The command line's safety net: an import deep inside a command (torch in ``tiny-model``) becomes
    the same one-line error as a checked one.
    """
    top = (error.name or "").split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


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
