#!/usr/bin/env python3
"""Regenerates the gRPC stubs of labelfleet_client from the proto (run after editing it).

    python clients/python/generate.py            # rewrites labelfleet_client/v1/
    python clients/python/generate.py --out DIR  # writes them into DIR instead (the drift test)

It needs grpcio-tools (the committed stubs were made with grpcio-tools 1.76). protoc writes
imports as if `labelfleet.v1` were a top-level package; they are rewritten to be relative, so the
stubs work inside `labelfleet_client.v1`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto" / "proto"
PROTO = "labelfleet/v1/labelfleet.proto"
PACKAGE_DIR = HERE / "labelfleet_client" / "v1"
GENERATED = ("labelfleet_pb2.py", "labelfleet_pb2.pyi", "labelfleet_pb2_grpc.py")

# (file, what protoc writes, what the package needs): each must occur exactly once.
FIXUPS = (
    (
        "labelfleet_pb2_grpc.py",
        "from labelfleet.v1 import labelfleet_pb2 as labelfleet_dot_v1_dot_labelfleet__pb2",
        "from . import labelfleet_pb2 as labelfleet_dot_v1_dot_labelfleet__pb2",
    ),
    (
        "labelfleet_pb2.py",
        "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'labelfleet.v1.labelfleet_pb2', _globals)",
        "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'labelfleet_client.v1.labelfleet_pb2', _globals)",
    ),
)


def generate(out: Path) -> list[Path]:
    """Runs protoc on the proto, fixes the imports up, and writes the stubs into `out`."""
    from grpc_tools import protoc  # imported here so `--help` works without grpcio-tools

    import grpc_tools

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            PROTO,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {PROTO_ROOT / PROTO}")
        produced = Path(tmp) / "labelfleet" / "v1"
        texts = {name: (produced / name).read_text(encoding="utf-8") for name in GENERATED}
    for name, old, new in FIXUPS:
        count = texts[name].count(old)
        if count != 1:
            raise SystemExit(
                f"{name}: expected the line `{old}` once, found it {count} times; "
                "protoc's output changed, update FIXUPS in generate.py"
            )
        texts[name] = texts[name].replace(old, new)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in GENERATED:
        path = out / name
        path.write_text(texts[name], encoding="utf-8", newline="\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR, help="folder to write into")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
