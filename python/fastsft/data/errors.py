"""The error a damaged or inconsistent prepared dataset raises (one line: the file, what is wrong).

Defined with every other error in ``fastsft.errors``; re-exported here, where the data readers
import it from.
"""

from fastsft.errors import DatasetFormatError

__all__ = ["DatasetFormatError"]
