"""Damaged prepared datasets: each damage is caught with one line naming the file, when
``SFTDataset`` opens the data (so before ``fastsft train`` loads a model) and by ``fastsft check``,
which also compares the checksums the writer recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fastsft.cli import main as cli_main
from fastsft.data import DatasetFormatError, SFTDataset, read_manifest
from fastsft.errors import EXIT_INPUT, FastSFTError  # the base of every error fastsft raises (fastsft.FastSFTError)
from train_helpers import ROOT, random_samples, write_dataset

VOCAB = 70000  # > 65536, so ids are uint32 and an id of 1e9 fits in the file


def _dataset(path: Path, **kw) -> Path:
    return write_dataset(path, random_samples(20, seed=5, vocab=1000), vocab_size=VOCAB, **kw)


def _edit_array(name: str, edit: Callable[[np.ndarray], np.ndarray | None]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        a = np.load(d / name)
        out = edit(a)
        np.save(d / name, a if out is None else out)

    return apply


def _swap_offsets(o: np.ndarray) -> None:
    o[1], o[2] = o[2], o[1]


def _set(a: np.ndarray, index: int, value: int) -> None:
    a[index] = value


def _write_bytes(name: str, make: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        (d / name).write_bytes(make((d / name).read_bytes()))

    return apply


def _edit_manifest(**changes) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        m = json.loads((d / "manifest.json").read_text())
        m.update(changes)
        (d / "manifest.json").write_text(json.dumps(m))

    return apply


def _manifest_count(key: str, delta: int) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        m = json.loads((d / "manifest.json").read_text())
        m[key] += delta
        (d / "manifest.json").write_text(json.dumps(m))

    return apply


# (case, damage, file named in the error, what the error says)
DAMAGE = [
    ("swapped offsets", _edit_array("offsets.npy", _swap_offsets), "offsets.npy", "these decrease"),
    ("zeroed loss mask", _edit_array("loss_mask.npy", np.zeros_like), "loss_mask.npy", "0 tokens are marked trained, but manifest.json says num_trained_tokens="),
    ("mask value 2", _edit_array("loss_mask.npy", lambda a: _set(a, 7, 2)), "loss_mask.npy", "value 2 at position 7"),
    ("id 1e9", _edit_array("input_ids.npy", lambda a: _set(a, 30, 10**9)), "input_ids.npy", "token id 1000000000 at position 30"),
    ("empty input_ids.npy", _write_bytes("input_ids.npy", lambda b: b""), "input_ids.npy", "empty file (0 bytes)"),
    ("truncated input_ids.npy", _write_bytes("input_ids.npy", lambda b: b[:-10]), "input_ids.npy", "truncated: the header declares uint32("),
    ("random bytes", _write_bytes("input_ids.npy", lambda b: np.random.default_rng(0).bytes(len(b))), "input_ids.npy", "not a .npy file"),
    ("truncated header", _write_bytes("input_ids.npy", lambda b: b[:40]), "input_ids.npy", "truncated .npy header"),
    ("dtype mismatch", _edit_array("input_ids.npy", lambda a: a.astype(np.int64)), "input_ids.npy", "dtype int64, but manifest.json says input_ids_dtype uint32"),
    ("manifest sample count", _manifest_count("num_samples", 1), "offsets.npy", "manifest.json says num_samples=21, so 22 offsets"),
    ("manifest token count", _manifest_count("num_tokens", -1), "input_ids.npy", "manifest.json says num_tokens="),
    ("empty sample", _edit_array("offsets.npy", lambda o: _set(o, 3, o[2])), "offsets.npy", "repeat (an empty sample)"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "file", "says"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damage_is_one_line_naming_the_file(tmp_path, capsys, damage, file, says):
    d = _dataset(tmp_path / "d")
    SFTDataset(d)  # intact: opens
    damage(d)
    with pytest.raises(DatasetFormatError) as e:
        SFTDataset(d)
    msg = str(e.value)
    assert isinstance(e.value, FastSFTError)
    assert msg.startswith(f"{d / file}: ") and says in msg and "\n" not in msg, msg

    assert cli_main(["check", str(d)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err == f"fastsft check: error: {msg}\n"


def test_checksum_mismatch_is_found_by_check_only(tmp_path, capsys):
    """A changed id that is still a valid token: only the recorded checksum can see it."""
    d = _dataset(tmp_path / "d")
    ids = np.load(d / "input_ids.npy")
    ids[11] = (ids[11] + 1) % 1000
    np.save(d / "input_ids.npy", ids)
    SFTDataset(d)  # structure and contents are still consistent
    assert cli_main(["check", str(d)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"fastsft check: error: {d / 'input_ids.npy'}: sha256 of its data is ")
    assert "manifest.json records" in err and err.count("\n") == 1


def test_check_ok_and_old_datasets_without_checksums(tmp_path, capsys):
    new, old = _dataset(tmp_path / "new"), _dataset(tmp_path / "old", checksums=False)
    assert "array_sha256" not in json.loads((old / "manifest.json").read_text())
    assert cli_main(["check", str(new), str(old)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"ok {new}: 20 samples, ") and "checksums match" in lines[0]
    assert lines[1].startswith(f"ok {old}: 20 samples, ") and "checksums skipped" in lines[1]
    assert f"{old}: no checksums in manifest.json (made by an older fastsft)" in err
    SFTDataset(old)  # old datasets open


def test_damaged_manifest_json(tmp_path, capsys):
    d = _dataset(tmp_path / "d")
    _edit_manifest(num_samples="many")(d)
    assert cli_main(["check", str(d)]) == EXIT_INPUT
    assert capsys.readouterr().err.startswith(f"fastsft check: error: {d / 'manifest.json'}: a count")
    (d / "manifest.json").write_bytes(b"\xff\xfe")
    assert cli_main(["check", str(d)]) == EXIT_INPUT
    assert "invalid JSON" in capsys.readouterr().err


def test_train_refuses_damaged_data_before_loading_a_model(tmp_path):
    """The real CLI: exit 3 (damaged input), one line on stderr, no traceback; the model directory has no weights
    at all, so getting to the model would fail differently."""
    d = _dataset(tmp_path / "d")
    _edit_array("offsets.npy", _swap_offsets)(d)
    (tmp_path / "model").mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "fastsft.cli", "train", "--data", str(d), "--model", str(tmp_path / "model"), "-o", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120,
    )  # fmt: skip
    assert res.returncode == EXIT_INPUT, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fastsft train: error: {d / 'offsets.npy'}: offsets[1]=") and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


def test_prep_records_checksums_that_check_verifies(tmp_path, capsys):
    import fastsft
    from train_helpers import CORPORA, QWEN_TOKENIZER

    out = tmp_path / "prepped"
    fastsft.prep([str(CORPORA / "llamafactory_identity.jsonl.gz")], str(QWEN_TOKENIZER), str(out), max_len=256)
    recorded = read_manifest(out).raw["array_sha256"]
    assert sorted(recorded) == ["input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "turns.npy"]
    from train_helpers import data_sha256

    assert all(recorded[name] == data_sha256(out / name) for name in recorded)
    assert cli_main(["check", str(out)]) == 0
    assert "checksums match" in capsys.readouterr().out
