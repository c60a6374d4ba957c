"""Reading prepared datasets for training: manifest, memory-mapped samples, packing, collators.

Importing this package needs only numpy; torch is used when installed (items become tensors).
"""

from .collate import PackingCollator, PadCollator
from .dataset import IGNORE_INDEX, SFTDataset, SFTSubset, resolve_dataset_dirs, split_indices
from .errors import DatasetFormatError
from .integrity import check_dataset
from .manifest import Manifest, read_manifest, sha256_file
from .packing import PackedDataset, Packs, pack, pack_rows

__all__ = [
    "IGNORE_INDEX",
    "DatasetFormatError",
    "Manifest",
    "PackedDataset",
    "PackingCollator",
    "Packs",
    "PadCollator",
    "SFTDataset",
    "SFTSubset",
    "check_dataset",
    "pack",
    "pack_rows",
    "read_manifest",
    "resolve_dataset_dirs",
    "sha256_file",
    "split_indices",
]
