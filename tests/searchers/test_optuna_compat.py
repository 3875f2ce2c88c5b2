"""A finished sweep seen from outside morphtune: its Optuna study opened with the plain
Optuna API (and optuna-dashboard's own app), and its TensorBoard and MLflow logs.

One real sweep for the module (digits, a 8-unit MLP, 2 epochs, 4 trials) that ends in
every Optuna state: the grid holds two trainable configs (COMPLETE), two whose weight
decay of 1 at lr 10 multiplies the weights by -9 each step, so the loss is NaN after the
first epoch (FAIL), and four too wide for ``max_params`` (PRUNED before launch, as many
of them as the grid visited before the fourth trainable one).
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
import wsgiref.util
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from morphtune.searchers._loggers import SWEEP_TAG, TRIAL_TAG, logger_callbacks
from morphtune.spec import SpecError, SweepSpec, parse_spec
from morphtune.store import SweepStore, TrialSummary

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
HAS_DASHBOARD = importlib.util.find_spec("optuna_dashboard") is not None

SWEEP_ID = "compat"

SPEC = f"""
name: {SWEEP_ID}
dataset: {{name: digits}}
model: {{family: mlp, width: 8, depth: 1}}
training: {{epochs: 2, batch_size: 64, optimizer: sgd, schedule: constant, weight_decay: 1.0}}
seed: 0
search:
  objective: {{metric: val_loss}}
  constraints: {{max_params: 2000}}
  num_samples: 4
  max_concurrent: 2
  sampler: {{name: grid, seed: 0}}
  scheduler: {{name: fifo}}
  space:
    model.width: {{type: categorical, choices: [8, 256]}}
    model.depth: {{type: int, low: 1, high: 1}}
    training.lr: {{type: categorical, choices: [0.05, 10.0]}}
    training.momentum: {{type: float, low: 0.0, high: 0.5, step: 0.5}}
"""

#: What every trial of the study must carry, written out here (not derived from the code
#: under test): a dashboard draws its axes and parallel coordinates from these.
DISTRIBUTIONS = {
    "model.width": CategoricalDistribution([8, 256]),
    "model.depth": IntDistribution(1, 1),
    "training.lr": CategoricalDistribution([0.05, 10.0]),
    "training.momentum": FloatDistribution(0.0, 0.5, step=0.5),
}

METRICS = ("val_loss", "val_acc", "train_loss", "params")


@dataclass
class Sweep:
    root: Path
    spec: SweepSpec
    store: SweepStore
    tracking_uri: str | None

    @property
    def directory(self) -> Path:
        return self.root / SWEEP_ID

    def study(self) -> optuna.Study:
        # a plain SQLAlchemy URL, as a user or optuna-dashboard would give it
        return optuna.load_study(
            study_name=SWEEP_ID, storage=f"sqlite:///{self.directory / 'optuna.db'}"
        )

    def trials(self) -> dict[str, TrialSummary]:
        return {trial.trial_id: trial for trial in self.store.trials(SWEEP_ID)}

    def rows(self, trial_id: str) -> dict[int, dict[str, Any]]:
        """The trial's stored metrics by iteration."""
        table = self.store.results(SWEEP_ID).to_pylist()
        return {
            int(row["iteration"]): json.loads(row["metrics_json"])
            for row in table
            if row["trial_id"] == trial_id
        }


@pytest.fixture(scope="module")
def sweep(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    from morphtune.runner import run_sweep

    root = tmp_path_factory.mktemp("compat")
    logging = "logging:\n  tensorboard: true\n"
    tracking_uri = None
    if HAS_MLFLOW:
        tracking_uri = f"sqlite:///{root / 'tracking' / 'mlflow.db'}"
        (root / "tracking").mkdir()
        logging += (
            f"  mlflow: {{tracking_uri: '{tracking_uri}', experiment: compat-runs, "
            "tags: {team: search}}\n"
        )
    spec = parse_spec(SPEC + logging)
    run_sweep(spec, results_root=root)
    return Sweep(root, spec, SweepStore(root), tracking_uri)


def _params_of(summary: TrialSummary) -> dict[str, Any]:
    return {key: summary.config[key] for key in DISTRIBUTIONS}


def _match(study: optuna.Study, sweep: Sweep) -> list[tuple[FrozenTrial, TrialSummary]]:
    """Each Optuna trial that became a Ray trial, with the store's record of it (the
    searched values identify a trial: the grid never proposes a config twice)."""
    by_params = {json.dumps(_params_of(s), sort_keys=True): s for s in sweep.trials().values()}
    assert len(by_params) == len(sweep.trials()), "every stored trial has its own config"
    pairs = []
    for trial in study.get_trials():
        summary = by_params.get(json.dumps(trial.params, sort_keys=True))
        if summary is not None:
            pairs.append((trial, summary))
    return pairs


# --------------------------------------------------------------------------- Optuna


@pytest.mark.ray
def test_the_study_opens_with_the_optuna_api(sweep: Sweep) -> None:
    study = sweep.study()
    assert study.study_name == SWEEP_ID
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE]  # val_loss
    summaries = optuna.get_all_study_summaries(f"sqlite:///{sweep.directory / 'optuna.db'}")
    assert [s.study_name for s in summaries] == [SWEEP_ID]
    states = [trial.state for trial in study.get_trials()]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states


@pytest.mark.ray
def test_states_params_and_values_are_what_the_store_says(sweep: Sweep) -> None:
    study = sweep.study()
    stored = sweep.trials()
    assert len(stored) == 4
    pairs = _match(study, sweep)
    assert sorted(s.trial_id for _, s in pairs) == sorted(stored), "each stored trial once"
    expected_state = {
        "completed": TrialState.COMPLETE,
        "stopped": TrialState.COMPLETE,  # a scheduler's early stop: its last value counts
        "failed": TrialState.FAIL,
    }
    for trial, summary in pairs:
        assert trial.state == expected_state[summary.status], (trial.number, summary.status)
        assert trial.params == _params_of(summary)
        if trial.state == TrialState.COMPLETE:
            rows = sweep.rows(summary.trial_id)
            assert trial.value == rows[max(rows)]["val_loss"] == summary.metrics["val_loss"]
        else:
            assert trial.value is None
    states = [trial.state for trial, _ in pairs]
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.FAIL) == 2
    # the proposals over the budget never ran: PRUNED with their constraint values
    matched = {trial.number for trial, _ in pairs}
    pruned = [t for t in study.get_trials() if t.number not in matched]
    assert pruned, "the seeded grid proposes a too-wide config before the last trainable one"
    for trial in pruned:
        assert trial.state == TrialState.PRUNED
        assert trial.params["model.width"] == 256
    infeasible = sweep.store.manifest(SWEEP_ID)["search"]["infeasible"]
    assert infeasible == len(pruned)
    best = sweep.store.best(SWEEP_ID)
    assert study.best_trial.value == best.value
    assert study.best_trial.params == _params_of(stored[best.trial_id])


@pytest.mark.ray
def test_every_trial_keeps_its_distributions(sweep: Sweep) -> None:
    trials = sweep.study().get_trials()
    assert len(trials) >= 5
    for trial in trials:
        assert trial.distributions == DISTRIBUTIONS
        for name, value in trial.params.items():
            distribution = trial.distributions[name]
            assert distribution._contains(distribution.to_internal_repr(value))


def _get(app: Any, path: str) -> tuple[str, Any]:
    """One GET through a WSGI app, in-process (no server, no socket)."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": ""}
    wsgiref.util.setup_testing_defaults(environ)
    environ["wsgi.input"] = BytesIO()
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(line)
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return status[0], json.loads(body)


@pytest.mark.ray
@pytest.mark.skipif(not HAS_DASHBOARD, reason="optuna-dashboard is not installed")
def test_optuna_dashboard_serves_the_study(sweep: Sweep) -> None:
    from optuna_dashboard import wsgi

    app = wsgi(f"sqlite:///{sweep.directory / 'optuna.db'}")
    status, listing = _get(app, "/api/studies")
    assert status.startswith("200"), listing
    (entry,) = listing["study_summaries"]
    assert entry["study_name"] == SWEEP_ID
    status, detail = _get(app, f"/api/studies/{entry['study_id']}")
    assert status.startswith("200"), detail
    study = sweep.study()
    shown = {trial["number"]: trial for trial in detail["trials"]}
    assert sorted(shown) == [trial.number for trial in study.get_trials()]
    for trial in study.get_trials():
        seen = shown[trial.number]
        assert seen["state"] == trial.state.name.capitalize()
        params = {p["name"]: p["param_external_value"] for p in seen["params"]}
        assert params == {name: str(value) for name, value in trial.params.items()}
        if trial.state == TrialState.COMPLETE:
            assert seen["values"] == [trial.value]
    assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]


# ---------------------------------------------------------------------- TensorBoard


def _event_scalars(directory: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the tfevents files of ``directory``: ``{tag: {step: value}}``.
    Each record is checked: length, its masked CRC-32C, the payload, the payload's CRC."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    scalars: dict[str, dict[int, float]] = {}
    files = sorted(directory.glob("events.out.tfevents.*"))
    assert files, f"no event file in {directory}"
    for path in files:
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            header = data[offset : offset + 8]
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
            assert length_crc == masked_crc32c(header), f"corrupt record length in {path}"
            payload = data[offset + 12 : offset + 12 + length]
            (payload_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
            assert payload_crc == masked_crc32c(payload), f"corrupt record in {path}"
            offset += 16 + length
            event = Event.FromString(payload)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def _trial_directory(sweep: Sweep, trial_id: str) -> Path:
    (directory,) = sweep.directory.glob(f"tune/*_{trial_id}_*")
    return directory


@pytest.mark.ray
def test_tensorboard_event_files_hold_the_reported_metrics(sweep: Sweep) -> None:
    for trial_id, summary in sweep.trials().items():
        scalars = _event_scalars(_trial_directory(sweep, trial_id))
        if summary.status == "failed":
            # its only result carried the error (NaN objective): no measurement to show
            assert not any(tag.startswith("ray/tune/") for tag in scalars), scalars.keys()
            continue
        rows = sweep.rows(trial_id)
        assert sorted(rows) == [1, 2]
        for metric in METRICS:
            logged = scalars[f"ray/tune/{metric}"]
            assert sorted(logged) == sorted(rows)
            for step, value in logged.items():  # event files hold float32
                assert value == pytest.approx(rows[step][metric], rel=1e-6)


# --------------------------------------------------------------------------- MLflow


@pytest.mark.ray
@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed")
def test_mlflow_has_one_run_per_trial_with_its_metrics(sweep: Sweep) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep.tracking_uri)
    experiment = client.get_experiment_by_name("compat-runs")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    by_trial = {run.data.tags[TRIAL_TAG]: run for run in runs}
    stored = sweep.trials()
    assert sorted(by_trial) == sorted(stored) and len(runs) == len(stored)
    for trial_id, summary in stored.items():
        run = by_trial[trial_id]
        assert run.data.tags[SWEEP_TAG] == SWEEP_ID
        assert run.data.tags["team"] == "search"
        assert run.data.params == {k: str(v) for k, v in _params_of(summary).items()}
        if summary.status == "failed":
            assert run.info.status == "FAILED"
            assert run.data.metrics == {}, "the error's NaN placeholders are no measurement"
            continue
        assert run.info.status == "FINISHED"
        rows = sweep.rows(trial_id)
        for metric in METRICS:
            history = client.get_metric_history(run.info.run_id, metric)
            assert {m.step: m.value for m in history} == {
                step: row[metric] for step, row in rows.items()
            }
        assert "config/training.lr" not in run.data.metrics  # Tune's bookkeeping stays out
        assert "training_iteration" not in run.data.metrics


# ------------------------------------------------------------ the `logging` section


def test_logging_is_off_by_default() -> None:
    spec = parse_spec("name: quiet\n")
    assert spec.logging.tensorboard is False and spec.logging.mlflow is None
    assert logger_callbacks(spec, Path("unused")) == []


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed")
def test_mlflow_defaults_to_a_store_in_the_sweep_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from morphtune.searchers._loggers import MLflowCallback

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = parse_spec("name: runs\nlogging: {mlflow: {}}\n")
    (callback,) = logger_callbacks(spec, tmp_path)
    assert isinstance(callback, MLflowCallback)
    assert callback.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert callback.experiment_name == "runs"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    (callback,) = logger_callbacks(spec, tmp_path)
    assert callback.tracking_uri == "http://127.0.0.1:5000"
    spec = parse_spec("name: runs\nlogging: {mlflow: {tracking_uri: 'sqlite:///x.db'}}\n")
    (callback,) = logger_callbacks(spec, tmp_path)
    assert callback.tracking_uri == "sqlite:///x.db"  # the spec wins over the environment


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed")
def test_a_resumed_driver_logs_into_the_trials_run(tmp_path: Path) -> None:
    """Tune pickles the callbacks when a sweep starts and unpickles them on resume; the
    new driver finds the run the crashed one made for the trial and goes on in it."""
    from mlflow.tracking import MlflowClient
    from ray import cloudpickle
    from ray.tune.experiment import Trial

    environment = os.environ.get("MLFLOW_TRACKING_URI")
    spec = parse_spec("name: again\nlogging: {mlflow: {tags: {team: search}}}\n")
    (callback,) = logger_callbacks(spec, tmp_path)
    pickled = cloudpickle.dumps(callback)
    trial = Trial("morphtune_trial", config={"training.lr": 0.1}, trial_id="abc123", stub=True)
    first = cloudpickle.loads(pickled)
    first.setup()
    first.log_trial_start(trial)
    first.log_trial_result(1, trial, {"training_iteration": 1, "val_acc": 0.5, "pid": 7})
    # the driver dies here: the run is never ended
    second = cloudpickle.loads(pickled)
    second.setup()
    second.log_trial_start(trial)
    second.log_trial_result(2, trial, {"training_iteration": 2, "val_acc": 0.75})
    failed = {"training_iteration": 3, "val_acc": float("nan"), "trial_error": "diverged"}
    second.log_trial_result(3, trial, failed)
    second.log_trial_end(trial)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "again"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"  # its last result carried the trial's error
    assert run.data.params == {"training.lr": "0.1"}
    assert run.data.tags[TRIAL_TAG] == "abc123" and run.data.tags["team"] == "search"
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert {m.step: m.value for m in history} == {1: 0.5, 2: 0.75}
    assert "pid" not in run.data.metrics
    # nothing process-wide changed: a later sweep here must not log into this store
    assert os.environ.get("MLFLOW_TRACKING_URI") == environment


@pytest.mark.parametrize(
    ("section", "path", "words"),
    [
        ("{mlflow: {tracking_uri: ./mlruns}}", "logging.mlflow.tracking_uri", "not a bare path"),
        ("{mlflow: {tracking_uri: 'ftp://h/x'}}", "logging.mlflow.tracking_uri", "scheme"),
        (
            "{mlflow: {tracking_uri: 'https://me:secret@h:5000'}}",
            "logging.mlflow.tracking_uri",
            "MLFLOW_TRACKING_PASSWORD",
        ),
        ("{mlflow: {tags: {mlflow.user: x}}}", "logging.mlflow.tags", "reserves"),
        ("{mlflow: {experiment: ''}}", "logging.mlflow.experiment", "at least 1"),
        ("{wandb: true}", "logging.wandb", "unknown key"),
        ("{tensorboard: sometimes}", "logging.tensorboard", "boolean"),
        ("{mlflow: true}", "logging.mlflow", "dictionary"),
    ],
)
def test_a_bad_logging_section_names_the_field_and_line(
    section: str, path: str, words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(f"name: bad\nlogging: {section}\n")
    (issue,) = caught.value.issues
    assert issue.path == path and issue.line == 2
    assert words in issue.rule


@pytest.fixture
def no_logger_packages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if neither tensorboardX nor mlflow were installed (``None`` in ``sys.modules``
    is how Python marks a module that cannot be imported)."""
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    yield


def test_a_missing_logger_package_is_a_spec_error(no_logger_packages: None) -> None:
    text = "name: nopkg\nlogging:\n  tensorboard: true\n  mlflow: {experiment: e}\n"
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    issues = {issue.path: issue for issue in caught.value.issues}
    assert sorted(issues) == ["logging.mlflow", "logging.tensorboard"]
    assert issues["logging.tensorboard"].line == 3
    assert "pip install tensorboardX" in issues["logging.tensorboard"].rule
    assert "pip install mlflow-skinny" in issues["logging.mlflow"].rule
    # a spec made in Python skips the checks of parse_spec: it is stopped where the sweep
    # builds its callbacks
    spec = SweepSpec.model_validate(
        {"name": "nopkg", "logging": {"tensorboard": True, "mlflow": {"experiment": "e"}}}
    )
    with pytest.raises(SpecError, match="pip install tensorboardX"):
        logger_callbacks(spec, Path("unused"))


def test_spec_check_exits_2_on_a_missing_logger_package(
    no_logger_packages: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from morphtune.cli import main

    path = tmp_path / "sweep.yaml"
    path.write_text("name: nopkg\nlogging: {tensorboard: true}\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["spec", "check", str(path)])
    assert exited.value.code == 2
    assert "logging.tensorboard" in capsys.readouterr().err
