"""Fixtures: the overlays rendered once per session (skipped where kubectl is absent), and
the raw resource files (always there)."""

from __future__ import annotations

import copy

import pytest

from tests.k8s.manifests import K8S, OVERLAYS, Doc, RawDoc, kubectl, raw_documents, render


@pytest.fixture(scope="session")
def raw() -> list[RawDoc]:
    return raw_documents()


@pytest.fixture
def raw_docs(raw: list[RawDoc]) -> list[Doc]:
    """Fresh copies of every raw object (tests may change them)."""
    return [copy.deepcopy(item.doc) for item in raw]


def rendered(overlay: str) -> list[Doc]:
    """The overlay as ``kubectl kustomize`` renders it (fresh copies); skips without kubectl."""
    if kubectl() is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    return render(K8S / "overlays" / overlay)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(overlay: str) -> list[Doc]:
    return rendered(overlay)
