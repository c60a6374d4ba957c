"""`fastsft prep --engine ray` on a real two-node Ray cluster on this machine (issue 17).

The cluster (`ray start --head` + `ray start --address ...`, one CPU each) is started once for the
module and stopped at its end. Every Ray dataset is compared with `fastsft.prep` of the same files
on this machine, file by file: the arrays, `rejects.jsonl` and `manifest.json` must be the same
bytes (so the same samples, masks, origins, rejects, counts and fingerprint). A worker is killed
mid-job twice: once Ray retries its unit (the dataset is still exact), once it may not (the job
fails, nothing is at the output, and a re-run reuses the units that had finished).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import fastsft
from fastsft.errors import FastSFTError, TooManyRejectsError, UsageError
from ray_cluster import TwoNodeCluster, running_cluster, wait_for

REPO = Path(__file__).resolve().parents[1]
QWEN = str(REPO / "assets/tokenizers/qwen2.5")
CORPORA = REPO / "assets/corpora"
COMPARED = ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "turns.npy", "rejects.jsonl", "manifest.json")
BAD_LINES = ['{"messages": [', "[1, 2]", json.dumps({"question": "q", "answer": "a"})]


@pytest.fixture(scope="module")
def cluster():
    with running_cluster() as nodes:
        yield nodes


def assert_same_dataset(ray_out: Path, local_out: Path) -> None:
    for name in COMPARED:
        assert (ray_out / name).read_bytes() == (local_out / name).read_bytes(), f"{name} differs"


def medical_copies(tmp_path: Path, copies: int, repeat: int = 1) -> list[str]:
    """The 1k-record Chinese ShareGPT corpus as `copies` plain files (each `repeat` times over),
    every record made distinct."""
    lines = gzip.decompress((CORPORA / "medicalgpt_sharegpt_zh_1k.jsonl.gz").read_bytes()).decode().splitlines()
    paths = []
    for copy in range(copies):
        path = tmp_path / f"medical-{copy}.jsonl"
        text = "".join(line.replace("\u3002", f"\u3002{copy}-{r}", 1) + "\n" for r in range(repeat) for line in lines)
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def records_in(path: Path) -> int:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return sum(1 for line in data.split(b"\n") if line.strip())


def one_file_per_unit(paths: list[str]) -> int:
    """A unit size that puts each of these (equal-sized) files in a unit of its own."""
    return max(os.path.getsize(p) for p in paths) + 1


def test_ray_dataset_equals_local_prep(cluster, tmp_path, monkeypatch):
    """Files split into shares and whole files, a file of bad records, a file of nothing but bad
    records, relative paths: the Ray dataset is byte for byte the local one, read as one dataset."""
    bad = tmp_path / "mixed.jsonl"
    good = gzip.decompress((CORPORA / "llamafactory_identity.jsonl.gz").read_bytes()).decode().splitlines()
    bad.write_text("\n".join(good[:20] + BAD_LINES + good[20:40]) + "\n", encoding="utf-8")
    (tmp_path / "all_bad.jsonl").write_text("\n".join(BAD_LINES) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # relative paths, as users type them
    inputs = [
        "mixed.jsonl",
        str(CORPORA / "llamafactory_glaive_toolcall_en_demo.jsonl.gz"),
        str(CORPORA / "medicalgpt_sharegpt_zh_1k.jsonl.gz"),
        "all_bad.jsonl",
    ]
    options = {"max_len": 1024, "threads": 1}
    local = fastsft.prep(inputs, QWEN, "local", **options)
    # 600 kB units: the first two files make one unit, the 1.4 MB corpus 3 round-robin shares,
    # and the file of bad records one (where the pipeline writes nothing: all are rejected).
    summary = fastsft.prep(inputs, QWEN, "ray", engine="ray", unit_bytes=600_000, **options)
    assert summary["units"] == 5 and summary["units_reused"] == 0 and summary["nodes"] == 2
    assert_same_dataset(tmp_path / "ray", tmp_path / "local")
    for key in ("read", "written", "rejected", "samples", "tokens", "trained_tokens", "rejected_by_reason"):
        assert summary[key] == local[key], key
    assert summary["read"] == summary["written"] + summary["rejected"] == sum(records_in(Path(p)) for p in inputs)
    assert summary["rejected_by_reason"]["invalid_json"] == 2
    dataset = fastsft.SFTDataset(tmp_path / "ray")
    assert len(dataset) == summary["samples"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no work or temporary directory left


def test_one_unit_is_the_dataset(cluster, tmp_path):
    """A run of one unit (small inputs) links the unit's arrays into the dataset instead of
    copying them, with the unit's checksums: the same bytes as a local prep all the same."""
    inputs = [str(CORPORA / "llamafactory_identity.jsonl.gz"), str(CORPORA / "llamafactory_glaive_toolcall_en_demo.jsonl.gz")]
    summary = fastsft.prep(inputs, QWEN, tmp_path / "ray", engine="ray", max_len=1024)
    fastsft.prep(inputs, QWEN, tmp_path / "local", max_len=1024)
    assert summary["units"] == 1
    assert_same_dataset(tmp_path / "ray", tmp_path / "local")
    report = json.loads((tmp_path / "ray" / "report.json").read_text(encoding="utf-8"))
    assert report["engine"] == "ray" and report["units"] == 1 and report["assemble_seconds"] < report["seconds"]


def kill_a_running_unit(cluster: TwoNodeCluster, parent: Path, after_finished: int, killed: list) -> None:
    """Waits for `after_finished` finished units and one being written, then SIGKILLs the Ray
    worker writing it (its pid is in the pipeline's temporary directory name).

    The worker is frozen (SIGSTOP) first and killed only if its temporary directory is still
    there once it is frozen: a unit that finished between the look and the kill would otherwise
    leave the kill to land on an idle worker, and the job would succeed with nothing killed."""

    def running_worker():
        finished = list(parent.glob(".out.fastsft-ray-*/unit-*/manifest.json"))
        temporaries = list(parent.glob(".out.fastsft-ray-*/.unit-*.fastsft-tmp-*"))
        if len(finished) < after_finished or not temporaries:
            return None
        temporary = temporaries[0]
        pid = int(re.sub(r".*fastsft-tmp-(\d+).*", r"\1", temporary.name))
        if pid not in {p.pid for p in cluster.processes()}:
            return None
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return None
        if temporary.exists():
            return pid  # frozen mid-unit: its task cannot finish before the kill
        os.kill(pid, signal.SIGCONT)
        return None

    pid = wait_for(running_worker, timeout=60)
    if pid:
        killed.append((pid, (parent / "out").exists()))
        os.kill(pid, signal.SIGKILL)


def test_killed_worker_is_retried_and_the_dataset_is_exact(cluster, tmp_path):
    inputs = medical_copies(tmp_path, 3, repeat=2)  # units long enough to be killed while running
    killed: list = []
    killer = threading.Thread(target=kill_a_running_unit, args=(cluster, tmp_path, 0, killed))
    killer.start()
    summary = fastsft.prep(inputs, QWEN, tmp_path / "out", engine="ray", max_len=1024, unit_bytes=one_file_per_unit(inputs))
    killer.join()
    assert killed and killed[0][1] is False, "the worker was not killed mid-job, or the output existed before the end"
    fastsft.prep(inputs, QWEN, tmp_path / "local", max_len=1024)
    assert_same_dataset(tmp_path / "out", tmp_path / "local")
    assert summary["units"] == 3


def test_failed_job_leaves_nothing_and_rerun_reuses_finished_units(cluster, tmp_path):
    # Units of ~1.5 s each, so that the unit the killer finds running is still running when it is killed.
    inputs = medical_copies(tmp_path, 4, repeat=3)
    killed: list = []
    killer = threading.Thread(target=kill_a_running_unit, args=(cluster, tmp_path, 1, killed))
    killer.start()
    with pytest.raises(FastSFTError, match=r"failed on the Ray cluster.*run the same command again"):
        fastsft.prep(
            inputs, QWEN, tmp_path / "out", engine="ray", max_len=1024, max_retries=0, unit_bytes=one_file_per_unit(inputs)
        )
    killer.join()
    assert killed
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.fastsft-tmp-*"))
    summary = fastsft.prep(inputs, QWEN, tmp_path / "out", engine="ray", max_len=1024)
    assert summary["units_reused"] >= 1
    fastsft.prep(inputs, QWEN, tmp_path / "local", max_len=1024)
    assert_same_dataset(tmp_path / "out", tmp_path / "local")


def test_options_ray_cannot_take(tmp_path):
    with pytest.raises(UsageError, match="--engine ray splits the work itself"):
        fastsft.prep(
            [str(CORPORA / "llamafactory_identity.jsonl.gz")], QWEN, tmp_path / "o", engine="ray", num_shards=2, shard_index=0
        )
    with pytest.raises(UsageError, match=r"--engine 'spark': expected one of local, ray"):
        fastsft.prep([str(CORPORA / "llamafactory_identity.jsonl.gz")], QWEN, tmp_path / "o", engine="spark")


def test_cli_engine_ray_then_check(cluster, tmp_path):
    """`fastsft prep --engine ray` from the command line, then `fastsft check` on its output."""
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.pathsep.join(sys.path)}
    corpus = str(CORPORA / "llamafactory_identity.jsonl.gz")
    prep = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastsft.cli",
            "prep",
            corpus,
            "--tokenizer",
            QWEN,
            "-o",
            str(tmp_path / "out"),
            "--engine",
            "ray",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert prep.returncode == 0, prep.stderr
    assert f"fastsft prep: wrote {tmp_path / 'out'}" in prep.stdout
    assert re.search(r"records read\s+91\n", prep.stdout), prep.stdout
    check = subprocess.run(
        [sys.executable, "-m", "fastsft.cli", "check", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_reject_bar_and_strict_apply_to_the_whole_run(cluster, tmp_path):
    """--max-reject-fraction is checked over all units together (the rejects kept beside the
    output, as a local run keeps them); --strict stops at a reject and names its file and line."""
    good = gzip.decompress((CORPORA / "llamafactory_identity.jsonl.gz").read_bytes()).decode().splitlines()
    (tmp_path / "a.jsonl").write_text("\n".join(good[:30]) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(good[30:40] + BAD_LINES) + "\n", encoding="utf-8")
    inputs = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    with pytest.raises(TooManyRejectsError, match=r"3 of 43 records rejected \(7\.0% > --max-reject-fraction 0\.05\)"):
        fastsft.prep(inputs, QWEN, tmp_path / "out", engine="ray", unit_bytes=one_file_per_unit(inputs), max_reject_fraction=0.05)
    assert not (tmp_path / "out").exists()
    local = fastsft.prep(inputs, QWEN, tmp_path / "local")
    assert local["rejected"] == 3
    assert (tmp_path / "out.rejects.jsonl").read_bytes() == (tmp_path / "local" / "rejects.jsonl").read_bytes()
    with pytest.raises(Exception, match=r"b\.jsonl:11") as error:
        fastsft.prep(inputs, QWEN, tmp_path / "strict", engine="ray", strict=True)
    assert "Ray" not in type(error.value).__name__
    assert not (tmp_path / "strict").exists()


def test_plan_units_groups_small_files_splits_large_ones_and_keeps_its_layout(tmp_path, monkeypatch):
    """Consecutive small files share a unit, a file larger than a unit is read as shares, about one
    unit per slot; a re-run finds the layout of the first run, whatever the cluster size now."""
    from fastsft.ray_engine import plan_units

    sizes = [300, 300, 300, 2500, 100, 900]
    work = tmp_path / "work"
    units = plan_units(sizes, work, unit_bytes=1000, slots=2)  # 4,400 bytes over 2 slots: 1,000 a unit
    assert [(u.files, u.share, u.shares) for u in units] == [
        ([0, 1, 2], 0, 1),
        ([3], 0, 3),
        ([3], 1, 3),
        ([3], 2, 3),
        ([4, 5], 0, 1),
    ]
    assert units[1].directory == work / "unit-00003-00003-00000-of-00003"
    again = plan_units(sizes, work, unit_bytes=10_000, slots=64)
    assert [(u.files, u.share, u.shares, u.directory) for u in again] == [
        (u.files, u.share, u.shares, u.directory) for u in units
    ]
    # Below MIN_UNIT_BYTES (8 MiB) a unit takes up to unit_bytes whatever the slots: one unit here.
    fresh = plan_units(sizes, tmp_path / "other", unit_bytes=10_000, slots=2)
    assert [(u.files, u.shares) for u in fresh] == [([0, 1, 2, 3, 4, 5], 1)]
    # Above it, about UNITS_PER_SLOT (4) units per slot: 4,400 bytes over 8 units, 550 a unit; a
    # file is read as shares only when larger than a slot's part (2,200): the 2,500 bytes as 2
    # shares, the 900 bytes whole.
    monkeypatch.setattr("fastsft.ray_engine.MIN_UNIT_BYTES", 100)
    by_slots = plan_units(sizes, tmp_path / "slots", unit_bytes=10_000, slots=2)
    assert [(u.files, u.shares) for u in by_slots] == [([0, 1], 1), ([2], 1), ([3], 2), ([3], 2), ([4], 1), ([5], 1)]
    # Files of nearly equal sizes: 1,620 bytes, 203 a unit: 8 units of 2 files, not a ninth for
    # the last file, whose end overflows its unit but whose middle byte does not.
    balanced = plan_units([100] * 15 + [120], tmp_path / "balanced", unit_bytes=10_000, slots=2)
    assert [u.files for u in balanced] == [[k, k + 1] for k in range(0, 16, 2)]
    # One slot: one unit (it runs as `prep` would, its arrays linked), up to unit_bytes.
    one_slot = plan_units(sizes, tmp_path / "one-slot", unit_bytes=10_000, slots=1)
    assert [(u.files, u.shares) for u in one_slot] == [([0, 1, 2, 3, 4, 5], 1)]


def test_a_unit_takes_every_cpu_of_the_smallest_node_unless_threads_say():
    from types import SimpleNamespace

    from fastsft.ray_engine import _cpus_per_unit

    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0}},
        {"Alive": True, "Resources": {"CPU": 4.0}},
        {"Alive": False, "Resources": {"CPU": 2.0}},  # gone
        {"Alive": True, "Resources": {"memory": 1e9}},  # a head node without CPUs
    ]
    ray = SimpleNamespace(nodes=lambda: nodes)
    assert _cpus_per_unit(ray, None) == 4
    assert _cpus_per_unit(ray, 0) == 4
    assert _cpus_per_unit(ray, 3) == 3
    assert _cpus_per_unit(SimpleNamespace(nodes=lambda: []), None) == 1


def test_a_unit_without_checksums_writes_the_same_arrays_and_null_checksums(tmp_path):
    """What a unit of a multi-unit run on shared storage writes (`array_checksums=False`): the
    arrays of a normal run, and a manifest whose checksums are null (the assembly hashes)."""
    from fastsft import _core
    from fastsft.config import PrepOptions

    options = PrepOptions(threads=1, progress=False).to_core_json()
    corpus = [str(CORPORA / "llamafactory_identity.jsonl.gz")]
    _core.prep(corpus, QWEN, str(tmp_path / "with"), options)
    _core.prep(corpus, QWEN, str(tmp_path / "without"), options, False)
    for name in COMPARED[:5]:
        assert (tmp_path / "with" / name).read_bytes() == (tmp_path / "without" / name).read_bytes(), name
    sums = json.loads((tmp_path / "without" / "manifest.json").read_text())["array_sha256"]
    assert sums == dict.fromkeys(COMPARED[:5])
