"""fastsft.to_hf_dataset: prepared arrays as a zero-copy ``datasets.Dataset`` that TRL trains on.

The TRL round trip runs on CPU with a tiny Qwen2 around a 1k-token BPE trained in-process (the
152k Qwen vocabulary makes every step's logits 150x larger), prepared by ``fastsft prep`` from the
shipped corpora.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow  # noqa: F401
import pytest

import fastsft
from fastsft.interop import to_hf_dataset
from train_helpers import build_small_tokenizer, train_corpora, write_dataset


def arrays(directory: Path):
    load = lambda name: np.load(directory / name, mmap_mode="r")  # noqa: E731
    return load("input_ids.npy"), load("loss_mask.npy"), load("offsets.npy")


def mapped_file(address: int) -> str | None:
    """The file whose mapping holds ``address`` in this process (Linux), else None."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= address < hi:
            return parts[5] if len(parts) > 5 else None
    return None


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory) -> Path:
    return build_small_tokenizer(tmp_path_factory.mktemp("tok") / "small")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, small_tokenizer) -> Path:
    out = tmp_path_factory.mktemp("interop") / "out"
    fastsft.prep([str(p) for p in train_corpora()], str(small_tokenizer), str(out), max_len=96)
    return out


def test_columns_equal_the_arrays(prepared):
    ids, mask, offsets = arrays(prepared)
    ds = to_hf_dataset(prepared)
    assert len(ds) == len(offsets) - 1 == json.loads((prepared / "manifest.json").read_text())["num_samples"]
    assert set(ds.column_names) == {"input_ids", "assistant_masks", "labels"}
    for i in (0, 1, len(ds) // 2, len(ds) - 1):
        row = ds[i]
        a, b = offsets[i], offsets[i + 1]
        assert row["input_ids"] == ids[a:b].tolist()
        assert row["assistant_masks"] == mask[a:b].tolist()
        assert row["labels"] == np.where(mask[a:b] == 1, ids[a:b].astype(np.int64), -100).tolist()
        assert -100 in row["labels"] and 1 in row["assistant_masks"]


def test_token_arrays_are_not_copied(prepared):
    ds = to_hf_dataset(prepared, labels=False)
    table = ds.data.table
    assert table.column("input_ids").num_chunks == 1
    ids_col = table.column("input_ids").chunk(0)
    mask_col = table.column("assistant_masks").chunk(0)
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc/self/maps")
    # values and offsets are the mapped .npy pages themselves, not copies
    assert mapped_file(ids_col.values.buffers()[1].address) == str(prepared / "input_ids.npy")
    assert mapped_file(mask_col.values.buffers()[1].address) == str(prepared / "loss_mask.npy")
    assert mapped_file(ids_col.offsets.buffers()[1].address) == str(prepared / "offsets.npy")
    assert "labels" not in ds.column_names


def test_shards_are_concatenated_in_order(tmp_path):
    parent = tmp_path / "sharded"
    s0 = [([1, 2, 3], [0, 1, 1]), ([4, 5], [0, 1])]
    s1 = [([6, 7, 8, 9], [0, 0, 1, 1])]
    write_dataset(parent / "shard-00000-of-00002", s0)
    write_dataset(parent / "shard-00001-of-00002", s1)
    ds = to_hf_dataset(parent)
    assert ds["input_ids"] == [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    assert ds["labels"] == [[-100, 2, 3], [-100, 5], [-100, -100, 8, 9]]


def test_shards_with_different_tokenizers_are_refused(tmp_path):
    write_dataset(tmp_path / "a", [([1], [1])], tokenizer_sha256="a" * 64)
    write_dataset(tmp_path / "b", [([1], [1])], tokenizer_sha256="b" * 64)
    with pytest.raises(ValueError, match="different tokenizers"):
        to_hf_dataset([tmp_path / "a", tmp_path / "b"])


def _trainer(model_dir: Path, train_dataset, out: Path, **config):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    args = SFTConfig(
        output_dir=str(out),
        max_length=None,
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        **config,
    )
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return SFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, small_tokenizer) -> Path:
    from fastsft.tiny_model import build_tiny_model

    return build_tiny_model(small_tokenizer, tmp_path_factory.mktemp("model") / "tiny", layers=1, hidden=32, heads=4, kv_heads=2)


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "assistant_masks"])
def test_trl_trains_on_assistant_tokens_only(prepared, tiny_model, tmp_path, labels):
    import torch

    ids, mask, offsets = arrays(prepared)
    trainer = _trainer(tiny_model, to_hf_dataset(prepared, labels=labels), tmp_path / "run")

    # TRL's prepared dataset: labels are -100 exactly where loss_mask is 0, whichever column it got.
    prepared_ds = trainer.train_dataset
    assert len(prepared_ds) == len(offsets) - 1
    for i in (0, 7, len(prepared_ds) - 1):
        a, b = offsets[i], offsets[i + 1]
        assert prepared_ds[i]["labels"] == np.where(mask[a:b] == 1, ids[a:b].astype(np.int64), -100).tolist()

    # The collated batch: padding is -100 too, and nothing else is masked.
    rows = [0, 1, 2, 3]
    batch = trainer.data_collator([{k: prepared_ds[i][k] for k in ("input_ids", "labels")} for i in rows])
    for r, i in enumerate(rows):
        a, b = offsets[i], offsets[i + 1]
        n = b - a
        assert batch["input_ids"][r, :n].tolist() == ids[a:b].tolist()
        assert (batch["labels"][r, :n] == -100).tolist() == (mask[a:b] == 0).tolist()
        assert (batch["labels"][r, n:] == -100).all() and (batch["attention_mask"][r, n:] == 0).all()

    # TRL's loss is the mean cross-entropy over the assistant tokens alone (shifted), not all tokens.
    model = trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch)).item()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = batch["input_ids"][:, 1:]
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    trained = torch.zeros_like(target, dtype=torch.bool)
    real = torch.zeros_like(target, dtype=torch.bool)
    for r, i in enumerate(rows):
        a, b = offsets[i], offsets[i + 1]
        trained[r, : b - a - 1] = torch.from_numpy(mask[a + 1 : b] == 1)
        real[r, : b - a - 1] = True
    assert trained.sum() < real.sum()
    assert trl_loss == pytest.approx(nll[trained].mean().item(), rel=1e-5)
    assert trl_loss != pytest.approx(nll[real].mean().item(), rel=1e-3)

    # And it trains: three steps, finite losses, weights moved.
    before = model.get_input_embeddings().weight.detach().clone()
    result = trainer.train()
    assert result.global_step == 3 and np.isfinite(result.training_loss)
    assert not torch.equal(before, trainer.model.get_input_embeddings().weight.detach())


def test_trl_skip_prepare_uses_fastsft_labels(prepared, tiny_model, tmp_path):
    ds = to_hf_dataset(prepared)
    trainer = _trainer(tiny_model, ds, tmp_path / "run", dataset_kwargs={"skip_prepare_dataset": True})
    assert trainer.train_dataset is ds  # no pass over the data: the zero-copy table is what trains
    assert trainer.train().global_step == 3
