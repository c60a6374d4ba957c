"""Typed errors end to end: every Rust error variant → its fastsft.errors class → the CLI's exit
code, table-driven; and the attributes a caller acts on (file, line, reason; counts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fastsft
from fastsft import _core, errors
from fastsft.cli import main

# variant → (class, also a ..., exit code). Adding a variant to rust/error.rs without a row fails below.
EXPECTED = {
    "Io": (errors.FileAccessError, OSError, 5),
    "NotFound": (errors.InputNotFoundError, FileNotFoundError, 3),
    "Corrupt": (errors.CorruptInputError, ValueError, 3),
    "BadFile": (errors.InputError, ValueError, 3),
    "Tokenizer": (errors.TokenizerError, ValueError, 3),
    "Template": (errors.TemplateError, ValueError, 3),
    "OutputExists": (errors.OutputExistsError, FileExistsError, 5),
    "Config": (errors.UsageError, ValueError, 2),
    "Strict": (errors.StrictRejectError, ValueError, 4),
    "TooManyRejects": (errors.TooManyRejectsError, ValueError, 4),
}


def test_every_rust_variant_has_a_row():
    assert {variant for variant, _ in _core.error_classes()} == set(EXPECTED) | {"Interrupted"}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_variant_raises_its_class_with_its_exit_code(variant):
    cls, builtin, code = EXPECTED[variant]
    with pytest.raises(cls) as caught:
        _core.raise_error_for_tests(variant)
    error = caught.value
    assert type(error) is cls and isinstance(error, builtin) and isinstance(error, fastsft.FastSFTError)
    assert error.exit_code == code == errors.exit_code_for(error)


def test_interrupted_is_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt):
        _core.raise_error_for_tests("Interrupted")


def test_attributes_of_strict_and_too_many_rejects():
    with pytest.raises(errors.StrictRejectError) as strict:
        _core.raise_error_for_tests("Strict")
    assert (strict.value.file, strict.value.line, strict.value.reason) == ("example.jsonl", 7, "empty_conversation")
    with pytest.raises(errors.TooManyRejectsError) as many:
        _core.raise_error_for_tests("TooManyRejects")
    assert many.value.counts == {"empty_conversation": 3} and many.value.read == 4
    with pytest.raises(errors.TemplateError) as template:
        _core.raise_error_for_tests("Template")
    assert template.value.template == "chat_template.jinja"


def test_every_python_side_error_of_fastsft_is_a_fastsft_error():
    from fastsft.data.errors import DatasetFormatError
    from fastsft.extras import MissingExtraError
    from fastsft.verify import VerifyUsageError
    from fastsft.view import ViewError

    for cls in (DatasetFormatError, MissingExtraError, VerifyUsageError, ViewError):
        assert issubclass(cls, fastsft.FastSFTError), cls


@pytest.fixture
def corpus(tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"messages": []}) + "\n")
    return path


def test_real_failures_carry_their_attributes(corpus, tmp_path):
    with pytest.raises(errors.StrictRejectError) as strict:
        fastsft.prep([corpus], "assets/tokenizers/qwen2.5", tmp_path / "s", strict=True)
    assert (strict.value.file, strict.value.line, strict.value.reason) == (str(corpus), 2, "empty_conversation")
    with pytest.raises(errors.TooManyRejectsError) as many:
        fastsft.prep([corpus], "assets/tokenizers/qwen2.5", tmp_path / "m", max_reject_fraction=0.1)
    assert many.value.counts == {"empty_conversation": 1} and many.value.read == 2
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for %}")
    with pytest.raises(errors.TemplateError, match=r"bad\.jinja: cannot parse") as template:
        fastsft.RecordEncoder("assets/tokenizers/qwen2.5", template=str(bad))
    assert template.value.template == str(bad)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["prep", "{corpus}", "--tokenizer", "assets/tokenizers/qwen2.5", "-o", "{out}", "--strict"], 4),
        (["prep", "{corpus}", "--tokenizer", "assets/tokenizers/qwen2.5", "-o", "{out}", "--max-reject-fraction", "0.1"], 4),
        (["prep", "{missing}", "--tokenizer", "assets/tokenizers/qwen2.5", "-o", "{out}"], 3),
        (["prep", "{corpus}", "--tokenizer", "{missing}", "-o", "{out}"], 3),
        (["prep", "{corpus}", "--tokenizer", "assets/tokenizers/qwen2.5", "-o", "{out}", "--shard-index", "1"], 2),
        (["prep", "{corpus}", "--tokenizer", "assets/tokenizers/qwen2.5", "-o", "{existing}"], 5),
    ],
    ids=["strict", "too-many-rejects", "missing-input", "missing-tokenizer", "usage", "output-exists"],
)
def test_cli_exit_codes(args, code, corpus, tmp_path, capsys):
    existing = tmp_path / "existing"  # a finished dataset, replaced only with --overwrite
    fastsft.prep([corpus], "assets/tokenizers/qwen2.5", existing)
    names = {"corpus": corpus, "out": tmp_path / "out", "missing": tmp_path / "nope.jsonl", "existing": existing}
    assert main([a.format(**names) for a in args]) == code
    err = capsys.readouterr().err
    assert err.startswith("fastsft prep: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_bug_is_a_traceback_not_a_user_error(monkeypatch, corpus, tmp_path):
    # Only FastSFTError is reported as one line; a bare ValueError from a bug keeps its traceback.
    prep_module = sys.modules["fastsft.prep"]

    def broken(*a, **k):
        raise ValueError("a bug")

    monkeypatch.setattr(prep_module, "expand_inputs", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["prep", str(corpus), "--tokenizer", "assets/tokenizers/qwen2.5", "-o", str(tmp_path / "o")])


def test_exit_codes_are_documented_in_the_readme():
    readme = open("README.md", encoding="utf-8").read()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code in ("0", "1", "2", "3", "4", "5", "130"):
        assert f"| {code} |" in section, code
    assert subprocess.run([sys.executable, "-c", "import fastsft.errors"], check=False).returncode == 0
