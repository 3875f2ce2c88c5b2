"""The service image's dependency list (deploy/service-requirements.txt) is right.

The image installs morphtune with ``--no-deps`` and exactly this list. Here:

* the list pins every distribution, agrees with pyproject's ranges, closes over its own
  dependencies (so the build resolves nothing unlisted) and brings no torch or Ray;
* a real ``morphtune serve`` and the query CLI run against a real store with every other
  installed distribution made unimportable (``probe_site/sitecustomize.py``), and every
  module they import comes from the standard library, morphtune or the list.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.net import free_port
from tests.service.processes import drain_log
from tests.store.sweeps import write_demo_sweep

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "deploy" / "service-requirements.txt"
PROBE_SITE = Path(__file__).resolve().parent / "probe_site"
CLIENT_PROBE = Path(__file__).resolve().parent / "client_probe.py"
SPEC = ROOT / "examples" / "digits-demo.yaml"
NEVER = frozenset({"torch", "ray", "torchvision", "optuna", "scikit-learn"})
_LISTENING = re.compile(r"listening on [^ ]*:(\d+) \(metrics on [^ ]*:(\d+)")


def pinned_requirements(path: Path = REQUIREMENTS) -> dict[str, str]:
    """{canonical name: version} of ``name==version`` lines; anything else is an error."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or requirement.marker:
            raise ValueError(f"{path.name}:{number}: {text!r} must be 'name==version'")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"{path.name}:{number}: {name} is listed twice")
        pins[name] = specifiers[0].version
    return pins


def dependency_closure(names: set[str]) -> set[str]:
    """``names`` and everything their installed metadata requires (no extras)."""
    seen: set[str] = set()
    stack = [canonicalize_name(name) for name in names]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(canonicalize_name(requirement.name))
    return seen


def pyproject_ranges() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = (Requirement(line) for line in data["project"]["dependencies"])
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def test_every_line_is_an_exact_pin_inside_pyproject_ranges() -> None:
    pins = pinned_requirements()
    ranges = pyproject_ranges()
    outside = {
        name: f"{version} not in {ranges[name].specifier}"
        for name, version in pins.items()
        if name in ranges and not ranges[name].specifier.contains(version, prereleases=True)
    }
    assert outside == {}
    assert NEVER.isdisjoint(pins)


def test_the_list_closes_over_its_dependencies_and_pulls_no_torch() -> None:
    pins = pinned_requirements()
    closure = dependency_closure(set(pins))
    assert closure - set(pins) == set(), "dependencies the list leaves to the resolver"
    assert NEVER.isdisjoint(closure)


def test_the_pin_reader_rejects_ranges_and_duplicates(tmp_path: Path) -> None:
    loose = tmp_path / "loose.txt"
    loose.write_text("grpcio>=1.85\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"loose.txt:1: 'grpcio>=1.85' must be 'name==version'"):
        pinned_requirements(loose)
    twice = tmp_path / "twice.txt"
    twice.write_text("PyYAML==6.0.3\npyyaml==6.0.3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"twice\.txt:2: pyyaml is listed twice"):
        pinned_requirements(twice)


def test_the_closure_sees_transitive_dependencies() -> None:
    # pydantic needs pydantic-core: a list naming only pydantic would not close.
    assert "pydantic-core" in dependency_closure({"pydantic"}) - {"pydantic"}


# -------------------------------------------------------------- runtime, imports blocked


def blocked_modules(allowed: set[str]) -> dict[str, str]:
    """{top-level import name: distribution} for installed distributions outside ``allowed``."""
    provided = metadata.packages_distributions()
    blocked: dict[str, str] = {}
    for top, distributions in provided.items():
        names = {canonicalize_name(name) for name in distributions}
        if names & allowed or top in sys.stdlib_module_names or not top.isidentifier():
            continue
        blocked[top] = sorted(names)[0]
    return blocked


@functools.cache
def _top_level_owners() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def distribution_of(file: str) -> str:
    """'stdlib', 'morphtune', a distribution name, or 'unknown' for a module file."""
    if not file:
        return "stdlib"  # built-in or frozen
    path = Path(file).resolve()
    paths = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        site = Path(paths[key]).resolve()
        if path.is_relative_to(site):
            parts = path.relative_to(site).parts
            top = parts[0] if len(parts) > 1 else parts[0].split(".", 1)[0]
            candidates = _top_level_owners().get(top, [])
            if len(candidates) == 1:
                return canonicalize_name(candidates[0])
            return _files_of(top).get(path, "unknown")
    if path.is_relative_to(ROOT / "src" / "morphtune"):
        return "morphtune"
    for key in ("stdlib", "platstdlib"):
        if path.is_relative_to(Path(paths[key]).resolve()):
            return "stdlib"
    return "unknown"


@functools.cache
def _files_of(top: str) -> dict[Path, str]:
    """Installed files of the distributions sharing top-level name ``top`` -> their owner."""
    owners: dict[Path, str] = {}
    for name in _top_level_owners().get(top, []):
        distribution = metadata.distribution(name)
        for entry in distribution.files or []:
            owners[Path(str(distribution.locate_file(entry))).resolve()] = canonicalize_name(name)
    return owners


def imported_top_levels(file: str) -> set[str]:
    """Top-level names of every absolute import in a source file (module and function level)."""
    tree = ast.parse(Path(file).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@dataclass
class ServiceRun:
    client: dict[str, Any]
    server_status: int
    server_log: str
    metrics: str
    reports: list[dict[str, Any]]
    allowed: set[str]


@pytest.fixture(scope="module")
def service_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceRun]:
    work = tmp_path_factory.mktemp("service-image")
    store = work / "results"
    write_demo_sweep(store)
    allowed = dependency_closure(set(pinned_requirements())) | {"morphtune"}
    blocked = work / "blocked.json"
    blocked.write_text(json.dumps(blocked_modules(allowed)), encoding="utf-8")
    reports = work / "reports"
    reports.mkdir()
    token = "probe-token-0123456789"
    token_file = work / "tokens.txt"
    token_file.write_text(f"{token}\n", encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROBE_SITE), os.environ.get("PYTHONPATH")])
        ),
        "MORPHTUNE_PROBE_BLOCKED": str(blocked),
        "MORPHTUNE_PROBE_REPORTS": str(reports),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("RAY_AUTH_TOKEN", None)
    # the image's command, on free ports; Ray is not there (a closed port)
    serve = [sys.executable, "-m", "morphtune.cli", "serve", "--results", str(store)]
    serve += ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    serve += ["--token-file", str(token_file), "--ray-address", f"http://127.0.0.1:{free_port()}"]
    server = subprocess.Popen(serve, env=env, cwd=work, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    listening = threading.Event()
    drain = threading.Thread(
        target=drain_log, args=(server, log, listening, _LISTENING), daemon=True
    )
    drain.start()
    try:
        listening.wait(timeout=60)
        match = _LISTENING.search("".join(log))
        assert match is not None, "".join(log)
        port, metrics_port = match.group(1), match.group(2)
        client = subprocess.run(
            [sys.executable, str(CLIENT_PROBE), f"127.0.0.1:{port}", token, "demo", str(SPEC)],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            metrics = r.read().decode("utf-8")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        drain.join(timeout=10)
    yield ServiceRun(
        client=json.loads(client.stdout.strip().splitlines()[-1]),
        server_status=server.returncode,
        server_log="".join(log),
        metrics=metrics,
        reports=[json.loads(path.read_text()) for path in sorted(reports.glob("*.json"))],
        allowed=allowed,
    )


def _report_of(run: ServiceRun, argv_part: str) -> dict[str, Any]:
    found = [report for report in run.reports if any(argv_part in a for a in report["argv"])]
    assert len(found) == 1, [report["argv"] for report in run.reports]
    return found[0]


def test_the_server_and_query_cli_work_without_torch(service_run: ServiceRun) -> None:
    assert service_run.client["exits"] == {
        "sweeps": 0,
        "best": 0,
        "pareto": 0,
        "trials": 0,
        "watch": 0,
    }
    assert service_run.client["health"] == "SERVING"
    assert "grpc_server_handled_total" in service_run.metrics
    assert service_run.server_status == 0, service_run.server_log


@pytest.mark.parametrize("role", ["serve", "client_probe.py"])
def test_every_import_comes_from_the_list(service_run: ServiceRun, role: str) -> None:
    report = _report_of(service_run, role)
    sources = {name: distribution_of(file) for name, file in report["modules"].items()}
    outside = {
        name: source
        for name, source in sources.items()
        if source != "stdlib" and source not in service_run.allowed
    }
    assert outside == {}
    assert "morphtune.service._server" in sources or role != "serve"
    # Optional imports of the dependencies (pandas for pyarrow, ...) may be refused; they
    # are refused in the image too. An import written in a loaded morphtune module must not.
    blocked = blocked_modules(service_run.allowed)
    own_imports = set().union(
        *(
            imported_top_levels(report["modules"][name])
            for name, source in sources.items()
            if source == "morphtune" and report["modules"][name].endswith(".py")
        )
    )
    assert {name: blocked[name] for name in own_imports if name in blocked} == {}


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    """The probe's blocker makes torch unimportable (else the tests above prove nothing)."""
    blocked = tmp_path / "blocked.json"
    blocked.write_text(json.dumps({"torch": "torch"}), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(PROBE_SITE),
        "MORPHTUNE_PROBE_BLOCKED": str(blocked),
        "MORPHTUNE_PROBE_REPORTS": str(tmp_path),
    }
    child = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True, check=False
    )
    assert child.returncode == 1
    assert "distribution torch is not in the service image" in child.stderr


def test_submit_sweep_checks_the_spec_without_torch(service_run: ServiceRun) -> None:
    # Without torch the spec gets the structural check (a mapping with a valid name); Ray is
    # not listening, so once that check passes the answer is UNAVAILABLE, not INTERNAL.
    assert service_run.client["submit"]["code"] == "UNAVAILABLE", service_run.client["submit"]


def test_the_import_scanner_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text(
        "import json\n\ndef train():\n    from torch.nn import Linear\n    import ray.tune\n",
        encoding="utf-8",
    )
    assert imported_top_levels(str(module)) == {"json", "torch", "ray"}


def test_files_of_unlisted_distributions_are_attributed_to_them() -> None:
    torch_init = metadata.distribution("torch").locate_file("torch/__init__.py")
    assert distribution_of(str(torch_init)) == "torch"
    assert distribution_of(json.__file__) == "stdlib"
    assert distribution_of(str(ROOT / "src" / "morphtune" / "cli.py")) == "morphtune"
