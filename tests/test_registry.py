"""The generic name -> entry Registry behind every pluggable part."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable

import pytest

from morphtune.registry import Registry


def make(names: list[str], hint: str | None = "register_widget") -> Registry[Callable[[], str]]:
    registry: Registry[Callable[[], str]] = Registry("widget", hint)
    for name in names:
        registry.register(name)(lambda name=name: name)
    return registry


def test_register_returns_the_entry_and_get_finds_it() -> None:
    registry: Registry[Callable[[], int]] = Registry("widget", "register_widget")

    @registry.register("one")
    def one() -> int:
        return 1

    assert one() == 1
    assert registry.get("one") is one


def test_names_iteration_and_len_keep_registration_order() -> None:
    registry = make(["zeta", "alpha", "mid"])
    assert registry.names() == ["zeta", "alpha", "mid"]
    assert list(registry) == ["zeta", "alpha", "mid"]
    assert sorted(registry) == ["alpha", "mid", "zeta"]
    assert len(registry) == 3


def test_contains_works_on_names_like_a_list() -> None:
    registry = make(["alpha"])
    assert "alpha" in registry
    assert "beta" not in registry
    assert ["alpha"] not in registry  # unhashable: simply not a name


def test_duplicate_name_is_rejected_and_the_first_entry_kept() -> None:
    registry = make(["alpha"])
    first = registry.get("alpha")
    with pytest.raises(ValueError, match=r"^widget 'alpha' is already registered$"):
        registry.register("alpha")(lambda: "other")
    assert registry.get("alpha") is first
    assert registry.names() == ["alpha"]


@pytest.mark.parametrize("name", ["", None, 3])
def test_empty_or_non_str_name_is_rejected(name: object) -> None:
    registry = make([])
    with pytest.raises(ValueError, match=r"widget name must be a non-empty str, but got"):
        registry.register(name)  # type: ignore[arg-type]
    assert len(registry) == 0


def test_unknown_name_lists_sorted_valid_names_and_the_hint() -> None:
    registry = make(["zeta", "alpha"])
    message = (
        r"^unknown widget 'beta'; valid: \['alpha', 'zeta'\] "
        r"\(register more with register_widget\)$"
    )
    with pytest.raises(ValueError, match=message):
        registry.get("beta")


def test_unknown_name_without_hint_has_no_register_clause() -> None:
    registry = make(["alpha"], hint=None)
    with pytest.raises(ValueError, match=r"^unknown widget 'beta'; valid: \['alpha'\]$"):
        registry.get("beta")


def test_module_imports_neither_torch_nor_ray() -> None:
    code = "import sys, morphtune.registry; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "attribute", "kind"),
    [
        ("morphtune.data", "DATASETS", "dataset"),
        ("morphtune.models", "MODEL_FAMILIES", "model family"),
        ("morphtune.methods.sparsity", "PRUNING_METHODS", "pruning method"),
        ("morphtune.methods.sparsity", "LAYER_DISTRIBUTIONS", "layer distribution"),
        ("morphtune.methods.growth", "GROWTH_OPERATORS", "growth operator"),
        ("morphtune.searchers", "SAMPLERS", "sampler"),
        ("morphtune.searchers", "SCHEDULERS", "scheduler"),
    ],
)
def test_public_registries_are_registries(module: str, attribute: str, kind: str) -> None:
    registry = getattr(importlib.import_module(module), attribute)
    assert isinstance(registry, Registry)
    assert registry.kind == kind
    assert len(registry) > 0
    assert all(name in registry for name in registry)
    with pytest.raises(ValueError, match=rf"unknown {kind} 'no-such'; valid: \[.+\]"):
        registry.get("no-such")
