"""Prepared datasets as ``datasets.Dataset``s, for trainers that take tokenized data (TRL's ``SFTTrainer``).

What it does: wraps the memory-mapped ``.npy`` arrays of one or more prepared datasets (DESIGN §2)
in an Arrow table, without copying them, and hands that to ``datasets``. What it does not: tokenize,
pack or pad (TRL, or fastsft's own collators, do that).

Zero copy, measured (tests/test_interop.py checks the buffer addresses): ``pyarrow.array`` on a
``numpy.memmap`` of a primitive dtype wraps the mapped pages, and ``LargeListArray.from_arrays``
takes ``offsets.npy`` (int64, N+1 entries) as its offsets buffer as it is, so ``input_ids`` and
``assistant_masks`` are views of the files; ``datasets.Dataset`` keeps the table as it is. Only
``labels`` (``where(loss_mask, input_ids, -100)`` as int32, 4 bytes per token) is computed in memory,
and only when asked for. The fingerprint that ``datasets`` would otherwise compute by pickling the
whole table is the manifest's ``fingerprint`` (sha256 of tokenizer, template, options and inputs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastsft.data.dataset import IGNORE_INDEX, PathLike, resolve_dataset_dirs
from fastsft.data.integrity import check_dataset
from fastsft.data.manifest import read_manifest

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

__all__ = ["to_arrow_table", "to_hf_dataset"]


def _shard_table(directory: Path, labels: bool) -> pa.Table:
    import pyarrow as pa

    check_dataset(read_manifest(directory))  # as SFTDataset does: headers, offsets, counts, id range
    ids = np.load(directory / "input_ids.npy", mmap_mode="r")
    mask = np.load(directory / "loss_mask.npy", mmap_mode="r")
    offsets = pa.array(np.load(directory / "offsets.npy", mmap_mode="r"))
    columns = {
        "input_ids": pa.LargeListArray.from_arrays(offsets, pa.array(ids)),
        "assistant_masks": pa.LargeListArray.from_arrays(offsets, pa.array(mask)),
    }
    if labels:
        values = np.full(ids.shape, IGNORE_INDEX, dtype=np.int32)  # the one copy: 4 bytes a token
        np.copyto(values, ids, casting="unsafe", where=mask.view(np.bool_))  # ids < 2**31 always
        columns["labels"] = pa.LargeListArray.from_arrays(offsets, pa.array(values))
    return pa.table(columns)


def to_arrow_table(paths: PathLike | Sequence[PathLike], *, labels: bool = True) -> pa.Table:
    """The samples of ``paths`` (dataset directories, or parents of shard directories) as an Arrow table.

    Columns, one row per sample, each a ``large_list``:

    - ``input_ids``: the token ids (``uint16`` or ``uint32``, as stored; a view of ``input_ids.npy``);
    - ``assistant_masks``: ``uint8`` 1 where the loss counts the token (a view of ``loss_mask.npy``);
    - ``labels`` (when ``labels``): ``int32``, ``input_ids`` where the mask is 1 else ``-100``,
      unshifted (the model shifts).

    Example (one sample of 5 tokens whose last 3 are the reply)::

        input_ids       = [151644, 872, 198, 9707, 151645]
        assistant_masks = [     0,   0,   1,    1,      1]
        labels          = [  -100,-100, 198, 9707, 151645]

    Shards are concatenated in order, as chunks (no copy); they must share a tokenizer.
    """
    import pyarrow as pa

    dirs = resolve_dataset_dirs(paths)
    manifests = [read_manifest(d) for d in dirs]
    tokenizers = {m.tokenizer_sha256 for m in manifests}
    if len(tokenizers) > 1:
        raise ValueError(
            f"{', '.join(map(str, dirs))}: made with different tokenizers (tokenizer.json sha256 "
            f"{', '.join(sorted(map(str, tokenizers)))}); prepare them with the same --tokenizer"
        )
    tables = [_shard_table(d, labels) for d in dirs]
    # uint16 and uint32 shards of one tokenizer cannot happen (the dtype follows the vocabulary).
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def to_hf_dataset(paths: PathLike | Sequence[PathLike], *, labels: bool = True) -> datasets.Dataset:
    """A ``datasets.Dataset`` over prepared data, with ``input_ids``, ``assistant_masks`` and ``labels``.

    The token arrays stay memory-mapped (see the module docstring); ``labels=False`` leaves out the
    one column that is computed in memory. TRL's ``SFTTrainer`` takes it as already-tokenized data::

        ds = fastsft.to_hf_dataset("out/")
        SFTTrainer(model, args=SFTConfig(max_length=None, ...), train_dataset=ds,
                   processing_class=tokenizer)

    ``max_length=None`` (TRL's default is 1024) because fastsft has already truncated (``--max-len``);
    with ``labels`` present TRL uses them as they are (pass ``dataset_kwargs={"skip_prepare_dataset":
    True}`` to skip its preparation pass altogether); without them it builds labels from
    ``assistant_masks`` itself. Shards become one dataset, in order.
    """
    import datasets
    from datasets.table import InMemoryTable

    dirs = resolve_dataset_dirs(paths)
    table = to_arrow_table(dirs, labels=labels)
    fingerprint = hashlib.sha256()
    for d in dirs:
        fingerprint.update(str(read_manifest(d).raw.get("fingerprint", d.resolve())).encode())
    fingerprint.update(b"labels" if labels else b"")
    return datasets.Dataset(InMemoryTable(table), fingerprint=fingerprint.hexdigest()[:32])
