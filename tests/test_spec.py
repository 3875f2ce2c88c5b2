"""Sweep spec validation: every error names the field path, the line, the value, the rule."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from morphtune.spec import (
    SpecError,
    SweepSpec,
    flatten_config,
    load_spec,
    parse_spec,
    resolve_trial_config,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits-demo.yaml"


def issues_of(text: str) -> list:
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="t.yaml")
    return info.value.issues


def only_issue(text: str):
    issues = issues_of(text)
    assert len(issues) == 1, issues
    return issues[0]


def test_example_spec_is_valid_and_round_trips() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.search.num_samples >= 12
    assert spec.search.scheduler.name == "asha"
    again = parse_spec(spec.to_yaml())
    assert again == spec


def test_defaults_fill_a_minimal_spec() -> None:
    spec = parse_spec("name: tiny\n")
    assert spec.model.family == "mlp"
    assert spec.search.objective.direction == "max"


@pytest.mark.parametrize(
    ("text", "path", "line", "value", "rule_part"),
    [
        ("name: a\nmodel:\n  width: 0\n", "model.width", 3, 0, "greater than or equal to 1"),
        ("name: a\nmodel:\n  wdith: 8\n", "model.wdith", 3, 8, "unknown key"),
        ("name: a\ntraining: {lr: -0.1}\n", "training.lr", 2, -0.1, "greater than 0"),
        ("name: 'bad name!'\n", "name", 1, "bad name!", "must match [A-Za-z0-9]"),
        ("name: a\ngrowth: {operator: lemonade}\n", "growth.operator", 2, "lemonade", "net2net"),
        ("name: a\nsparsity: {method: snipe}\n", "sparsity.method", 2, "snipe", "magnitude"),
        (
            "name: a\nsearch:\n  objective: {metric: accuracy}\n",
            "search.objective.metric",
            3,
            "accuracy",
            "val_acc",
        ),
        (
            "name: a\nsearch:\n  space:\n    training.lr: {type: float, low: 0.1, high: 0.01}\n",
            "search.space.training.lr",
            4,
            None,
            "low <= high must hold, but got low=0.1, high=0.01",
        ),
        (
            "name: a\nsearch:\n  space:\n"
            "    training.lr: {type: float, low: 0, high: 1, log: true}\n",
            "search.space.training.lr",
            4,
            None,
            "low > 0",
        ),
        (
            "name: a\nsearch:\n  space:\n    model.width: {type: int, low: 0, high: 8}\n",
            "search.space.model.width",
            4,
            0,
            "greater than or equal to 1",
        ),
        (
            "name: a\nsearch:\n  space:\n    model.hieght: {type: int, low: 1, high: 8}\n",
            "search.space.model.hieght",
            4,
            "model.hieght",
            "unknown field 'hieght'",
        ),
        (
            "name: a\nsearch:\n  space:\n    lr: {type: float, low: 0.1, high: 1}\n",
            "search.space.lr",
            4,
            "lr",
            "'<section>.<field>'",
        ),
        (
            "name: a\nsearch:\n  space:\n"
            "    growth.operator: {type: categorical, choices: [none, x]}\n",
            "search.space.growth.operator",
            4,
            "x",
            "must be one of",
        ),
        (
            "name: a\nsearch:\n  space:\n    growth.factor: {type: float, low: 1.5, high: 2,"
            " when: {growth.operator: [net2net]}}\n",
            "search.space.growth.factor.when.growth.operator",
            4,
            "growth.operator",
            "declared above",
        ),
        (
            "name: a\ntraining: {epochs: 3}\nsearch:\n  scheduler: {grace_period: 4}\n",
            "search.scheduler.grace_period",
            4,
            4,
            "grace_period <= max_t",
        ),
        ("name: a\nsearch:\n  num_samples: 0\n", "search.num_samples", 3, 0, "greater than"),
        ("name: a\nresources: {num_workers: two}\n", "resources.num_workers", 2, "two", "integer"),
    ],
)
def test_each_error_names_path_line_value_and_rule(
    text: str, path: str, line: int, value: object, rule_part: str
) -> None:
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == line
    if value is not None:
        assert issue.value == value
    assert rule_part in issue.rule
    assert f"line {line}" in str(issue)


def test_all_problems_are_reported_together() -> None:
    issues = issues_of("name: a\nmodel: {width: 0, depth: 0}\ntraining: {lr: 0}\n")
    assert {issue.path for issue in issues} == {"model.width", "model.depth", "training.lr"}


def test_yaml_syntax_error_names_the_line() -> None:
    issue = only_issue("name: a\nmodel: {width: 3\ntraining: 1\n")
    assert issue.line is not None
    assert "YAML" in issue.rule


def test_non_mapping_document_is_rejected() -> None:
    assert "mapping" in only_issue("- a\n- b\n").rule


def test_missing_name_is_required() -> None:
    issue = only_issue("model: {width: 8}\n")
    assert issue.path == "name"
    assert "required" in issue.rule


def test_condition_on_non_categorical_and_unknown_values() -> None:
    text = (
        "name: a\nsearch:\n  space:\n"
        "    training.lr: {type: float, low: 0.001, high: 0.1}\n"
        "    growth.operator: {type: categorical, choices: [none, net2net]}\n"
        "    growth.factor: {type: float, low: 1.5, high: 2, when: {training.lr: [0.1]}}\n"
        "    growth.noise: {type: float, low: 0, high: 0.1, when: {growth.operator: [lemon]}}\n"
    )
    issues = issues_of(text)
    rules = {issue.path: issue.rule for issue in issues}
    assert "categorical" in rules["search.space.growth.factor.when.training.lr"]
    assert "among" in rules["search.space.growth.noise.when.growth.operator"]
    assert {issue.line for issue in issues} == {6, 7}


def test_resolve_trial_config_applies_and_revalidates() -> None:
    spec = parse_spec("name: a\nmodel: {width: 16}\n")
    trial = resolve_trial_config(spec, {"model.width": 32, "growth.operator": "net2net"})
    assert trial["model"]["width"] == 32
    assert trial["growth"]["operator"] == "net2net"
    assert trial["training"] == spec.training.model_dump(mode="json")
    with pytest.raises(ValueError, match=r"model\.width"):
        resolve_trial_config(spec, {"model.width": -1})
    with pytest.raises(ValueError, match=r"unknown trial config key .model\.size."):
        resolve_trial_config(spec, {"model.size": 3})


def test_flatten_config() -> None:
    assert flatten_config({"a": {"b": 1, "c": {"d": 2}}, "e": {}}) == {
        "a.b": 1,
        "a.c.d": 2,
        "e": {},
    }


def test_spec_is_immutable() -> None:
    spec = parse_spec("name: a\n")
    with pytest.raises(ValueError, match="frozen"):
        spec.model.width = 3  # type: ignore[misc]


def test_resolved_yaml_is_complete(tmp_path: Path) -> None:
    dumped = yaml.safe_load(load_spec(EXAMPLE).to_yaml())
    assert set(dumped) == set(SweepSpec.model_fields)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "morphtune.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_rejects_bad_spec_with_exit_2_before_ray(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmodel:\n  width: -4\n")
    for command in (["spec", "check", str(bad)], ["run", str(bad), "--results", str(tmp_path)]):
        result = run_cli(*command, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "line 3" in result.stderr
        assert "model.width" in result.stderr
        assert "-4" in result.stderr
        assert "greater than or equal to 1" in result.stderr
        assert "ray" not in result.stderr.lower()  # refused before Ray was started
    assert not (tmp_path / "bad").exists()


def test_cli_spec_check_accepts_example(tmp_path: Path) -> None:
    result = run_cli("spec", "check", str(EXAMPLE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


# --------------------------------------------------------------------- growth plans


@pytest.mark.parametrize(
    ("body", "path", "rule"),
    [
        (  # an operator that does not exist
            "growth: {operator: grow-everything}",
            "growth.operator",
            r"must be one of \['none', .*'lemon'.*'net2net'",
        ),
        (  # a family the operator cannot handle
            "model: {family: vit, width: 32}\ngrowth: {operator: net2net}",
            "growth",
            r"growth operator 'net2net' cannot grow model family 'vit'; it grows \['mlp', 'cnn'\]",
        ),
        (  # a target smaller than the source
            "growth: {operator: lemon, plan: [{at_fraction: 0.3, width: 32}]}",
            "growth",
            r"growth cannot shrink a model: .* must be >= the model's \(64, 2\), but got \(32, 2\)",
        ),
        (  # LEMON deeper than 2x in one event
            "model: {family: gpt, width: 32}\n"
            "growth: {operator: lemon, factor: 1.0, depth_factor: 3}",
            "growth",
            r"grows depth at most 2x per event",
        ),
        (  # G_stack never changes the width
            "model: {family: gpt, width: 32}\n"
            "growth: {operator: stack, factor: 2.0, depth_factor: 2}",
            "growth",
            r"stack",
        ),
        (  # events out of order
            "growth: {operator: net2net, plan: [{at_fraction: 0.5}, {at_fraction: 0.4}]}",
            "growth",
            r"growth event 1 falls at step 4000, but must come after step 5000",
        ),
        (
            "growth: {operator: net2net, factor: 0.5}",
            "growth.factor",
            r"greater than or equal to 1",
        ),
        (
            "growth: {operator: lemon, factor: 1.0}",
            "growth",
            r"growth event 0 does not grow the model: a growth event must grow something",
        ),
        (  # an operator that cannot grow pruning masks, on a pruned model
            "model: {family: vit, width: 32}\ngrowth: {operator: lemon}\n"
            "sparsity: {method: random, density: 0.5}",
            "growth",
            r"growth operator 'lemon' does not grow the pruning masks of a 'vit' model",
        ),
        (
            "growth: {operator: lemon, plan: [{at_fraction: 0.3, at_step: 4}]}",
            "growth.plan.0",
            r"give exactly one of at_fraction and at_step",
        ),
    ],
)
def test_bad_growth_configs_fail_at_spec_check(body: str, path: str, rule: str) -> None:
    issue = only_issue(f"name: g\n{body}\n")
    assert issue.path == path
    assert re.search(rule, issue.rule), issue.rule
    assert issue.line is not None


def test_searched_growth_combinations_are_checked_per_family() -> None:
    text = """
name: g
model: {family: mlp, width: 32}
growth: {operator: lemon}
search:
  space:
    model.family: {type: categorical, choices: [mlp, cnn, gpt]}
    growth.operator: {type: categorical, choices: [lemon, net2net]}
"""
    issues = issues_of(text)
    assert len(issues) == 1  # only net2net on gpt is impossible
    assert issues[0].path == "search.space"
    assert issues[0].value == {"model.family": "gpt", "growth.operator": "net2net"}
    assert "cannot grow model family 'gpt'" in issues[0].rule


def test_conditions_limit_the_checked_combinations() -> None:
    text = """
name: g
model: {family: gpt, width: 32}
growth: {operator: lemon, factor: 1.0, depth_factor: 2.0}
search:
  space:
    growth.operator: {type: categorical, choices: [lemon, stack]}
    growth.factor: {type: categorical, choices: [1.0, 2.0], when: {growth.operator: [lemon]}}
"""
    parse_spec(text)  # valid: stack only ever sees the base factor 1.0
