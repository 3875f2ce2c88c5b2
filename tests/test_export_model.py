"""``morphtune export SWEEP``: a real sweep's trials as standalone model files.

One tiny sweep per module (a grid over growth x sparsity: a dense, a sparse, a grown and a
grown sparse trial; MLP on digits, 2 epochs) and one tiny supernet sweep with its subnet
search. Each exported model is loaded back with ``morphtune.load_model`` and scored here,
on the trial's validation split, with the test's own loop: the accuracy must equal the
``val_acc`` the store holds for the checkpointed iteration.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import morphtune
from morphtune.cli import main
from morphtune.data import load_dataset
from morphtune.export import load_exported
from morphtune.methods.sparsity import find_masks
from morphtune.store import SweepStore

SWEEP = """
name: export
dataset: {name: digits}
model: {family: mlp, width: 16, depth: 1}
training: {epochs: 2, batch_size: 128, lr: 0.01}
growth: {at_fraction: 0.3, factor: 2.0}
sparsity: {density: 0.3}
search:
  objective: {metric: val_acc, mode: max}
  num_samples: 4
  max_concurrent: 2
  sampler: {name: grid}
  scheduler: {name: fifo}
  space:
    growth.operator: {type: categorical, choices: [none, net2net]}
    sparsity.method: {type: categorical, choices: [none, magnitude]}
"""

SUPERNET = """
name: sn
dataset: {name: digits}
model: {family: mlp, width: 32, depth: 2}
training: {epochs: 1, batch_size: 128, lr: 0.01}
supernet: {enabled: true, width_choices: [0.5, 1.0], depth_choices: [1, 2], n_random: 1}
search: {num_samples: 1, max_concurrent: 1, scheduler: {name: fifo}}
subnet_search:
  num_subnets: 3
  batch_size: 3
  sampler: nsga2
  objectives: [{metric: val_acc}, {metric: params}]
"""

KINDS = {
    ("none", "none"): "dense",
    ("none", "magnitude"): "sparse",
    ("net2net", "none"): "grown",
    ("net2net", "magnitude"): "grown+sparse",
}


needs_ray = pytest.mark.ray


@pytest.fixture(scope="module")
def sweep(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from morphtune.runner import run_sweep
    from morphtune.spec import parse_spec

    root = tmp_path_factory.mktemp("export-results")
    outcome = run_sweep(parse_spec(SWEEP), results_root=root)
    assert outcome.trial_states.get("completed") == 4, outcome.trial_states
    return root


@pytest.fixture(scope="module")
def trials(sweep: Path) -> dict[str, str]:
    """Trial id by kind (the grid gives each growth x sparsity pair one trial)."""
    found = {}
    for trial in SweepStore(sweep).trials("export"):
        pair = (trial.config["growth.operator"], trial.config["sparsity.method"])
        found[KINDS[pair]] = trial.trial_id
    assert sorted(found) == sorted(KINDS.values())
    return found


def stored_metrics(root: Path, sweep_id: str, trial_id: str, iteration: int) -> dict[str, Any]:
    table = SweepStore(root).results(sweep_id)
    for row in table.to_pylist():
        if row["trial_id"] == trial_id and row["iteration"] == iteration:
            return dict(json.loads(row["metrics_json"]))
    raise AssertionError(f"no stored row {trial_id} iteration {iteration}")


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset: dict[str, Any]) -> float:
    """Top-1 accuracy on the trial's validation split, counted here."""
    data = load_dataset(dataset["name"], seed=dataset["seed"], val_fraction=dataset["val_fraction"])
    inputs, labels = data.val.tensors
    predicted = torch.cat(
        [model(inputs[i : i + 500]).argmax(dim=1) for i in range(0, len(labels), 500)]
    )
    return float((predicted == labels).sum()) / len(labels)


def export(root: Path, out: Path, *args: str) -> int:
    return main(["export", *args, "--results", str(root), "-o", str(out)])


@needs_ray
@pytest.mark.parametrize("kind", ["dense", "sparse", "grown", "grown+sparse"])
def test_exported_model_scores_the_stored_val_acc(
    kind: str,
    sweep: Path,
    trials: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trial_id = trials[kind]
    out = tmp_path / "model.pt"
    assert export(sweep, out, "export", "--trial", trial_id, "--verify") == 0
    line = capsys.readouterr().out
    assert f"trial {trial_id} iteration 2" in line and "measured" in line

    exported = load_exported(out)
    meta = exported.metadata
    assert (meta["sweep_id"], meta["trial_id"], meta["iteration"]) == ("export", trial_id, 2)
    assert meta["kind"] == kind
    stored = stored_metrics(sweep, "export", trial_id, 2)
    model = morphtune.load_model(out)
    assert not model.training
    assert accuracy(model, meta["trial"]["dataset"]) == pytest.approx(stored["val_acc"], abs=1e-12)

    # the model has the shape the trial reported at that iteration
    hidden = exported.config["hidden"]
    assert hidden == [stored["width"]] * stored["depth"]
    assert hidden == ([32] if "grown" in kind else [16])
    masks = find_masks(model)
    with zipfile.ZipFile(out) as archive:
        is_sparse_format = "header.json" in archive.namelist()
    if "sparse" in kind:
        assert masks and is_sparse_format and exported.fmt == "csr"
        kept = sum(int(mask.sum()) for mask in masks.values())
        assert kept / sum(mask.numel() for mask in masks.values()) == pytest.approx(
            stored["density"]
        )
        assert stored["density"] == pytest.approx(0.3, abs=0.02)
    else:
        assert not masks and not is_sparse_format and exported.fmt == "torch"
        # a dense export is a plain torch checkpoint
        payload = torch.load(out, weights_only=True)
        assert payload["family"] == "mlp" and payload["config"] == exported.config


@needs_ray
def test_default_is_the_best_trial_and_sparse_files_are_smaller(
    sweep: Path, trials: dict[str, str], tmp_path: Path
) -> None:
    best = SweepStore(sweep).best("export")
    assert export(sweep, tmp_path / "best.pt", "export") == 0
    assert load_exported(tmp_path / "best.pt").metadata["trial_id"] == best.trial_id

    sparse = trials["sparse"]
    assert export(sweep, tmp_path / "s.csr", "export", "--trial", sparse) == 0
    assert export(sweep, tmp_path / "s.pt", "export", "--trial", sparse, "--format", "torch") == 0
    assert (tmp_path / "s.csr").stat().st_size < 0.7 * (tmp_path / "s.pt").stat().st_size
    from_csr, from_torch = (
        morphtune.load_model(tmp_path / "s.csr"),
        morphtune.load_model(tmp_path / "s.pt"),
    )
    for (key, a), (other, b) in zip(
        from_csr.state_dict().items(), from_torch.state_dict().items(), strict=True
    ):
        assert key == other and torch.equal(a, b)


@needs_ray
def test_load_model_needs_no_ray(sweep: Path, trials: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "grown.pt"
    assert export(sweep, out, "export", "--trial", trials["grown+sparse"]) == 0
    script = (
        "import sys, torch, morphtune\n"
        f"model = morphtune.load_model({str(out)!r})\n"
        "print(tuple(model(torch.zeros(3, 64)).shape))\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 10)"


@needs_ray
def test_earlier_iteration_and_moved_sweep(
    sweep: Path, trials: dict[str, str], tmp_path: Path
) -> None:
    trial_id = trials["grown"]
    assert (
        export(
            sweep,
            tmp_path / "it1.pt",
            "export",
            "--trial",
            trial_id,
            "--iteration",
            "1",
            "--verify",
        )
        == 0
    )
    assert load_exported(tmp_path / "it1.pt").metadata["iteration"] == 1
    # a copied sweep whose recorded checkpoint paths are gone resolves under its new root
    moved = tmp_path / "moved"
    shutil.copytree(sweep / "export", moved / "export")
    directory = sweep / "export" / "tune"
    hidden = sweep / "export" / "tune-hidden"
    directory.rename(hidden)
    try:
        assert export(moved, tmp_path / "moved.pt", "export", "--trial", trial_id, "--verify") == 0
    finally:
        hidden.rename(directory)
    assert str(moved) in load_exported(tmp_path / "moved.pt").metadata["checkpoint"]["path"]


@needs_ray
def test_bad_input_exits_2_and_leaves_no_file(
    sweep: Path, trials: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.pt"
    (tmp_path / "a-file").write_text("x")
    trial_id = trials["dense"]
    cases: list[tuple[list[str], Path, str]] = [
        (["no-such-sweep"], out, "sweep 'no-such-sweep' not found"),
        (["export", "--trial", "nope"], out, "trial 'nope' not in sweep 'export'"),
        (["export", "--trial", trial_id, "--iteration", "7"], out, "has no iteration 7"),
        (["export", "--subnet", "largest"], out, "not a supernet"),
        (["export", "--metric", "nosuch", "--mode", "max"], out, "not reported"),
        (["export"], tmp_path / "missing" / "m.pt", "does not exist"),
        (["export"], tmp_path / "a-file" / "m.pt", "not a directory"),
        (["export"], out_dir, "is a directory"),
    ]
    for argv, target, message in cases:
        assert export(sweep, target, *argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
    assert main(["export", "export", "--results", str(sweep)]) == 2
    assert "-o/--output" in capsys.readouterr().err

    # a trial whose checkpoint of the asked iteration is gone
    row = stored_metrics(sweep, "export", trial_id, 1)
    checkpoint = Path(row["checkpoint_path"]) / "trial_state.pt"
    aside = checkpoint.with_name("aside.pt")
    checkpoint.rename(aside)
    try:
        assert export(sweep, out, "export", "--trial", trial_id, "--iteration", "1") == 2
    finally:
        aside.rename(checkpoint)
    assert "no checkpoint on disk for iteration 1" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []


@needs_ray
def test_legacy_best_form_still_writes_a_sparse_file(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "best.sparse"
    assert main(["export", "--best", "export", "--results", str(sweep), "-o", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read("header.json"))["encoding"] == "csr"
    assert main(["export", "--check", str(out)]) == 0


# ---------------------------------------------------------------------- subnets


@pytest.fixture(scope="module")
def supernet_sweep(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from morphtune.runner import run_sweep
    from morphtune.spec import parse_spec

    root = tmp_path_factory.mktemp("export-supernet")
    outcome = run_sweep(parse_spec(SUPERNET), results_root=root)
    assert outcome.subnets is not None and outcome.subnets["scored"] == 3
    return root


@needs_ray
def test_subnets_score_what_was_stored(supernet_sweep: Path, tmp_path: Path) -> None:
    root = supernet_sweep
    [trial] = SweepStore(root).trials("sn")
    stored = trial.metrics
    for subnet, metric, hidden in (
        ("largest", "val_acc", [32, 32]),
        ("smallest", "val_acc_smallest", [16]),
    ):
        out = tmp_path / f"{subnet}.pt"
        assert export(root, out, "sn", "--subnet", subnet, "--verify") == 0
        exported = load_exported(out)
        assert exported.metadata["kind"] == "subnet"
        assert exported.config["hidden"] == hidden
        assert accuracy(exported.model, exported.metadata["trial"]["dataset"]) == pytest.approx(
            stored[metric], abs=1e-12
        )
    # every subnet the search scored, exported from the subnet-search sweep
    for scored in SweepStore(root).trials("sn-subnets"):
        out = tmp_path / f"{scored.trial_id}.pt"
        assert export(root, out, "sn-subnets", "--trial", scored.trial_id, "--verify") == 0
        exported = load_exported(out)
        choices = {key.removeprefix("subnet."): value for key, value in scored.config.items()}
        assert exported.metadata["subnet"] == choices
        assert exported.config["hidden"] == [choices["width"]] * choices["depth"]
        assert accuracy(exported.model, exported.metadata["trial"]["dataset"]) == pytest.approx(
            scored.metrics["val_acc"], abs=1e-12
        )
    assert export(root, tmp_path / "x.pt", "sn", "--subnet", "width=3,depth=1") == 2


# ------------------------------------------------------------- files, without Ray


def test_load_rejects_what_is_not_an_export(tmp_path: Path) -> None:
    from morphtune.export import ExportFormatError, write_model
    from morphtune.models import MLPConfig, build_model, config_to_dict

    model = build_model("mlp", MLPConfig(8, 3, (5,)))
    good = tmp_path / "good.pt"
    assert write_model(model, good, family="mlp", config=config_to_dict(model.config)) == "torch"
    loaded = morphtune.load_model(good)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    torch.save({"family": "mlp", "model_config": {}, "model": {}}, tmp_path / "ckpt.pt")
    torch.save({"format": "morphtune-model", "version": 99}, tmp_path / "future.pt")
    for name, message in (
        ("cut.pt", "not a morphtune model export"),
        ("ckpt.pt", "it is a trial checkpoint"),
        ("future.pt", "format version 99"),
    ):
        with pytest.raises(ExportFormatError, match=message):
            morphtune.load_model(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        morphtune.load_model(tmp_path / "absent.pt")
    assert main(["export", "--check", str(good)]) == 0
    assert main(["export", "--check", str(tmp_path / "cut.pt")]) == 2


def test_batchnorm_subnet_recalibrates_as_the_subnet_search_did() -> None:
    """A cnn subnet (BatchNorm) exported from a subnet search scores what the search's
    own scorer measured: the export re-draws the search's calibration batches exactly."""
    from morphtune.export._evaluate import validation_accuracy
    from morphtune.export._materialize import build_subnet
    from morphtune.models import TaskShape
    from morphtune.searchers import SubnetSearch
    from morphtune.searchers._subnet_score import SubnetScorer
    from morphtune.spec import parse_spec, resolve_trial_config, supernet_section
    from morphtune.trainables._supernet_engine import SupernetEngine

    spec = parse_spec(
        "name: bn\nmodel: {family: cnn, width: 4, depth: 1}\n"
        "training: {epochs: 1, batch_size: 512, lr: 0.05}\n"
        "supernet: {enabled: true, width_choices: [0.5, 1.0], n_random: 0}\n"
        "search: {scheduler: {name: fifo}}\n"
    )
    trial = resolve_trial_config(spec, {})
    data = load_dataset("digits", seed=0, val_fraction=0.2)
    engine = SupernetEngine(trial, data)
    list(engine.run_epochs())
    state = engine.state_dict()
    search = SubnetSearch(
        state["model"],
        "cnn",
        TaskShape.of(data),
        supernet_section(trial),
        None,
        data,
        seed=5,
        recalibration_batches=trial["supernet"]["recalibration_batches"],
    )
    scorer = SubnetScorer(search.payload)
    for subnet in (engine.model.space.largest(), engine.model.space.smallest()):
        built = build_subnet(state, subnet, data, calibration_seed=5, from_search=True, where="t")
        assert built.exact
        assert validation_accuracy(built.model, data) == scorer.score(subnet).val_acc
        # the trial's own calibration batches are not recorded: close, flagged inexact
        approx = build_subnet(state, subnet, data, calibration_seed=0, from_search=False, where="t")
        assert not approx.exact and approx.notes
