"""A real two-node Ray cluster on this machine, for tests: `ray start --head` and a second
`ray start --address ...` with its own resources, each its own raylet.

Both nodes share a private temporary directory, so the cluster never meets another Ray on the
machine; stopping it ends exactly the processes whose command line names that directory (never
`ray stop`, which would end every Ray process of the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodeCluster:
    """`address` is what RAY_ADDRESS takes. `env` is the environment the nodes (and so their
    workers) run with: this process's, whose PYTHONPATH makes workers import this fastsft."""

    def __init__(self, cpus_per_node: int = 1):
        # Short: Ray's unix socket paths must fit in 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="fsray-", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # A private cluster on 127.0.0.1: no token authentication (Ray turns it on when it finds
        # ~/.ray/auth_token, and the second node and the driver would then need the token too).
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
            "RAY_AUTH_MODE": "disabled",
        }
        common = ["--num-cpus", str(cpus_per_node), "--disable-usage-stats"]
        self._run(
            [
                RAY,
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--temp-dir",
                self.temp_dir,
                "--include-dashboard",
                "false",
                "--object-store-memory",
                str(128 << 20),
                "--resources",
                '{"head": 1}',
                *common,
            ]
        )
        self._run(
            [
                RAY,
                "start",
                "--address",
                self.address,
                "--node-ip-address",
                "127.0.0.1",
                "--object-store-memory",
                str(96 << 20),
                "--resources",
                '{"second": 1}',
                *common,
            ]
        )

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those whose command line names its temporary directory,
        and their descendants (workers)."""
        found: dict[int, psutil.Process] = {}
        me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        for process in psutil.process_iter(["cmdline"]):
            if process.pid in me:
                continue
            try:
                if any(self.temp_dir in part for part in process.info["cmdline"] or ()):
                    found[process.pid] = process
                    for child in process.children(recursive=True):
                        found[child.pid] = child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return list(found.values())

    def stop(self) -> None:
        processes = self.processes()
        for process in processes:
            try:
                process.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(processes, timeout=3)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextmanager
def running_cluster(cpus_per_node: int = 1) -> Iterator[TwoNodeCluster]:
    """A two-node cluster, with RAY_ADDRESS pointing at it, for the duration of a test module."""
    import pytest

    nodes = TwoNodeCluster(cpus_per_node=cpus_per_node)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RAY_ADDRESS", nodes.address)
            patch.setenv("RAY_AUTH_MODE", "disabled")
            yield nodes
    finally:
        nodes.stop()


def wait_for(condition, timeout: float, step: float = 0.02):
    """Polls `condition()` until it returns something true; returns it (None on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return None
