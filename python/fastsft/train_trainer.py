"""The one ``transformers.Trainer`` subclass of ``fastsft train``: what the Trainer cannot be told.

Length-grouped sampling from lengths we already know (the stock sampler reads every item to find
them), and token counting for the tokens/s, trained-tokens/s and padding (or pack fill) logs. Built
lazily: importing transformers takes seconds, and ``register_cli`` runs for every command.
"""

from __future__ import annotations

import time
from typing import Any

from .data.dataset import IGNORE_INDEX


def _trainer_class() -> Any:
    """The Trainer subclass (built lazily: importing transformers takes seconds)."""
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class FastSFTTrainer(Trainer):
        """``Trainer`` + length-grouped sampling from known lengths + token-rate logging."""

        def __init__(self, *args: Any, train_lengths=None, pack_fill: float | None = None, **kw: Any):
            super().__init__(*args, **kw)
            self._fs_lengths = None if train_lengths is None else [int(x) for x in train_lengths]
            self._fs_pack_fill = pack_fill
            # [real tokens, trained tokens, slots] since the last log and in total (this process)
            self._fs_interval = torch.zeros(3, dtype=torch.int64)
            self._fs_total = torch.zeros(3, dtype=torch.int64)
            self._fs_t_log: float | None = None
            self._fs_excluded = 0.0  # seconds spent in eval/checkpointing inside the current interval
            self.fs_summary: dict[str, Any] = {}

        def _get_train_sampler(self, train_dataset=None):
            if self._fs_lengths is None:
                return super()._get_train_sampler(train_dataset)
            # group by the global batch: each process then takes its share of similar lengths, and
            # N processes x B see the same samples per step as one process x N*B
            bs = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            return LengthGroupedSampler(bs, lengths=self._fs_lengths)

        def training_step(self, model, inputs, num_items_in_batch=None):
            if self._fs_t_log is None:
                self._fs_t_log = time.perf_counter()
                self.fs_summary["start_step"] = self.state.global_step  # > 0 when resumed
            ids, labels = inputs["input_ids"], inputs["labels"]
            real = inputs["attention_mask"].sum() if "attention_mask" in inputs else ids.numel()
            trained = (labels[..., 1:] != IGNORE_INDEX).sum()
            self._fs_interval += torch.tensor([int(real), int(trained), ids.numel()])
            return super().training_step(model, inputs, num_items_in_batch)

        def evaluate(self, *args: Any, **kw: Any):
            t = time.perf_counter()
            try:
                return super().evaluate(*args, **kw)
            finally:
                self._fs_excluded += time.perf_counter() - t

        def _save_checkpoint(self, *args: Any, **kw: Any):
            t = time.perf_counter()
            try:
                return super()._save_checkpoint(*args, **kw)
            finally:
                self._fs_excluded += time.perf_counter() - t

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs or "train_runtime" in logs:  # called on every rank at once: reduce is safe
                counts = self.accelerator.reduce(self._fs_interval.to(self.args.device), "sum").cpu()
                self._fs_total += counts
                self._fs_interval.zero_()
                now = time.perf_counter()
                if "loss" in logs and self._fs_t_log is not None:
                    dt = max(now - self._fs_t_log - self._fs_excluded, 1e-9)
                    logs["tokens_per_second"] = round(int(counts[0]) / dt, 1)
                    logs["trained_tokens_per_second"] = round(int(counts[1]) / dt, 1)
                    self._add_fill(logs, counts)
                self._fs_t_log, self._fs_excluded = now, 0.0
                if "train_runtime" in logs:
                    tot = self._fs_total
                    rt = max(float(logs["train_runtime"]), 1e-9)
                    logs["train_tokens"] = int(tot[0])
                    logs["train_trained_tokens"] = int(tot[1])
                    logs["train_tokens_per_second"] = round(int(tot[0]) / rt, 1)
                    logs["train_trained_tokens_per_second"] = round(int(tot[1]) / rt, 1)
                    self._add_fill(logs, tot)
                    self.fs_summary.update(logs)
            super().log(logs, start_time)

        def _add_fill(self, logs: dict[str, float], counts) -> None:
            if self._fs_pack_fill is not None:
                logs["pack_fill"] = round(self._fs_pack_fill, 4)
            elif int(counts[2]):
                logs["padding_fraction"] = round(1 - int(counts[0]) / int(counts[2]), 4)

    return FastSFTTrainer
