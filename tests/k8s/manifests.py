"""Load the manifests under ``k8s/``: the raw files each kustomization lists, and the
overlays as ``kubectl kustomize`` renders them; walk the pod templates and containers in
every kind morphtune ships (Deployment, RayCluster, RayJob, ...)."""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("dev", "prod")
NAMESPACE = "morphtune"

Doc = dict[str, Any]


class RenderError(RuntimeError):
    """``kubectl kustomize`` failed; the message carries its stderr."""


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_documents(text: str) -> list[Doc]:
    """Every non-empty YAML document in ``text``, ``None`` values dropped (the API server
    prunes nulls before it validates)."""
    return [drop_none(doc) for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None]


def drop_none(value: Any) -> Any:
    """A deep copy of ``value`` without ``None`` mapping values or list items."""
    if isinstance(value, dict):
        return {key: drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [drop_none(item) for item in value if item is not None]
    return copy.deepcopy(value)


def kubectl() -> str | None:
    return shutil.which("kubectl")


@functools.cache
def _rendered(directory: str) -> list[Doc]:
    tool = kubectl()
    if tool is None:
        raise RenderError("kubectl is not installed")
    done = subprocess.run(
        [tool, "kustomize", directory], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return load_documents(done.stdout)


def render(directory: Path) -> list[Doc]:
    """``kubectl kustomize directory`` as documents (rendered once per session; each call
    returns fresh copies, so callers may change them)."""
    return copy.deepcopy(_rendered(str(directory)))


def _kustomization(directory: Path) -> Doc:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = directory / name
        if path.exists():
            loaded = yaml.safe_load(path.read_text())
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: not a mapping")
            return loaded
    raise FileNotFoundError(f"no kustomization file in {directory}")


def resource_files(directory: Path) -> list[Path]:
    """The files a kustomization lists as ``resources``, following directories (bases) and
    its ``components`` recursively; patches are not complete objects and are left out."""
    found: list[Path] = []
    kustomization = _kustomization(directory)
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        target = (directory / entry).resolve()
        if target.is_dir():
            found.extend(resource_files(target))
        else:
            found.append(target)
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class RawDoc:
    path: Path
    doc: Doc


def raw_documents() -> list[RawDoc]:
    """Every object in the resource files of the base and of every component."""
    files = resource_files(K8S / "base")
    for component in sorted((K8S / "components").iterdir()):
        files.extend(resource_files(component))
    docs: list[RawDoc] = []
    for path in dict.fromkeys(files):
        docs.extend(RawDoc(path, doc) for doc in load_documents(path.read_text()))
    return docs


def name_of(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        doc
        for doc in docs
        if doc.get("kind") == kind and (name is None or doc["metadata"].get("name") == name)
    ]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    if len(found) != 1:
        raise LookupError(f"expected one {kind}/{name}, found {len(found)}")
    return found[0]


# ------------------------------------------------------------------ pod templates


@dataclass(frozen=True)
class PodTemplate:
    """One pod template inside an object: ``where`` names it (``RayCluster/morphtune
    worker group gpu``), ``role`` is ``ray`` for Ray nodes, ``submitter`` for RayJob
    submitters, ``pod`` otherwise."""

    owner: Doc
    where: str
    role: str
    template: Doc

    @property
    def spec(self) -> Doc:
        spec = self.template.get("spec", {})
        return spec if isinstance(spec, dict) else {}

    @property
    def labels(self) -> dict[str, str]:
        labels = self.template.get("metadata", {}).get("labels", {})
        return labels if isinstance(labels, dict) else {}

    def containers(self, *, init: bool = True) -> Iterator[Doc]:
        keys = ("initContainers", "containers") if init else ("containers",)
        for key in keys:
            for container in self.spec.get(key, []) or []:
                if isinstance(container, dict):
                    yield container


def ray_cluster_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """``(where, RayClusterSpec)`` of a RayCluster, or of the cluster a RayJob/RayService makes."""
    spec = doc.get("spec", {})
    if not isinstance(spec, dict):
        return
    if doc.get("kind") == "RayCluster":
        yield name_of(doc), spec
    elif doc.get("kind") == "RayJob" and isinstance(spec.get("rayClusterSpec"), dict):
        yield f"{name_of(doc)} rayClusterSpec", spec["rayClusterSpec"]
    elif doc.get("kind") == "RayService" and isinstance(spec.get("rayClusterConfig"), dict):
        yield f"{name_of(doc)} rayClusterConfig", spec["rayClusterConfig"]


def pod_templates(doc: Doc) -> Iterator[PodTemplate]:
    """Every pod template in ``doc``, whatever its kind."""
    kind, spec = doc.get("kind"), doc.get("spec", {})
    if not isinstance(spec, dict):
        return
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield PodTemplate(doc, name_of(doc), "pod", spec.get("template", {}))
    elif kind == "CronJob":
        job = spec.get("jobTemplate", {}).get("spec", {})
        yield PodTemplate(doc, name_of(doc), "pod", job.get("template", {}))
    elif kind == "Pod":
        pod = {"metadata": doc.get("metadata", {}), "spec": spec}
        yield PodTemplate(doc, name_of(doc), "pod", pod)
    for where, cluster in ray_cluster_specs(doc):
        head = cluster.get("headGroupSpec", {})
        yield PodTemplate(doc, f"{where} head", "ray", head.get("template", {}))
        for group in cluster.get("workerGroupSpecs", []) or []:
            name = group.get("groupName", "?")
            yield PodTemplate(doc, f"{where} worker group {name}", "ray", group.get("template", {}))
    if kind == "RayJob" and isinstance(spec.get("submitterPodTemplate"), dict):
        submitter = spec["submitterPodTemplate"]
        yield PodTemplate(doc, f"{name_of(doc)} submitter", "submitter", submitter)


def all_pod_templates(docs: list[Doc]) -> list[PodTemplate]:
    return [template for doc in docs for template in pod_templates(doc)]


def selector_matches(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` / ``matchExpressions``, or a Service's plain
    map) selects ``labels``; an empty selector selects everything."""
    if not selector:
        return True
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True
