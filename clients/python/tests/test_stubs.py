"""The committed stubs are what generate.py makes from the proto today: they never drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLIENT_DIR

GENERATED = ("labelfleet_pb2.py", "labelfleet_pb2.pyi", "labelfleet_pb2_grpc.py")


def test_regenerated_stubs_match_the_committed_ones(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="regenerating the stubs needs grpcio-tools")
    subprocess.run(
        [sys.executable, str(CLIENT_DIR / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    committed = CLIENT_DIR / "labelfleet_client" / "v1"
    stale = [n for n in GENERATED if (tmp_path / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, (
        f"{stale} differ from what proto/ generates: run `python clients/python/generate.py` "
        "(with grpcio-tools 1.76, as the committed stubs were made) and commit the result"
    )


def test_the_stubs_import_inside_the_package() -> None:
    from labelfleet_client.v1 import labelfleet_pb2, labelfleet_pb2_grpc

    assert labelfleet_pb2.Job.__module__ == "labelfleet_client.v1.labelfleet_pb2"
    assert labelfleet_pb2_grpc.labelfleet_dot_v1_dot_labelfleet__pb2 is labelfleet_pb2
    assert labelfleet_pb2.DESCRIPTOR.services_by_name["JobService"].methods_by_name["WatchJob"]
