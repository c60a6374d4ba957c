"""One options schema: the dataclasses of fastsft.config are the definition; the Rust core, the CLI,
the typed keyword arguments (options_types.py), the `_core` stubs and the manifest must agree with
them. Each test fails when one side drifts."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import typing

import pytest

import fastsft
from fastsft import _core
from fastsft.cli import build_parser
from fastsft.config import ENCODE_FIELDS, TYPES_FILE, EncodeOptions, PrepOptions, choices_of, flag_of, typed_dicts_source
from fastsft.errors import UsageError
from fastsft.options_types import EncodeKwargs, PrepKwargs


def test_rust_reads_the_same_options_with_the_same_defaults():
    rust = json.loads(_core.encoder_option_defaults())
    python = EncodeOptions().to_core()
    assert list(rust) == list(python)  # same names, same order
    assert rust == python


def test_rust_rejects_an_option_it_does_not_know():
    with pytest.raises(UsageError, match="unknown field `max_lenn`"):
        _core.RecordEncoder("assets/tokenizers/qwen2.5", json.dumps({"max_lenn": 3}))


def test_every_option_is_a_cli_flag_with_its_choices_and_default():
    parser = build_parser()
    prep = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)).choices["prep"]
    actions = {a.dest: a for a in prep._actions}
    for f in dataclasses.fields(PrepOptions):
        action = actions[f.name]
        assert flag_of(f) in action.option_strings
        if f.name not in ("role_map", "template_args"):
            assert action.default == f.default, f.name
        choices = choices_of(f)
        if choices:
            assert tuple(action.choices) == choices, f.name


def test_typed_keyword_arguments_are_generated_from_the_dataclasses():
    assert TYPES_FILE.read_text() == typed_dicts_source(), "run: python -c 'import fastsft.config as c; c.write_types()'"
    assert list(typing.get_type_hints(EncodeKwargs)) == [f.name for f in dataclasses.fields(EncodeOptions)]
    assert list(typing.get_type_hints(PrepKwargs)) == [f.name for f in dataclasses.fields(PrepOptions)]


def test_python_entry_points_take_exactly_the_schema():
    # prep and RecordEncoder take **options typed by the generated TypedDicts; encode_batch adds threads.
    for function, kwargs in (
        (fastsft.prep, PrepKwargs),
        (fastsft.RecordEncoder.__init__, EncodeKwargs),
        (fastsft.encode_batch, EncodeKwargs),
    ):
        options = inspect.signature(function).parameters["options"]
        assert options.kind is inspect.Parameter.VAR_KEYWORD
        assert f"Unpack[{kwargs.__name__}]" in str(options.annotation), function
    with pytest.raises(TypeError):
        EncodeOptions(threads=2)  # a run option is not an encoding option


def test_the_manifest_records_the_encoding_options_by_name(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n"
    )
    fastsft.prep(
        [corpus], "assets/tokenizers/qwen2.5", tmp_path / "out", max_len=64, reasoning="mask", template_args={"n": 2**70}
    )
    options = json.loads((tmp_path / "out" / "manifest.json").read_text())["options"]
    assert list(options) == sorted(ENCODE_FIELDS, key=list(EncodeOptions().to_core()).index)
    assert options["max_len"] == 64 and options["reasoning"] == "mask"
    assert EncodeOptions.from_manifest(options) == EncodeOptions(max_len=64, reasoning="mask", template_args={"n": 2**70})


def test_manifests_before_the_schema_are_read_back():
    old = {"format": None, "fields": {"messages": "turns", "role": None}, "max_len": 8, "role_map": {}}
    assert EncodeOptions.from_manifest(old) == EncodeOptions(messages_field="turns", max_len=8, role_map={})


def test_bad_values_are_usage_errors_naming_the_flag():
    with pytest.raises(UsageError, match=r"--reasoning 'think': expected one of train, mask, drop"):
        EncodeOptions(reasoning="think")
    with pytest.raises(UsageError, match=r"--shard-index needs --num-shards"):
        PrepOptions(shard_index=1)
    # The core checks too, for callers of _core: the same flag in its message.
    with pytest.raises(UsageError, match=r'--history "later": expected one of template, as-written'):
        _core.RecordEncoder("assets/tokenizers/qwen2.5", json.dumps({"history": "later"}))
