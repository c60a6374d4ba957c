"""Every error fastsft raises, one class per kind of failure, and the exit code the CLI gives it.

All derive from :class:`FastSFTError`, so ``except fastsft.FastSFTError`` catches whatever fastsft
itself reports and nothing else. Each kind also derives from the built-in exception it always was
(``ValueError`` for bad options and bad data, ``FileNotFoundError``, ``FileExistsError``,
``OSError``, ``ImportError``), so code that caught those keeps working.

The Rust core raises these very classes (``rust/py_errors.rs`` names them here), with the
attributes a caller needs to act without parsing a message: a strict reject's ``file``, ``line``
and ``reason``; a reject-fraction failure's ``counts``.

Exit codes of the ``fastsft`` command (the README's "Exit codes" table is this list):

====  ==========================================================================================
0     done; ``verify``/``check``: every checked sample is identical
1     ``verify``/``check``: some sample differs (a finding, not an error); also any traceback,
      which is a bug in fastsft or a library
2     usage: a bad option, argument or combination (argparse's own code), or a missing extra
3     input: a corpus, tokenizer, template, dataset or model that is missing, unreadable or invalid
4     rejects: ``--strict`` met a rejected record, or more were rejected than ``--max-reject-frac``
5     output: the output exists (pass ``--overwrite``) or cannot be written
130   interrupted (Ctrl-C); nothing partial is left at the output path
====  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_REJECTS = 4
EXIT_OUTPUT = 5
EXIT_INTERRUPTED = 130


class FastSFTError(Exception):
    """Base of every error fastsft reports. ``exit_code`` is what ``fastsft`` exits with."""

    exit_code = EXIT_INPUT


class UsageError(FastSFTError, ValueError):
    """An option, argument or combination of them that fastsft cannot run with."""

    exit_code = EXIT_USAGE


class MissingExtraError(FastSFTError, ImportError):
    """A command needs an optional package that is not installed; the message says which extra."""

    exit_code = EXIT_USAGE


class InputError(FastSFTError, ValueError):
    """An input file is not what it should be: bad format, unknown schema, undecodable."""

    exit_code = EXIT_INPUT


class InputNotFoundError(InputError, FileNotFoundError):
    """An input path (corpus, tokenizer, dataset, model) does not exist."""


class CorruptInputError(InputError):
    """An input cannot be read to the end: truncated or corrupt compressed data."""


class TokenizerError(InputError):
    """A tokenizer cannot be loaded or used."""


class TemplateError(InputError):
    """A chat template cannot be parsed or rendered. ``template`` names it when known."""

    def __init__(self, message: str, template: str | None = None):
        super().__init__(message)
        self.template = template


class DatasetFormatError(InputError):
    """A directory is not a valid prepared dataset: a missing or damaged file, a wrong version, or
    arrays that disagree with ``manifest.json``."""


class FileAccessError(FastSFTError, OSError):
    """A file could not be read or written for a reason of the system (permissions, disk full)."""

    exit_code = EXIT_OUTPUT


class OutputExistsError(FileAccessError, FileExistsError):
    """The output path exists and ``--overwrite`` was not given."""


class RejectError(FastSFTError, ValueError):
    """The corpus did not pass the bar the run was given for rejected records."""

    exit_code = EXIT_REJECTS


class StrictRejectError(RejectError):
    """``--strict`` met a rejected record: where (``file``, ``line``) and why (``reason``, ``detail``)."""

    def __init__(self, message: str, file: str = "", line: int = 0, reason: str = "", detail: str = ""):
        super().__init__(message)
        self.file = file
        self.line = line
        self.reason = reason
        self.detail = detail


class TooManyRejectsError(RejectError):
    """More records were rejected than allowed. ``counts`` maps each reject reason to its count."""

    def __init__(self, message: str, counts: Mapping[str, int] | None = None, read: int = 0):
        super().__init__(message)
        self.counts = dict(counts or {})
        self.read = read


def exit_code_for(error: BaseException) -> int | None:
    """The exit code for an error fastsft reports as one line, or None for a bug (a traceback)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, FastSFTError):
        return error.exit_code
    return None


__all__ = [
    "EXIT_DIFFERENT",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_REJECTS",
    "EXIT_USAGE",
    "CorruptInputError",
    "DatasetFormatError",
    "FastSFTError",
    "FileAccessError",
    "InputError",
    "InputNotFoundError",
    "MissingExtraError",
    "OutputExistsError",
    "RejectError",
    "StrictRejectError",
    "TemplateError",
    "TokenizerError",
    "TooManyRejectsError",
    "UsageError",
    "exit_code_for",
]
