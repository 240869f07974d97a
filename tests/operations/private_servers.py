"""A PostgreSQL and a Redis of the test's own, on free loopback ports, that it can stop.

The readiness tests stop the database or the broker under a running service, so they never
use the shared servers on 5432/6379: each fixture here starts its own from the installed
binaries, in a private folder, and stops it (by its PID) at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import service_unavailable
from tests.servers import free_port

_PG_BIN = Path("/usr/lib/postgresql")


def _wait_port(port: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(_PG_BIN.glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@dataclass
class PrivatePostgres:
    url: str
    data: Path
    port: int
    _pg_ctl: str
    _as_user: list[str] = field(default_factory=list)
    running: bool = True

    def stop(self) -> None:
        if self.running:
            subprocess.run(
                [*self._as_user, self._pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
            self.running = False


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if not initdb or not pg_ctl:
        service_unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    assert initdb and pg_ctl
    folder = Path(tempfile.mkdtemp(prefix="ecg-cds-pg-"))
    data = folder / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    port = free_port()
    done = subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        service_unavailable(f"initdb failed: {done.stderr[-400:]}")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "log"),
            "-w",
            "start",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0 or not _wait_port(port):
        shutil.rmtree(folder, ignore_errors=True)
        service_unavailable(f"private PostgreSQL did not start: {started.stderr[-400:]}")
    server = PrivatePostgres(
        url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
        data=data,
        port=port,
        _pg_ctl=pg_ctl,
        _as_user=as_user,
    )
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class PrivateRedis:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if not binary:
        service_unavailable("redis-server is not installed")
    assert binary
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = PrivateRedis(url=f"redis://127.0.0.1:{port}/0", process=process)
    try:
        if not _wait_port(port):
            service_unavailable("private redis-server did not start")
        yield server
    finally:
        server.stop()
