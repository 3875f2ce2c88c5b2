"""Generate, or check, the Python code of ``morphtune/service/v1/morphtune.proto``.

``python -m morphtune.service.codegen`` rewrites the checked-in ``morphtune_pb2.py``,
``morphtune_pb2.pyi`` and ``morphtune_pb2_grpc.py``; ``--check`` instead generates into a
temporary directory and exits 1 if the checked-in files differ. Generation runs protoc with
``-I src`` so the generated imports read ``from morphtune.service.v1 import morphtune_pb2``.
The output depends on the grpcio-tools version, so pin it where the check runs in CI.
Needs ``grpcio-tools`` (a dev dependency), imported only when generating.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["GENERATED_FILES", "PROTO", "SOURCE_ROOT", "check", "generate", "main"]

SOURCE_ROOT = Path(__file__).resolve().parents[2]
PROTO = "morphtune/service/v1/morphtune.proto"
GENERATED_FILES = (
    "morphtune/service/v1/morphtune_pb2.py",
    "morphtune/service/v1/morphtune_pb2.pyi",
    "morphtune/service/v1/morphtune_pb2_grpc.py",
)


def generate(out_dir: Path, source_root: Path = SOURCE_ROOT) -> list[Path]:
    """Run protoc on ``source_root/PROTO`` writing under ``out_dir``; return the files."""
    from grpc_tools import protoc  # dev dependency: only needed to generate

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    arguments = [
        "grpc_tools.protoc",
        f"-I{source_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(source_root / PROTO),
    ]
    code = protoc.main(arguments)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {source_root / PROTO}")
    return [out_dir / name for name in GENERATED_FILES]


def check(source_root: Path = SOURCE_ROOT) -> list[str]:
    """Generated files that are missing or differ from a fresh generation (empty: current)."""
    with tempfile.TemporaryDirectory() as temp:
        fresh = generate(Path(temp), source_root)
        stale = []
        for name, path in zip(GENERATED_FILES, fresh, strict=True):
            checked_in = source_root / name
            if not checked_in.is_file() or checked_in.read_bytes() != path.read_bytes():
                stale.append(name)
        return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m morphtune.service.codegen", description=__doc__
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the checked-in code is not current"
    )
    arguments = parser.parse_args(argv)
    if arguments.check:
        stale = check()
        if stale:
            print(
                f"generated code is stale: {', '.join(stale)}; "
                "run `python -m morphtune.service.codegen` (or `make proto`)",
                file=sys.stderr,
            )
            return 1
        print("generated code is current")
        return 0
    for path in generate(SOURCE_ROOT):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
