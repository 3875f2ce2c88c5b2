"""The documentation stays true to the code.

* ``docs/reference/{spec,methods,grpc}.md`` equal a fresh ``python -m morphtune._docgen``
  (stale pages fail, naming the command that regenerates them); ``--check`` and the
  writer behave as documented;
* the method catalogue covers every registry in ``src/`` and refuses a registry entry it
  has no row for, a knob that is not a spec field and a test that does not exist;
* the gRPC page lists every RPC, message and field of the checked-in generated code;
* every relative link (and its ``#anchor``) in README.md and docs/ resolves;
* the tutorial's and concepts' sweep specs pass the spec check and their ``morphtune``
  commands parse with the real CLI parser.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import yaml

from morphtune._docgen import REFERENCES, ROOT, generate, main, stale
from morphtune._docgen._catalogue import CATALOGUE
from morphtune._docgen._catalogue import Tested as _Tested
from morphtune._docgen._markdown import heading_anchors, slugify
from morphtune._docgen._methods_ref import SOURCES, CatalogueError, _check_family
from morphtune._docgen._spec_ref import field_sections, registry_kinds
from morphtune.registry import Registry
from morphtune.spec import SweepSpec, parse_spec
from tests.doc_commands import FENCE, code_blocks, morphtune_commands, parse_problem

WRITTEN_GUIDES = ("docs/tutorial.md", "docs/concepts.md")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return generate(ROOT)


# ------------------------------------------------------------------ generated pages


def test_reference_pages_are_current(pages: dict[str, str]) -> None:
    assert sorted(pages) == sorted(REFERENCES)
    out_of_date = stale(ROOT, pages)
    assert out_of_date == [], (
        f"stale reference docs {out_of_date}: run `python -m morphtune._docgen` and commit"
    )


def test_check_names_a_stale_page_and_the_writer_repairs_it(
    tmp_path: Path, pages: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # A checkout that shares the code and tests but has its own docs/.
    (tmp_path / "src").symlink_to(ROOT / "src", target_is_directory=True)
    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    reference = tmp_path / "docs" / "reference"
    reference.mkdir(parents=True)
    for path, text in pages.items():
        (tmp_path / path).write_text(text, encoding="utf-8")
    edited = tmp_path / "docs/reference/methods.md"
    edited.write_text(pages["docs/reference/methods.md"].replace("RigL", "RigX"), "utf-8")
    (tmp_path / "docs/reference/grpc.md").unlink()

    assert main(["--check", "--root", str(tmp_path)]) == 1
    message = capsys.readouterr().err
    assert "docs/reference/methods.md" in message and "docs/reference/grpc.md" in message
    assert "docs/reference/spec.md" not in message
    assert "python -m morphtune._docgen" in message

    assert main(["--root", str(tmp_path)]) == 0
    assert edited.read_text(encoding="utf-8") == pages["docs/reference/methods.md"]
    assert (tmp_path / "docs/reference/grpc.md").read_text("utf-8") == pages[
        "docs/reference/grpc.md"
    ]
    assert sorted(p.name for p in reference.iterdir()) == ["grpc.md", "methods.md", "spec.md"]
    assert main(["--check", "--root", str(tmp_path)]) == 0


def test_a_directory_that_is_no_checkout_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(tmp_path)]) == 2
    assert "not a morphtune checkout" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ method catalogue


def _registries_in_src() -> list[tuple[str, str]]:
    """``(module, name)`` of every module-level ``NAME = Registry(...)`` in src/morphtune."""
    found = []
    package = ROOT / "src"
    for path in sorted((package / "morphtune").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)):
                continue
            if value.func.id != "Registry":
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            module = ".".join(path.relative_to(package).with_suffix("").parts)
            found += [(module, t.id) for t in targets if isinstance(t, ast.Name)]
    return found


def test_every_registry_in_the_code_is_catalogued() -> None:
    found = _registries_in_src()
    assert len(found) >= 10  # the scan itself works
    catalogued = [source.registry() for source in SOURCES]
    missing = []
    for module, name in found:
        registry = getattr(importlib.import_module(module), name)
        assert isinstance(registry, Registry)
        if not any(registry is entry for entry in catalogued):
            missing.append(f"{module}.{name}")
    assert missing == [], "registries missing from morphtune._docgen._methods_ref.SOURCES"


def _source(key: str) -> object:
    return next(source for source in SOURCES if source.key == key)


@pytest.fixture(scope="module")
def spec_fields() -> set[str]:
    return set(field_sections(SweepSpec.model_json_schema()))


def test_the_real_catalogue_passes_its_own_checks(spec_fields: set[str]) -> None:
    for source in SOURCES:
        _check_family(source, CATALOGUE[source.key], ROOT, spec_fields)


def _without(key: str, name: str) -> object:
    family = CATALOGUE[key]
    entries = {k: v for k, v in family.entries.items() if k != name}
    return dataclasses.replace(family, entries=entries)


def _with_extra(key: str, name: str, like: str) -> object:
    family = CATALOGUE[key]
    entries = {**family.entries, name: family.entries[like]}
    return dataclasses.replace(family, entries=entries)


def _with_entry(key: str, name: str, **changes: object) -> object:
    family = CATALOGUE[key]
    entries = dict(family.entries)
    entries[name] = dataclasses.replace(entries[name], **changes)
    return dataclasses.replace(family, entries=entries)


@pytest.mark.parametrize(
    ("key", "make", "message"),
    [
        ("growth", lambda: _without("growth", "lemon"), r"no catalogue row: \['lemon'\]"),
        (
            "sampler",
            lambda: _with_extra("sampler", "annealing", like="tpe"),
            r"does not register: \['annealing'\]",
        ),
        (
            "growth",
            lambda: _with_entry("growth", "net2net", knobs=("growth.nosie",)),
            r"knob 'growth.nosie' is not a spec field",
        ),
        (
            "pruning",
            lambda: _with_entry(
                "pruning",
                "snip",
                tested=(_Tested("x", "tests/methods/sparsity/test_pai_snip.py::test_gone"),),
            ),
            r"defines no test function 'test_gone'",
        ),
        (
            "pruning",
            lambda: _with_entry(
                "pruning", "snip", tested=(_Tested("x", "tests/nowhere.py::test_x"),)
            ),
            r"names no file",
        ),
        (
            "pruning",
            lambda: _with_entry("pruning", "snip", summary="a second description"),
            r"the code describes it",
        ),
        (
            "distribution",
            lambda: _with_entry("distribution", "erk", summary=""),
            r"neither the code nor the catalogue describes it",
        ),
    ],
    ids=["missing-row", "stale-row", "bad-knob", "no-such-test", "no-such-file",
         "two-descriptions", "no-description"],
)  # fmt: skip
def test_the_catalogue_refuses_what_the_code_contradicts(
    key: str, make: object, message: str, spec_fields: set[str]
) -> None:
    family = make()  # type: ignore[operator]
    with pytest.raises(CatalogueError, match=message):
        _check_family(_source(key), family, ROOT, spec_fields)  # type: ignore[arg-type]


def test_name_fields_are_linked_to_their_registries() -> None:
    kinds = registry_kinds()
    assert kinds[("GrowthSpec", "operator")] == "growth"
    assert kinds[("GrowthEventSpec", "operator")] == "growth"
    assert kinds[("SparsitySpec", "method")] == "sparsity"
    assert kinds[("DatasetSpec", "name")] == "dataset"
    assert kinds[("ModelSpec", "family")] == "model"
    assert ("TrainingSpec", "optimizer") not in kinds  # a Literal, not a registry


def test_methods_page_shows_what_the_registries_declare(pages: dict[str, str]) -> None:
    from morphtune.methods.growth import GROWTH_OPERATORS
    from morphtune.methods.sparsity import PRUNING_METHODS

    page = pages["docs/reference/methods.md"]
    for source in SOURCES:
        for name in source.names():
            assert f"#### `{name}` ({source.noun})" in page
    net2net = page.split("#### `net2net` (growth operator)")[1].split("####")[0]
    assert (
        "**Grows masks on:** "
        + ", ".join(f"`{f}`" for f in GROWTH_OPERATORS.get("net2net").mask_families)
        in net2net
    )
    synflow = page.split("#### `synflow` (pruning method)")[1].split("####")[0]
    assert f"**Default rounds:** {PRUNING_METHODS.get('synflow').iterations}" in synflow


# ------------------------------------------------------------------ gRPC page


def test_grpc_page_lists_every_rpc_message_and_field(pages: dict[str, str]) -> None:
    # The checked-in generated code is an independent reading of the same proto.
    from morphtune.service.v1 import morphtune_pb2

    page = pages["docs/reference/grpc.md"]
    for service in morphtune_pb2.DESCRIPTOR.services_by_name.values():
        assert f"### service {service.name}" in page
        for method in service.methods:
            assert f"#### rpc {method.name}" in page
    for message in morphtune_pb2.DESCRIPTOR.message_types_by_name.values():
        section = page.split(f"### message {message.name}\n")[1].split("\n### ")[0]
        for field in message.fields:
            assert f"| `{field.name}` | {field.number} |" in section, (message.name, field.name)
    assert "FAILED_PRECONDITION (no finite value for the metric yet)" in page  # a comment


# ------------------------------------------------------------------ links


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _links(markdown: str) -> list[str]:
    prose = FENCE.sub("", markdown)
    prose = _CODE_SPAN.sub("", prose)
    return _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose)


def _broken(path: Path, target: str, anchors: dict[Path, set[str]]) -> str | None:
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, mailto:, ...
        return None
    file_part, _, anchor = target.partition("#")
    if file_part.startswith("/"):
        resolved = ROOT / file_part.lstrip("/")
    else:
        resolved = (path.parent / file_part).resolve() if file_part else path
    if not resolved.exists():
        return "no such file"
    if anchor and resolved.suffix == ".md":
        if resolved not in anchors:
            anchors[resolved] = heading_anchors(resolved.read_text(encoding="utf-8"))
        if anchor not in anchors[resolved]:
            return f"no heading with anchor #{anchor}"
    return None


def test_every_relative_link_resolves() -> None:
    anchors: dict[Path, set[str]] = {}
    broken = []
    checked = 0
    for path in _markdown_files():
        for target in _links(path.read_text(encoding="utf-8")):
            checked += 1
            problem = _broken(path, target, anchors)
            if problem:
                broken.append(f"{path.relative_to(ROOT)}: ({target}) {problem}")
    assert checked > 100  # the scan finds the links
    assert broken == []


def test_the_link_check_catches_a_broken_link_and_anchor() -> None:
    page = ROOT / "docs" / "concepts.md"
    anchors: dict[Path, set[str]] = {}
    assert _broken(page, "tutorial.md#1-install", anchors) is None
    assert _broken(page, "tutorial.md#2-install", anchors) == "no heading with anchor #2-install"
    assert _broken(page, "nowhere.md", anchors) == "no such file"
    assert _broken(page, "#how-a-sweep-flows", anchors) is None
    assert _links("[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n[d]: w.md\n") == ["x.md", "w.md"]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("`net2net` (growth operator)", "net2net-growth-operator"),
        ("`1:2` (sparsity structure)", "12-sparsity-structure"),
        ("1. Install", "1-install"),
        ("Supernets and proxies", "supernets-and-proxies"),
        ("rpc GetSweep", "rpc-getsweep"),
        ("Sparsity: which weights to keep", "sparsity-which-weights-to-keep"),
    ],
)
def test_anchors_follow_githubs_rule(heading: str, anchor: str) -> None:
    assert slugify(heading) == anchor


# ------------------------------------------------------------------ written guides


@pytest.mark.parametrize("guide", WRITTEN_GUIDES)
def test_sweep_specs_in_the_guides_pass_the_spec_check(guide: str) -> None:
    specs = [
        body
        for body in code_blocks((ROOT / guide).read_text(encoding="utf-8"), {"yaml"})
        if isinstance(yaml.safe_load(body), dict) and "name" in yaml.safe_load(body)
    ]
    if guide == "docs/tutorial.md":
        assert specs, "the tutorial shows its spec"
    for body in specs:
        parse_spec(body, source=guide)  # raises SpecError naming the problem


@pytest.mark.parametrize("guide", WRITTEN_GUIDES)
def test_morphtune_commands_in_the_guides_parse(guide: str) -> None:
    commands = morphtune_commands((ROOT / guide).read_text(encoding="utf-8"))
    problems = {" ".join(argv): p for argv in commands if (p := parse_problem(argv))}
    assert problems == {}


def test_the_tutorial_walks_from_spec_to_exported_model() -> None:
    verbs = [argv[0] for argv in morphtune_commands((ROOT / "docs/tutorial.md").read_text("utf-8"))]
    for verb in ("spec", "run", "serve", "best", "trials", "report", "export"):
        assert verb in verbs
    assert parse_problem(["run", "first-sweep.yaml", "--no-such-flag"]) is not None
