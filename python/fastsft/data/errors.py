"""The error a damaged or inconsistent prepared dataset raises (one line: the file, what is wrong)."""

from fastsft._core import FastSFTError


class DatasetFormatError(FastSFTError):
    """A directory is not a valid prepared dataset: a missing or damaged file, a wrong version, or
    arrays that disagree with ``manifest.json``. A ``FastSFTError`` (so a ``ValueError``)."""
