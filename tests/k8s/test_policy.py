"""T13: token auth on every Ray pod, no Ray port exposed outside the cluster, resources and
non-root everywhere, a default-deny NetworkPolicy over the namespace, no committed Secret
values; on the raw files and on every rendered overlay."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import Doc, all_pod_templates, ray_cluster_specs
from tests.k8s.policy import (
    exposure_problems,
    network_policy_problems,
    non_root_problems,
    policy_problems,
    resource_problems,
    secret_problems,
    token_auth_problems,
)

CHECKS = {
    "token auth": token_auth_problems,
    "ray ports not exposed": exposure_problems,
    "requests and limits": resource_problems,
    "non-root": non_root_problems,
    "default deny": network_policy_problems,
    "no secret values": secret_problems,
}


@pytest.mark.parametrize("check", CHECKS, ids=list(CHECKS))
def test_raw_files_pass(raw_docs: list[Doc], check: str) -> None:
    assert CHECKS[check](raw_docs) == []


@pytest.mark.parametrize("check", CHECKS, ids=list(CHECKS))
def test_rendered_overlay_passes(docs: list[Doc], check: str) -> None:
    assert CHECKS[check](docs) == []


def test_the_checks_see_every_ray_pod_and_container(docs: list[Doc]) -> None:
    """The checks walk what is there: both Ray clusters (the RayCluster and the RayJob's),
    their head and worker groups, the RayJob submitter and the results service."""
    clusters = [where for doc in docs for where, _ in ray_cluster_specs(doc)]
    assert clusters == ["RayCluster/morphtune", "RayJob/morphtune-sweep rayClusterSpec"]
    templates = all_pod_templates(docs)
    roles = sorted(template.role for template in templates)
    gpu = any("nvidia.com/gpu" in str(list(template.containers())) for template in templates)
    groups = 4 if gpu else 2  # prod adds a GPU group to each cluster
    assert roles.count("ray") == 2 + groups
    assert roles.count("submitter") == 1
    assert roles.count("pod") == 1
    assert all(list(template.containers()) for template in templates)
    assert policy_problems(docs) == []
