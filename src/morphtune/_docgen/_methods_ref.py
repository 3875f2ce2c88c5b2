"""``docs/reference/methods.md``: every registered method, from the registries themselves.

Names, their order, what each entry declares about itself (an operator's families and
lossless families, a pruning score's data needs and default rounds, a sparse-training
method's options, a sampler's or scheduler's knobs) and its one-line description come
from the code; the paper, the knobs the code does not list and the tested properties come
from :mod:`._catalogue`, checked against the registries, the spec schema and the tests.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from morphtune._docgen._catalogue import CATALOGUE, Family, Method, Tested
from morphtune._docgen._markdown import (
    HeadingSlugger,
    docstring_markdown,
    first_sentence,
    slugify,
    table,
)
from morphtune.registry import Registry

__all__ = ["SOURCES", "CatalogueError", "Source", "render_methods_reference"]


class CatalogueError(ValueError):
    """The catalogue and the code disagree (a missing row, a stale knob or test)."""


Facts = list[tuple[str, str]]


def _no_facts(entry: Any) -> Facts:
    return []


def _no_knobs(name: str, entry: Any) -> tuple[str, ...]:
    return ()


def _function_doc(entry: Any) -> str | None:
    doc = getattr(entry, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else None


def _instance_doc(entry: Any) -> str | None:
    return _function_doc(type(entry))


def _description(entry: Any) -> str | None:
    text = getattr(entry, "description", "")
    return text or None


def _names(values: Iterable[str]) -> str:
    listed = [f"`{value}`" for value in values]
    return ", ".join(listed) if listed else "none"


def _growth_facts(entry: Any) -> Facts:
    depth = entry.max_depth_factor
    return [
        ("families", _names(entry.families)),
        ("keeps the function on", _names(entry.lossless)),
        ("depth x per event", "any" if depth is None else f"<= {depth:g}"),
        ("grows masks on", _names(entry.mask_families)),
    ]


def _needs_data(entry: Any) -> str:
    return "yes" if entry.needs_data else "no"


def _pruning_facts(entry: Any) -> Facts:
    return [("needs data", _needs_data(entry)), ("default rounds", str(entry.iterations))]


def _proxy_facts(entry: Any) -> Facts:
    return [("value (higher = better)", f"`{entry.quantity}`"), ("needs data", _needs_data(entry))]


def _model_facts(entry: Any) -> Facts:
    config = entry.config_type
    names = ", ".join(f"`{f.name}`" for f in fields(config))
    return [("config", f"`{config.__name__}`({names})")]


def _sparse_training_knobs(name: str, entry: Any) -> tuple[str, ...]:
    return tuple(f"sparsity.{f.name}" for f in fields(entry.options_type))


def _knobs_from_table(prefix: str, table_name: str) -> Callable[[str, Any], tuple[str, ...]]:
    def knobs(name: str, entry: Any) -> tuple[str, ...]:
        import morphtune.spec as spec_module

        knob_table = getattr(spec_module, table_name)
        return tuple(f"{prefix}.{knob}" for knob, users in knob_table.items() if name in users)

    return knobs


@dataclass(frozen=True)
class Source:
    """One catalogued registry: where it lives, which spec field picks an entry, and how
    to read each entry's facts, description and knobs from the code."""

    key: str
    group: str
    heading: str
    noun: str
    module: str
    attribute: str
    chosen_by: str
    summary: Callable[[Any], str | None] = _function_doc
    facts: Callable[[Any], Facts] = _no_facts
    name_facts: Callable[[str], Facts] | None = None
    code_knobs: Callable[[str, Any], tuple[str, ...]] = _no_knobs

    def registry(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attribute)

    def names(self) -> list[str]:
        registry = self.registry()
        if isinstance(registry, Registry):
            return registry.names()
        return [str(name) for name in registry]

    def entry(self, name: str) -> Any:
        registry = self.registry()
        return registry.get(name) if isinstance(registry, Registry) else None

    def hint(self) -> str | None:
        registry = self.registry()
        return registry.hint if isinstance(registry, Registry) else None

    def entry_facts(self, name: str, entry: Any) -> Facts:
        found = self.facts(entry) if entry is not None else []
        return found + (self.name_facts(name) if self.name_facts else [])


def _sampler_objectives(name: str) -> Facts:
    from morphtune.spec import MULTI_OBJECTIVE_SAMPLERS

    return [("several objectives", "yes" if name in MULTI_OBJECTIVE_SAMPLERS else "no")]


def _scheduler_objectives(name: str) -> Facts:
    from morphtune.spec import SINGLE_OBJECTIVE_SCHEDULERS

    return [("several objectives", "no" if name in SINGLE_OBJECTIVE_SCHEDULERS else "yes")]


#: The catalogued registries, in the page's order. A registry added to the code must be
#: added here (``tests/test_docs_generated.py`` finds every ``Registry(...)`` in src/).
SOURCES: tuple[Source, ...] = (
    Source(
        "growth", "Growth", "Growth operators", "growth operator",
        "morphtune.methods.growth", "GROWTH_OPERATORS", "growth.operator",
        summary=_instance_doc, facts=_growth_facts,
    ),
    Source(
        "pruning", "Sparsity", "Pruning at initialisation", "pruning method",
        "morphtune.methods.sparsity", "PRUNING_METHODS", "sparsity.method",
        summary=_description, facts=_pruning_facts,
    ),
    Source(
        "sparse_training", "Sparsity", "Sparse training", "sparse training method",
        "morphtune.methods.sparsity", "SPARSE_TRAINING_METHODS", "sparsity.method",
        code_knobs=_sparse_training_knobs,
    ),
    Source(
        "gan", "Sparsity", "Sparse GAN training", "sparse GAN method",
        "morphtune.methods.sparsity", "GAN_METHODS", "sparsity.method",
    ),
    Source(
        "distribution", "Sparsity", "Layer distributions", "layer distribution",
        "morphtune.methods.sparsity", "LAYER_DISTRIBUTIONS", "sparsity.distribution",
    ),
    Source(
        "structure", "Sparsity", "Sparsity structures", "sparsity structure",
        "morphtune.methods.sparsity", "SPARSITY_STRUCTURES", "sparsity.structure",
    ),
    Source(
        "supernet", "Supernets and proxies", "Supernet families", "supernet family",
        "morphtune.methods.supernet", "SUPERNET_FAMILIES", "model.family",
    ),
    Source(
        "proxy", "Supernets and proxies", "Training-free proxies", "proxy",
        "morphtune.methods.proxies", "PROXIES", "search.proxy_filter.proxy",
        summary=_description, facts=_proxy_facts,
    ),
    Source(
        "sampler", "Search", "Samplers", "sampler",
        "morphtune.searchers", "SAMPLERS", "search.sampler.name",
        name_facts=_sampler_objectives,
        code_knobs=_knobs_from_table("search.sampler", "SAMPLER_KNOBS"),
    ),
    Source(
        "scheduler", "Search", "Schedulers", "scheduler",
        "morphtune.searchers", "SCHEDULERS", "search.scheduler.name",
        name_facts=_scheduler_objectives,
        code_knobs=_knobs_from_table("search.scheduler", "SCHEDULER_KNOBS"),
    ),
    Source(
        "model", "Models and data", "Model families", "model family",
        "morphtune.models", "MODEL_FAMILIES", "model.family",
        summary=lambda entry: _function_doc(entry.model_type), facts=_model_facts,
    ),
    Source(
        "dataset", "Models and data", "Datasets", "dataset",
        "morphtune.data", "DATASETS", "dataset.name",
    ),
)  # fmt: skip


# ------------------------------------------------------------------------ checking


@cache
def _test_functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def _check_test(root: Path, tested: Tested, where: str) -> None:
    path_text, _, function = tested.test.partition("::")
    path = root / path_text
    if not function or not path.is_file():
        raise CatalogueError(f"{where}: test {tested.test!r} names no file under {root}")
    if function not in _test_functions(path):
        raise CatalogueError(f"{where}: {path_text} defines no test function {function!r}")


def _check_family(source: Source, family: Family, root: Path, spec_fields: set[str]) -> None:
    names = source.names()
    missing = [name for name in names if name not in family.entries]
    if missing:
        raise CatalogueError(
            f"{source.attribute} has entries with no catalogue row: {missing}; add them to "
            f"CATALOGUE[{source.key!r}] in morphtune/_docgen/_catalogue.py"
        )
    stale = [name for name in family.entries if name not in names]
    if stale:
        raise CatalogueError(
            f"CATALOGUE[{source.key!r}] has rows for names {source.attribute} does not "
            f"register: {stale}; registered: {names}"
        )
    for knob in (source.chosen_by, *family.knobs):
        if knob not in spec_fields:
            raise CatalogueError(f"{source.key}: knob {knob!r} is not a spec field")
    for tested in family.tested:
        _check_test(root, tested, f"CATALOGUE[{source.key!r}]")
    for name, method in family.entries.items():
        where = f"CATALOGUE[{source.key!r}][{name!r}]"
        entry = source.entry(name)
        for knob in (*method.knobs, *source.code_knobs(name, entry)):
            if knob not in spec_fields:
                raise CatalogueError(f"{where}: knob {knob!r} is not a spec field")
        for tested in method.tested:
            _check_test(root, tested, where)
        if not method.tested and not family.tested:
            raise CatalogueError(f"{where}: no tested property (for it or its registry)")
        has_doc = bool(source.summary(entry)) if entry is not None else False
        if has_doc and method.summary:
            raise CatalogueError(f"{where}: the code describes it; drop the catalogue summary")
        if not has_doc and not method.summary:
            raise CatalogueError(f"{where}: neither the code nor the catalogue describes it")


# ------------------------------------------------------------------------ rendering


def _knob_links(knobs: Iterable[str], sections: dict[str, str]) -> str:
    ordered = list(dict.fromkeys(knobs))
    if not ordered:
        return "none of its own"
    return ", ".join(f"[`{knob}`](spec.md#{slugify(sections[knob])})" for knob in ordered)


def _test_link(tested: Tested) -> str:
    path, _, function = tested.test.partition("::")
    return f"{tested.claim} ([`{function}`](../../{path}))"


def _paragraphs(source: Source, entry: Any, method: Method) -> list[str]:
    text = source.summary(entry) if entry is not None else None
    return docstring_markdown(text)[:1] if text else [method.summary]


def _entry_lines(source: Source, name: str, method: Method, sections: dict[str, str]) -> list[str]:
    entry = source.entry(name)
    lines = [f"#### `{name}` ({source.noun})", ""]
    lines += [*_paragraphs(source, entry, method), ""]
    lines.append(f"- **Paper:** {method.paper or '—'}")
    for label, value in source.entry_facts(name, entry):
        lines.append(f"- **{label.capitalize()}:** {value}")
    knobs = (*source.code_knobs(name, entry), *method.knobs)
    lines.append(f"- **Its own knobs:** {_knob_links(knobs, sections)}")
    if method.tested:
        lines.append("- **Tested:**")
        lines += [f"  - {_test_link(tested)}" for tested in method.tested]
    lines.append("")
    return lines


def _source_lines(
    source: Source, family: Family, sections: dict[str, str], anchors: HeadingSlugger
) -> list[str]:
    lines = [f"### {source.heading}", ""]
    kind = "registry" if isinstance(source.registry(), Registry) else "names in"
    where = f"{kind} `{source.module}.{source.attribute}`"
    hint = source.hint()
    how = f"; register more with `{hint}`" if hint else ""
    lines += [
        f"Chosen by [`{source.chosen_by}`](spec.md#{slugify(sections[source.chosen_by])})"
        f"; {where}{how}.",
        "",
    ]
    if family.note:
        lines += [family.note, ""]
    if family.knobs:
        lines += [f"Knobs every entry takes: {_knob_links(family.knobs, sections)}.", ""]
    if family.tested:
        lines.append("Tested for every entry:")
        lines += [f"- {_test_link(tested)}" for tested in family.tested]
        lines.append("")
    rows = []
    labels: list[str] = []
    for name in source.names():
        entry = source.entry(name)
        method = family.entries[name]
        heading = f"`{name}` ({source.noun})"
        text = source.summary(entry) if entry is not None else None
        summary = first_sentence(text) if text else method.summary
        facts = source.entry_facts(name, entry)
        labels = [label for label, _ in facts]
        link = f"[`{name}`](#{anchors.peek(heading)})"
        rows.append([link, summary, method.paper or "—", *(value for _, value in facts)])
    lines += table(["name", "what it does", "paper", *labels], rows)
    lines.append("")
    return lines


def render_methods_reference(root: Path, sections: dict[str, str]) -> str:
    """The whole ``docs/reference/methods.md``; ``sections`` maps each spec field path to
    its section in ``spec.md``. Raises :class:`CatalogueError` where the catalogue and
    the code disagree."""
    spec_fields = set(sections)
    for source in SOURCES:
        if source.key not in CATALOGUE:
            raise CatalogueError(f"CATALOGUE has no family {source.key!r}")
        _check_family(source, CATALOGUE[source.key], root, spec_fields)
    unused = sorted(set(CATALOGUE) - {source.key for source in SOURCES})
    if unused:
        raise CatalogueError(f"CATALOGUE families no source reads: {unused}")

    lines = [
        "# Method catalogue",
        "",
        "<!-- Generated by `python -m morphtune._docgen` from the registries and",
        "     morphtune/_docgen/_catalogue.py. Do not edit by hand. -->",
        "",
        "Every method a sweep can name, read from the registries that the spec checks names",
        "against: what each entry is, the paper it implements, the spec fields that tune it",
        "([spec reference](spec.md)) and the properties the test suite checks on it, each",
        "linked to its test. The guides explain the methods at length:",
        "[growth](../growth.md), [sparsity](../sparsity.md), [supernets](../supernet.md),",
        "[search](../search.md); [concepts](../concepts.md) shows how they fit together.",
        "",
    ]
    groups: list[str] = list(dict.fromkeys(source.group for source in SOURCES))
    for group in groups:
        lines.append(
            f"- {group}: "
            + ", ".join(
                f"[{s.heading}](#{slugify(s.heading)})" for s in SOURCES if s.group == group
            )
        )
    lines.append("")
    # Anchors are counted in the order headings appear, as GitHub does.
    anchors = HeadingSlugger()
    anchors.anchor("Method catalogue")
    for group in groups:
        lines += [f"## {group}", ""]
        anchors.anchor(group)
        for source in (s for s in SOURCES if s.group == group):
            family = CATALOGUE[source.key]
            anchors.anchor(source.heading)
            lines += _source_lines(source, family, sections, anchors)
            for name in source.names():
                anchors.anchor(f"`{name}` ({source.noun})")
                lines += _entry_lines(source, name, family.entries[name], sections)
    return "\n".join(lines)
