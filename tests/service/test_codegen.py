from __future__ import annotations

import shutil
from pathlib import Path

from morphtune.service import codegen


def test_checked_in_generated_code_is_current() -> None:
    assert codegen.check() == [], "run `python -m morphtune.service.codegen` and commit"
    assert codegen.main(["--check"]) == 0


def test_check_detects_stale_code(tmp_path: Path) -> None:
    package = Path(codegen.SOURCE_ROOT) / "morphtune" / "service" / "v1"
    copy = tmp_path / "morphtune" / "service" / "v1"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    proto = copy / "morphtune.proto"
    proto.write_text(
        proto.read_text().replace("string scope = 4;", "string scope = 4;\n  int32 limit = 99;")
    )
    stale = codegen.check(tmp_path)
    assert stale == [name for name in codegen.GENERATED_FILES if "_grpc" not in name]
    codegen.generate(tmp_path, tmp_path)
    assert codegen.check(tmp_path) == []
