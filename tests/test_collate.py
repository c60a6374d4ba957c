"""Collators: the worked examples of their docstrings, exactly."""

from __future__ import annotations

import torch

from fastsft.data import IGNORE_INDEX, PackingCollator, PadCollator

I = IGNORE_INDEX


def _items(*pairs):
    return [{"input_ids": torch.tensor(x), "labels": torch.tensor(y)} for x, y in pairs]


def test_pad_collator_docstring_example():
    batch = PadCollator(pad_token_id=0, pad_to_multiple_of=4)(_items(([5, 6, 7], [I, 6, 7]), ([8, 9], [I, 9])))
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 9, 0, 0]]
    assert batch["labels"].tolist() == [[I, 6, 7, I], [I, 9, I, I]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert all(v.dtype == torch.int64 for v in batch.values())


def test_pad_collator_rounds_to_multiple_of_8_with_pad_id():
    batch = PadCollator(pad_token_id=151643)(_items((list(range(9)), list(range(9))), ([1], [I])))
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][1, 1:].tolist() == [151643] * 15
    assert batch["attention_mask"].sum().item() == 10
    assert (batch["labels"][0, 9:] == I).all()
    # already a multiple: no extra padding
    assert PadCollator(0)(_items((list(range(8)), list(range(8)))))["input_ids"].shape == (1, 8)


def test_packing_collator_docstring_example():
    batch = PackingCollator()(_items(([5, 6, 7], [I, 6, 7]), ([8, 9], [8, 9])))
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["labels"].tolist() == [[I, 6, 7, I, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert "attention_mask" not in batch


def test_packing_collator_keeps_pack_positions():
    pack = {
        "input_ids": torch.tensor([1, 2, 3, 4, 5]),
        "labels": torch.tensor([I, 2, I, 4, 5]),
        "position_ids": torch.tensor([0, 1, 0, 1, 2]),
    }
    batch = PackingCollator()([pack, {"input_ids": torch.tensor([6, 7]), "labels": torch.tensor([6, 7])}])
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[I, 2, I, 4, 5, I, 7]]
