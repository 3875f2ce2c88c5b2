"""Validate Kubernetes objects offline.

* Core kinds against the strict schemas ``kubernetes-validate`` bundles (unknown fields
  are errors), for any of its Kubernetes versions. The schemas are read from its package
  and compiled once per (version, kind): its own ``validate()`` reloads a 1.2 MB file per
  call, and these tests validate a few hundred objects.
* Ray and Prometheus-operator kinds against the strict CRD schemas in ``schemas/`` (copied
  from ``shared/k8s-schemas``: KubeRay 1.7.0, Prometheus operator 0.93.0).
* Rules no schema expresses: per object (the schemas' README, KubeRay's operator-side
  validation) in :func:`object_problems`, between objects in :func:`reference_problems`.

Every check returns problems as strings, ``"<Kind>/<name>: <what is wrong>"``; none is ok.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from tests.k8s.manifests import (
    Doc,
    all_pod_templates,
    find,
    name_of,
    ray_cluster_specs,
    selector_matches,
)

SCHEMAS = Path(__file__).resolve().parent / "schemas"
#: kind -> (apiVersion, schema file) for the custom resources morphtune uses
CRD_SCHEMAS = {
    "RayCluster": ("ray.io/v1", "raycluster_v1.strict.json"),
    "RayJob": ("ray.io/v1", "rayjob_v1.strict.json"),
    "RayService": ("ray.io/v1", "rayservice_v1.strict.json"),
    "ServiceMonitor": ("monitoring.coreos.com/v1", "servicemonitor_v1.strict.json"),
    "PodMonitor": ("monitoring.coreos.com/v1", "podmonitor_v1.strict.json"),
    "PrometheusRule": ("monitoring.coreos.com/v1", "prometheusrule_v1.strict.json"),
}
#: Kubernetes versions the core kinds are checked against
KUBERNETES_VERSIONS = ("1.28", "1.29", "1.30", "1.31", "1.32", "1.33")
#: Secrets an operator creates by hand (docs/operations.md); manifests only reference them
EXTERNAL_SECRETS = frozenset(
    {"morphtune-ray-token", "morphtune-service-tokens", "morphtune-object-store"}
)
#: Ray >= 2.52.0 has token auth (KubeRay rejects authOptions.mode=token below it)
MIN_TOKEN_RAY = (2, 52, 0)


def _error_text(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.path)
    return f"{path or '.'}: {error.message}"


# ------------------------------------------------------------------ core kinds


def _kubernetes_validate_root() -> Any:
    return importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"


@functools.cache
def _core_registry(version: str) -> Registry:
    folder = _kubernetes_validate_root() / f"v{version}.0-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


def _api_file_part(api_version: str) -> str:
    """``apps/v1`` -> ``apps-v1``, ``rbac.authorization.k8s.io/v1`` -> ``rbac-v1``,
    ``v1`` -> ``v1`` (kubernetes-validate's file naming)."""
    return re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)


@functools.cache
def _core_validator(version: str, kind: str, api_version: str) -> jsonschema.Validator | None:
    folder = _kubernetes_validate_root() / f"v{version}.0-local-strict"
    path = folder / f"{kind.lower()}-{_api_file_part(api_version)}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry = Resource.from_contents(schema) @ _core_registry(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def is_core(doc: Doc) -> bool:
    return doc.get("kind") not in CRD_SCHEMAS


def core_problems(doc: Doc, version: str) -> list[str]:
    """Problems of a core-kind object under Kubernetes ``version`` (strict)."""
    validator = _core_validator(version, str(doc.get("kind")), str(doc.get("apiVersion")))
    if validator is None:
        return [
            f"{name_of(doc)}: Kubernetes {version} has no {doc.get('apiVersion')} "
            f"{doc.get('kind')} (no schema in kubernetes-validate)"
        ]
    return [
        f"{name_of(doc)} (Kubernetes {version}): {_error_text(error)}"
        for error in sorted(validator.iter_errors(doc), key=lambda error: list(error.path))
    ]


# ------------------------------------------------------------------ custom resources


@functools.cache
def _crd_validator(kind: str) -> jsonschema.Validator:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[kind][1]).read_text())
    return jsonschema.Draft7Validator(schema)


def crd_problems(doc: Doc) -> list[str]:
    """Problems of a Ray or Prometheus-operator object against its strict CRD schema."""
    kind = str(doc.get("kind"))
    if kind not in CRD_SCHEMAS:
        return [f"{name_of(doc)}: no CRD schema for kind {kind}"]
    return [
        f"{name_of(doc)}: {_error_text(error)}"
        for error in sorted(_crd_validator(kind).iter_errors(doc), key=lambda e: list(e.path))
    ]


def schema_problems(doc: Doc, versions: Iterable[str] = KUBERNETES_VERSIONS) -> list[str]:
    """Schema problems of any object: CRD kinds once, core kinds under each version."""
    if not is_core(doc):
        return crd_problems(doc)
    return [problem for version in versions for problem in core_problems(doc, version)]


# ------------------------------------------------------------------ rules beyond the schemas


def _version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if match is None:
        return None
    return tuple(int(part or 0) for part in match.groups())


def _pod_problems(docs: list[Doc]) -> Iterator[str]:
    for template in all_pod_templates(docs):
        names: list[str] = [c.get("name", "") for c in template.containers()]
        for name in sorted({name for name in names if names.count(name) > 1}):
            yield f"{template.where}: container name {name!r} is used twice"
        port_names: list[str] = []
        for container in template.containers():
            numbers = [
                (port.get("containerPort"), port.get("protocol", "TCP"))
                for port in container.get("ports", []) or []
            ]
            for number in sorted({n for n in numbers if numbers.count(n) > 1}, key=str):
                container_name = container.get("name")
                yield f"{template.where}: container {container_name} lists port {number} twice"
            port_names += [p["name"] for p in container.get("ports", []) or [] if "name" in p]
        for name in sorted({name for name in port_names if port_names.count(name) > 1}):
            yield f"{template.where}: port name {name!r} is used twice in the pod"


def _ray_cluster_problems(where: str, cluster: Doc) -> Iterator[str]:
    auth = cluster.get("authOptions") or {}
    if auth.get("mode") == "token":
        version = _version_tuple(str(cluster.get("rayVersion", "")))
        if version is None or version < MIN_TOKEN_RAY:
            yield (
                f"{where}: authOptions.mode=token needs rayVersion >= 2.52.0, "
                f"got {cluster.get('rayVersion')!r}"
            )
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    options = cluster.get("autoscalerOptions") or {}
    if options.get("idleTimeoutSeconds", 0) < 0:
        yield f"{where}: autoscalerOptions.idleTimeoutSeconds must be >= 0"
    groups = [("head", cluster.get("headGroupSpec") or {})]
    groups += [
        (f"worker group {group.get('groupName')}", group)
        for group in cluster.get("workerGroupSpecs") or []
    ]
    group_names = [group.get("groupName") for _, group in groups[1:]]
    for name in sorted({n for n in group_names if group_names.count(n) > 1}, key=str):
        yield f"{where}: worker group name {name!r} is used twice"
    for label, group in groups:
        containers = (group.get("template") or {}).get("spec", {}).get("containers") or []
        if not containers:
            yield f"{where} {label}: needs at least one container"
        params = group.get("rayStartParams") or {}
        if group.get("resources") and any(
            params.get(key) for key in ("num-cpus", "num-gpus", "memory", "resources")
        ):
            yield f"{where} {label}: resources set both in rayStartParams and resources"
        if "labels" in params:
            yield f"{where} {label}: rayStartParams['labels'] is not supported (use labels)"
        if label == "head":
            continue
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            yield f"{where} {label}: minReplicas and maxReplicas are required without autoscaling"
        if low is not None and high is not None and low > high:
            yield f"{where} {label}: minReplicas {low} > maxReplicas {high}"
        replicas = group.get("replicas")
        if replicas is not None and low is not None and high is not None:
            if not low <= replicas <= high:
                yield f"{where} {label}: replicas {replicas} outside [{low}, {high}]"


def _ray_job_problems(doc: Doc) -> Iterator[str]:
    spec = doc.get("spec") or {}
    where = name_of(doc)
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not shutdown:
        yield f"{where}: ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true"
    if spec.get("suspend") and not shutdown:
        yield f"{where}: a suspended RayJob needs shutdownAfterJobFinishes: true"
    has_cluster, has_selector = "rayClusterSpec" in spec, bool(spec.get("clusterSelector"))
    if has_cluster == has_selector:
        yield f"{where}: set exactly one of rayClusterSpec and clusterSelector"
    if has_selector and spec.get("suspend"):
        yield f"{where}: clusterSelector mode cannot be suspended"
    interactive = spec.get("submissionMode") == "InteractiveMode"
    if not str(spec.get("entrypoint", "")).strip() and not interactive:
        yield f"{where}: entrypoint is empty"


def _selects_pods(docs: list[Doc], selector: Doc | None) -> bool:
    return any(selector_matches(selector, t.labels) for t in all_pod_templates(docs))


def _selector_problems(docs: list[Doc]) -> Iterator[str]:
    for deployment in find(docs, "Deployment"):
        spec = deployment.get("spec", {})
        labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
        if not selector_matches(spec.get("selector"), labels):
            yield f"{name_of(deployment)}: selector does not match the pod template's labels"
    for service in find(docs, "Service"):
        selector = service.get("spec", {}).get("selector")
        if selector and not _selects_pods(docs, selector):
            yield f"{name_of(service)}: selector {selector} matches no pod template"
    for budget in find(docs, "PodDisruptionBudget"):
        if not _selects_pods(docs, budget.get("spec", {}).get("selector")):
            yield f"{name_of(budget)}: selector matches no pod template"
    for policy in find(docs, "NetworkPolicy"):
        selector = policy.get("spec", {}).get("podSelector")
        if selector and not _selects_pods(docs, selector):
            yield f"{name_of(policy)}: podSelector matches no pod template"
    for monitor in find(docs, "PodMonitor"):
        spec = monitor.get("spec", {})
        selector = spec.get("selector")
        pods = [t for t in all_pod_templates(docs) if selector_matches(selector, t.labels)]
        if not pods:
            yield f"{name_of(monitor)}: selector matches no pod template"
        for endpoint in spec.get("podMetricsEndpoints", []):
            port = endpoint.get("port")
            for template in pods:
                named = {
                    p.get("name") for c in template.containers() for p in c.get("ports", []) or []
                }
                if port is not None and port not in named:
                    yield f"{name_of(monitor)}: {template.where} has no port named {port!r}"
    for monitor in find(docs, "ServiceMonitor"):
        spec = monitor.get("spec", {})
        services = [
            s
            for s in find(docs, "Service")
            if selector_matches(spec.get("selector"), s.get("metadata", {}).get("labels", {}))
        ]
        if not services:
            yield f"{name_of(monitor)}: selector matches no Service"
        for endpoint in spec.get("endpoints", []):
            for service in services:
                named = {p.get("name") for p in service.get("spec", {}).get("ports", [])}
                if endpoint.get("port") is not None and endpoint["port"] not in named:
                    yield f"{name_of(monitor)}: {name_of(service)} has no port {endpoint['port']!r}"


def _references(template_spec: Doc) -> Iterator[tuple[str, str, bool]]:
    """``(kind, name, optional)`` of the ConfigMaps, Secrets, claims and service account a
    pod spec refers to."""
    containers = [*template_spec.get("initContainers", []), *template_spec.get("containers", [])]
    for container in containers:
        for env in container.get("env", []) or []:
            source = env.get("valueFrom") or {}
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if key in source:
                    ref = source[key]
                    yield kind, ref.get("name", ""), bool(ref.get("optional"))
        for env_from in container.get("envFrom", []) or []:
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in env_from:
                    ref = env_from[key]
                    yield kind, ref.get("name", ""), bool(ref.get("optional"))
    for volume in template_spec.get("volumes", []) or []:
        if "configMap" in volume:
            ref = volume["configMap"]
            yield "ConfigMap", ref.get("name", ""), bool(ref.get("optional"))
        if "secret" in volume:
            ref = volume["secret"]
            yield "Secret", ref.get("secretName", ""), bool(ref.get("optional"))
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName", "")
            yield "PersistentVolumeClaim", claim, False
    if template_spec.get("serviceAccountName"):
        yield "ServiceAccount", template_spec["serviceAccountName"], False


def _reference_problems(docs: list[Doc]) -> Iterator[str]:
    present = {(doc.get("kind"), doc.get("metadata", {}).get("name")) for doc in docs}
    for template in all_pod_templates(docs):
        for kind, name, optional in _references(template.spec):
            if (kind, name) in present or optional:
                continue
            if kind == "Secret" and name in EXTERNAL_SECRETS:
                continue
            yield f"{template.where}: refers to {kind} {name!r}, which is not in the manifests"
        mounted = {v.get("name") for v in template.spec.get("volumes", []) or []}
        for container in template.containers():
            for mount in container.get("volumeMounts", []) or []:
                if mount.get("name") not in mounted:
                    yield f"{template.where}: mounts volume {mount.get('name')!r}, which it lacks"
    for cluster_doc in docs:
        for where, cluster in ray_cluster_specs(cluster_doc):
            secret = (cluster.get("authOptions") or {}).get("secretName")
            if secret and ("Secret", secret) not in present and secret not in EXTERNAL_SECRETS:
                yield f"{where}: authOptions.secretName {secret!r} is not a known Secret"
    for binding in find(docs, "RoleBinding"):
        role = binding.get("roleRef", {})
        if role.get("kind") == "Role" and ("Role", role.get("name")) not in present:
            yield f"{name_of(binding)}: roleRef Role {role.get('name')!r} is not in the manifests"
        for subject in binding.get("subjects", []):
            account = ("ServiceAccount", subject.get("name"))
            if subject.get("kind") == "ServiceAccount" and account not in present:
                yield f"{name_of(binding)}: subject {account[1]!r} is not a ServiceAccount here"


def object_problems(docs: list[Doc]) -> list[str]:
    """What the schemas cannot say about each object on its own: unique container names
    and ports, replica bounds, and KubeRay's operator-side rules (validation.go, v1.7.0)."""
    problems = list(_pod_problems(docs))
    for doc in docs:
        for where, cluster in ray_cluster_specs(doc):
            problems += _ray_cluster_problems(where, cluster)
        if doc.get("kind") == "RayJob":
            problems += _ray_job_problems(doc)
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        spec = hpa.get("spec", {})
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if high is not None and low > high:
            problems.append(f"{name_of(hpa)}: minReplicas {low} > maxReplicas {high}")
    return problems


def reference_problems(docs: list[Doc]) -> list[str]:
    """Between the objects of one complete set (a rendered overlay): selectors select
    something, and every ConfigMap, Secret, claim, role, service account and scale target
    referred to is there (Secrets made by hand: :data:`EXTERNAL_SECRETS`)."""
    problems = [*_selector_problems(docs), *_reference_problems(docs)]
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        target = hpa.get("spec", {}).get("scaleTargetRef", {})
        if not find(docs, str(target.get("kind")), target.get("name")):
            problems.append(
                f"{name_of(hpa)}: scale target {target.get('kind')}/{target.get('name')} "
                "is not in the manifests"
            )
    return problems


def unvalidated_kinds(docs: list[Doc]) -> set[str]:
    """Kinds neither kubernetes-validate nor the CRD schemas know (under 1.28)."""
    unknown = set()
    for doc in docs:
        if is_core(doc) and _core_validator("1.28", doc["kind"], doc["apiVersion"]) is None:
            unknown.add(f"{doc['apiVersion']}/{doc['kind']}")
    return unknown


__all__ = [
    "CRD_SCHEMAS",
    "EXTERNAL_SECRETS",
    "KUBERNETES_VERSIONS",
    "core_problems",
    "crd_problems",
    "is_core",
    "object_problems",
    "reference_problems",
    "schema_problems",
    "unvalidated_kinds",
]
