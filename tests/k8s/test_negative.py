"""The validators catch broken manifests: each test breaks one thing in a copy of the real
objects and expects the check that guards it to name the problem (and the unbroken copy
passes that check, in the other tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.k8s.conftest import rendered
from tests.k8s.manifests import Doc, find, one
from tests.k8s.policy import (
    exposure_problems,
    network_policy_problems,
    non_root_problems,
    resource_problems,
    secret_problems,
    token_auth_problems,
)
from tests.k8s.schemas import (
    KUBERNETES_VERSIONS,
    core_problems,
    crd_problems,
    object_problems,
    reference_problems,
    schema_problems,
)


def _cluster(docs: list[Doc]) -> Doc:
    return one(docs, "RayCluster", "morphtune")


def _head(docs: list[Doc]) -> Doc:
    return _cluster(docs)["spec"]["headGroupSpec"]["template"]["spec"]


def _worker(docs: list[Doc]) -> Doc:
    return _cluster(docs)["spec"]["workerGroupSpecs"][0]["template"]["spec"]


def _service_pod(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", "morphtune-results")["spec"]["template"]["spec"]


def _only(problems: list[str], *needles: str) -> None:
    assert problems, "the check found nothing"
    for needle in needles:
        assert any(needle in problem for problem in problems), (needle, problems)


# ------------------------------------------------------------------ schemas


def test_a_misspelt_raycluster_field_is_rejected(raw_docs: list[Doc]) -> None:
    head = _cluster(raw_docs)["spec"]["headGroupSpec"]
    head["rayStartParam"] = head.pop("rayStartParams")
    _only(crd_problems(_cluster(raw_docs)), "rayStartParam", "Additional properties")


def test_a_misspelt_container_field_inside_a_raycluster_is_rejected(raw_docs: list[Doc]) -> None:
    _worker(raw_docs)["containers"][0]["imagePullPolcy"] = "Always"
    _only(crd_problems(_cluster(raw_docs)), "imagePullPolcy")


def test_an_unquoted_fractional_cpu_in_a_raycluster_is_rejected(raw_docs: list[Doc]) -> None:
    _worker(raw_docs)["containers"][0]["resources"]["limits"]["cpu"] = 0.5
    _only(crd_problems(_cluster(raw_docs)), "0.5")
    _worker(raw_docs)["containers"][0]["resources"]["limits"]["cpu"] = "500m"
    assert crd_problems(_cluster(raw_docs)) == []


def test_a_misspelt_deployment_field_fails_every_kubernetes_version(raw_docs: list[Doc]) -> None:
    _service_pod(raw_docs)["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    deployment = one(raw_docs, "Deployment", "morphtune-results")
    for version in KUBERNETES_VERSIONS:
        _only(core_problems(deployment, version), "readinesProbe", f"Kubernetes {version}")


def test_a_wrongly_typed_monitoring_field_is_rejected(raw_docs: list[Doc]) -> None:
    rule = one(raw_docs, "PrometheusRule", "morphtune")
    rule["spec"]["groups"][0]["rules"][0]["for"] = 10
    monitor = one(raw_docs, "ServiceMonitor", "morphtune-results")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    _only(crd_problems(rule), "for")
    _only(crd_problems(monitor), "intervall")


def test_a_too_long_raycluster_name_is_rejected(raw_docs: list[Doc]) -> None:
    cluster = _cluster(raw_docs)
    cluster["metadata"]["name"] = "m" * 54  # KubeRay allows 53
    _only(crd_problems(cluster), "is too long")


def test_a_kind_without_a_schema_is_an_error() -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    _only(schema_problems(doc), "no schema")
    gone = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {}}
    _only(schema_problems(gone, ["1.28"]), "Kubernetes 1.28 has no policy/v1beta1")


# ------------------------------------------------------------------ rules beyond the schemas


@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        (
            lambda d: one(d, "RayJob", "morphtune-sweep")["spec"].update(
                shutdownAfterJobFinishes=False
            ),
            "ttlSecondsAfterFinished needs shutdownAfterJobFinishes",
        ),
        (
            lambda d: _cluster(d)["spec"]["workerGroupSpecs"][0].update(minReplicas=5),
            "minReplicas 5 > maxReplicas 4",
        ),
        (lambda d: _cluster(d)["spec"].update(rayVersion="2.40.0"), "needs rayVersion >= 2.52.0"),
        (
            lambda d: _worker(d)["containers"].append(dict(_worker(d)["containers"][0])),
            "container name 'ray-worker' is used twice",
        ),
        (
            lambda d: _cluster(d)["spec"]["workerGroupSpecs"][0]["rayStartParams"].update(
                labels="a=b"
            ),
            "rayStartParams['labels']",
        ),
        (
            lambda d: one(d, "HorizontalPodAutoscaler", "morphtune-results")["spec"].update(
                minReplicas=9
            ),
            "minReplicas 9 > maxReplicas 6",
        ),
    ],
    ids=[
        "ttl-without-shutdown",
        "min-over-max",
        "old-ray-for-token",
        "duplicate-container",
        "ray-start-labels",
        "hpa-bounds",
    ],
)
def test_rule_violations_are_found(
    raw_docs: list[Doc], breakage: Callable[[list[Doc]], Any], needle: str
) -> None:
    breakage(raw_docs)
    _only(object_problems(raw_docs), needle)


def test_dangling_references_are_found() -> None:
    docs = rendered("dev")
    for doc in find(docs, "ConfigMap", "morphtune-storage"):
        docs.remove(doc)
    one(docs, "HorizontalPodAutoscaler", "morphtune-results")["spec"]["scaleTargetRef"]["name"] = (
        "morphtune-result"
    )
    one(docs, "ServiceMonitor", "morphtune-results")["spec"]["endpoints"][0]["port"] = "metric"
    one(docs, "NetworkPolicy", "morphtune-results-clients")["spec"]["podSelector"] = {
        "matchLabels": {"app.kubernetes.io/component": "result-service"}
    }
    problems = reference_problems(docs)
    _only(
        problems,
        "refers to ConfigMap 'morphtune-storage'",
        "scale target Deployment/morphtune-result",
        "has no port 'metric'",
        "morphtune-results-clients: podSelector matches no pod template",
    )


# ------------------------------------------------------------------ T13 policy


def test_a_ray_container_without_the_token_is_caught(raw_docs: list[Doc]) -> None:
    container = _worker(raw_docs)["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "RAY_AUTH_TOKEN"]
    _only(token_auth_problems(raw_docs), "worker group cpu container ray-worker: RAY_AUTH_TOKEN")


def test_token_auth_off_or_from_another_secret_is_caught(raw_docs: list[Doc]) -> None:
    del _cluster(raw_docs)["spec"]["authOptions"]
    job = one(raw_docs, "RayJob", "morphtune-sweep")
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    submitter["env"][1]["valueFrom"]["secretKeyRef"]["name"] = "some-other-secret"
    _only(
        token_auth_problems(raw_docs),
        "RayCluster/morphtune: authOptions.mode must be 'token'",
        "submitter container ray-job-submitter: RAY_AUTH_TOKEN must come from Secret",
    )


def test_a_literal_token_or_auth_mode_off_is_caught(raw_docs: list[Doc]) -> None:
    env = _service_pod(raw_docs)["containers"][0]["env"]
    for item in env:
        if item["name"] == "RAY_AUTH_TOKEN":
            item.pop("valueFrom")
            item["value"] = "hunter2"
    head = _head(raw_docs)["containers"][0]
    next(e for e in head["env"] if e["name"] == "RAY_AUTH_MODE")["value"] = "disabled"
    _only(
        token_auth_problems(raw_docs),
        "results-service: RAY_AUTH_TOKEN is a literal",
        "head container ray-head: RAY_AUTH_MODE must be 'token', got 'disabled'",
    )


def test_a_nodeport_on_the_dashboard_is_caught(raw_docs: list[Doc]) -> None:
    raw_docs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ray-dashboard"},
            "spec": {
                "type": "NodePort",
                "selector": {"ray.io/node-type": "head"},
                "ports": [{"port": 8265, "targetPort": 8265}],
            },
        }
    )
    assert schema_problems(raw_docs[-1]) == []  # a valid Service, and still forbidden
    _only(
        exposure_problems(raw_docs), "Service/ray-dashboard: type NodePort forwards Ray port 8265"
    )


def test_a_load_balancer_head_or_any_ray_exposure_is_caught(raw_docs: list[Doc]) -> None:
    _cluster(raw_docs)["spec"]["headGroupSpec"]["serviceType"] = "LoadBalancer"
    _worker(raw_docs)["containers"][0]["ports"][0]["hostPort"] = 8080
    raw_docs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "workers"},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app.kubernetes.io/component": "ray-worker"},
                "ports": [{"port": 80, "targetPort": 5000}],
            },
        }
    )
    _only(
        exposure_problems(raw_docs),
        "RayCluster/morphtune: the head Service is a LoadBalancer",
        "hostPort 8080",
        "Service/workers: type LoadBalancer selects Ray pods",
    )


def test_missing_requests_or_limits_are_caught(raw_docs: list[Doc]) -> None:
    del _head(raw_docs)["containers"][0]["resources"]["limits"]
    _service_pod(raw_docs)["containers"][0]["resources"]["requests"].pop("memory")
    _cluster(raw_docs)["spec"]["autoscalerOptions"].pop("resources")
    worker = _worker(raw_docs)["containers"][0]["resources"]
    worker["requests"]["nvidia.com/gpu"] = "1"
    _only(
        resource_problems(raw_docs),
        "head container ray-head: no cpu limit",
        "head container ray-head: no memory limit",
        "results-service: no memory request",
        "autoscaler: no cpu request",
        "extended resource nvidia.com/gpu needs a limit",
    )


def test_root_containers_are_caught(raw_docs: list[Doc]) -> None:
    _service_pod(raw_docs)["containers"][0]["securityContext"]["runAsUser"] = 0
    worker = _worker(raw_docs)
    del worker["securityContext"]["runAsNonRoot"]
    del worker["containers"][0]["securityContext"]["runAsNonRoot"]
    submitter = one(raw_docs, "RayJob", "morphtune-sweep")["spec"]["submitterPodTemplate"]
    submitter["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    _only(
        non_root_problems(raw_docs),
        "results-service: runAsUser is 0",
        "worker group cpu container ray-worker: runAsNonRoot must be true",
        "submitter container ray-job-submitter: allowPrivilegeEscalation must be false",
    )


def test_a_namespace_without_default_deny_is_caught(raw_docs: list[Doc]) -> None:
    deny = one(raw_docs, "NetworkPolicy", "morphtune-default-deny")
    deny["spec"]["policyTypes"] = ["Ingress"]  # egress left open
    _only(network_policy_problems(raw_docs), "namespace morphtune: no default-deny")
    raw_docs.remove(deny)
    _only(network_policy_problems(raw_docs), "namespace morphtune: no default-deny")


def test_committed_secret_values_are_caught(raw_docs: list[Doc]) -> None:
    raw_docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "morphtune-ray-token"},
            "stringData": {"auth_token": "not-so-secret"},
        }
    )
    _only(secret_problems(raw_docs), "Secret/morphtune-ray-token: Secret values are committed")
