"""docs/operations.md stays true to the CLI, the manifests and the images it describes.

* every ``morphtune ...`` command in its shell blocks parses with the real CLI parser;
* every Secret name and key the manifests read is created by a command in the guide;
* the image names, the KubeRay chart version and the Dockerfiles it names are the real ones.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from morphtune import cli
from tests.doc_commands import code_blocks, morphtune_commands, parse_problem

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operations.md"


def shell_lines(markdown: str) -> Iterator[str]:
    """Logical lines of the shell code blocks (backslash continuations joined)."""
    for body in code_blocks(markdown, {"bash", "sh"}):
        yield from body.replace("\\\n", " ").splitlines()


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def test_the_guide_shows_the_remote_workflow(guide: str) -> None:
    verbs = {argv[0] for argv in morphtune_commands(guide)}
    expected = {"submit", "status", "logs", "cancel", "sweeps", "best", "trials", "pareto"}
    assert expected | {"watch"} <= verbs


def test_every_morphtune_command_in_the_guide_parses(guide: str) -> None:
    problems = {
        " ".join(argv): problem
        for argv in morphtune_commands(guide)
        if (problem := parse_problem(argv)) is not None
    }
    assert problems == {}


def test_a_wrong_flag_would_be_caught() -> None:
    bad = "```sh\nmorphtune best demo --server h:1 --objective acc\n```\n"
    [argv] = morphtune_commands(bad)
    assert "unrecognized arguments: --objective acc" in (parse_problem(argv) or "")


def _documents() -> Iterator[Any]:
    for path in sorted((ROOT / "k8s").rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if "kind:" in text:
            yield from (doc for doc in yaml.safe_load_all(text) if doc is not None)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def secret_references() -> set[tuple[str, str]]:
    """(Secret name, key) pairs the manifests read through secretKeyRef or secret volumes."""
    pairs: set[tuple[str, str]] = set()
    for document in _documents():
        for node in _walk(document):
            reference = node.get("secretKeyRef")
            if isinstance(reference, dict):
                pairs.add((reference["name"], reference["key"]))
            secret = node.get("secret")
            if isinstance(secret, dict) and "secretName" in secret:
                for item in secret.get("items", []):
                    pairs.add((secret["secretName"], item["key"]))
    return pairs


def created_secrets(markdown: str) -> set[tuple[str, str]]:
    """(name, key) pairs the guide's ``kubectl create secret generic`` commands create."""
    created: set[tuple[str, str]] = set()
    for line in shell_lines(markdown):
        match = re.search(r"create secret generic (\S+)(.*)", line)
        if not match:
            continue
        for key in re.findall(r"--from-(?:literal|file)=([\w.-]+)=", match.group(2)):
            created.add((match.group(1), key))
    return created


def test_every_secret_the_manifests_read_is_created_by_the_guide(guide: str) -> None:
    needed = secret_references()
    assert {name for name, _key in needed} >= {"morphtune-ray-token", "morphtune-service-tokens"}
    assert needed - created_secrets(guide) == set()


def test_the_secret_reader_sees_a_missing_key() -> None:
    command = "kubectl -n m create secret generic morphtune-ray-token --from-literal=token=x"
    guide = f"```sh\n{command}\n```\n"
    assert ("morphtune-ray-token", "auth_token") not in created_secrets(guide)
    assert ("morphtune-ray-token", "token") in created_secrets(guide)


def test_images_chart_and_dockerfiles_named_in_the_guide_are_real(guide: str) -> None:
    for dockerfile in re.findall(r"-f (deploy/\S+Dockerfile)", guide):
        assert (ROOT / dockerfile).is_file(), dockerfile
    images = {
        str(node["image"]).split(":")[0]
        for document in _documents()
        for node in _walk(document)
        if isinstance(node.get("image"), str)
    }
    assert {"ghcr.io/morphtune/morphtune-ray", "ghcr.io/morphtune/morphtune-service"} <= images
    assert {image for image in images if image not in guide} == set()
    assert "--version 1.7.0" in guide
    rayversions = {
        node["rayVersion"]
        for document in _documents()
        for node in _walk(document)
        if "rayVersion" in node
    }
    ray_base = re.search(
        r"rayproject/ray:(\d+\.\d+\.\d+)", (ROOT / "deploy" / "ray.Dockerfile").read_text()
    )
    assert ray_base is not None and rayversions == {ray_base.group(1)}


def test_parser_helper_reports_argparse_errors() -> None:
    assert parse_problem(["best"]) is not None
    assert isinstance(cli._parser(), argparse.ArgumentParser)
