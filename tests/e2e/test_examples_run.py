"""Every shipped example runs, end to end, at a tiny budget (as ``morphtune run`` runs it).

Each file in ``examples/`` is loaded as YAML and shrunk by :func:`tiny`: fewer trials and
epochs, a smaller text corpus or Gaussian mixture, fewer scored subnets, and step intervals
that fit the shorter run. Nothing else changes: the method, the model family, the search
space, the sampler, the scheduler and the number of DDP workers are the example's own, and
``test_tiny_changes_only_the_budget`` checks that :func:`tiny` touches budget keys only.
Then the sweep runs on the session's Ray; every trial must finish (none failed), the
objective must be a finite number, and an example with several objectives or a subnet
search must produce its Pareto front or its scored subnets.

``gpu-sweep.yaml`` runs here on the CPU (``use_gpu: false``, one CPU per worker) with its
bf16 autocast, pinned-memory and Ray Train executor settings left as they are.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from morphtune.cli import main
from morphtune.methods.sparsity import MaskSet, load_sparse
from morphtune.runner import SweepOutcome, run_sweep
from morphtune.spec import SweepSpec, parse_spec
from morphtune.store import SweepStore

pytestmark = pytest.mark.ray

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

#: Every key :func:`tiny` may change (dotted paths); anything else stays the example's own.
BUDGET_KEYS = {
    "search.num_samples",
    "search.max_concurrent",
    "search.sampler.n_startup_trials",
    "search.sampler.population_size",
    "search.scheduler.grace_period",
    "search.scheduler.perturbation_interval",
    "training.epochs",
    "dataset.options.max_bytes",
    "dataset.options.n_samples",
    "sparsity.update_interval",
    "sparsity.d_interval",
    "search.space.sparsity.update_interval.choices",
    "search.space.sparsity.update_interval.low",
    "search.space.sparsity.update_interval.high",
    "search.space.sparsity.d_interval.choices",
    "search.space.sparsity.d_interval.low",
    "search.space.sparsity.d_interval.high",
    "subnet_search.num_subnets",
    "subnet_search.batch_size",
    "resources.use_gpu",
    "resources.gpus_per_worker",
    "resources.cpus_per_worker",
    "storage.results",
}

#: Sparsity step intervals (mask updates, density moves) at most this many steps: two
#: epochs of digits are ~46 steps, and updates must fall inside the sparse window.
STEP_INTERVAL = 5

#: Trials per example: a population-based scheduler needs two to exploit one from another.
POPULATION_SCHEDULERS = {"growth-pbt"}


def tiny(document: dict[str, Any]) -> dict[str, Any]:
    """The example at a budget that runs in seconds on two CPUs (a new dict)."""
    spec = copy.deepcopy(document)
    search = spec.setdefault("search", {})
    scheduler = search.get("scheduler") or {}
    several = len(search.get("objectives") or []) > 1
    trials = 2 if scheduler.get("name") in POPULATION_SCHEDULERS or several else 1
    search["num_samples"] = min(search.get("num_samples", trials), trials)
    search["max_concurrent"] = 1
    sampler = search.get("sampler") or {}
    if "n_startup_trials" in sampler:
        sampler["n_startup_trials"] = 1
    if "population_size" in sampler:
        sampler["population_size"] = 2
    if "grace_period" in scheduler:
        scheduler["grace_period"] = 1
    if "perturbation_interval" in scheduler:
        scheduler["perturbation_interval"] = 1  # one exploit/explore round in two epochs
    spec.setdefault("training", {})["epochs"] = 2
    options = (spec.get("dataset") or {}).get("options") or {}
    if "max_bytes" in options:
        options["max_bytes"] = min(options["max_bytes"], 30_000)
    if "n_samples" in options:
        options["n_samples"] = min(options["n_samples"], 2048)
    sparsity = spec.get("sparsity") or {}
    space = search.get("space") or {}
    for key in ("update_interval", "d_interval"):  # steps: some updates in a short run
        if key in sparsity:
            sparsity[key] = min(sparsity[key], STEP_INTERVAL)
        searched = space.get(f"sparsity.{key}") or {}
        if "choices" in searched:
            searched["choices"] = sorted({min(c, STEP_INTERVAL) for c in searched["choices"]})
        if "high" in searched:
            searched["high"] = min(searched["high"], STEP_INTERVAL)
            searched["low"] = min(searched["low"], searched["high"])
    subnets = spec.get("subnet_search")
    if subnets:
        subnets["num_subnets"] = 4
        subnets["batch_size"] = 2
    resources = spec.get("resources") or {}
    if resources.get("use_gpu"):  # no GPU here: the same trial on the CPU
        resources["use_gpu"] = False
        resources.pop("gpus_per_worker", None)
        resources["cpus_per_worker"] = 1
    return spec


def _leaves(document: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(document, dict):
        return {prefix: document}
    out: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(_leaves(value, path) if isinstance(value, dict) else {path: value})
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_tiny_changes_only_the_budget(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    before, after = _leaves(document), _leaves(tiny(document))
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed <= BUDGET_KEYS, sorted(changed - BUDGET_KEYS)
    assert after["training.epochs"] <= before.get("training.epochs", 2)
    assert after["search.num_samples"] <= before["search.num_samples"]


@dataclass(frozen=True)
class Run:
    document: dict[str, Any]
    spec: SweepSpec
    outcome: SweepOutcome
    root: Path

    def metrics(self, sweep: str | None = None) -> list[dict[str, Any]]:
        """Every stored row's metrics, in trial and iteration order."""
        rows = SweepStore(self.root).results(sweep or self.spec.name).to_pylist()
        rows.sort(key=lambda row: (row["trial_id"], row["iteration"]))
        return [
            {**json.loads(row["metrics_json"]), "config": json.loads(row["config_json"])}
            for row in rows
        ]


class RunCache:
    """Each example's tiny run, made on first use and kept for the module."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self._runs: dict[str, Run] = {}

    def __call__(self, stem: str) -> Run:
        if stem not in self._runs:
            path = next(path for path in EXAMPLES if path.stem == stem)
            document = tiny(yaml.safe_load(path.read_text()))
            spec = parse_spec(yaml.safe_dump(document, sort_keys=False))  # `when` keeps order
            root = self._factory.mktemp(stem)
            self._runs[stem] = Run(document, spec, run_sweep(spec, results_root=root), root)
        return self._runs[stem]


@pytest.fixture(scope="module")
def runs(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> RunCache:
    """The examples' runs, shared by the checks below."""
    return RunCache(tmp_path_factory)


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_at_a_tiny_budget(runs: RunCache, path: Path) -> None:
    run = runs(path.stem)
    spec, outcome = run.spec, run.outcome
    store = SweepStore(run.root)
    trials = store.trials(spec.name)
    assert len(trials) == run.document["search"]["num_samples"]
    failed = {trial.trial_id: trial.error for trial in trials if trial.status == "failed"}
    assert not failed, failed
    assert {trial.status for trial in trials} <= {"completed", "stopped"}
    for goal in spec.search.goals:
        value = store.best(spec.name, metric=goal.metric, mode=goal.mode).value
        assert math.isfinite(value), (goal.metric, value)
    if spec.search.multi_objective:
        assert outcome.pareto, "several objectives: the run reports a Pareto front"
    if spec.supernet.enabled:  # then the best supernet's subnets are searched
        found = outcome.subnets
        assert found is not None and found["sweep_id"] == f"{spec.name}-subnets"
        assert found["scored"] >= 1 and found["pareto"]
        manifest = store.manifest(found["sweep_id"])  # export finds the supernet by this
        assert manifest["subnet_search"]["source"] == {
            "sweep_id": spec.name,
            "trial_id": found["supernet_trial"],
        }
        scored = run.metrics(found["sweep_id"])
        assert len(scored) == found["scored"]
        for limit_name, limit in spec.subnet_search.constraints.items():
            assert all(subnet[limit_name] <= limit for subnet in scored), limit_name
        for candidate in spec.subnet_search.candidates:  # a seeded subnet is scored first
            wanted = {f"subnet.{key}": value for key, value in candidate.items()}
            assert any(wanted.items() <= subnet["config"].items() for subnet in scored)


def test_sparsity_rigl_keeps_its_two_ddp_ranks_identical(runs: RunCache, tmp_path: Path) -> None:
    """The RigL/SET example's trial is a 2-worker Ray Train DDP job: every rank computes the
    same mask updates (none differs from rank 0's before the guard broadcast), weights and
    masks stay identical, the density stays exact, and the best trial exports as a sparse
    file that loads back at that density."""
    run = runs("sparsity-rigl")
    assert run.spec.resources.num_workers == 2
    (trial,) = SweepStore(run.root).trials(run.spec.name)
    metrics = run.metrics()
    assert [m["epoch"] for m in metrics] == [1, 2]
    density = trial.config["sparsity.density"]
    updates = [m["mask_updates"] for m in metrics]
    assert updates[0] > 0 and updates == sorted(updates)
    assert all(m["mask_sync_mismatches"] == 0 for m in metrics)
    assert all(m["rank_divergence"] == 0.0 for m in metrics)  # weights and masks
    assert all(abs(m["density"] - density) < 2e-3 for m in metrics)
    # rank 0 reported, from this (only) node
    rows = SweepStore(run.root).results(run.spec.name).to_pylist()
    assert {row["node_id"] for row in rows} == {ray.get_runtime_context().get_node_id()}

    out = tmp_path / "best.msparse"
    where = ["--results", str(run.root), "-o", str(out)]
    assert main(["export", "--best", run.spec.name, *where]) == 0
    assert abs(MaskSet.from_model(load_sparse(out)).density() - density) < 2e-3
    assert main(["export", "--best", "no-such-sweep", *where]) == 2
