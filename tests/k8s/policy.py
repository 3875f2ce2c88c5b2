"""Security policy checks (T13) on a set of Kubernetes objects.

* :func:`token_auth_problems`: every Ray cluster (RayCluster, and the cluster of each
  RayJob) runs with Ray token auth: ``authOptions.mode: token`` on the Secret, and every
  container of its pods, every RayJob submitter and the results service get
  ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from the Secret (never a literal).
* :func:`exposure_problems`: no Ray port (GCS, dashboard/Jobs, client, metrics...) is
  reachable from outside the cluster: no LoadBalancer/NodePort Service, ingress, host port
  or host network in front of a Ray pod.
* :func:`resource_problems`: every container has CPU and memory requests and limits
  (extended resources such as ``nvidia.com/gpu``: a limit, and a request equal to it).
* :func:`non_root_problems`: every container runs as a non-root user without privilege
  escalation.
* :func:`network_policy_problems`: a default-deny NetworkPolicy (all pods, ingress and
  egress, no rules) covers the namespace every object lives in.
* :func:`secret_problems`: no Secret values are committed.
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.k8s.manifests import (
    NAMESPACE,
    Doc,
    PodTemplate,
    all_pod_templates,
    find,
    name_of,
    ray_cluster_specs,
    selector_matches,
)

RAY_TOKEN_SECRET = "morphtune-ray-token"
RAY_TOKEN_KEY = "auth_token"  # KubeRay reads this key of authOptions.secretName
#: Ray's ports: GCS, dashboard/Jobs API, client, metrics, dashboard agent, autoscaler and
#: dashboard metrics, Serve
RAY_PORTS = frozenset({6379, 8265, 10001, 8080, 52365, 44217, 44227, 8000})
RAY_PORT_NAMES = frozenset({"gcs-server", "gcs", "dashboard", "client", "metrics", "serve"})
RAY_COMPONENTS = frozenset({"ray-head", "ray-worker"})
COMPONENT = "app.kubernetes.io/component"
EXPOSED_TYPES = frozenset({"LoadBalancer", "NodePort"})
CLUSTER_NAMESPACED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding"})


def _env(container: Doc) -> dict[str, Doc]:
    return {env.get("name", ""): env for env in container.get("env", []) or []}


def _token_env_problems(where: str, container: Doc) -> Iterator[str]:
    name = f"{where} container {container.get('name')}"
    env = _env(container)
    mode = env.get("RAY_AUTH_MODE", {})
    if mode.get("value") != "token":
        yield f"{name}: RAY_AUTH_MODE must be 'token', got {mode.get('value')!r}"
    token = env.get("RAY_AUTH_TOKEN")
    if token is None:
        yield f"{name}: RAY_AUTH_TOKEN is not set"
        return
    if "value" in token:
        yield f"{name}: RAY_AUTH_TOKEN is a literal in the manifest; take it from a Secret"
        return
    ref = (token.get("valueFrom") or {}).get("secretKeyRef") or {}
    if (ref.get("name"), ref.get("key")) != (RAY_TOKEN_SECRET, RAY_TOKEN_KEY):
        yield (
            f"{name}: RAY_AUTH_TOKEN must come from Secret {RAY_TOKEN_SECRET} key "
            f"{RAY_TOKEN_KEY}, got {ref or token.get('valueFrom')}"
        )
    if ref.get("optional"):
        yield f"{name}: RAY_AUTH_TOKEN must not be optional"


def token_auth_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for doc in docs:
        for where, cluster in ray_cluster_specs(doc):
            auth = cluster.get("authOptions") or {}
            if auth.get("mode") != "token":
                problems.append(
                    f"{where}: authOptions.mode must be 'token', got {auth.get('mode')!r}"
                )
            elif auth.get("secretName") != RAY_TOKEN_SECRET:
                problems.append(
                    f"{where}: authOptions.secretName must be {RAY_TOKEN_SECRET}, "
                    f"got {auth.get('secretName')!r}"
                )
    for template in all_pod_templates(docs):
        ray_client = template.role in ("ray", "submitter") or template.labels.get(COMPONENT) in (
            "results-service",
            "ray-job",
        )
        for container in template.containers():
            token = _env(container).get("RAY_AUTH_TOKEN", {})
            if "value" in token:
                problems.append(
                    f"{template.where} container {container.get('name')}: RAY_AUTH_TOKEN is a "
                    "literal in the manifest; take it from a Secret"
                )
            elif ray_client:
                problems += _token_env_problems(template.where, container)
    return problems


def _ray_pod(template: PodTemplate) -> bool:
    return template.role == "ray" or template.labels.get(COMPONENT) in RAY_COMPONENTS


def _service_exposes_ray(service: Doc, ray_pods: list[PodTemplate]) -> str | None:
    spec = service.get("spec", {})
    selector = spec.get("selector")
    if selector and any(selector_matches(selector, pod.labels) for pod in ray_pods):
        return f"selects Ray pods ({selector})"
    for port in spec.get("ports", []) or []:
        target = port.get("targetPort", port.get("port"))
        if port.get("port") in RAY_PORTS or target in RAY_PORTS or target in RAY_PORT_NAMES:
            return f"forwards Ray port {port.get('port')} -> {target}"
    return None


def exposure_problems(docs: list[Doc]) -> list[str]:
    problems = []
    ray_pods = [t for t in all_pod_templates(docs) if _ray_pod(t)]
    for service in find(docs, "Service"):
        spec = service.get("spec", {})
        reason = _service_exposes_ray(service, ray_pods)
        if reason is None:
            continue
        if spec.get("type") in EXPOSED_TYPES:
            problems.append(f"{name_of(service)}: type {spec['type']} {reason}")
        if spec.get("externalIPs"):
            problems.append(f"{name_of(service)}: externalIPs {reason}")
    for doc in docs:
        for where, cluster in ray_cluster_specs(doc):
            head = cluster.get("headGroupSpec") or {}
            service_type = head.get("serviceType", "ClusterIP")
            head_service = (head.get("headService") or {}).get("spec", {}).get("type")
            for value in (service_type, head_service):
                if value in EXPOSED_TYPES:
                    problems.append(f"{where}: the head Service is a {value}")
            if head.get("enableIngress"):
                problems.append(f"{where}: enableIngress exposes the dashboard")
    for ingress in find(docs, "Ingress"):
        for rule in ingress.get("spec", {}).get("rules", []) or []:
            for path in (rule.get("http") or {}).get("paths", []) or []:
                backend = (path.get("backend") or {}).get("service") or {}
                if str(backend.get("name", "")).endswith("head-svc"):
                    problems.append(f"{name_of(ingress)}: routes to Ray head {backend['name']}")
    for template in ray_pods:
        if template.spec.get("hostNetwork"):
            problems.append(f"{template.where}: hostNetwork puts Ray ports on the node")
        for container in template.containers():
            for port in container.get("ports", []) or []:
                if port.get("hostPort"):
                    problems.append(
                        f"{template.where} container {container.get('name')}: hostPort "
                        f"{port['hostPort']} exposes a Ray port on the node"
                    )
    return problems


def _resource_problems(where: str, resources: Doc | None) -> Iterator[str]:
    resources = resources or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for key in ("cpu", "memory"):
        if key not in requests:
            yield f"{where}: no {key} request"
        if key not in limits:
            yield f"{where}: no {key} limit"
    for key in sorted(set(requests) | set(limits)):
        if key in ("cpu", "memory", "ephemeral-storage"):
            continue
        if key not in limits:
            yield f"{where}: extended resource {key} needs a limit"
        elif key in requests and str(requests[key]) != str(limits[key]):
            yield f"{where}: extended resource {key}: request must equal limit"


def resource_problems(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    for template in all_pod_templates(docs):
        for container in template.containers():
            where = f"{template.where} container {container.get('name')}"
            problems += _resource_problems(where, container.get("resources"))
    for doc in docs:
        for where, cluster in ray_cluster_specs(doc):
            if cluster.get("enableInTreeAutoscaling"):
                options = cluster.get("autoscalerOptions") or {}
                problems += _resource_problems(f"{where} autoscaler", options.get("resources"))
    return problems


def _runs_as_non_root(where: str, pod: Doc, container: Doc) -> Iterator[str]:
    context = container.get("securityContext") or {}
    non_root = context.get("runAsNonRoot", pod.get("runAsNonRoot"))
    user = context.get("runAsUser", pod.get("runAsUser"))
    if non_root is not True:
        yield f"{where}: runAsNonRoot must be true"
    if user == 0:
        yield f"{where}: runAsUser is 0 (root)"
    if context.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation must be false"
    if context.get("privileged"):
        yield f"{where}: privileged"


def non_root_problems(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    for template in all_pod_templates(docs):
        pod = template.spec.get("securityContext") or {}
        for container in template.containers():
            where = f"{template.where} container {container.get('name')}"
            problems += _runs_as_non_root(where, pod, container)
    for doc in docs:
        for where, cluster in ray_cluster_specs(doc):
            if cluster.get("enableInTreeAutoscaling"):
                options = cluster.get("autoscalerOptions") or {}
                # the sidecar shares the head pod's securityContext
                head = (cluster.get("headGroupSpec") or {}).get("template", {}).get("spec", {})
                pod = head.get("securityContext") or {}
                sidecar = {"securityContext": options.get("securityContext")}
                problems += _runs_as_non_root(f"{where} autoscaler", pod, sidecar)
    return problems


def _namespace_of(doc: Doc) -> str:
    return str(doc.get("metadata", {}).get("namespace", NAMESPACE))


def network_policy_problems(docs: list[Doc]) -> list[str]:
    """A default-deny policy in every namespace an object lives in."""
    namespaces = {_namespace_of(doc) for doc in docs if doc.get("kind") not in CLUSTER_NAMESPACED}
    denied = set()
    for policy in find(docs, "NetworkPolicy"):
        spec = policy.get("spec", {})
        if (
            spec.get("podSelector") == {}
            and {"Ingress", "Egress"} <= set(spec.get("policyTypes", []))
            and not spec.get("ingress")
            and not spec.get("egress")
        ):
            denied.add(_namespace_of(policy))
    return [
        f"namespace {namespace}: no default-deny NetworkPolicy (podSelector {{}}, policyTypes "
        "Ingress and Egress, no rules)"
        for namespace in sorted(namespaces - denied)
    ]


def secret_problems(docs: list[Doc]) -> list[str]:
    return [
        f"{name_of(secret)}: Secret values are committed; create the Secret by hand"
        for secret in find(docs, "Secret")
        if secret.get("data") or secret.get("stringData")
    ]


def policy_problems(docs: list[Doc]) -> list[str]:
    """All of T13 (and no committed Secret values)."""
    return [
        *token_auth_problems(docs),
        *exposure_problems(docs),
        *resource_problems(docs),
        *non_root_problems(docs),
        *network_policy_problems(docs),
        *secret_problems(docs),
    ]
