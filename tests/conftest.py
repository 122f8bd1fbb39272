"""Shared fixtures: engines on every backend, including a real cluster of
``dask scheduler`` + ``dask worker`` subprocesses on 127.0.0.1 (one per session)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bigrfm.config import ExecConfig
from bigrfm.engine import Engine

TESTS_DIR = str(Path(__file__).resolve().parent)
DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SubprocessCluster:
    """``dask scheduler`` and ``dask worker --no-nanny`` processes on 127.0.0.1."""

    def __init__(self, n_workers: int) -> None:
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        # workers unpickle this module's block functions by name
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")])}
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = self._spawn([DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"])
        self.workers = [self.start_worker() for _ in range(n_workers)]
        self.wait_for(n_workers)

    def _spawn(self, cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_worker(self) -> subprocess.Popen:
        return self._spawn([DASK, "worker", self.address, "--nthreads", "1", "--no-dashboard", "--no-nanny"])

    def wait_for(self, n_workers: int, timeout: float = 60.0) -> None:
        from distributed import Client

        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            while len(client.nthreads()) != n_workers:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(client.nthreads())} of {n_workers} workers joined {self.address}")
                time.sleep(0.1)

    def close(self) -> None:
        for p in [*self.workers, self.scheduler]:
            p.terminate()
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="session")
def remote_cluster():
    cluster = SubprocessCluster(2)
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def local_engine():
    with Engine(ExecConfig(scheduler="local", n_workers=2, memory_limit="1GiB")) as engine:
        yield engine


@pytest.fixture(scope="session")
def remote_engine(remote_cluster):
    with Engine(ExecConfig(scheduler=remote_cluster.address)) as engine:
        yield engine


@pytest.fixture(scope="session")
def threads_engine():
    with Engine(ExecConfig(n_workers=2)) as engine:
        yield engine


