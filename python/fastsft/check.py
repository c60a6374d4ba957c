"""``fastsft check DIR``: verify a prepared dataset completely, checksums included.

For people who copy datasets between machines (or keep them for months): everything
``SFTDataset`` checks when it opens a dataset, plus the sha256 of every array's data against the
``array_sha256`` the writer recorded (``data/integrity.py``). Prints one ``ok`` line per dataset
directory; a failure is one line naming the file (exit 2, from ``cli.main``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

CHECK_EXAMPLE = """\
example:
  fastsft check out/                 # a dataset, or a directory of shards
  fastsft check /mnt/copy/shard-0000*
"""


def run_check(args: argparse.Namespace) -> int:
    from .data.dataset import resolve_dataset_dirs
    from .data.integrity import check_dataset
    from .data.manifest import read_manifest

    for d in resolve_dataset_dirs(args.datasets):
        t0 = time.perf_counter()
        man = read_manifest(d)
        notes = check_dataset(man, checksums=True)
        seconds = time.perf_counter() - t0
        trained = f" ({man.num_trained_tokens:,} trained)" if man.num_trained_tokens is not None else ""
        sums = "checksums skipped" if notes else "checksums match"
        print(f"ok {d}: {man.num_samples:,} samples, {man.num_tokens:,} tokens{trained}; {sums} ({seconds:.1f} s)")
        for note in notes:
            print(f"  note: {note}", file=sys.stderr)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``check`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "check",
        help="verify a prepared dataset: structure, contents and checksums",
        description="Check that a prepared dataset is intact and agrees with its manifest: .npy headers and "
        "lengths, offsets, trained-token count, token ids below the vocabulary size, and the sha256 of every "
        "array recorded when it was written (datasets made before checksums existed: skipped, with a note).",
        epilog=CHECK_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("datasets", nargs="+", metavar="DIR", help="dataset directories (or parents of shard directories)")
    p.set_defaults(func=run_check)
