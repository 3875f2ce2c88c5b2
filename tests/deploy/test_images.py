"""Static checks of deploy/ray.Dockerfile, deploy/service.Dockerfile and .dockerignore.

No Docker engine here: the Dockerfiles are parsed (tests/deploy/dockerfile_checks.py) and
checked for pinned bases, a non-root final user, no baked-in secrets, copy sources that
exist and reach the build context, and a torch-free service image. Each check is also run
on a Dockerfile that breaks its rule, to show it catches it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy.dockerfile_checks import (
    Dockerfile,
    DockerIgnore,
    check_base_images_pinned,
    check_copy_sources,
    check_dockerignore_excludes,
    check_final_user_non_root,
    check_no_baked_secrets,
    check_no_torch,
    parse_dockerfile,
    requirement_name,
)

ROOT = Path(__file__).resolve().parents[2]
RAY = ROOT / "deploy" / "ray.Dockerfile"
SERVICE = ROOT / "deploy" / "service.Dockerfile"
IMAGES = {"ray": RAY, "service": SERVICE}


def load(path: Path) -> Dockerfile:
    return parse_dockerfile(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    return DockerIgnore.read(ROOT / ".dockerignore")


# ------------------------------------------------------------------------ the real images


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_images_pass_every_check(image: str, ignore: DockerIgnore) -> None:
    dockerfile = load(IMAGES[image])
    problems = [
        *check_base_images_pinned(dockerfile),
        *check_final_user_non_root(dockerfile),
        *check_no_baked_secrets(dockerfile),
        *check_copy_sources(dockerfile, ROOT, ignore),
    ]
    assert problems == []


def test_dockerignore_keeps_the_repository_clutter_and_secrets_out(ignore: DockerIgnore) -> None:
    assert check_dockerignore_excludes(ignore) == []


def test_service_image_installs_no_torch() -> None:
    assert check_no_torch(load(SERVICE), ROOT) == []


def test_ray_image_does_install_torch_so_the_torch_check_sees_real_installs() -> None:
    problems = check_no_torch(load(RAY), ROOT)
    assert any("installs 'torch==" in problem for problem in problems), problems


def test_final_users_are_the_agreed_uids() -> None:
    assert _final_user(load(RAY)) == "1000:100"  # the Ray images' `ray` user
    assert _final_user(load(SERVICE)) == "10001:10001"


def _final_user(dockerfile: Dockerfile) -> str:
    return [item.text for item in dockerfile.final.instructions if item.keyword == "USER"][-1]


def test_ray_base_is_ray_2_60_for_python_3_11_with_cuda() -> None:
    ray = load(RAY)
    assert re.fullmatch(r"rayproject/ray:2\.60\.\d+-py311-cu12\d", ray.final.base)
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ray_range = next(
        dep for dep in pins["project"]["dependencies"] if requirement_name(dep) == "ray"
    )
    assert ">=2.60,<2.61" in ray_range  # the base image's Ray satisfies morphtune's range


def test_torch_build_args_default_to_a_cuda_build_in_pyproject_range() -> None:
    args = load(RAY).final.args
    major = int(args["TORCH_VERSION"].split(".")[0])
    assert major == 2 and tuple(map(int, args["TORCH_VERSION"].split(".")[:2])) >= (2, 4)
    assert args["TORCH_INDEX_URL"].endswith("/cu" + args["TORCH_CUDA"].replace(".", ""))


def test_service_image_exposes_grpc_and_metrics_and_serves_by_default() -> None:
    final = load(SERVICE).final
    exposed = {
        port
        for item in final.instructions
        if item.keyword == "EXPOSE"
        for port in item.text.split()
    }
    assert {"50051", "9464"} <= exposed
    _flags, command = next(
        item for item in final.instructions if item.keyword == "CMD"
    ).flags_and_args()
    assert command[:3] == ["serve", "--results", "/results"]


def test_service_image_runs_read_only_friendly() -> None:
    """Nothing but /tmp and /results needs writing: bytecode is precompiled, not written."""
    service = load(SERVICE)
    env = " ".join(item.text for item in service.final.instructions if item.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    build = " ".join(item.text for item in service.stages[0].instructions if item.keyword == "RUN")
    assert "compileall" in build


# --------------------------------------------------------- each check catches a bad file


def bad(text: str) -> Dockerfile:
    return parse_dockerfile(text.strip() + "\n", "bad.Dockerfile")


@pytest.mark.parametrize(
    ("base", "why"),
    [
        ("python", "has no tag"),
        ("python:latest", "tag 'latest' names no version"),
        ("ubuntu:jammy", "tag 'jammy' names no version"),
        ("ghcr.io/acme/base", "has no tag"),
        ("$BASE", "uses an ARG without a default"),
    ],
)
def test_unpinned_bases_are_caught(base: str, why: str) -> None:
    problems = check_base_images_pinned(bad(f"FROM {base}\nUSER 1000"))
    assert len(problems) == 1 and why in problems[0], problems
    assert problems[0].startswith("bad.Dockerfile:1: FROM ")


@pytest.mark.parametrize(
    "text",
    [
        "FROM python:3.11.15-slim",
        "FROM python@sha256:" + "ab" * 32,
        "FROM ghcr.io/acme/base:1.2.3-cuda12.8@sha256:" + "0f" * 32,
        "ARG BASE=python:3.11.15-slim\nFROM ${BASE}",
        "FROM python:3.11.15-slim AS build\nFROM build",
        "FROM localhost:5000/team/base:2.0",
    ],
)
def test_pinned_bases_pass(text: str) -> None:
    assert check_base_images_pinned(bad(text)) == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("FROM python:3.11.15-slim\nRUN true", "sets no USER"),
        ("FROM python:3.11.15-slim\nUSER root", "run as root ('root')"),
        ("FROM python:3.11.15-slim\nUSER 0:0", "run as root ('0')"),
        ("FROM python:3.11.15-slim\nUSER 1000\nRUN x\nUSER root", "run as root"),
        # a non-root builder does not make the final stage non-root
        ("FROM python:3.11.15-slim AS b\nUSER 1000\nFROM python:3.11.15-slim\nRUN x", "no USER"),
        ("FROM python:3.11.15-slim\nARG RUNAS=root\nUSER $RUNAS", "run as root"),
    ],
)
def test_root_final_users_are_caught(text: str, why: str) -> None:
    problems = check_final_user_non_root(bad(text))
    assert len(problems) == 1 and why in problems[0], problems


@pytest.mark.parametrize("user", ["1000", "10001:10001", "ray", "app:app"])
def test_non_root_users_pass(user: str) -> None:
    assert check_final_user_non_root(bad(f"FROM python:3.11.15-slim\nUSER {user}")) == []


@pytest.mark.parametrize(
    ("line", "culprit"),
    [
        ("ENV RAY_AUTH_TOKEN=abc123", "RAY_AUTH_TOKEN"),
        ("ENV AWS_SECRET_ACCESS_KEY wJalrXUtnFEMI", "AWS_SECRET_ACCESS_KEY"),
        ("ENV A=1 DB_PASSWORD=hunter2", "DB_PASSWORD"),
        ("LABEL api-key=abc", "api-key"),
        ("ARG GITHUB_TOKEN", "GITHUB_TOKEN"),
        ("ARG SIGNING_KEY=abc", "SIGNING_KEY"),
        ("COPY certs/server.pem /etc/ssl/", "certs/server.pem"),
        ("COPY tls.key /etc/tls/", "tls.key"),
        ("COPY deploy/ray-token.txt /etc/ray/", "deploy/ray-token.txt"),
        ("ADD --chown=1000 id_rsa /home/ray/.ssh/", "id_rsa"),
        ('COPY [".env", "/app/.env"]', ".env"),
    ],
)
def test_baked_secrets_are_caught(line: str, culprit: str) -> None:
    problems = check_no_baked_secrets(bad(f"FROM python:3.11.15-slim\n{line}\nUSER 1000"))
    assert len(problems) == 1 and culprit in problems[0], problems
    assert problems[0].startswith("bad.Dockerfile:2: ")


def test_global_secret_args_are_caught() -> None:
    problems = check_no_baked_secrets(bad("ARG NPM_TOKEN\nFROM python:3.11.15-slim"))
    assert problems and "NPM_TOKEN" in problems[0]


@pytest.mark.parametrize(
    "line",
    [
        "ENV RAY_AUTH_MODE=token",  # names a mode, carries no secret
        "ENV RAY_AUTH_TOKEN=",  # declared empty, injected at run time
        "ENV KEYRING_DISABLED=1 MONKEY=1",
        "COPY src/ /app/src/",
    ],
)
def test_harmless_settings_pass(line: str) -> None:
    assert check_no_baked_secrets(bad(f"FROM python:3.11.15-slim\n{line}")) == []


def test_dockerignore_without_the_git_venv_or_secret_rules_is_caught() -> None:
    problems = check_dockerignore_excludes(DockerIgnore(["results/", "*.pem"]))
    joined = "\n".join(problems)
    for path in (".git/config", ".venv/bin/python", "tls.key", "ray-token.txt"):
        assert repr(path) in joined
    assert "'results/run/part-0.parquet'" not in joined
    assert check_dockerignore_excludes(DockerIgnore([])) != []


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["*"], "src/morphtune/cli.py", True),  # a parent directory matches
        (["*", "!src"], "src/morphtune/cli.py", False),  # re-included with its contents
        (["*", "!src", "**/__pycache__"], "src/morphtune/__pycache__/cli.pyc", True),
        (["**/*.pem"], "a/b/c.pem", True),
        (["**/*.pem"], "c.pem", True),
        (["*.pem"], "a/c.pem", False),  # '*' stops at '/'
        (["**/*token*", "!src/**/*.py"], "src/morphtune/_tokens.py", False),  # last wins
        (["**/*token*", "!src/**/*.py"], "src/morphtune/token.txt", True),
        (["/build"], "build/x", True),
        (["docs/?.md"], "docs/a.md", True),
        (["docs/?.md"], "docs/ab.md", False),
        (["[a-c].txt"], "b.txt", True),
        (["[^a-c].txt"], "b.txt", False),
    ],
)
def test_dockerignore_matching_follows_docker(
    patterns: list[str], path: str, excluded: bool
) -> None:
    assert DockerIgnore(patterns).excluded(path) is excluded


def test_missing_and_excluded_copy_sources_are_caught(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "core.py").write_text("", encoding="utf-8")
    (tmp_path / "src" / "pkg" / "schema.json").write_text("{}", encoding="utf-8")
    (tmp_path / "notes.md").write_text("", encoding="utf-8")
    dockerfile = bad(
        """
FROM python:3.11.15-slim AS build
COPY missing.txt /x/
COPY notes.md /x/
COPY src/ /app/src/
COPY --from=build /opt /opt
COPY https://example.com/tool /usr/bin/tool
"""
    )
    ignore = DockerIgnore(["*", "!src", "**/*.json"])
    problems = check_copy_sources(dockerfile, tmp_path, ignore)
    assert len(problems) == 4, problems
    assert "bad.Dockerfile:2: COPY missing.txt: no such file" in problems[0]
    assert "notes.md is excluded by .dockerignore" in problems[1]
    assert "src/pkg/schema.json is excluded by .dockerignore" in problems[2]  # part of a dir
    assert "fetches a URL" in problems[3]
    assert check_copy_sources(dockerfile, tmp_path, DockerIgnore([])) == [
        problems[0],
        problems[3],
    ]


@pytest.mark.parametrize(
    ("run", "why"),
    [
        ("RUN pip install torch==2.13.0", "installs 'torch==2.13.0'"),
        ("RUN pip install --no-deps torchvision", "installs 'torchvision'"),
        ("RUN python -m pip install morphtune==0.1.0", "with its dependencies"),
        ("RUN pip install /build/dist/morphtune-0.1.0-py3-none-any.whl", "with its dependencies"),
        ("RUN cd /src && pip install .", "with its dependencies"),
        ("RUN /opt/venv/bin/pip3 install -r /r/reqs.txt", "installs 'torch>=2.4'"),
        ('RUN ["pip", "install", "Torch"]', "installs 'Torch'"),
    ],
)
def test_torch_in_the_service_image_is_caught(run: str, why: str, tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text("grpcio==1.85.1\ntorch>=2.4  # oops\n", encoding="utf-8")
    dockerfile = bad(f"FROM python:3.11.15-slim\nCOPY reqs.txt /r/reqs.txt\n{run}\nUSER 1000")
    problems = check_no_torch(dockerfile, tmp_path)
    assert len(problems) == 1 and why in problems[0], problems
    assert problems[0].startswith("bad.Dockerfile:3: RUN")


def test_a_requirements_file_the_stage_does_not_copy_is_caught(tmp_path: Path) -> None:
    problems = check_no_torch(bad("FROM python:3.11.15-slim\nRUN pip install -r /r.txt"), tmp_path)
    assert problems == [
        "bad.Dockerfile:2: RUN: -r /r.txt: not a file this stage copies from the repository"
    ]


def test_torch_free_installs_pass(tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text("grpcio==1.85.1\n", encoding="utf-8")
    dockerfile = bad(
        """
FROM python:3.11.15-slim
COPY reqs.txt /r/
RUN pip install -r /r/reqs.txt \\
 && pip install --no-deps /dist/morphtune-0.1.0-py3-none-any.whl
"""
    )
    assert check_no_torch(dockerfile, tmp_path) == []


# ------------------------------------------------------------------------------- parser


def test_parser_joins_continuations_skips_comments_and_keeps_stage_args() -> None:
    dockerfile = bad(
        """
# escape=\\
ARG VERSION=3.11.15
FROM python:${VERSION}-slim AS build
ARG VERSION
ARG EXTRA=x-$VERSION
RUN echo one \\
    # a comment inside a continuation
    && echo two
FROM build
USER 1000
"""
    )
    build, final = dockerfile.stages
    assert build.name == "build" and final.base == "build"
    assert build.args == {"VERSION": "3.11.15", "EXTRA": "x-3.11.15"}
    run = build.instructions[-1]
    assert run.keyword == "RUN" and run.text == "echo one && echo two" and run.line == 6
    assert check_base_images_pinned(dockerfile) == []


def test_parser_reads_heredocs_and_rejects_what_docker_would() -> None:
    dockerfile = bad(
        """
FROM python:3.11.15-slim
RUN <<EOF
pip install torch
EOF
USER 1000
"""
    )
    assert [item.keyword for item in dockerfile.final.instructions] == ["RUN", "USER"]
    assert check_no_torch(dockerfile, ROOT) != []
    with pytest.raises(ValueError, match=r"bad.Dockerfile:1: only ARG may come before"):
        bad("RUN true\nFROM python:3.11.15-slim")
    with pytest.raises(ValueError, match="no FROM"):
        bad("ARG A=1")
    with pytest.raises(ValueError, match=r"bad.Dockerfile:1: FROM must be"):
        bad("FROM python:3.11.15-slim build")
