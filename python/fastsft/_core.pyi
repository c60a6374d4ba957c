"""Type stubs for the compiled extension `fastsft._core` (rust/py.rs)."""

from typing import Any, Literal

__version__: str

class FastSFTError(ValueError): ...

def prep(
    inputs: list[str],
    tokenizer: str,
    output: str,
    *,
    template: str | None = None,
    format: str | None = None,
    role_map: dict[str, str] | None = None,
    fields: dict[str, str] | None = None,
    max_len: int | None = None,
    truncation: str = "right",
    train_on: str = "all",
    train_eot: bool = True,
    train_on_prompt: bool = False,
    threads: int = 0,
    chunk_size: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    strict: bool = False,
    max_reject_fraction: float | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    max_record_bytes: int | None = None,
    reasoning: Literal["train", "mask", "drop"] | None = None,
    split_turns: Literal["never", "auto", "always"] | None = None,
    history: Literal["template", "as-written"] | None = None,
    template_args: list[tuple[str, str]] | None = None,
    date: str | None = None,
) -> dict[str, Any]: ...
def pack(lengths: bytes, capacity: int) -> tuple[bytes, bytes]: ...

class RecordEncoder:
    def __init__(
        self,
        tokenizer: str,
        *,
        template: str | None = None,
        format: str | None = None,
        role_map: dict[str, str] | None = None,
        fields: dict[str, str] | None = None,
        max_len: int | None = None,
        truncation: str = "right",
        train_on: str = "all",
        train_eot: bool = True,
        train_on_prompt: bool = False,
        max_record_bytes: int | None = None,
        reasoning: Literal["train", "mask", "drop"] | None = None,
        split_turns: Literal["never", "auto", "always"] | None = None,
        history: Literal["template", "as-written"] | None = None,
        template_args: list[tuple[str, str]] | None = None,
        date: str | None = None,
    ) -> None: ...
    def encode(self, record: str) -> dict[str, Any]: ...
    def encode_batch(self, records: list[str], threads: int = 1) -> dict[str, list[Any]]: ...
    def render(self, record: str) -> dict[str, Any]: ...
    def conversation(self, record: str) -> dict[str, Any]: ...
    @property
    def tokenizer_sha256(self) -> str: ...

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
