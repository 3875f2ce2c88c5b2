"""The overlays render, and render what the deployment promises: a CPU dev cluster on a
PVC, a GPU prod cluster on the same kind of PVC, and the same results service, RayJob template,
policies and monitoring in both."""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
from pathlib import Path

import pytest
import yaml

from morphtune.spec import parse_spec
from tests.k8s.conftest import rendered
from tests.k8s.manifests import (
    NAMESPACE,
    REPO,
    Doc,
    RenderError,
    all_pod_templates,
    find,
    kubectl,
    one,
    render,
)

KINDS = {
    "Namespace",
    "RayCluster",
    "RayJob",
    "ConfigMap",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
}
GPU = "nvidia.com/gpu"


def _env_value(container: Doc, name: str) -> Doc | None:
    for env in container.get("env", []):
        if env["name"] == name:
            return env
    return None


def _ray_containers(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [
        (template.where, container)
        for template in all_pod_templates(docs)
        if template.role == "ray"
        for container in template.containers()
    ]


def _worker_groups(cluster_spec: Doc) -> dict[str, Doc]:
    return {group["groupName"]: group for group in cluster_spec["workerGroupSpecs"]}


def _cluster_specs(docs: list[Doc]) -> list[Doc]:
    cluster = one(docs, "RayCluster", "morphtune")["spec"]
    job = one(docs, "RayJob", "morphtune-sweep")["spec"]["rayClusterSpec"]
    return [cluster, job]


def test_every_overlay_renders_every_kind_in_its_namespace(docs: list[Doc]) -> None:
    assert {doc["kind"] for doc in docs} >= KINDS
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "morphtune", doc["metadata"]["name"]
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
    assert len(names) == len(set(names))


def test_a_broken_patch_fails_the_render(tmp_path: Path) -> None:
    """The JSON patches guard the list positions they edit with `test` operations."""
    if kubectl() is None:
        pytest.skip("kubectl is not installed")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = REPO / "k8s" / "base"
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(base)],
                "patches": [
                    {
                        "target": {"kind": "RayCluster", "name": "morphtune"},
                        "patch": yaml.safe_dump(
                            [
                                {
                                    "op": "test",
                                    "path": "/spec/workerGroupSpecs/0/groupName",
                                    "value": "x",
                                }
                            ]
                        ),
                    }
                ],
            }
        )
    )
    with pytest.raises(RenderError, match="test"):
        render(overlay)


def test_dev_is_a_cpu_cluster_on_a_shared_pvc() -> None:
    docs = rendered("dev")
    claim = one(docs, "PersistentVolumeClaim", "morphtune-results")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    storage = one(docs, "ConfigMap", "morphtune-storage")
    assert storage["data"]["MORPHTUNE_RESULTS"] == "/results"
    for spec in _cluster_specs(docs):
        assert set(_worker_groups(spec)) == {"cpu"}
    for where, container in _ray_containers(docs):
        assert GPU not in str(container["resources"]), where
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/results") == "results", where
    service = one(docs, "Deployment", "morphtune-results")["spec"]["template"]["spec"]
    mount = next(m for m in service["containers"][0]["volumeMounts"] if m["name"] == "results")
    assert mount == {"name": "results", "mountPath": "/results", "readOnly": True}


def test_prod_has_a_gpu_worker_group_autoscaled_from_zero() -> None:
    docs = rendered("prod")
    for spec in _cluster_specs(docs):
        assert spec["enableInTreeAutoscaling"] is True
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"  # a CPU head that runs no trials
        assert GPU not in str(head["template"]["spec"]["containers"][0]["resources"])
        groups = _worker_groups(spec)
        assert set(groups) == {"cpu", "gpu"}
        gpu = groups["gpu"]
        assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0 and gpu["maxReplicas"] >= 1
        pod = gpu["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert int(resources["limits"][GPU]) >= 1
        assert resources["requests"][GPU] == resources["limits"][GPU]
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    spec = one(docs, "ConfigMap", "morphtune-sweep-spec")["data"]["sweep.yaml"]
    assert parse_spec(spec).resources.use_gpu


def test_prod_shares_results_on_the_pvc_with_every_ray_pod() -> None:
    docs = rendered("prod")
    claim = one(docs, "PersistentVolumeClaim", "morphtune-results")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert one(docs, "ConfigMap", "morphtune-storage")["data"]["MORPHTUNE_RESULTS"] == "/results"
    for where, container in _ray_containers(docs):  # GPU workers write checkpoints too
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/results") == "results", where


def test_the_object_store_component_points_every_pod_at_the_bucket(tmp_path: Path) -> None:
    """components/results-object-store (a results service reading a bucket) still renders
    and wires the URI and credentials into every pod that reads results."""
    overlay = tmp_path / "object-store"
    overlay.mkdir()
    k8s = Path(__file__).resolve().parents[2] / "k8s"
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "morphtune",
                "resources": [os.path.relpath(k8s / "base", overlay)],
                "components": [
                    os.path.relpath(k8s / "components" / "results-object-store", overlay)
                ],
            }
        )
    )
    docs = render(overlay)
    assert not find(docs, "PersistentVolumeClaim")
    storage = one(docs, "ConfigMap", "morphtune-storage")
    assert storage["data"]["MORPHTUNE_RESULTS"].startswith("s3://")
    egress = one(docs, "NetworkPolicy", "morphtune-object-store-egress")["spec"]["egress"]
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": 443}]
    for template in all_pod_templates(docs):
        for container in template.containers():
            assert "/results" not in str(container.get("volumeMounts", [])), template.where
            if template.role == "submitter":
                continue
            results = _env_value(container, "MORPHTUNE_RESULTS")
            assert results is not None, template.where
            assert results["valueFrom"]["configMapKeyRef"]["name"] == "morphtune-storage"
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                ref = _env_value(container, key)
                assert ref is not None, (template.where, key)
                assert ref["valueFrom"]["secretKeyRef"]["name"] == "morphtune-object-store"


def test_results_service_contract(docs: list[Doc]) -> None:
    deployment = one(docs, "Deployment", "morphtune-results")
    pod = deployment["spec"]["template"]["spec"]
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert pod["serviceAccountName"] == "morphtune-results"
    (container,) = pod["containers"]
    assert container["command"] == ["morphtune", "serve"]
    assert container["args"] == [
        "--results=$(MORPHTUNE_RESULTS)",
        "--host=0.0.0.0",
        "--port=50051",
        "--metrics-port=9464",
        "--token-file=/etc/morphtune/tokens/tokens.txt",
        "--ray-address=http://morphtune-head-svc:8265",
    ]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 50051,
        "metrics": 9464,
    }
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"] == {"port": 50051}, probe
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    tokens = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert tokens["secret"]["secretName"] == "morphtune-service-tokens"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tokens")
    assert mount == {"name": "tokens", "mountPath": "/etc/morphtune/tokens", "readOnly": True}
    service = one(docs, "Service", "morphtune-results")["spec"]
    assert service["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in service["ports"]} == {"grpc": 50051, "metrics": 9464}
    hpa = one(docs, "HorizontalPodAutoscaler", "morphtune-results")["spec"]
    budget = one(docs, "PodDisruptionBudget", "morphtune-results")["spec"]
    # the budget never blocks every eviction: it leaves a pod free at the HPA's minimum
    if "minAvailable" in budget:
        assert budget["minAvailable"] < hpa["minReplicas"]
    else:
        assert budget["maxUnavailable"] >= 1


def test_rayjob_template_runs_morphtune_on_the_mounted_spec(docs: list[Doc]) -> None:
    job = one(docs, "RayJob", "morphtune-sweep")["spec"]
    assert job["entrypoint"] == 'morphtune run /specs/sweep.yaml --results "$MORPHTUNE_RESULTS"'
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["suspend"] is True  # applying an overlay starts no sweep
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == "sweep-spec")
    assert mount["mountPath"] == "/specs"
    volume = next(v for v in head["volumes"] if v["name"] == "sweep-spec")
    assert volume["configMap"]["name"] == "morphtune-sweep-spec"
    spec = one(docs, "ConfigMap", "morphtune-sweep-spec")["data"]["sweep.yaml"]
    parse_spec(spec)  # a valid sweep (raises with the field and line otherwise)


def test_rbac_lets_the_service_manage_rayjobs_only(docs: list[Doc]) -> None:
    role = one(docs, "Role", "morphtune-rayjobs")
    verbs = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for verb in ("create", "get", "list", "watch", "delete"):
        assert ("ray.io", "rayjobs", verb) in verbs
    assert {group for group, _, _ in verbs} == {"ray.io"}
    binding = one(docs, "RoleBinding", "morphtune-rayjobs")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "morphtune-results", "namespace": NAMESPACE}
    ]


def test_images_are_pinned_to_the_project_version(docs: list[Doc]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    images = {
        container["image"]
        for template in all_pod_templates(docs)
        for container in template.containers()
    }
    assert images == {
        f"ghcr.io/morphtune/morphtune-ray:{version}",
        f"ghcr.io/morphtune/morphtune-service:{version}",
    }
    ray_version = importlib.metadata.version("ray")
    for spec in _cluster_specs(docs):
        assert spec["rayVersion"] == ray_version  # the Ray the image installs (pyproject pin)
