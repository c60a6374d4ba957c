"""``fastsft stats``: what a prepared dataset holds, before training on it.

Sample and token counts, length percentiles, truncations, rejects by reason, the fill that packing
would reach, and a length histogram (matplotlib, imported only for ``--plot``). Reads the arrays in
chunks, so memory stays small whatever the dataset size.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.dataset import resolve_dataset_dirs
from .data.manifest import read_manifest
from .data.packing import pack
from .errors import InputNotFoundError
from .extras import missing_extra
from .view_decode import ViewError, _emit
from .wording import plural

STATS_CHUNK_TOKENS = 1 << 22
"""Tokens of ``loss_mask`` summed at a time: memory stays ~32 MiB whatever the dataset size."""
PERCENTILES = (50, 90, 99)


@dataclass
class PackFill:
    capacity: int
    packs: int
    fill: float | None
    """Packed tokens / (packs x capacity), over the samples that fit; None when none fit."""
    too_long: int
    """Samples longer than ``capacity`` (left out: packing would refuse them)."""
    too_long_tokens: int


@dataclass
class Stats:
    out: str
    lengths: np.ndarray
    trained: np.ndarray
    """Trained tokens per sample."""
    max_len: int | None
    counts: dict[str, Any] = field(default_factory=dict)
    """Summed ``counts`` of the manifests: read, rejected, rejected_by_reason, truncated."""
    pack: PackFill | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_trained(self) -> int:
        return int(self.trained.sum())


def trained_per_sample(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Trained tokens of every sample, reading ``mask`` in chunks of whole samples."""
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.int64)
    i = 0
    while i < n:
        j = int(np.searchsorted(offsets, offsets[i] + STATS_CHUNK_TOKENS, side="right")) - 1
        j = min(max(j, i + 1), n)
        lo = int(offsets[i])
        cs = np.concatenate([[0], np.cumsum(mask[lo : int(offsets[j])], dtype=np.int64)])
        out[i:j] = cs[offsets[i + 1 : j + 1] - lo] - cs[offsets[i:j] - lo]
        i = j
    return out


def pack_fill(lengths: np.ndarray, capacity: int) -> PackFill:
    """What packing ``lengths`` into ``capacity``-token packs reaches (best-fit decreasing).

    Samples over ``capacity`` are counted, not packed. Example::

        pack_fill([5, 4, 3, 2, 1, 7], 6)  ->  3 packs, fill 15 / 18 = 0.833, 1 too long (7 tokens)
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    over = lengths > capacity
    fits = lengths[~over]
    packs = pack(fits, capacity)
    return PackFill(
        capacity=capacity,
        packs=len(packs),
        fill=packs.fill_ratio if len(fits) else None,
        too_long=int(over.sum()),
        too_long_tokens=int(lengths[over].sum()),
    )


def compute_stats(out: str | os.PathLike, pack_len: int | None = None) -> Stats:
    """Stats of a dataset or of all shards under ``out``; ``pack_len`` defaults to the longest sample
    (what ``fastsft train --packing`` uses without ``--pack-len``)."""
    if pack_len is not None and pack_len <= 0:
        raise ViewError(f"--pack-len {pack_len}: must be a positive number of tokens")
    try:
        dirs = resolve_dataset_dirs(out)
    except InputNotFoundError as e:
        raise InputNotFoundError(f"OUT {e}; give the directory written by `fastsft prep ... -o {out}`") from None
    lengths, trained, max_lens = [], [], set()
    counts: dict[str, Any] = {
        "read": 0,
        "rejected": 0,
        "truncated": 0,
        "split_records": 0,
        "split_samples": 0,
        "rejected_by_reason": {},
    }
    for d in dirs:
        man = read_manifest(d)
        offsets = np.load(d / "offsets.npy")
        lengths.append(np.diff(offsets))
        trained.append(trained_per_sample(np.load(d / "loss_mask.npy", mmap_mode="r"), offsets))
        c = man.raw.get("counts") or {}
        for key in ("read", "rejected", "truncated", "split_records", "split_samples"):
            counts[key] += int(c.get(key, 0))
        for reason, k in (c.get("rejected_by_reason") or {}).items():
            counts["rejected_by_reason"][reason] = counts["rejected_by_reason"].get(reason, 0) + int(k)
        max_lens.add((man.raw.get("options") or {}).get("max_len"))
    st = Stats(
        out=str(out),
        lengths=np.concatenate(lengths),
        trained=np.concatenate(trained),
        max_len=max_lens.pop() if len(max_lens) == 1 else None,
        counts=counts,
    )
    if len(st.lengths):
        st.pack = pack_fill(st.lengths, pack_len or int(st.lengths.max()))
    return st


def percentiles(values: np.ndarray) -> list[int]:
    """p50, p90, p99 (nearest rank: p% of samples have at most this many tokens) and the max."""
    if len(values) == 0:
        return [0] * (len(PERCENTILES) + 1)
    ps = np.percentile(values, PERCENTILES, method="inverted_cdf")
    return [int(p) for p in ps] + [int(values.max())]


def format_stats(st: Stats, pack_len_given: bool = False) -> str:
    n, c = len(st.lengths), st.counts
    share = st.num_trained / st.num_tokens if st.num_tokens else 0.0
    head = "".join(f"{'p' + str(p):>10}" for p in PERCENTILES) + f"{'max':>10}"

    def row(values: np.ndarray) -> str:
        return "".join(f"{x:>10,}" for x in percentiles(values))

    lines = [
        f"fastsft stats: {st.out}",
        f"  samples         {n:>14,}" + (f"   (read {c['read']:,}, rejected {c['rejected']:,})" if c["read"] else ""),
        f"  tokens          {st.num_tokens:>14,}",
        f"  trained tokens  {st.num_trained:>14,}   ({share:.1%} of tokens)",
        f"  {'per sample':<16}{head}",
        f"    {'tokens':<14}{row(st.lengths)}",
        f"    {'trained':<14}{row(st.trained)}",
        f"  truncated       {c['truncated']:>14,}" + (f"   (at --max-len {st.max_len:,})" if st.max_len else ""),
    ]
    if c.get("split_records"):
        records = c["split_records"]
        lines.append(
            f"  per-turn        {c['split_samples']:>14,}   (samples from {records:,} record{'s' * (records != 1)} split "
            "into turns, --split-turns)"
        )
    reasons = ", ".join(f"{r} {k:,}" for r, k in sorted(c["rejected_by_reason"].items(), key=lambda kv: (-kv[1], kv[0])))
    lines.append(f"  rejected        {c['rejected']:>14,}" + (f"   ({reasons}; details in rejects.jsonl)" if reasons else ""))
    if st.pack is not None:
        p = st.pack
        how = "" if pack_len_given else ", the longest sample (set it with --pack-len L)"
        fill = f"fill {p.fill:.1%}" if p.fill is not None else "no sample fits"
        lines.append(f"  packing at {p.capacity:,}{how}: {plural(p.packs, 'pack')}, {fill}")
        if p.too_long:
            lines.append(
                f"    {plural(p.too_long, 'sample')} ({plural(p.too_long_tokens, 'token')}) "
                f"{'is' if p.too_long == 1 else 'are'} longer than --pack-len {p.capacity:,} "
                f"and left out: raise --pack-len or prepare with --max-len {p.capacity:,}"
            )
    return "\n".join(lines)


def _matplotlib_figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_extra("plot", "--plot") from None
    return Figure


def plot_lengths(st: Stats, path: str, Figure: Any = None) -> None:
    """Histogram of tokens and trained tokens per sample; written with matplotlib's Agg canvas
    (``Figure``, no pyplot), so no display or global backend is touched."""
    Figure = Figure or _matplotlib_figure()
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    top = int(st.lengths.max()) if len(st.lengths) else 1
    bins = np.linspace(0, max(top, 1), 61)
    ax.hist(st.lengths, bins=bins, alpha=0.6, label=f"tokens ({st.num_tokens:,})", color="#4c72b0")
    ax.hist(st.trained, bins=bins, alpha=0.6, label=f"trained tokens ({st.num_trained:,})", color="#55a868")
    if st.max_len:
        ax.axvline(st.max_len, color="#c44e52", linestyle="--", linewidth=1, label=f"--max-len {st.max_len:,}")
    ax.set_xlabel("tokens per sample")
    ax.set_ylabel("samples")
    ax.set_title(f"{st.out}: {plural(len(st.lengths), 'sample')}")
    ax.legend()
    _check_plot_path(path, Figure)
    fig.savefig(path)


def _check_plot_path(path: str, Figure: Any) -> None:
    supported = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in supported:
        kinds = ", ".join(sorted(supported))
        raise ViewError(f"--plot {path}: unknown image type {suffix!r}; use a .png file (or {kinds})")
    parent = Path(path).parent
    if not parent.is_dir():
        raise ViewError(f"--plot {path}: directory {parent} does not exist; create it or write elsewhere")


def stats_main(args: argparse.Namespace) -> int:
    Figure = None
    if args.plot:  # fail before the work, not after
        Figure = _matplotlib_figure()
        _check_plot_path(args.plot, Figure)
    st = compute_stats(args.out, args.pack_len)
    if args.plot:
        plot_lengths(st, args.plot, Figure)
    text = format_stats(st, pack_len_given=args.pack_len is not None) + "\n"
    _emit(text + (f"  plot            {args.plot}\n" if args.plot else ""))
    return 0
