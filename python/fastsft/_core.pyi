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

def encode_batch_arrays(encoder: RecordEncoder, records: list[str], threads: int = 1) -> dict[str, Any]:
    """`input_ids` (<u4), `loss_mask` (u1), `offsets`/`row`/`turn` (<i8), `truncated` (u1) as bytes;
    `reject`, `detail`: one entry per sample (rust/py_batch.rs)."""

class TokenDecoder:
    """Token ids back to text with the extension's `tokenizers` crate (what `fastsft inspect` uses).

    `tokenizer`: a model directory holding `tokenizer.json`, or that file. Method names and defaults
    are those of `tokenizers.Tokenizer`.
    """

    def __init__(self, tokenizer: str) -> None: ...
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...
    def id_to_token(self, id: int) -> str | None: ...
    def get_vocab_size(self, with_added_tokens: bool = True) -> int: ...
