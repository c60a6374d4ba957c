"""Packing: ``pack()`` invariants (hypothesis), packed rows, and exactness of the padding-free
forward: each packed sample's per-token loss equals its loss when run alone."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsft.data import IGNORE_INDEX, PackedDataset, PackingCollator, SFTDataset, pack, pack_rows
from train_helpers import random_samples, write_dataset

I = IGNORE_INDEX


def _check_packs(lengths, capacity, packs):
    n = len(lengths)
    assert sorted(packs.order.tolist()) == list(range(n))  # every index exactly once
    assert packs.bounds[0] == 0 and packs.bounds[-1] == n
    sums = [int(np.asarray(lengths)[packs[j]].sum()) for j in range(len(packs))]
    assert all(0 < len(packs[j]) for j in range(len(packs)))
    assert max(sums, default=0) <= capacity  # no pack over capacity
    # any-fit algorithms (best fit is one) open a new pack only when nothing fits, so at most one
    # pack can end up at most half full
    assert sum(2 * s <= capacity for s in sums) <= 1
    assert len(packs) >= -(-sum(lengths) // capacity)


def test_pack_hand_example():
    packs = pack([5, 4, 3, 2, 1], capacity=6)
    assert sorted(sorted(packs[j].tolist()) for j in range(len(packs))) == [[0, 4], [1, 3], [2]]
    assert packs.fill_ratio == pytest.approx(15 / 18)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 500).flatmap(lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=300))))
def test_pack_properties(case):
    capacity, lengths = case
    packs = pack(lengths, capacity)
    _check_packs(lengths, capacity, packs)
    again = pack(lengths, capacity)
    assert (again.order == packs.order).all() and (again.bounds == packs.bounds).all()


def test_pack_rejects_too_long_and_bad_capacity():
    with pytest.raises(ValueError, match="sample 1 has 9 tokens, more than --pack-len 8"):
        pack([3, 9, 2], capacity=8)
    with pytest.raises(ValueError, match="--pack-len must be positive"):
        pack([1], capacity=0)
    from fastsft import _core

    with pytest.raises(ValueError):  # the Rust core checks as well
        _core.pack(np.array([3, 9], dtype="<i8"), 8)


def test_pack_empty():
    packs = pack([], capacity=8)
    assert len(packs) == 0 and packs.order.size == 0


@pytest.mark.slow
def test_pack_ten_million_lengths_in_seconds():
    lengths = np.random.default_rng(0).integers(1, 4097, size=10_000_000)
    t = time.perf_counter()
    packs = pack(lengths, 4096)
    dt = time.perf_counter() - t
    print(f"\npack(): 10M samples into {len(packs)} packs of 4096 in {dt:.2f} s, fill {packs.fill_ratio:.4f}")
    assert sorted_once(packs.order, len(lengths))
    assert dt < 60


def sorted_once(order, n):
    seen = np.zeros(n, dtype=bool)
    seen[order] = True
    return bool(seen.all()) and len(order) == n


def test_fill_ratio_on_shipped_corpora(prepared_qwen):
    ds = SFTDataset(prepared_qwen.out)
    rows = []
    for cap in (4096, 8192, 16384):
        lengths = ds.lengths[ds.lengths <= cap]
        packs = pack(lengths, cap)
        _check_packs(lengths.tolist(), cap, packs)
        rows.append((cap, len(lengths), len(packs), packs.fill_ratio))
        assert packs.fill_ratio > 0.9, rows  # the shipped corpora are short: BFD packs them densely
    print("\npack fill on the shipped corpora (Qwen2.5, no truncation):")
    for cap, n, p, fill in rows:
        print(f"  pack-len {cap:>6}: {n} samples -> {p} packs, fill {fill:.4f}")
    try:
        from conftest import report

        for cap, n, p, fill in rows:
            report("pack() fill ratio (Qwen2.5 prep of the parity corpora)", f"pack-len {cap}",
                   samples=n, packs=p, fill=f"{fill:.4f}")  # fmt: skip
    except ImportError:
        pass


def test_pack_rows_docstring_example():
    row = pack_rows([(np.array([11, 12, 13]), np.array([0, 1, 1])), (np.array([21, 22]), np.array([1, 1]))])
    assert row["input_ids"].tolist() == [11, 12, 13, 21, 22]
    assert row["labels"].tolist() == [I, 12, 13, I, 22]
    assert row["position_ids"].tolist() == [0, 1, 2, 0, 1]


def test_packed_dataset_items(tmp_path):
    samples = random_samples(60, seed=5, max_len=30)
    ds = SFTDataset(write_dataset(tmp_path / "d", samples))
    packed = PackedDataset(ds, 64)
    _check_packs(ds.lengths.tolist(), 64, packed.packs)
    assert packed.lengths.sum() == ds.num_tokens
    for j in range(len(packed)):
        idx = packed.packs[j].tolist()
        item = packed[j]
        assert item["input_ids"].tolist() == [t for i in idx for t in samples[i][0]]
        assert item["position_ids"].tolist() == [p for i in idx for p in range(len(samples[i][0]))]
        expect = [x for i in idx for x in [I, *(t if m else I for t, m in zip(samples[i][0][1:], samples[i][1][1:]))]]
        assert item["labels"].tolist() == expect


# -- exactness --------------------------------------------------------------------------------------


def _tiny_model(arch: str, attn: str, vocab: int = 512):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cfg_cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    cfg = cfg_cls(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=torch.float32).eval()


def _token_losses(logits, labels):
    # loss of position t predicting labels[t+1], for every position (the model's shift)
    return torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], reduction="none", ignore_index=-1)


@pytest.mark.parametrize("arch,attn", [("qwen2", "sdpa"), ("qwen2", "eager"), ("llama", "sdpa")])
def test_packed_loss_equals_each_sample_alone(tmp_path, arch, attn):
    samples = random_samples(12, seed=7, min_len=5, max_len=60, vocab=512)
    ds = SFTDataset(write_dataset(tmp_path / "d", samples, vocab_size=512))
    packed = PackedDataset(ds, 128)
    assert any(len(packed.packs[j]) >= 3 for j in range(len(packed)))  # real packing happens
    model = _tiny_model(arch, attn)
    batch = PackingCollator()([packed[j] for j in range(len(packed))])  # all packs in one row
    order = np.concatenate([packed.packs[j] for j in range(len(packed))])
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        ids = batch["input_ids"]
        packed_losses = _token_losses(out.logits, ids)
        start, worst = 0, 0.0
        for i in order:
            L = int(ds.lengths[i])
            alone = model(input_ids=ids[:, start : start + L], use_cache=False)
            # the logits of each sample, and the loss of every token within it
            logit_diff = (out.logits[0, start : start + L] - alone.logits[0]).abs().max().item()
            loss_diff = (
                (packed_losses[start : start + L - 1] - _token_losses(alone.logits, ids[:, start : start + L])).abs().max().item()
            )
            worst = max(worst, logit_diff, loss_diff)
            start += L
        assert start == ids.shape[1]
        assert worst < 1e-5, worst

        # the model's own loss over the packed row: the mean over the trained tokens of each sample alone
        packed_loss = model(**batch, use_cache=False).loss
        num, den = 0.0, 0
        for i in order:
            item = ds[int(i)]
            lab = item["labels"].clone()
            lab[0] = I
            res = model(input_ids=item["input_ids"][None], use_cache=False).logits
            ce = torch.nn.functional.cross_entropy(res[0, :-1], lab[1:], reduction="sum", ignore_index=I)
            num, den = num + ce.item(), den + int((lab[1:] != I).sum())
        assert packed_loss.item() == pytest.approx(num / den, abs=1e-5)

        # control: the same row with positions that do not restart is plain causal attention
        # across samples, and must differ, which shows the comparison above can fail
        flat = torch.arange(ids.shape[1])[None]
        leaked = model(input_ids=ids, position_ids=flat, use_cache=False).logits
        assert (leaked - out.logits).abs().max().item() > 1e-2
