"""The label of a token the loss skips, defined once for every module that builds labels.

Labels are never stored (DESIGN §2): ``labels = where(loss_mask, input_ids, IGNORE_INDEX)``,
unshifted (the model shifts). This module imports nothing, so ``fastsft.encode_batch`` can use it
without loading numpy.
"""

IGNORE_INDEX = -100
"""Label value that the loss ignores (``torch.nn.CrossEntropyLoss``'s default ``ignore_index``)."""

__all__ = ["IGNORE_INDEX"]
