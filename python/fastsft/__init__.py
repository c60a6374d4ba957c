"""fastsft: chat corpora → exact, assistant-masked token arrays for SFT, fast; and training on them.

Public API:

- `prep(inputs, tokenizer, output, **options)`: run the Rust pipeline (same as `fastsft prep`).
- `SFTDataset(path_or_paths)`: memory-mapped samples with `input_ids`, `labels`, `attention_mask`.
- `encode_batch(records, tokenizer, ...)`: the same encoder as a batch function (Ray, datasets.map).
- `to_hf_dataset(path)`: a prepared dataset as a memory-mapped `datasets.Dataset` (TRL-ready).
- `RecordEncoder(tokenizer, ...)`: encode or render one record at a time.
- `FastSFTError`: the base of every error fastsft reports; one subclass per kind of failure
  (`fastsft.errors`), each with the exit code the CLI gives it.
"""

from fastsft._core import __version__ as __version__
from fastsft.batch import encode_batch
from fastsft.config import EncodeOptions, PrepOptions
from fastsft.encoder import RecordEncoder
from fastsft.errors import FastSFTError
from fastsft.prep import prep

__all__ = ["EncodeOptions", "FastSFTError", "PrepOptions", "RecordEncoder", "SFTDataset", "encode_batch", "prep", "to_hf_dataset"]


def __getattr__(name: str):
    # The dataset reader imports numpy (and torch when present) lazily: `fastsft prep` needs neither.
    if name == "SFTDataset":
        from fastsft.data.dataset import SFTDataset

        return SFTDataset
    if name == "to_hf_dataset":
        from fastsft.interop import to_hf_dataset

        return to_hf_dataset
    raise AttributeError(f"module 'fastsft' has no attribute {name!r}")
