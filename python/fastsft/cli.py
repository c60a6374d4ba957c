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
  python -c "import fastsft; ds = fastsft.SFTDataset('out'); print(len(ds), ds[0]['labels'][-8:])"
  fastsft inspect out/ --index 0     # the sample, with its trained tokens marked

README.md's option table is this help, option for option (tests/test_readme.py checks it).
"""

INPUTS_HELP = (
    "JSONL or JSON-array files, plain, .gz or .zst (detected by content); Parquet, Arrow IPC/Feather files "
    "and datasets.save_to_disk directories (read in record batches; the row index stands in for the line); "
    "globs allowed; blank lines skipped."
)


def _add_prep_parser(subparsers: argparse._SubParsersAction) -> None:
    from fastsft.config import PrepOptions, choices_of

    p = subparsers.add_parser(
        "prep",
        help="render, tokenize and mask chat corpora into a memory-mapped dataset",
        description="Render each conversation with the model's chat template, tokenize it with its "
        "tokenizer, mark the assistant tokens that train, and write memory-mapped .npy arrays.",
        epilog=PREP_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help=INPUTS_HELP)
    p.add_argument(
        "--tokenizer", required=True, metavar="DIR",
        help="Model directory with tokenizer.json (+ tokenizer_config.json or chat_template.jinja for the chat "
        "template), or a hub id already in the local Hugging Face cache.",
    )  # fmt: skip
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="Dataset directory to write: a new path, an empty directory, or a dataset to replace (--overwrite).",
    )  # fmt: skip
    for f in dataclasses.fields(PrepOptions):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        if f.type in ("bool", bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=meta["help"])
        elif f.name in ("role_map", "template_args"):
            p.add_argument(meta.get("flag") or flag, dest=f.name, action="append", metavar=meta.get("metavar"), help=meta["help"])
        else:
            kind = {"int | None": int, "int": int, "float | None": float}.get(str(f.type), str)
            choices = choices_of(f)
            metavar = meta.get("metavar") or _metavar(kind, choices)
            p.add_argument(flag, dest=f.name, type=kind, default=f.default, choices=choices, metavar=metavar, help=meta["help"])
    p.set_defaults(func=_run_prep)


def _metavar(kind: type, choices: tuple[str, ...] | None) -> str:
    """How a value is written in --help and in README's table: `right|drop`, `N`, `F`, `NAME`."""
    if choices:
        return "|".join(choices)
    return {int: "N", float: "F"}.get(kind, "NAME")


def _run_prep(args: argparse.Namespace) -> int:
    import fastsft
    from fastsft.config import PrepOptions, parse_role_map, parse_template_args

    options: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(PrepOptions)}
    options["role_map"] = parse_role_map(args.role_map)
    options["template_args"] = parse_template_args(args.template_args)
    summary = fastsft.prep(args.inputs, args.tokenizer, args.output, **options)
    print(format_summary(summary))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    """The end-of-run report: where, how many, why rejected, how fast."""
    from fastsft.wording import plural

    if s.get("skipped"):
        return f"fastsft prep: {s['output']} is already complete with the same inputs and options; kept it ({plural(s['written'], 'sample')})"
    trained = s["trained_tokens"] / s["tokens"] if s["tokens"] else 0.0
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(s["rejected_by_reason"].items(), key=lambda kv: -kv[1]))
    seconds = max(s["seconds"], 1e-9)
    lines = [
        f"fastsft prep: wrote {s['output']}",
        f"  records read   {s['read']:>12,}",
        f"  written        {s['written']:>12,}"
        + (
            f"  ({s['samples']:,} samples; {s['split_records']:,} record{'s' if s['split_records'] != 1 else ''} "
            f"split into {s['split_samples']:,} per-turn samples)"
            if s.get("split_records")
            else ""
        ),
        f"  rejected       {s['rejected']:>12,}" + (f"  ({reasons}; details in rejects.jsonl)" if reasons else ""),
        f"  truncated      {s['truncated']:>12,}",
        f"  tokens         {s['tokens']:>12,}  (trained {s['trained_tokens']:,}, {trained:.1%})",
        f"  throughput     {s['read'] / seconds:>12,.0f} records/s, {s['tokens'] / seconds / 1e6:.2f}M tokens/s "
        f"({plural(s['threads'], 'thread')}, {s['seconds']:.1f} s)",
    ]
    return "\n".join(lines)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `command="prep"`, only `prep`'s subparser: the other subcommands'
    modules import numpy and the training stack (0.2-0.3 s of a one-conversation `prep`)."""
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
    if command == "prep":
        return parser
    from fastsft.view import register_cli as register_view

    register_view(subparsers)
    from fastsft.verify import register_cli as register_verify

    register_verify(subparsers)
    from fastsft.check import register_cli as register_check

    register_check(subparsers)
    try:
        from fastsft.train import register_cli as register_train
    except ImportError:  # a broken install of the training side must not take prep down with it
        pass
    else:
        register_train(subparsers)
    return parser


def _version() -> str:
    from fastsft import __version__

    return f"fastsft {__version__}"


def _command(argv: list[str]) -> str | None:
    """The subcommand named in `argv`: its first word that is neither a global flag nor its value."""
    words = iter(argv)
    for word in words:
        if word in ("--local_rank", "--local-rank"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_command(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    from fastsft.errors import EXIT_INTERRUPTED, EXIT_USAGE, FastSFTError
    from fastsft.extras import extra_for, missing_extra

    # Exit codes: fastsft/errors.py (and README's "Exit codes"). Anything that is not a
    # FastSFTError is a bug and keeps its traceback.
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as error:
        extra = extra_for(error)
        if extra is None:
            raise
        print(f"fastsft {args.command}: error: {missing_extra(extra, args.command, [error.name or extra])}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastsft: interrupted; nothing was written to the output path", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FastSFTError as error:
        print(f"fastsft {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
