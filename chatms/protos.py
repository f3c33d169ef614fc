"""Regenerates `chatms.protogen` from `protos/*.proto` with betterproto2's compiler.

Run `chatms protos` (or `python -m chatms protos`) after changing a proto; a test fails
while the committed code is stale. Needs the `test` extra (grpcio-tools, betterproto2-compiler).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
TARGET = Path(__file__).resolve().parent / "protogen"
OPTIONS = ("client_generation=async", "server_generation=async")
# The protos' descriptors, for gRPC server reflection (betterproto2 code carries none).
DESCRIPTORS = "descriptors.binpb"


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate into `out_dir`; returns the files written, relative to it."""
    protos = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files in {proto_dir}")
    opts = [f"--python_betterproto2_opt={o}" for o in OPTIONS]
    command = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
        f"--python_betterproto2_out={out_dir}", *opts,
        f"--descriptor_set_out={out_dir / DESCRIPTORS}", "--include_imports", *protos,
    ]
    # The plugin (and the ruff it formats with) sit beside this interpreter, on PATH or not.
    path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    # From the project's root, whatever the caller's folder: the compiler formats with ruff,
    # which reads its settings (line length) from pyproject.toml.
    subprocess.run(  # noqa: S603
        command, check=True, capture_output=True, text=True, env={**os.environ, "PATH": path},
        cwd=ROOT,
    )
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*") if p.is_file())


def regenerate() -> None:
    """Replace the committed generated package with freshly generated code."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if TARGET.exists():
            shutil.rmtree(TARGET)
        shutil.copytree(tmp, TARGET)
    print(f"regenerated {TARGET.relative_to(ROOT)} from {PROTO_DIR.relative_to(ROOT)}")
