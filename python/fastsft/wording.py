"""Counts in messages, read as English: ``1 record``, ``2 records``, ``1,234 samples``."""

from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` with thousands separators and ``noun``, or ``nouns`` (default ``noun + "s"``) unless n is 1.

    >>> plural(1, "sample"), plural(2_291, "sample"), plural(0, "pack"), plural(3, "entry", "entries")
    ('1 sample', '2,291 samples', '0 packs', '3 entries')
    """
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"
