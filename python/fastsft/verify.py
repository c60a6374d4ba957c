"""``fastsft verify``: re-encode a random sample of a prepared dataset with an independent engine.

For each sampled row it reads the record again from its input file, renders the conversation with
``transformers``' own Jinja rendering of the chat template, tokenizes the text with the Python
``tokenizers`` library, draws the mask by the rule of DESIGN §3 (re-implemented in Python) and
compares ids and mask with what ``fastsft prep`` stored. A per-turn sample (``--split-turns``) is
rebuilt as the model sees that turn at inference: ``transformers``' prompt for the messages before
it (``add_generation_prompt=True``), then the completion the template renders after that prompt.

What it shares with the Rust core, on purpose: only the reading of inputs (``verify_inputs.py``,
through ``prep``'s own reader, so every input kind ``prep`` accepts is read back) and of records
(``RecordEncoder.conversation``), so that both sides start from the same messages. Rendering,
tokenization, span finding, options and truncation are all done independently
(``verify_reference.py``); ``verify_report.py`` shows the differences. What it does not do: fix
anything, or check rows that prep rejected (``rejects.jsonl`` says why those are).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ._core import FastSFTError as CoreError
from .data.dataset import resolve_dataset_dirs
from .data.manifest import read_manifest, sha256_file
from .errors import FastSFTError, InputError, UsageError
from .extras import require
from .tokenizer_path import resolve_tokenizer
from .verify_inputs import read_records, resolve_recorded
from .verify_reference import NotCheckable, ReferenceEncoder, ReferenceReject
from .verify_report import describe_difference, format_report

DEFAULT_SAMPLE = 200


class VerifyUsageError(UsageError):
    """The dataset, its tokenizer or its inputs cannot be found or read: nothing to compare."""


def _pick(counts: list[int], sample: int, seed: int) -> list[tuple[int, int]]:
    """(shard, row) pairs: `sample` rows drawn without replacement over all shards, seeded."""
    total = sum(counts)
    rows = range(total) if sample >= total else sorted(np.random.default_rng(seed).choice(total, sample, replace=False))
    bounds = np.cumsum([0, *counts])
    picked = []
    for g in rows:
        shard = int(np.searchsorted(bounds, g, side="right")) - 1
        picked.append((shard, int(g - bounds[shard])))
    return picked


def verify(path: str | Path, sample: int = DEFAULT_SAMPLE, seed: int = 0, tokenizer: str | Path | None = None) -> dict[str, Any]:
    """Re-encodes `sample` random rows of the dataset at `path` (or of its shards) and compares.

    Returns {"path", "num_samples", "sampled", "samples": [[shard directory, row], ...],
    "checked", "identical", "different", "ids_only": {reason: count}, "skipped": {reason: count},
    "differences": [{"shard",
    "sample", "input", "line", "kind" ("ids", "mask" or "reference rejects"), "position" (in the
    sample), "stored_len", "reference_len", "detail"}], "warnings": [...]}. "ids_only" counts the
    rows whose ids are identical but whose spans the reference rules cannot find (mask unchecked).
    Raises VerifyUsageError (a UsageError: exit 2) when the dataset, tokenizer or inputs cannot be used.
    """
    if sample < 1:
        raise UsageError(f"--sample {sample}: must be at least 1")
    require("verify", "verify")  # the reference engine, before any work
    try:
        shards = resolve_dataset_dirs(path)
        manifests = [read_manifest(d) for d in shards]
    except FastSFTError as e:  # not there, not a dataset, or damaged
        raise VerifyUsageError(f"{e} (make one with `fastsft prep FILES --tokenizer DIR -o {path}`)") from None
    result: dict[str, Any] = {
        "path": str(path), "num_samples": sum(m.num_samples for m in manifests), "sampled": 0, "checked": 0,
        "identical": 0, "different": 0, "ids_only": Counter(), "skipped": Counter(), "differences": [], "warnings": [],
    }  # fmt: skip
    picked: defaultdict[int, list[int]] = defaultdict(list)
    for shard, row in _pick([m.num_samples for m in manifests], sample, seed):
        picked[shard].append(row)
    result["sampled"] = sum(map(len, picked.values()))
    result["samples"] = [[str(shards[shard]), row] for shard, rows in sorted(picked.items()) for row in rows]
    engines: dict[tuple[str, str, str], tuple[Any, ReferenceEncoder]] = {}
    for shard, rows in sorted(picked.items()):
        man, directory = manifests[shard].raw, shards[shard]
        options = man.get("options", {})
        tok_dir = _tokenizer_dir(man, directory, tokenizer)
        template_path = None
        if options.get("template") not in (None, "chatml"):
            template_path = resolve_recorded(options["template"], directory)
            if template_path is None:
                raise VerifyUsageError(f"{directory}: template file {options['template']} not found")
        key = (str(tok_dir), json.dumps(options, sort_keys=True), str(template_path))
        if key not in engines:
            engines[key] = _load_engines(tok_dir, options, template_path, man, result["warnings"])
        reader, reference = engines[key]
        _check_shard(directory, man, rows, reader, reference, result)
    result["skipped"], result["ids_only"] = dict(result["skipped"]), dict(result["ids_only"])
    return result


def _tokenizer_dir(man: dict[str, Any], directory: Path, override: str | Path | None) -> Path:
    """The directory of the tokenizer to verify with: ``--tokenizer``, else the manifest's."""
    recorded = (man.get("tokenizer") or {}).get("path", "")
    try:
        return resolve_tokenizer(override, recorded=recorded, dataset=directory).parent
    except InputError as e:
        raise VerifyUsageError(str(e)) from None


def _load_engines(
    tok_dir: Path, options: dict[str, Any], template_path: Path | None, man: dict[str, Any], warnings: list[str]
) -> tuple[Any, ReferenceEncoder]:
    """(fastsft's record reader, the reference encoder) for a shard; warns when the tokenizer or
    template found now is not the one the dataset was made with."""

    def frozen(d: dict[str, str] | None) -> tuple[tuple[str, str], ...] | None:
        return tuple(sorted((k, v) for k, v in (d or {}).items() if v is not None)) or None

    template = str(template_path) if template_path else options.get("template")
    from fastsft.config import EncodeOptions

    given = EncodeOptions.from_manifest(options)
    fields = {name: getattr(given, f"{name}_field") for name in ("messages", "role", "content", "system")}
    reader = _record_reader(str(tok_dir), template, given.format, frozen(given.role_map), frozen(fields))
    reference = ReferenceEncoder(tok_dir, options, template_path)
    want = (man.get("tokenizer") or {}).get("sha256")
    if want and sha256_file(tok_dir / "tokenizer.json") != want:
        warnings.append(f"{tok_dir / 'tokenizer.json'} is not the tokenizer the dataset was made with (sha256 differs)")
    want = (man.get("template") or {}).get("sha256")
    if want and options.get("template") != "chatml" and hashlib.sha256(reference.template.encode()).hexdigest() != want:
        warnings.append(f"the chat template of {tok_dir} differs from the one the dataset was made with (sha256 differs)")
    return reader, reference


# Loading a large vocabulary takes seconds (Gemma's 256k: three loads, Rust, transformers and
# tokenizers), so each loader keeps its last few results for repeated `verify` calls.
@functools.lru_cache(maxsize=4)
def _record_reader(
    tok_dir: str,
    template: str | None,
    format: str | None,
    role_map: tuple[tuple[str, str], ...] | None,
    fields: tuple[tuple[str, str], ...] | None,
) -> Any:
    from fastsft import RecordEncoder

    schema: dict[str, Any] = {"format": format, "role_map": dict(role_map or ()) or None}
    for name, value in fields or ():  # custom field names (--messages-field ...)
        schema[f"{name}_field"] = value
    return RecordEncoder(tok_dir, template=template, **schema)


def _check_shard(
    directory: Path, man: dict[str, Any], rows: list[int], reader: Any, reference: ReferenceEncoder, result: dict[str, Any]
) -> None:
    ids_all = np.load(directory / "input_ids.npy", mmap_mode="r")
    mask_all = np.load(directory / "loss_mask.npy", mmap_mode="r")
    offsets = np.load(directory / "offsets.npy", mmap_mode="r")
    origin = np.load(directory / "origin.npy", mmap_mode="r")
    turns = np.load(directory / "turns.npy", mmap_mode="r") if (directory / "turns.npy").is_file() else None
    inputs = man.get("inputs", [])
    by_file: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_file[int(origin[row, 0])][int(origin[row, 1])].append(row)
    for file_index, lines in sorted(by_file.items()):
        info = inputs[file_index] if file_index < len(inputs) else {"path": f"input #{file_index}"}
        path = resolve_recorded(info["path"], directory)
        if path is None:
            result["skipped"][f"input file not found: {info['path']}"] += sum(map(len, lines.values()))
            continue
        try:
            records, sha = read_records(path, set(lines))
        except (FastSFTError, CoreError, OSError) as e:  # damaged since prep read it
            result["skipped"][f"input file unreadable: {e}"] += sum(map(len, lines.values()))
            continue
        changed = info.get("sha256") not in (None, sha)
        if changed:
            result["warnings"].append(f"{path} changed since the dataset was made (sha256 differs): its records may differ")
        for line, line_rows in sorted(lines.items()):
            for row in line_rows:
                where = {"shard": str(directory), "sample": row, "input": str(path), "line": line}
                if line not in records:
                    result["skipped"]["record not found in its input (the file changed)"] += 1
                    continue
                a, b = int(offsets[row]), int(offsets[row + 1])
                stored = (ids_all[a:b].astype(np.int64).tolist(), mask_all[a:b].astype(np.int64).tolist())
                # A per-turn sample (`--split-turns`) is the assistant message `turn`'s alone.
                turn = int(turns[row]) if turns is not None and turns[row] >= 0 else None
                if turn is not None:
                    where["turn"] = turn
                _compare(where, records[line], stored, reader, reference, changed, result, turn)


def _compare(
    where: dict[str, Any],
    record: bytes,
    stored: tuple[list[int], list[int]],
    reader: Any,
    reference: ReferenceEncoder,
    changed: bool,
    result: dict[str, Any],
    turn: int | None = None,
) -> None:
    try:
        normalized = reader.conversation(record.decode("utf-8"))
    except UnicodeDecodeError:
        normalized = {"reject": "invalid_utf8"}
    if "json" not in normalized:
        if changed:
            result["skipped"]["record no longer readable (the input changed)"] += 1
            return
        normalized = None
    try:
        if normalized is None:
            raise ReferenceReject("fastsft's own reader rejects the record now")
        conversation = json.loads(normalized["json"])
        if turn is None:
            ids, mask, not_checkable = reference.encode(conversation)
        else:
            ids, turn_mask = reference.encode_turn(conversation, turn)
            mask, not_checkable = turn_mask, None
    except NotCheckable as e:  # a per-turn sample this reference cannot rebuild
        result["skipped"][str(e)] += 1
        return
    except ReferenceReject as e:
        result["checked"] += 1
        result["different"] += 1
        result["differences"].append({**where, "kind": "reference rejects", "position": None,
                                      "stored_len": len(stored[0]), "reference_len": None, "detail": f"    {e}"})  # fmt: skip
        return
    if mask is None and ids == stored[0]:
        result["ids_only"][not_checkable] += 1
        return
    result["checked"] += 1
    if (ids, mask) == stored:
        result["identical"] += 1
        return
    result["different"] += 1
    kind, at, detail = describe_difference(reference.tokenizer, stored, (ids, mask if mask is not None else stored[1]))
    result["differences"].append(
        {**where, "kind": kind, "position": at, "stored_len": len(stored[0]), "reference_len": len(ids), "detail": detail}
    )


EPILOG = """\
example:
  fastsft prep assets/corpora/llamafactory_alpaca_en_demo.jsonl.gz \\
      --tokenizer assets/tokenizers/qwen2.5 -o out/ --max-len 2048
  fastsft verify out/ --sample 500 --seed 1

exit status: 0 every checked sample is identical; 1 some sample differs; 2 the dataset, its
tokenizer or its inputs cannot be found (nothing was compared).
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def register_cli(subparsers: Any) -> None:
    """Add the ``verify`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "verify", help="re-encode random samples with transformers and compare ids and masks",
        description="Re-read N random samples from their input files, render them with transformers'\n"
        "apply_chat_template, tokenize with the tokenizers library, draw the mask by fastsft's rule\n"
        "(re-implemented in Python), and compare token ids and loss mask with what is stored.\n"
        "Prints a summary and the first differences, decoded side by side.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("out", metavar="OUT", help="dataset directory written by `fastsft prep` (or a parent of shards)")
    p.add_argument("--sample", type=_positive, default=DEFAULT_SAMPLE, metavar="N",
                   help=f"samples to check, drawn at random over all shards; all when N >= their number (default {DEFAULT_SAMPLE})")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the random draw (default 0)")
    p.add_argument("--tokenizer", metavar="DIR", help="model directory with tokenizer.json, or a hub id in the local "
                   "Hugging Face cache (default: the one the manifest records)")  # fmt: skip
    p.set_defaults(func=verify_main)


def verify_main(args: argparse.Namespace) -> int:
    import sys

    try:
        result = verify(args.out, sample=args.sample, seed=args.seed, tokenizer=args.tokenizer)
    except VerifyUsageError as e:
        print(f"fastsft verify: error: {e}", file=sys.stderr)
        return 2
    print(format_report(result))
    if result["checked"] == 0 and not result["ids_only"] and result["sampled"]:
        print("fastsft verify: error: no sample could be checked (see skipped above)", file=sys.stderr)
        return 2
    return 1 if result["different"] else 0


__all__ = [
    "ReferenceEncoder",
    "VerifyUsageError",
    "describe_difference",
    "format_report",
    "read_records",
    "register_cli",
    "verify",
]
