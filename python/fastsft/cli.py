"""`fastsft` command line: subcommands and their flags, no logic of their own."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

PREP_EXAMPLE = """\
example:
  fastsft prep assets/corpora/llamafactory_alpaca_zh_demo.jsonl.gz 'data/*.jsonl.zst' \\
      --tokenizer assets/tokenizers/qwen2.5 -o out/ --max-len 4096
  python -c "import fastsft; ds = fastsft.SFTDataset('out'); print(ds[0]['labels'][:8])"
"""


def _add_prep_parser(subparsers: argparse._SubParsersAction) -> None:
    from fastsft.config import PrepOptions

    p = subparsers.add_parser(
        "prep",
        help="render, tokenize and mask chat corpora into a memory-mapped dataset",
        description="Render each conversation with the model's chat template, tokenize it with its "
        "tokenizer, mark the assistant tokens that train, and write memory-mapped .npy arrays.",
        epilog=PREP_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help="JSONL or JSON files (plain, .gz, .zst); globs allowed")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="model directory with tokenizer.json")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="dataset directory to write")
    for f in dataclasses.fields(PrepOptions):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        if f.type in ("bool", bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=meta["help"])
        elif f.name == "role_map":
            p.add_argument(flag, dest=f.name, action="append", metavar=meta.get("metavar"), help=meta["help"])
        else:
            kind = {"int | None": int, "int": int, "float | None": float}.get(str(f.type), str)
            p.add_argument(flag, dest=f.name, type=kind, default=f.default, choices=meta["choices"], help=meta["help"])
    p.set_defaults(func=_run_prep)


def _run_prep(args: argparse.Namespace) -> int:
    import fastsft
    from fastsft.config import PrepOptions, parse_role_map

    options: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(PrepOptions)}
    options["role_map"] = parse_role_map(args.role_map)
    summary = fastsft.prep(args.inputs, args.tokenizer, args.output, **options)
    print(format_summary(summary))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    """The end-of-run report: where, how many, why rejected, how fast."""
    if s.get("skipped"):
        return f"fastsft prep: {s['output']} is already complete with the same inputs and options; kept it ({s['written']:,} samples)"
    trained = s["trained_tokens"] / s["tokens"] if s["tokens"] else 0.0
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(s["rejected_by_reason"].items(), key=lambda kv: -kv[1]))
    seconds = max(s["seconds"], 1e-9)
    lines = [
        f"fastsft prep: wrote {s['output']}",
        f"  records read   {s['read']:>12,}",
        f"  written        {s['written']:>12,}",
        f"  rejected       {s['rejected']:>12,}" + (f"  ({reasons}; details in rejects.jsonl)" if reasons else ""),
        f"  truncated      {s['truncated']:>12,}",
        f"  tokens         {s['tokens']:>12,}  (trained {s['trained_tokens']:,}, {trained:.1%})",
        f"  throughput     {s['read'] / seconds:>12,.0f} records/s, {s['tokens'] / seconds / 1e6:.2f}M tokens/s "
        f"({s['threads']} threads, {s['seconds']:.1f} s)",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastsft",
        description="Fast, exact SFT data preparation (and training) for chat models.",
    )
    parser.add_argument("--version", action="version", version=_version())
    # The `deepspeed` launcher passes --local_rank=N before the subcommand; the rank is read from
    # LOCAL_RANK, so the flag is accepted and ignored here.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_prep_parser(subparsers)
    from fastsft.view import register_cli as register_view

    register_view(subparsers)
    from fastsft.verify import register_cli as register_verify

    register_verify(subparsers)
    from fastsft.check import register_cli as register_check

    register_check(subparsers)
    try:
        from fastsft.train import register_cli as register_train
    except ImportError:
        register_train = None
    if register_train is not None:
        register_train(subparsers)
    return parser


def _version() -> str:
    from fastsft import __version__

    return f"fastsft {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from fastsft import FastSFTError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("fastsft: interrupted; nothing was written to the output path", file=sys.stderr)
        return 130
    except (FastSFTError, ValueError, OSError) as error:
        print(f"fastsft {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
