"""`fastsft prep --engine ray` with inputs and output on an object store (issue 17).

A real S3-compatible server (moto's, from PyPI) runs on a free port for the module, and the
two-node Ray cluster of tests/ray_cluster.py runs the units; both are stopped at the end. The
dataset written to the store is compared with `fastsft.prep` of the same files on this machine:
the arrays and checksums are the same bytes, the fingerprint the same (it covers the inputs'
contents, not their names), the rejects the same but for naming the inputs by their URIs. A job
that fails leaves nothing at the output; its re-run reuses the units it finished.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pafs = pytest.importorskip("pyarrow.fs")
pytest.importorskip("moto")

import fastsft  # noqa: E402
from fastsft.data.integrity import check_dataset  # noqa: E402
from fastsft.data.manifest import read_manifest  # noqa: E402
from fastsft.errors import EXIT_INPUT, EXIT_OUTPUT, EXIT_USAGE, FastSFTError, FileAccessError, InputError, UsageError  # noqa: E402
from fastsft.ray_storage import expand  # noqa: E402
from ray_cluster import free_port, running_cluster, wait_for  # noqa: E402
from test_ray_engine import BAD_LINES, CORPORA, QWEN, medical_copies  # noqa: E402

ARRAYS = ("input_ids.npy", "loss_mask.npy", "offsets.npy", "origin.npy", "turns.npy")


def start_moto(**env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    if not wait_for(listening, timeout=30):
        server.kill()
        pytest.fail("the S3 server did not start")
    return server, f"127.0.0.1:{port}"


def s3(endpoint: str, **options) -> pafs.S3FileSystem:
    options = {"access_key": "testing", "secret_key": "testing", **options}
    return pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1", **options)


@pytest.fixture(scope="module")
def endpoint():
    server, address = start_moto()
    yield address
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def store(endpoint):
    fs = s3(endpoint, allow_bucket_creation=True)
    fs.create_dir("bucket")
    return fs


@pytest.fixture(scope="module")
def cluster(endpoint):
    """The nodes, and so their workers, get credentials for the store from their environment, as
    a user's nodes do (a filesystem made from a URI carries no credentials to them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", f"http://{endpoint}")
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with running_cluster() as nodes:
            yield nodes


def put(fs, local: str, key: str) -> str:
    with open(local, "rb") as src, fs.open_output_stream(f"bucket/{key}") as dst:
        dst.write(src.read())
    return f"s3://bucket/{key}"


def names(fs, prefix: str) -> list[str]:
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(prefix, allow_not_found=True)))


def fetch(fs, prefix: str, local: Path) -> Path:
    """How a user gets a dataset from the store to train on (README "Many machines")."""
    local.mkdir()
    pafs.copy_files(prefix, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local


def test_dataset_on_the_store_equals_local_prep(cluster, store, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    mixed.write_text("\n".join([good] * 5 + BAD_LINES + [good] * 5) + "\n", encoding="utf-8")
    local_inputs = [str(mixed), str(CORPORA / "medicalgpt_sharegpt_zh_1k.jsonl.gz")]
    uris = [put(store, path, f"in/{Path(path).name}") for path in local_inputs]
    assert expand("s3://bucket/in/*.jsonl*", store) == sorted(uris) and expand("s3://bucket/**/mixed.*", store) == [uris[0]]
    options = {"max_len": 1024, "threads": 1}
    local = fastsft.prep(local_inputs, QWEN, tmp_path / "local", **options)
    # 600 kB units: the small file one unit, the 1.4 MB corpus 3 shares.
    summary = fastsft.prep(uris, QWEN, "s3://bucket/out/ds", engine="ray", filesystem=store, unit_bytes=600_000, **options)
    assert summary["units"] == 4 and summary["nodes"] == 2 and summary["output"] == "s3://bucket/out/ds"
    assert names(store, "bucket/out") == ["ds"], "a staging prefix or kept rejects were left beside the dataset"
    assert names(store, "bucket/out/ds") == sorted([*ARRAYS, "manifest.json", "rejects.jsonl", "report.json"])

    ds = fetch(store, "bucket/out/ds", tmp_path / "fetched")
    for name in ARRAYS:
        assert (ds / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    ray_manifest = json.loads((ds / "manifest.json").read_text(encoding="utf-8"))
    local_manifest = json.loads((tmp_path / "local" / "manifest.json").read_text(encoding="utf-8"))
    for key in ("fingerprint", "array_sha256", "counts", "tokenizer", "template", "options"):
        assert ray_manifest[key] == local_manifest[key], key
    assert [i["path"] for i in ray_manifest["inputs"]] == uris
    assert [i["sha256"] for i in ray_manifest["inputs"]] == [i["sha256"] for i in local_manifest["inputs"]]
    rejects = (ds / "rejects.jsonl").read_text(encoding="utf-8")
    assert rejects.count(json.dumps(uris[0])) == len(BAD_LINES)
    for uri, path in zip(uris, local_inputs):
        rejects = rejects.replace(json.dumps(uri), json.dumps(path))
    assert rejects == (tmp_path / "local" / "rejects.jsonl").read_text(encoding="utf-8")
    assert summary["read"] == local["read"] and summary["rejected"] == local["rejected"]
    assert check_dataset(read_manifest(ds), checksums=True) == []
    assert len(fastsft.SFTDataset(ds)) == local["samples"]


def test_objects_into_a_local_dataset_and_local_files_onto_the_store(cluster, store, tmp_path):
    """Either side alone on the store: objects read into a local dataset (the work directory is
    local, the units read copies), and local files written to the store."""
    local_inputs = [
        str(CORPORA / "llamafactory_identity.jsonl.gz"),
        str(CORPORA / "llamafactory_glaive_toolcall_en_demo.jsonl.gz"),
    ]
    uris = [put(store, path, f"mixed/{Path(path).name}") for path in local_inputs]
    # A unit each (the reject names are renamed per unit), by the sizes the store reports.
    unit = max(store.get_file_info(uri.removeprefix("s3://")).size for uri in uris) + 1
    local = fastsft.prep(local_inputs, QWEN, tmp_path / "local", max_len=1024)
    from_store = fastsft.prep(uris, QWEN, tmp_path / "from-store", engine="ray", filesystem=store, max_len=1024, unit_bytes=unit)
    onto_store = fastsft.prep(local_inputs, QWEN, "s3://bucket/mixed-out/ds", engine="ray", filesystem=store, max_len=1024)
    assert from_store["units"] == 2 and onto_store["units"] == 1
    ds = fetch(store, "bucket/mixed-out/ds", tmp_path / "fetched")
    for name in [*ARRAYS, "rejects.jsonl"]:
        assert (ds / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    for name in ARRAYS:
        assert (tmp_path / "from-store" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    rejects = (tmp_path / "from-store" / "rejects.jsonl").read_text(encoding="utf-8")
    assert json.dumps(uris[1]) in rejects
    for uri, path in zip(uris, local_inputs):
        rejects = rejects.replace(json.dumps(uri), json.dumps(path))
    assert rejects == (tmp_path / "local" / "rejects.jsonl").read_text(encoding="utf-8")
    manifest = json.loads((tmp_path / "from-store" / "manifest.json").read_text(encoding="utf-8"))
    assert [i["path"] for i in manifest["inputs"]] == uris
    assert manifest["fingerprint"] == json.loads((ds / "manifest.json").read_text(encoding="utf-8"))["fingerprint"]
    assert from_store["read"] == onto_store["read"] == local["read"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_with_uris_and_the_store_from_the_environment(cluster, store, tmp_path):
    """`fastsft prep 's3://...*.gz' -o s3://... --engine ray`: the filesystem made from the URIs and
    the environment (AWS_ENDPOINT_URL, credentials), then `fastsft check` on a local copy."""
    put(store, str(CORPORA / "llamafactory_identity.jsonl.gz"), "cli/identity.jsonl.gz")
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "fastsft.cli"]
    prep = subprocess.run(
        [*command, "prep", "s3://bucket/cli/*.jsonl.gz", "--tokenizer", QWEN, "-o", "s3://bucket/cli-out/ds", "--engine", "ray"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert prep.returncode == 0, prep.stderr
    assert "fastsft prep: wrote s3://bucket/cli-out/ds" in prep.stdout and re.search(r"records read\s+91\n", prep.stdout)
    ds = fetch(store, "bucket/cli-out/ds", tmp_path / "fetched")
    check = subprocess.run([*command, "check", str(ds)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (
        json.loads((ds / "manifest.json").read_text(encoding="utf-8"))["inputs"][0]["path"] == "s3://bucket/cli/identity.jsonl.gz"
    )


def test_failed_job_leaves_no_dataset_on_the_store_and_rerun_resumes(cluster, store, tmp_path):
    inputs = [put(store, path, f"resume/{Path(path).name}") for path in medical_copies(tmp_path, 4, repeat=3)]
    size = max(i.size for i in store.get_file_info(pafs.FileSelector("bucket/resume"))) + 1
    killed: list = []

    def kill_a_running_unit():
        """After one unit is on the store, SIGKILLs a worker whose pipeline is writing its unit
        in local scratch (its pid is in the pipeline's temporary directory name)."""

        def running_worker():
            staged = store.get_file_info(pafs.FileSelector("bucket/out2", recursive=True, allow_not_found=True))
            if not any(i.base_name == "manifest.json" for i in staged):
                return None
            temporaries = list(Path(tempfile.gettempdir()).glob("fastsft-ray-*/unit-*/.out.fastsft-tmp-*"))
            pids = [int(re.sub(r".*fastsft-tmp-(\d+).*", r"\1", t.name)) for t in temporaries]
            alive = {p.pid for p in cluster.processes()}
            return next((pid for pid in pids if pid in alive), None)

        pid = wait_for(running_worker, timeout=60)
        if pid:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_a_running_unit)
    killer.start()
    with pytest.raises(FastSFTError, match=r"failed on the Ray cluster.*run the same command again"):
        fastsft.prep(
            inputs, QWEN, "s3://bucket/out2/ds", engine="ray", filesystem=store, max_len=1024, max_retries=0, unit_bytes=size
        )
    killer.join()
    assert killed
    assert names(store, "bucket/out2/ds") == [], "the failed job left something at the output"
    staging = [n for n in names(store, "bucket/out2") if n.startswith(".ds.fastsft-ray-")]
    assert len(staging) == 1
    # A staged unit damaged on the store: the run that would reuse it refuses it and removes it.
    finished = [
        i.path
        for i in store.get_file_info(pafs.FileSelector(f"bucket/out2/{staging[0]}", recursive=True))
        if i.base_name == "manifest.json"
    ]
    ids = finished[0].replace("manifest.json", "input_ids.npy")
    data = bytearray(store.open_input_stream(ids).read())
    data[200] ^= 1
    with store.open_output_stream(ids) as f:
        f.write(bytes(data))
    with pytest.raises(FileAccessError, match=r"input_ids\.npy do not match the unit's manifest .*run the same command again"):
        fastsft.prep(inputs, QWEN, "s3://bucket/out2/ds", engine="ray", filesystem=store, max_len=1024, unit_bytes=size)
    assert names(store, "bucket/out2/ds") == [] and store.get_file_info(ids.rsplit("/", 1)[0]).type != pafs.FileType.Directory
    summary = fastsft.prep(inputs, QWEN, "s3://bucket/out2/ds", engine="ray", filesystem=store, max_len=1024, unit_bytes=size)
    assert summary["units"] == 4 and summary["units_reused"] >= 1
    assert names(store, "bucket/out2") == ["ds"]
    local = fastsft.prep(medical_copies(tmp_path, 4, repeat=3), QWEN, tmp_path / "local", max_len=1024)
    ds = fetch(store, "bucket/out2/ds", tmp_path / "fetched")
    for name in ARRAYS:
        assert (ds / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert summary["samples"] == local["samples"]


def test_store_errors_are_one_line_with_their_exit_code(store, tmp_path):
    """Checked before Ray starts: no cluster needed. Each case: (filesystem, inputs, output,
    error class, exit code, message)."""
    corpus = put(store, str(CORPORA / "llamafactory_identity.jsonl.gz"), "err/identity.jsonl.gz")
    closed = s3(f"127.0.0.1:{free_port()}")  # nothing listens there
    server, guarded = start_moto(INITIAL_NO_AUTH_ACTION_COUNT="0")  # checks credentials, knows none
    ok = "s3://bucket/o"
    cases = [
        (closed, [corpus], ok, InputError, EXIT_INPUT, r"identity\.jsonl\.gz: the object store cannot be reached"),
        (store, ["s3://nobucket/a.jsonl"], ok, InputError, EXIT_INPUT, r"s3://nobucket/a\.jsonl: no such bucket 'nobucket'"),
        (store, ["s3://bucket/err/*.parquet"], ok, InputError, EXIT_INPUT, r"err/\*\.parquet: no object matches this pattern"),
        (store, [corpus], "s3://nobucket/o", FileAccessError, EXIT_OUTPUT, r"s3://nobucket/o: no such bucket 'nobucket'"),
        (store, [corpus], "s3://bucket", UsageError, EXIT_USAGE, r"-o s3://bucket: name a prefix inside the bucket"),
        (
            s3(guarded),
            ["s3://bucket/a.jsonl"],
            ok,
            InputError,
            EXIT_INPUT,
            r"a\.jsonl: access denied \(.*ACCESS_DENIED.*\); give",
        ),
    ]
    try:
        for fs, inputs, output, kind, code, message in cases:
            started = time.monotonic()
            with pytest.raises(kind, match=message) as error:
                fastsft.prep(inputs, QWEN, output, engine="ray", filesystem=fs)
            assert error.value.exit_code == code
            assert "\n" not in str(error.value)
            assert time.monotonic() - started < 20
    finally:
        server.terminate()
        server.wait(timeout=30)
