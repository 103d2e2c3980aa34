"""The package as setuptools builds it (offline: no wheel is made, so nothing is downloaded)
holds the client, the generated stubs, their .pyi and py.typed, and imports on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import CLIENT_DIR

EXPECTED = {
    "labelfleet_client/__init__.py",
    "labelfleet_client/client.py",
    "labelfleet_client/models.py",
    "labelfleet_client/py.typed",
    "labelfleet_client/v1/__init__.py",
    "labelfleet_client/v1/labelfleet_pb2.py",
    "labelfleet_client/v1/labelfleet_pb2.pyi",
    "labelfleet_client/v1/labelfleet_pb2_grpc.py",
}


def test_setuptools_packages_the_client_and_its_stubs(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: the build writes an egg-info next to the sources
    shutil.copytree(
        CLIENT_DIR,
        source,
        ignore=shutil.ignore_patterns(
            "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"
        ),
    )
    built = tmp_path / "lib"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(built),
        ],
        cwd=source,
        env=env,
        check=True,
        capture_output=True,
    )
    files = {p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()}
    assert files == EXPECTED
    probe = "import labelfleet_client as c; print(c.__file__); c.Client('127.0.0.1:1').close()"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(built)},
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == str(built / "labelfleet_client" / "__init__.py")
