"""Type stubs for the compiled extension `fastsft._core` (rust/py.rs, rust/py_errors.rs).

Options cross as the JSON of `fastsft.config`'s dataclasses (`EncodeOptions.to_core_json()`,
`PrepOptions.to_core_json()`), read by name in rust/options.rs: the Python API above this module
is where they are typed.
"""

from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

from fastsft.errors import FastSFTError as FastSFTError

__version__: str

class Summary(TypedDict):
    output: str
    read: int
    written: int
    rejected: int
    samples: int
    split_records: int
    split_samples: int
    rejected_by_reason: dict[str, int]
    truncated: int
    tokens: int
    trained_tokens: int
    seconds: float
    threads: int
    skipped: bool

def prep(inputs: list[str], tokenizer: str, output: str, options: str | None = None, array_checksums: bool = True) -> Summary: ...
def reuse_encoders(enabled: bool) -> None: ...
def pack(lengths: npt.NDArray[np.int64], capacity: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def encoder_option_defaults() -> str: ...
def error_classes() -> list[tuple[str, str]]: ...
def raise_error_for_tests(variant: str) -> None: ...

class Sample(TypedDict):
    input_ids: list[int]
    loss_mask: npt.NDArray[np.uint8]
    truncated: bool
    turn: int | None

class Encoded(TypedDict, total=False):
    """A record's samples (the first one's fields at the top level too), or `reject`/`detail`."""

    input_ids: list[int]
    loss_mask: npt.NDArray[np.uint8]
    truncated: bool
    turn: int | None
    samples: list[Sample]
    reject: str
    detail: str

class EncodedBatch(TypedDict):
    input_ids: list[list[int]]
    loss_mask: list[bytes]
    truncated: list[bool]
    reject: list[str | None]
    detail: list[str | None]
    row: list[int]
    turn: list[int | None]

class RenderedSample(TypedDict):
    text: str
    spans: list[tuple[int, int]]
    prompt_chars: int | None
    turn: int | None

class Rendered(TypedDict, total=False):
    text: str
    spans: list[tuple[int, int]]
    samples: list[RenderedSample]
    reject: str
    detail: str

class Conversation(TypedDict, total=False):
    json: str
    reject: str
    detail: str

class RecordEncoder:
    def __init__(self, tokenizer: str, options: str | None = None) -> None: ...
    def encode(self, record: str) -> Encoded: ...
    def encode_batch(self, records: list[str], threads: int = 1) -> EncodedBatch: ...
    def render(self, record: str) -> Rendered: ...
    def conversation(self, record: str) -> Conversation: ...
    @property
    def tokenizer_sha256(self) -> str: ...

def encode_batch_arrays(encoder: RecordEncoder, records: list[str], threads: int = 1) -> dict[str, Any]:
    """`input_ids` (<u4), `loss_mask` (u1), `offsets`/`row`/`turn` (<i8), `truncated` (u1) as bytes;
    `reject`, `detail`: one entry per sample (rust/py_batch.rs)."""

def assemble_units(assembly: str) -> str:
    """The units of a Ray run → one dataset at the assembly's `output` (rust/assemble.rs);
    `assembly` and the returned counts are JSON (fastsft/ray_assemble.py)."""

class UnitAssembler:
    """The same assembly unit by unit as units finish (rust/py_assemble.rs): `add(index,
    rejected_only)` per unit, then `finish(report)` → counts; all JSON."""

    def __init__(self, assembly: str) -> None: ...
    def add(self, index: int, rejected_only: str | None = None) -> None: ...
    def finish(self, report: str) -> str: ...
    def abandon(self) -> None: ...

class TokenDecoder:
    """Token ids back to text with the extension's `tokenizers` crate (what `fastsft inspect` uses).

    `tokenizer`: a model directory holding `tokenizer.json`, or that file. Method names and defaults
    are those of `tokenizers.Tokenizer`.
    """

    def __init__(self, tokenizer: str) -> None: ...
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...
    def id_to_token(self, id: int) -> str | None: ...
    def get_vocab_size(self, with_added_tokens: bool = True) -> int: ...

class InputRecords:
    """The records of `prep`'s inputs, read by `prep`'s own reader (rust/py_reader.rs): every input
    kind `prep` accepts (JSONL or a JSON array, plain/gzip/zstd; Parquet, Arrow IPC, save_to_disk).

    Iterates over `(file, line, record)`: the index of the file in `paths`, the record's 1-based line,
    array element or row (as `origin.npy` numbers it), and its raw bytes (a columnar row: its JSON
    object). Blank lines are skipped. `only` (`{file: lines}`) keeps just those records; every file is
    still read to its end.
    """

    def __init__(self, paths: list[str], only: dict[int, set[int]] | None = None) -> None: ...
    def __iter__(self) -> InputRecords: ...
    def __next__(self) -> tuple[int, int, bytes]: ...
    @property
    def inputs(self) -> list[dict[str, Any]]:
        """`[{"path", "size", "sha256"}, ...]` of the files read to their end so far, in order."""
