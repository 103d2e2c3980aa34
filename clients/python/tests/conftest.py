"""Fixtures: the real labelfleet binary, run as an embedded cluster (`labelfleet serve`) and as a
TLS coordinator with bearer tokens, on free loopback ports, stopped with SIGTERM at the end.

Environment: LABELFLEET_BIN (default /work/main/target/release/labelfleet), LABELFLEET_DATA
(default ../shared/data next to the repository; Cranfield must be under it), LABELFLEET_HOME
(where the binary finds its bundled models; inherited by the server).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

CLIENT_DIR = Path(__file__).resolve().parent.parent
REPO = CLIENT_DIR.parent.parent

try:  # the installed package when there is one, else the source next to the tests
    import labelfleet_client  # noqa: F401
except ImportError:
    sys.path.insert(0, str(CLIENT_DIR))

import grpc  # noqa: E402

from labelfleet_client import Client, RpcError  # noqa: E402


def labelfleet_bin() -> Path:
    path = Path(os.environ.get("LABELFLEET_BIN", "/work/main/target/release/labelfleet"))
    if not path.is_file():
        pytest.fail(f"labelfleet binary not found at {path}: build it or set LABELFLEET_BIN")
    return path


def data_dir() -> Path:
    d = Path(os.environ.get("LABELFLEET_DATA", REPO.parent / "shared" / "data"))
    if not (d / "cranfield" / "corpus.jsonl").is_file():
        pytest.fail(f"Cranfield not found under {d}: set LABELFLEET_DATA")
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A labelfleet process serving JobService at `address`, its output in `log`."""

    def __init__(self, args: List[str], address: str, log: Path):
        self.address = address
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(labelfleet_bin()), *args], stdout=out, stderr=subprocess.STDOUT
            )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, client_args: Dict[str, object], timeout: float = 120.0) -> None:
        """Until the port accepts connections (polled here: gRPC's own reconnect backoff would
        add seconds), then until the coordinator answers as leader: NOT_FOUND for the empty job
        id, or a refusal of the caller's credentials; UNAVAILABLE means not yet."""
        deadline = time.monotonic() + timeout
        host, port = self.address.rsplit(":", 1)
        last = "the port never accepted a connection"
        while time.monotonic() < deadline:
            self.check_running()
            try:
                socket.create_connection((host, int(port)), timeout=1.0).close()
                break
            except OSError:
                time.sleep(0.1)
        while time.monotonic() < deadline:
            self.check_running()
            with Client(self.address, timeout=2.0, **client_args) as c:  # type: ignore[arg-type]
                try:
                    c.get("")
                    return
                except RpcError as e:
                    if e.code not in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        return
                    last = str(e)
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"{self.address} did not answer in {timeout} s ({last}):\n{self.log_tail()}")

    def check_running(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"labelfleet exited with {self.process.returncode}:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM, and the exit status (killed after 30 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"labelfleet ignored SIGTERM for 30 s:\n{self.log_tail()}")
        return self.process.returncode


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`labelfleet serve` with one in-process worker: a whole cluster, plaintext, no tokens."""
    tmp = tmp_path_factory.mktemp("serve")
    address = f"127.0.0.1:{free_port()}"
    server = Server(
        [
            "serve",
            "--listen",
            address,
            "--trainer-listen",
            f"127.0.0.1:{free_port()}",
            "--store",
            str(tmp / "store"),
            "--workers",
            "1",
        ],
        address,
        tmp / "serve.log",
    )
    server.wait_ready({})
    yield server
    assert server.stop() == 0, f"labelfleet serve did not stop cleanly:\n{server.log_tail()}"


@dataclass
class Secured:
    """A TLS coordinator (no workers) that knows two tokens: `full` (submit, read, cancel) and
    `reader` (read only)."""

    server: Server
    ca_cert: Path
    full: str
    reader: str

    @property
    def address(self) -> str:
        return self.server.address


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("secured")
    binary = str(labelfleet_bin())
    certs = tmp / "certs"
    subprocess.run(
        [binary, "certs", "--out", str(certs), "--certs", "coordinator"],
        check=True,
        capture_output=True,
    )
    tokens_file = tmp / "tokens.json"

    def token(name: str, permissions: str) -> str:
        out = subprocess.run(
            [
                binary,
                "tokens",
                "add",
                "--file",
                str(tokens_file),
                "--name",
                name,
                "--permissions",
                permissions,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    full, reader = token("full", "submit,read,cancel"), token("reader", "read")
    address = f"127.0.0.1:{free_port()}"
    server = Server(
        [
            "coordinator",
            "--listen",
            address,
            "--store",
            str(tmp / "store"),
            "--tokens",
            str(tokens_file),
            "--tls-ca",
            str(certs / "ca.pem"),
            "--tls-cert",
            str(certs / "coordinator.pem"),
            "--tls-key",
            str(certs / "coordinator.key"),
        ],
        address,
        tmp / "coordinator.log",
    )
    server.wait_ready({"ca_cert": certs / "ca.pem"})
    yield Secured(server, certs / "ca.pem", full, reader)
    assert server.stop() == 0, f"labelfleet coordinator did not stop cleanly:\n{server.log_tail()}"
