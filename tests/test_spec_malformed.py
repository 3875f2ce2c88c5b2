"""T14 of issue 6: malformed sweep specs are rejected, each with its field path and line.

Every spec below has exactly one thing wrong, so :func:`parse_spec` must raise
:class:`SpecError` with exactly one :class:`SpecIssue`, naming the field path, the YAML
line of that field, the offending value and the rule. They cover the search machinery's
fields (objectives, constraints, sampler and scheduler with their per-name knobs, grow and
prune moves, time budget, warm start), resources, storage, the top-level seed, unknown
keys, wrong types and the cross-field rules.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from morphtune.cli import main
from morphtune.spec import SpecError, SpecIssue, parse_spec

#: Stands for "do not compare the value" (a whole section, or a parsed object).
ANY = object()

# (id, spec text, field path, line, value, part of the rule)
MALFORMED: list[tuple[str, str, str, int, Any, str]] = [
    # ---------------------------------------------------------------- objectives
    (
        "objectives-empty",
        "name: a\nsearch:\n  objectives: []\n",
        "search.objectives",
        3,
        [],
        "at least 1",
    ),
    (
        "objectives-not-a-list",
        "name: a\nsearch:\n  objectives: val_acc\n",
        "search.objectives",
        3,
        "val_acc",
        "valid list",
    ),
    (
        "objectives-too-many",
        "name: a\nsearch:\n  scheduler: {name: fifo}\n  objectives: [{metric: val_acc}, "
        "{metric: params}, {metric: flops}, {metric: latency_ms}, {metric: wall_s}]\n",
        "search.objectives",
        4,
        ANY,
        "at most 4",
    ),
    (
        "objectives-unknown-metric",
        "name: a\nsearch:\n  scheduler: {name: fifo}\n  objectives:\n"
        "    - {metric: val_acc}\n    - {metric: accuracy_top5}\n",
        "search.objectives.1.metric",
        6,
        "accuracy_top5",
        "reported metric",
    ),
    (
        "objectives-bad-mode",
        "name: a\nsearch:\n  objectives: [{metric: val_acc, mode: up}]\n",
        "search.objectives.0.mode",
        3,
        "up",
        "'max' or 'min'",
    ),
    (
        "objectives-repeated-metric",
        "name: a\nsearch:\n  scheduler: {name: fifo}\n"
        "  objectives: [{metric: val_acc}, {metric: val_acc}]\n",
        "search",
        2,
        ANY,
        "distinct metrics",
    ),
    (
        "objective-and-objectives-disagree",
        "name: a\nsearch:\n  scheduler: {name: fifo}\n  objective: {metric: val_acc}\n"
        "  objectives: [{metric: params}, {metric: val_acc}]\n",
        "search",
        2,
        ANY,
        "not both",
    ),
    # --------------------------------------------------------------- constraints
    (
        "constraint-max-params-zero",
        "name: a\nsearch:\n  constraints: {max_params: 0}\n",
        "search.constraints.max_params",
        3,
        0,
        "greater than or equal to 1",
    ),
    (
        "constraint-unknown",
        "name: a\nsearch:\n  constraints:\n    max_memory: 10\n",
        "search.constraints.max_memory",
        4,
        10,
        "unknown key",
    ),
    (
        "constraint-max-flops-not-a-number",
        "name: a\nsearch:\n  constraints: {max_flops: big}\n",
        "search.constraints.max_flops",
        3,
        "big",
        "valid number",
    ),
    (
        "constraint-latency-batch-zero",
        "name: a\nsearch:\n  constraints: {max_latency_ms: 5, latency_batch_size: 0}\n",
        "search.constraints.latency_batch_size",
        3,
        0,
        "greater than or equal to 1",
    ),
    # ------------------------------------------------------------------- sampler
    (
        "sampler-unknown-name",
        "name: a\nsearch:\n  sampler: {name: annealing}\n",
        "search.sampler.name",
        3,
        "annealing",
        "'tpe', 'cmaes', 'gp', 'nsga2', 'nsga3', 'qmc', 'random' or 'grid'",
    ),
    (
        "sampler-not-a-mapping",
        "name: a\nsearch:\n  sampler: [tpe]\n",
        "search.sampler",
        3,
        ["tpe"],
        "valid dictionary",
    ),
    (
        "sampler-population-size-on-tpe",
        "name: a\nsearch:\n  sampler:\n    name: tpe\n    population_size: 10\n",
        "search.sampler.population_size",
        5,
        10,
        "population_size applies to ['nsga2', 'nsga3', 'cmaes'], not to 'tpe'",
    ),
    (
        "sampler-startup-trials-on-random",
        "name: a\nsearch:\n  sampler: {name: random, n_startup_trials: 3}\n",
        "search.sampler.n_startup_trials",
        3,
        3,
        "not to 'random'",
    ),
    (
        "sampler-multivariate-on-cmaes",
        "name: a\nsearch:\n  sampler: {name: cmaes, multivariate: true}\n",
        "search.sampler.multivariate",
        3,
        True,
        "applies to ['tpe']",
    ),
    (
        "sampler-constant-liar-on-gp",
        "name: a\nsearch:\n  sampler: {name: gp, constant_liar: true}\n",
        "search.sampler.constant_liar",
        3,
        True,
        "not to 'gp'",
    ),
    (
        "sampler-restart-strategy-on-qmc",
        "name: a\nsearch:\n  sampler: {name: qmc, scramble: true, restart_strategy: bipop}\n",
        "search.sampler.restart_strategy",
        3,
        "bipop",
        "applies to ['cmaes']",
    ),
    (
        "sampler-qmc-type-unknown",
        "name: a\nsearch:\n  sampler: {name: qmc, qmc_type: lattice}\n",
        "search.sampler.qmc_type",
        3,
        "lattice",
        "'sobol' or 'halton'",
    ),
    (
        "sampler-crossover-above-one",
        "name: a\nsearch:\n  sampler: {name: nsga2, crossover_prob: 1.5}\n",
        "search.sampler.crossover_prob",
        3,
        1.5,
        "less than or equal to 1",
    ),
    (
        "sampler-nsga3-population-one",
        "name: a\nsearch:\n  sampler: {name: nsga3, population_size: 1}\n",
        "search.sampler.population_size",
        3,
        1,
        "greater than or equal to 2",
    ),
    (
        "sampler-cmaes-sigma-zero",
        "name: a\nsearch:\n  sampler: {name: cmaes, sigma0: 0}\n",
        "search.sampler.sigma0",
        3,
        0,
        "greater than 0",
    ),
    (
        "sampler-seed-fractional",
        "name: a\nsearch:\n  sampler: {seed: 1.5}\n",
        "search.sampler.seed",
        3,
        1.5,
        "valid integer",
    ),
    (
        "sampler-unknown-knob",
        "name: a\nsearch:\n  sampler: {name: tpe, temperature: 2}\n",
        "search.sampler.temperature",
        3,
        2,
        "unknown key",
    ),
    (
        "sampler-cmaes-with-two-objectives",
        "name: a\nsearch:\n  objectives: [{metric: val_acc}, {metric: flops}]\n"
        "  sampler: {name: cmaes}\n  scheduler: {name: fifo}\n",
        "search.sampler.name",
        4,
        "cmaes",
        "'cmaes' optimises one objective, but search.objectives has 2",
    ),
    (
        "sampler-grid-float-without-step",
        "name: a\nsearch:\n  sampler: {name: grid}\n  space:\n"
        "    model.width: {type: int, low: 8, high: 32, step: 8}\n"
        "    training.lr: {type: float, low: 0.001, high: 0.1, log: true}\n",
        "search.space.training.lr",
        6,
        "training.lr",
        "give this float a step",
    ),
    (
        "sampler-grid-without-space",
        "name: a\nsearch:\n  sampler: {name: grid}\n",
        "search.sampler.name",
        3,
        "grid",
        "non-empty search.space",
    ),
    # ----------------------------------------------------------------- scheduler
    (
        "scheduler-unknown-name",
        "name: a\nsearch:\n  scheduler: {name: bohb}\n",
        "search.scheduler.name",
        3,
        "bohb",
        "'fifo', 'asha', 'hyperband', 'median', 'pbt', 'growth-pbt' or 'mo-asha'",
    ),
    (
        "scheduler-grace-period-on-fifo",
        "name: a\nsearch:\n  scheduler: {name: fifo, grace_period: 2}\n",
        "search.scheduler.grace_period",
        3,
        2,
        "grace_period applies to ['asha', 'mo-asha', 'median'], not to 'fifo'",
    ),
    (
        "scheduler-grace-period-on-hyperband",
        "name: a\nsearch:\n  scheduler: {name: hyperband, grace_period: 1}\n",
        "search.scheduler.grace_period",
        3,
        1,
        "not to 'hyperband'",
    ),
    (
        "scheduler-perturbation-interval-on-asha",
        "name: a\nsearch:\n  scheduler:\n    name: asha\n    perturbation_interval: 2\n",
        "search.scheduler.perturbation_interval",
        5,
        2,
        "applies to ['pbt', 'growth-pbt']",
    ),
    (
        "scheduler-move-probability-on-pbt",
        "name: a\nsearch:\n  scheduler: {name: pbt, move_probability: 0.5}\n",
        "search.scheduler.move_probability",
        3,
        0.5,
        "applies to ['growth-pbt'], not to 'pbt'",
    ),
    (
        "scheduler-grow-move-on-pbt",
        "name: a\nsearch:\n  scheduler:\n    name: pbt\n    grow: {maximum: 128}\n",
        "search.scheduler.grow",
        5,
        ANY,
        "applies to ['growth-pbt'], not to 'pbt'",
    ),
    (
        "scheduler-min-samples-zero",
        "name: a\nsearch:\n  scheduler: {name: median, min_samples_required: 0}\n",
        "search.scheduler.min_samples_required",
        3,
        0,
        "greater than or equal to 1",
    ),
    (
        "scheduler-reduction-factor-one",
        "name: a\nsearch:\n  scheduler: {name: mo-asha, reduction_factor: 1}\n",
        "search.scheduler.reduction_factor",
        3,
        1,
        "greater than 1",
    ),
    (
        "scheduler-max-t-zero",
        "name: a\nsearch:\n  scheduler: {name: hyperband, max_t: 0}\n",
        "search.scheduler.max_t",
        3,
        0,
        "greater than or equal to 1",
    ),
    (
        "scheduler-max-t-above-epochs",
        "name: a\ntraining: {epochs: 4}\nsearch:\n  scheduler: {name: asha, max_t: 10}\n",
        "search.scheduler.max_t",
        4,
        10,
        "max_t <= training.epochs must hold (training.epochs=4)",
    ),
    (
        "scheduler-asha-with-two-objectives",
        "name: a\nsearch:\n  objectives:\n    - {metric: val_acc}\n    - {metric: params}\n"
        "  scheduler: {name: asha}\n",
        "search.scheduler.name",
        6,
        "asha",
        "'asha' ranks trials by one objective, but search.objectives has 2",
    ),
    (
        "scheduler-median-with-three-objectives",
        "name: a\nsearch:\n  objectives: [{metric: val_acc}, {metric: params}, {metric: flops}]\n"
        "  scheduler: {name: median}\n",
        "search.scheduler.name",
        4,
        "median",
        "use 'mo-asha'",
    ),
    (
        "scheduler-growth-pbt-with-two-objectives",
        "name: a\nsearch:\n  objectives: [{metric: val_acc}, {metric: latency_ms}]\n"
        "  scheduler: {name: growth-pbt, prune: {factor: 0.5}}\n",
        "search.scheduler.name",
        4,
        "growth-pbt",
        "ranks trials by one objective",
    ),
    (
        "scheduler-pbt-with-two-workers",
        "name: a\nsearch:\n  scheduler: {name: pbt}\nresources: {num_workers: 2}\n",
        "search.scheduler.name",
        3,
        "pbt",
        "needs resources.num_workers=1 (got 2)",
    ),
    (
        "scheduler-pbt-interval-not-below-epochs",
        "name: a\ntraining: {epochs: 4}\nsearch:\n"
        "  scheduler: {name: pbt, perturbation_interval: 4}\n",
        "search.scheduler.perturbation_interval",
        4,
        4,
        "perturbation_interval < training.epochs must hold",
    ),
    (
        "scheduler-pbt-mutates-unsearched-key",
        "name: a\nsearch:\n  scheduler:\n    name: pbt\n    mutations:\n      - training.lr\n",
        "search.scheduler.mutations.0",
        6,
        "training.lr",
        "a mutated key must be a searched key",
    ),
    (
        "scheduler-growth-pbt-without-moves",
        "name: a\nsearch:\n  scheduler: {name: growth-pbt}\n",
        "search.scheduler",
        3,
        ANY,
        "growth-pbt needs a grow move, a prune move or both",
    ),
    (
        "scheduler-synch-on-asha",
        "name: a\nsearch:\n  scheduler: {name: asha, synch: true}\n",
        "search.scheduler.synch",
        3,
        True,
        "applies to ['pbt', 'growth-pbt'], not to 'asha'",
    ),
    (
        "scheduler-synch-population-not-at-once",
        "name: a\nsearch:\n  num_samples: 4\n  max_concurrent: 2\n"
        "  scheduler: {name: pbt, synch: true}\n",
        "search.scheduler.synch",
        5,
        True,
        "search.max_concurrent (2) >= search.num_samples (4) must hold",
    ),
    (
        "grow-move-maximum-not-above-base",
        "name: a\nmodel: {width: 16}\nsearch:\n  scheduler:\n    name: growth-pbt\n"
        "    grow: {key: model.width, maximum: 8}\n",
        "search.scheduler.grow.maximum",
        6,
        8,
        "maximum > the base model.width (16) must hold",
    ),
    (
        "grow-move-unknown-key",
        "name: a\nsearch:\n  scheduler:\n    name: growth-pbt\n"
        "    grow: {key: model.heads, maximum: 64}\n",
        "search.scheduler.grow.key",
        5,
        "model.heads",
        "'model.width' or 'model.depth'",
    ),
    (
        "grow-move-extra-field",
        "name: a\nsearch:\n  scheduler:\n    name: growth-pbt\n"
        "    grow:\n      maximum: 128\n      spare: 1\n",
        "search.scheduler.grow.spare",
        7,
        1,
        "unknown key",
    ),
    (
        "grow-move-on-gan",
        "name: a\nmodel: {family: gan}\nsparsity: {method: gan_single}\nsearch:\n"
        "  objective: {metric: fd}\n  scheduler:\n    name: growth-pbt\n"
        "    grow: {key: model.width, maximum: 512}\n",
        "search.scheduler.grow",
        8,
        "model.width",
        "growth moves need a growable classifier family",
    ),
    (
        "prune-move-factor-not-below-one",
        "name: a\nsearch:\n  scheduler:\n    name: growth-pbt\n    prune: {factor: 1.5}\n",
        "search.scheduler.prune.factor",
        5,
        1.5,
        "less than 1",
    ),
    (
        "prune-move-minimum-zero",
        "name: a\nsearch:\n  scheduler:\n    name: growth-pbt\n"
        "    prune: {factor: 0.5, minimum: 0}\n",
        "search.scheduler.prune.minimum",
        5,
        0,
        "greater than 0",
    ),
    # ---------------------------------------------- budget, warm start, resources
    (
        "time-budget-negative",
        "name: a\nsearch:\n  time_budget_s: -5\n",
        "search.time_budget_s",
        3,
        -5,
        "greater than 0",
    ),
    (
        "time-budget-not-a-number",
        "name: a\nsearch:\n  time_budget_s: soon\n",
        "search.time_budget_s",
        3,
        "soon",
        "valid number",
    ),
    (
        "num-samples-fractional",
        "name: a\nsearch:\n  num_samples: 2.5\n",
        "search.num_samples",
        3,
        2.5,
        "valid integer",
    ),
    (
        "warm-start-bad-sweep-id",
        "name: a\nsearch:\n  warm_start: {sweep: ../etc}\n",
        "search.warm_start.sweep",
        3,
        "../etc",
        "sweep_id must match",
    ),
    (
        "warm-start-without-sweep",
        "name: a\nsearch:\n  warm_start:\n    results: /tmp\n",
        "search.warm_start.sweep",
        3,
        None,
        "required field is missing",
    ),
    (
        "warm-start-not-a-mapping",
        "name: a\nsearch:\n  warm_start: [old]\n",
        "search.warm_start",
        3,
        ["old"],
        "valid dictionary",
    ),
    (
        "warm-start-top-k-zero",
        "name: a\nsearch:\n  warm_start: {sweep: old, top_k: 0}\n",
        "search.warm_start.top_k",
        3,
        0,
        "greater than or equal to 1",
    ),
    (
        "gpus-per-worker-negative",
        "name: a\nresources: {gpus_per_worker: -0.5}\n",
        "resources.gpus_per_worker",
        2,
        -0.5,
        "greater than 0",
    ),
    (
        "gpus-per-worker-fraction-above-one",
        "name: a\nresources:\n  gpus_per_worker: 1.5\n",
        "resources.gpus_per_worker",
        3,
        1.5,
        "a fraction <= 1 or a whole number",
    ),
    (
        "executor-unknown",
        "name: a\nresources: {executor: ray}\n",
        "resources.executor",
        2,
        "ray",
        "'auto', 'train' or 'function'",
    ),
    (
        "executor-function-with-two-workers",
        "name: a\nresources: {executor: function, num_workers: 2}\n",
        "resources",
        2,
        ANY,
        "executor 'function' runs one worker per trial, but num_workers=2",
    ),
    (
        "use-gpu-not-a-boolean",
        "name: a\nresources: {use_gpu: maybe}\n",
        "resources.use_gpu",
        2,
        "maybe",
        "valid boolean",
    ),
    (
        "max-failures-negative",
        "name: a\nresources: {max_failures: -1}\n",
        "resources.max_failures",
        2,
        -1,
        "greater than or equal to 0",
    ),
    # -------------------------------------------------------- storage, seed, keys
    (
        "optuna-url-unknown-scheme",
        "name: a\nstorage: {optuna: 'redis://localhost'}\n",
        "storage.optuna",
        2,
        "redis://localhost",
        "database URL",
    ),
    (
        "optuna-url-postgres-alias",
        "name: a\nstorage:\n  optuna: postgres://u@h/db\n",
        "storage.optuna",
        3,
        "postgres://u@h/db",
        "'postgresql'",
    ),
    (
        "optuna-url-a-path",
        "name: a\nstorage: {optuna: sqlite/optuna.db}\n",
        "storage.optuna",
        2,
        "sqlite/optuna.db",
        "database URL",
    ),
    (
        "seed-a-string",
        "name: a\nseed: abc\n",
        "seed",
        2,
        "abc",
        "valid integer",
    ),
    (
        "seed-fractional",
        "name: a\nseed: 1.5\n",
        "seed",
        2,
        1.5,
        "valid integer",
    ),
    (
        "seed-a-boolean",
        "name: a\nseed: true\n",
        "seed",
        2,
        True,
        "integer",
    ),
    (
        "unknown-top-level-key",
        "name: a\ncolour: blue\n",
        "colour",
        2,
        "blue",
        "unknown key",
    ),
    (
        "unknown-search-key",
        "name: a\nsearch:\n  budget: 10\n",
        "search.budget",
        3,
        10,
        "unknown key",
    ),
]


def only_issue(text: str) -> SpecIssue:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    issues = info.value.issues
    assert len(issues) == 1, [str(issue) for issue in issues]
    return issues[0]


def test_there_are_at_least_thirty_cases() -> None:
    assert len(MALFORMED) >= 30
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(
    ("text", "path", "line", "value", "rule"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_spec_is_rejected_with_path_and_line(
    text: str, path: str, line: int, value: Any, rule: str
) -> None:
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == line
    # the line really holds the field (a missing field: the section that lacks it)
    held = path.split(".")[-2 if "required" in rule else -1]
    assert held in text.splitlines()[line - 1] or held.isdigit()
    if value is not ANY:
        assert issue.value == value
        assert type(issue.value) is type(value)
    assert rule in issue.rule
    assert str(issue).startswith(f"line {line}: {path}: ")


def test_valid_variants_of_the_same_fields_are_accepted() -> None:
    """The malformed cases fail for the reason they name: fixed, each field is fine."""
    spec = parse_spec(
        """
name: a
seed: 7
model: {width: 16}
training: {epochs: 6}
search:
  objectives: [{metric: val_acc}, {metric: params}]
  constraints: {max_params: 100000, max_flops: 1.0e6, max_latency_ms: 5}
  sampler: {name: nsga2, population_size: 10, crossover_prob: 0.9}
  scheduler: {name: mo-asha, grace_period: 1, reduction_factor: 2, max_t: 6}
  time_budget_s: 60
  warm_start: {sweep: old, top_k: 5}
  space:
    training.lr: {type: float, low: 0.001, high: 0.1, log: true}
resources: {gpus_per_worker: 0.5, executor: function, max_failures: 2}
storage: {optuna: "postgresql://u@h:5432/db"}
"""
    )
    assert spec.search.sampler.seed == 7 and spec.training.seed == 7
    assert [goal.metric for goal in spec.search.goals] == ["val_acc", "params"]
    assert spec.resources.gpus == 0.5


def test_spec_schema_command_prints_a_strict_json_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["spec", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["type"] == "object" and schema["required"] == ["name"]
    definitions = schema["$defs"]
    search = definitions["SearchSpec"]["properties"]
    for field in ("objectives", "constraints", "sampler", "scheduler", "time_budget_s"):
        assert field in search, field
    assert "warm_start" in search
    assert definitions["SamplerSpec"]["properties"]["name"]["enum"] == [
        "tpe",
        "cmaes",
        "gp",
        "nsga2",
        "nsga3",
        "qmc",
        "random",
        "grid",
    ]
    assert set(definitions["SchedulerSpec"]["properties"]["name"]["enum"]) == {
        "fifo",
        "asha",
        "hyperband",
        "median",
        "pbt",
        "growth-pbt",
        "mo-asha",
    }
    resources = definitions["ResourcesSpec"]["properties"]
    assert {"gpus_per_worker", "executor", "max_failures"} <= set(resources)
    assert "seed" in schema["properties"] and "optuna" in definitions["StorageSpec"]["properties"]
    # unknown keys are errors: every section forbids extra properties
    sections = [schema, *definitions.values()]
    for section in sections:
        if section.get("type") == "object" and "properties" in section:
            assert section.get("additionalProperties") is False, section.get("title")
