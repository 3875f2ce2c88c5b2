"""Generate, or check, the reference pages under ``docs/reference/``.

``python -m morphtune._docgen`` rewrites

- ``docs/reference/spec.md`` from the JSON Schema of ``SweepSpec`` (``morphtune spec
  schema``),
- ``docs/reference/methods.md`` from the registries (with the paper, knobs and tested
  properties of :mod:`morphtune._docgen._catalogue`, checked against the code),
- ``docs/reference/grpc.md`` from ``src/morphtune/service/v1/morphtune.proto``;

``--check`` writes nothing and exits 1 naming the pages that differ from a fresh
generation. Files are replaced atomically and only when their text changes. It reads the
repository (tests, proto), so it runs from a checkout; the gRPC page needs grpcio-tools
(a dev dependency).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from morphtune._atomic import atomic_write

__all__ = ["REFERENCES", "ROOT", "generate", "main", "stale", "write"]

#: The repository root of this checkout (``src/morphtune/_docgen/`` is three levels down).
ROOT = Path(__file__).resolve().parents[3]

#: Generated pages, relative to the repository root.
REFERENCES = (
    "docs/reference/spec.md",
    "docs/reference/methods.md",
    "docs/reference/grpc.md",
)


def _spec_page(root: Path) -> str:
    from morphtune._docgen._spec_ref import render_spec_reference
    from morphtune.spec import SweepSpec

    return render_spec_reference(SweepSpec.model_json_schema())


def _methods_page(root: Path) -> str:
    from morphtune._docgen._methods_ref import render_methods_reference
    from morphtune._docgen._spec_ref import field_sections
    from morphtune.spec import SweepSpec

    return render_methods_reference(root, field_sections(SweepSpec.model_json_schema()))


def _grpc_page(root: Path) -> str:
    from morphtune._docgen._grpc_ref import PROTO, compile_proto, render_grpc_reference

    return render_grpc_reference(compile_proto(root / "src", PROTO), f"src/{PROTO}")


_PAGES: dict[str, Callable[[Path], str]] = dict(
    zip(REFERENCES, (_spec_page, _methods_page, _grpc_page), strict=True)
)


def generate(root: Path = ROOT) -> dict[str, str]:
    """Every reference page's text, by path relative to ``root``."""
    if not (root / "docs").is_dir() or not (root / "src" / "morphtune").is_dir():
        raise FileNotFoundError(
            f"{root} is not a morphtune checkout (it needs docs/ and src/morphtune/)"
        )
    return {path: render(root).rstrip("\n") + "\n" for path, render in _PAGES.items()}


def stale(root: Path = ROOT, pages: dict[str, str] | None = None) -> list[str]:
    """Pages missing under ``root`` or differing from a fresh generation (empty: current)."""
    fresh = generate(root) if pages is None else pages
    out_of_date = []
    for path, text in fresh.items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            out_of_date.append(path)
    return out_of_date


def write(root: Path = ROOT) -> list[str]:
    """Regenerate the pages under ``root``; the paths whose text changed."""
    pages = generate(root)
    changed = stale(root, pages)
    for path in changed:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, _writer(pages[path].encode("utf-8")))
    return changed


def _writer(data: bytes) -> Callable[[BinaryIO], object]:
    def write_data(handle: BinaryIO) -> object:
        return handle.write(data)

    return write_data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m morphtune._docgen",
        description="Generate (or --check) docs/reference/ from the code.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a page is stale"
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help=f"repository root (default: {ROOT})"
    )
    arguments = parser.parse_args(argv)
    try:
        if arguments.check:
            out_of_date = stale(arguments.root)
            if out_of_date:
                print(
                    f"reference docs are stale: {', '.join(out_of_date)}; "
                    "run `python -m morphtune._docgen`",
                    file=sys.stderr,
                )
                return 1
            print("reference docs are current")
            return 0
        changed = write(arguments.root)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("updated: " + ", ".join(changed) if changed else "reference docs are current")
    return 0
