"""``fastsft inspect`` and ``fastsft stats``: look at prepared data before training on it.

- ``inspect``: decode samples and show which tokens train (colour on a terminal, ``[[...]]``
  markers when piped, ``<span class="trained">`` in an HTML page), with token ids on request and
  the input file and line each sample came from.
- ``stats``: sample and token counts, length percentiles, truncations, rejects by reason, the fill
  that packing would reach, and a length histogram (matplotlib, imported only for ``--plot``).

This module is the command line and the public face; the work is in ``view_inspect.py``,
``view_stats.py`` and what both share, ``view_decode.py``. It only reads datasets (through
``fastsft.data``); it never writes one.
"""

from __future__ import annotations

import argparse
from typing import Any

from .view_decode import ViewError, check_ids, decode_runs, load_tokenizer, mask_runs, open_dataset, token_texts
from .view_inspect import Sample, choose_indices, format_html, format_sample, inspect_main, load_sample, sample_runs
from .view_stats import (
    PackFill,
    Stats,
    compute_stats,
    format_stats,
    pack_fill,
    percentiles,
    plot_lengths,
    stats_main,
    trained_per_sample,
)

INSPECT_EPILOG = """\
examples:
  fastsft prep assets/corpora/llamafactory_glaive_toolcall_en_demo.jsonl.gz \\
      --tokenizer assets/tokenizers/qwen2.5 -o out/ --max-len 2048
  fastsft inspect out/ --index 3              # sample 3; trained runs in [[...]] (green on a terminal)
  fastsft inspect out/ --random 5 --seed 0    # 5 random samples, reproducibly
  fastsft inspect out/ --index 3 --ids        # every token as 'text':id
  fastsft inspect out/ --random 20 --html view.html

output of `fastsft inspect out/ --index 3 | less` (lines 1 and 20-30 of 54):
  sample 3 of 299 | assets/corpora/llamafactory_glaive_toolcall_en_demo.jsonl.gz line 4 | 595 tokens, 148 trained (24.9%)
  I need to calculate the area of a rectangle. The length is 5 units and the breadth is 3 units.<|im_end|>
  <|im_start|>assistant
  [[<tool_call>
  {"name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [5, 3]}}
  </tool_call><|im_end|>]]
  <|im_start|>user
  <tool_response>
  {"area": 15}
  </tool_response><|im_end|>
  <|im_start|>assistant
  [[The area of the rectangle with length 5 units and breadth 3 units is 15 square units.<|im_end|>]]
"""

STATS_EPILOG = """\
examples:
  fastsft stats out/                              # counts, length percentiles, rejects
  fastsft stats out/ --pack-len 4096 --plot lengths.png
  fastsft stats shards/                           # a parent of shard directories: all of them

output of `fastsft stats out/ --pack-len 4096` (out/ as in `fastsft inspect --help`):
  fastsft stats: out/
    samples                    299   (read 300, rejected 1)
    tokens                 163,419
    trained tokens          84,946   (52.0% of tokens)
    per sample             p50       p90       p99       max
      tokens               454       907     1,577     1,910
      trained              122       754     1,368     1,708
    truncated                    0   (at --max-len 2,048)
    rejected                     1   (no_trained_tokens 1; details in rejects.jsonl)
    packing at 4,096: 41 packs, fill 97.3%
"""


def register_cli(subparsers: Any) -> None:
    """Add the ``inspect`` and ``stats`` subcommands to an argparse ``subparsers`` object."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "inspect", help="show samples with their trained tokens highlighted",
        description="Decode prepared samples and mark the tokens that train (loss_mask 1): green on a "
        "terminal, [[...]] when piped, <span class=\"trained\"> with --html. Shows the input file and line "
        "of each sample.", epilog=INSPECT_EPILOG, formatter_class=fmt,
    )  # fmt: skip
    p.add_argument("out", metavar="OUT", help="dataset directory written by `fastsft prep` (or a parent of shards)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, metavar="I", help="sample to show (default 0)")
    which.add_argument("--random", type=int, metavar="N", help="show N samples drawn at random")
    p.add_argument("--seed", type=int, metavar="S", help="seed for --random (default: fresh, printed)")
    p.add_argument("--ids", action="store_true", help="show token boundaries and ids ('text':id)")
    p.add_argument("--html", metavar="FILE", help="write a standalone HTML page instead of printing")
    p.add_argument("--tokenizer", metavar="DIR", help="model directory with tokenizer.json (default: the manifest's)")
    p.set_defaults(func=inspect_main)

    s = subparsers.add_parser(
        "stats", help="sample, token and reject counts, length percentiles, packing fill",
        description="Counts, length percentiles (tokens and trained tokens per sample), truncations, "
        "rejects by reason, and the fill that packing would reach.", epilog=STATS_EPILOG, formatter_class=fmt,
    )  # fmt: skip
    s.add_argument("out", metavar="OUT", help="dataset directory written by `fastsft prep` (or a parent of shards)")
    s.add_argument("--pack-len", type=int, metavar="L", help="pack capacity in tokens (default: the longest sample)")
    s.add_argument(
        "--plot", metavar="FILE.png", help="write a histogram of sample lengths (needs matplotlib: pip install 'fastsft[plot]')"
    )
    s.set_defaults(func=stats_main)


__all__ = [
    "PackFill", "Sample", "Stats", "ViewError", "check_ids", "choose_indices", "compute_stats", "decode_runs",
    "format_html", "format_sample", "format_stats", "inspect_main", "load_sample", "load_tokenizer", "mask_runs",
    "open_dataset", "pack_fill", "percentiles", "plot_lengths", "register_cli", "sample_runs", "stats_main",
    "token_texts", "trained_per_sample",
]  # fmt: skip
