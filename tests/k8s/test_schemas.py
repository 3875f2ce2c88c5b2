"""Every object validates: core kinds against Kubernetes 1.28 to 1.33 (strict, via
kubernetes-validate's schemas), Ray and monitoring kinds against the strict CRD schemas,
plus the rules no schema expresses. The raw resource files are checked even where
kubectl is absent; the rendered overlays where it is present."""

from __future__ import annotations

import copy
import filecmp

import kubernetes_validate
import pytest

from tests.k8s.manifests import REPO, Doc, RawDoc, one, raw_documents
from tests.k8s.schemas import (
    CRD_SCHEMAS,
    KUBERNETES_VERSIONS,
    SCHEMAS,
    core_problems,
    crd_problems,
    is_core,
    object_problems,
    reference_problems,
    schema_problems,
    unvalidated_kinds,
)

SHARED_SCHEMAS = REPO.parent / "shared" / "k8s-schemas"


def _raw_id(item: RawDoc) -> str:
    return f"{item.path.relative_to(REPO)}:{item.doc['kind']}/{item.doc['metadata']['name']}"


RAW = raw_documents()


@pytest.mark.parametrize("item", RAW, ids=[_raw_id(item) for item in RAW])
def test_raw_object_validates(item: RawDoc) -> None:
    assert schema_problems(item.doc) == []


def test_raw_objects_follow_the_rules(raw_docs: list[Doc]) -> None:
    assert object_problems(raw_docs) == []
    assert unvalidated_kinds(raw_docs) == set()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_core_kinds_validate(docs: list[Doc], version: str) -> None:
    core = [doc for doc in docs if is_core(doc)]
    assert len(core) >= 15
    assert [problem for doc in core for problem in core_problems(doc, version)] == []


def test_rendered_custom_resources_validate(docs: list[Doc]) -> None:
    custom = [doc for doc in docs if not is_core(doc)]
    assert {doc["kind"] for doc in custom} == {
        "RayCluster",
        "RayJob",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
    }
    assert [problem for doc in custom for problem in crd_problems(doc)] == []


def test_rendered_objects_follow_the_rules(docs: list[Doc]) -> None:
    assert unvalidated_kinds(docs) == set()
    assert object_problems(docs) == []
    assert reference_problems(docs) == []


def test_fast_path_agrees_with_kubernetes_validate() -> None:
    """Our cached validator reads kubernetes-validate's schemas; its verdicts are the
    package's own on a good object and on one with a misspelt field."""
    good = one([item.doc for item in RAW], "Deployment", "morphtune-results")
    bad = copy.deepcopy(good)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    for version in ("1.28", "1.33"):
        assert core_problems(good, version) == []
        kubernetes_validate.validate(good, f"{version}.0", strict=True)
        assert any("imagePullPolcy" in problem for problem in core_problems(bad, version))
        with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
            kubernetes_validate.validate(bad, f"{version}.0", strict=True)


def test_schemas_are_the_shared_copies() -> None:
    copied = sorted(path.name for path in SCHEMAS.glob("*.json"))
    assert {CRD_SCHEMAS[kind][1] for kind in CRD_SCHEMAS} <= set(copied)
    if not SHARED_SCHEMAS.is_dir():
        pytest.skip(f"{SHARED_SCHEMAS} is not on this machine")
    for name in copied:
        assert filecmp.cmp(SCHEMAS / name, SHARED_SCHEMAS / name, shallow=False), name
