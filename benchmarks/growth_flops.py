"""P7 growth FLOPs-to-target: training FLOPs a grown model needs to reach scratch's loss.

For each workload (a big model on a dataset) and each registered growth operator that
supports the model family, it measures the cumulative training FLOPs needed to reach the
final validation loss of the big model trained from scratch, **counting the small
model's training before growth** (METHODS §4: LEMON / G_stack), as a ratio to scratch's
FLOPs from the same run:

- **scratch**: the big config for ``B`` epochs (cosine LR). Per seed, the target is its
  final validation loss, and its FLOPs-to-target is its cumulative training FLOPs at the
  first evaluation (one per epoch) with ``val_loss <= target``.
- **growth arms** (one per operator and ``lr_after``): a small config grows into the
  same big config at ``--grow-at`` of a longer budget (``--growth-budget`` x ``B``
  epochs), then trains on. FLOPs-to-target: the engine's cumulative ``train_flops``
  (small phase included) at the first evaluation reaching the seed's target; a run that
  never reaches it is reported as not reached (ratio ``inf``), never clipped. The small
  config is the big one shrunk in width and depth where the operator can grow both,
  otherwise in the one dimension it can grow (G_stack: depth only).
- **small-alone control**: each small config trained alone for the growth budget; if it
  reaches the target, the workload is too easy for the arms that start from it.

Every arm uses the same fixed hyper-parameters (optimizer, peak LR, batch, cosine
schedule), chosen on scratch in a pilot; ``--lrs`` gives every arm the same LR grid
instead (each arm keeps its best LR). Runs go two at a time (one thread each); runs
stop at the first evaluation that reaches the target (``--full-curves`` trains on).
The text workload rotates over ``slices`` fixed slices of its training windows, one per
engine epoch, so FLOPs-to-target is resolved to a fraction of a pass over the corpus.

    .venv/bin/python benchmarks/growth_flops.py [--quick] [--seeds 2] [--workloads vit,gpt,cnn]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.data import TensorDataset

from morphtune.data import DatasetSplit, load_dataset
from morphtune.flops import config_cost
from morphtune.methods.growth import (
    GROWTH_OPERATORS,
    GrowthOptions,
    check_growth,
    growth_target,
)
from morphtune.models import TaskShape, config_from_spec
from morphtune.spec import parse_spec, resolve_trial_config
from morphtune.trainables import TrialEngine

GOAL_RATIO = 0.70  # LEMON reports 0.43 (ViT) and 0.67 (BERT) counting the small model
LR_AFTER = ("lemon", "continue")


@dataclass(frozen=True)
class Workload:
    """A big model on a dataset, its scratch budget and the shared hyper-parameters."""

    key: str
    title: str
    family: str
    dataset: dict[str, Any]  # name, options, val_fraction
    width: int
    depth: int
    width_div: int  # the small model is width / width_div wide (where the operator can)
    depth_div: int  # ... and depth / depth_div deep
    epochs: int  # scratch budget B, in engine epochs
    lr: float
    batch_size: int
    optimizer: str = "adam"
    slices: int = 1  # >1: each engine epoch trains on one fixed slice of the train set
    model: dict[str, Any] = field(default_factory=dict)  # extra model-section fields


WORKLOADS: dict[str, Workload] = {
    "vit": Workload(
        key="vit_digits",
        title="ViT on scikit-learn digits (1x8x8, patch 2: 16 patches + class token)",
        family="vit",
        dataset={"name": "digits", "options": {}, "val_fraction": 0.2},
        width=64,
        depth=4,
        # a half-width, half-depth ViT (32x2) alone reaches the 64x4 scratch loss on
        # digits (pilot: 0.16-0.19 vs 0.17-0.25), so the small model is a quarter as wide
        width_div=4,
        depth_div=2,
        epochs=30,
        lr=1e-3,  # scratch pilot, mean final val loss of 2 seeds: 5e-4 0.184, 1e-3 0.172
        batch_size=64,
    ),
    "gpt": Workload(
        key="gpt_text",
        title="byte-level GPT on the Python standard library's sources (context 64)",
        family="gpt",
        dataset={
            "name": "text",
            "options": {"context": 64, "max_bytes": 400_000},
            "val_fraction": 0.05,
        },
        width=64,
        depth=4,
        width_div=2,
        depth_div=2,
        epochs=12,  # engine epochs of one quarter pass each: 3 passes
        # scratch pilot, mean final val loss of 2 seeds: 3e-3 1.59, 6e-3 1.38, 1e-2 1.33,
        # 1.5e-2 1.40
        lr=1e-2,
        batch_size=32,
        slices=4,
    ),
    "cnn": Workload(
        key="cnn_digits",
        title="ResNet-style CNN on scikit-learn digits (2 stages)",
        family="cnn",
        dataset={"name": "digits", "options": {}, "val_fraction": 0.2},
        width=16,
        depth=2,
        width_div=2,
        depth_div=2,
        epochs=20,
        lr=1e-2,  # scratch pilot (seed 0): 1e-3 0.072, 3e-3 0.061, 1e-2 0.054
        batch_size=64,
    ),
}


def quick(workload: Workload) -> Workload:
    """A smoke-test size of a workload (checks the mechanics, not the claim)."""
    if workload.family == "gpt":
        options = {**workload.dataset["options"], "max_bytes": 60_000}
        return replace(
            workload, epochs=4, slices=2, dataset={**workload.dataset, "options": options}
        )
    return replace(workload, epochs=6)


# ---------------------------------------------------------------------------- data


class RotatingSlices(TensorDataset):
    """The training windows in ``slices`` fixed random slices; ``slice`` picks the one an
    epoch sees (set before each engine epoch), so ``slices`` epochs make one pass."""

    def __init__(self, base: TensorDataset, slices: int, seed: int) -> None:
        super().__init__(*base.tensors)
        size = len(base) // slices
        order = torch.randperm(len(base), generator=torch.Generator().manual_seed(seed))
        self.index = order[: size * slices].view(slices, size)
        self.slices = slices
        self.slice = 0

    def __len__(self) -> int:
        return int(self.index.shape[1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return super().__getitem__(int(self.index[self.slice, i]))


_DATA: dict[str, DatasetSplit] = {}


def workload_data(workload: Workload) -> DatasetSplit:
    """The workload's split (seed 0, cached per process), train slices where it has them."""
    cache_key = f"{workload.dataset!r}/{workload.slices}"
    if cache_key not in _DATA:
        ds = workload.dataset
        data = load_dataset(ds["name"], seed=0, val_fraction=ds["val_fraction"], **ds["options"])
        if workload.slices > 1:
            data = replace(data, train=RotatingSlices(data.train, workload.slices, seed=0))
        _DATA[cache_key] = data
    return _DATA[cache_key]


# --------------------------------------------------------------------------- trials


def spec_text(workload: Workload) -> str:
    ds = workload.dataset
    options = ", ".join(f"{k}: {v}" for k, v in ds["options"].items())
    model = ", ".join(f"{k}: {v}" for k, v in workload.model.items())
    return f"""
name: p7-{workload.family}
dataset: {{name: {ds["name"]}, val_fraction: {ds["val_fraction"]}, options: {{{options}}}}}
model: {{family: {workload.family}{", " + model if model else ""}}}
training:
  epochs: {workload.epochs}
  batch_size: {workload.batch_size}
  optimizer: {workload.optimizer}
  lr: {workload.lr}
  schedule: cosine
search: {{scheduler: {{name: fifo}}}}
"""


@dataclass(frozen=True)
class Job:
    workload: str  # WORKLOADS key
    arm: str  # "scratch", "small", or the operator
    seed: int
    lr: float
    epochs: int
    size: tuple[int, int]  # (width, depth) the run starts from
    lr_after: str = "-"
    at_fraction: float = 0.0
    factor: float = 1.0
    depth_factor: float = 1.0
    target: float | None = None  # stop at the first evaluation with val_loss <= target
    cost: float = 0.0  # a rough cost estimate, to start long runs first

    @property
    def name(self) -> str:
        if self.arm == "scratch":
            return "scratch"
        if self.arm == "small":
            return f"small alone {self.size[0]}x{self.size[1]}"
        return f"{self.arm} (lr_after {self.lr_after})"


def trial_config(workload: Workload, job: Job) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "model.width": job.size[0],
        "model.depth": job.size[1],
        "training.seed": job.seed,
        "training.lr": job.lr,
        "training.epochs": job.epochs,
    }
    if job.arm not in ("scratch", "small"):
        overrides.update(
            {
                "growth.operator": job.arm,
                "growth.at_fraction": job.at_fraction,
                "growth.factor": job.factor,
                "growth.depth_factor": job.depth_factor,
                "growth.lr_after": job.lr_after,
            }
        )
    return resolve_trial_config(parse_spec(spec_text(workload)), overrides)


def run_job(job_and_workload: tuple[Job, Workload]) -> dict[str, Any]:
    """Train one run; the curve is ``(epoch, step, train_flops, val_loss, stage)`` per
    evaluation (one per engine epoch)."""
    job, workload = job_and_workload
    torch.set_num_threads(1)
    data = workload_data(workload)
    engine = TrialEngine(trial_config(workload, job), data)
    started = time.perf_counter()
    curve: list[tuple[int, int, float, float, int]] = []
    while engine.epoch < engine.epochs:
        if isinstance(data.train, RotatingSlices):
            data.train.slice = engine.epoch % data.train.slices
        engine.train_epoch()
        metrics = engine.metrics()
        curve.append(
            (
                engine.epoch,
                engine.step,
                float(metrics["train_flops"]),
                float(metrics["val_loss"]),
                int(metrics["growth_stage"]),
            )
        )
        if job.target is not None and metrics["val_loss"] <= job.target:
            break
    grown = (engine.model_config.width, engine.model_config.depth)
    if engine.grown and grown != (workload.width, workload.depth):
        raise RuntimeError(f"{job.name} grew into {grown}, not {workload.width}x{workload.depth}")
    return {
        "job": job,
        "curve": curve,
        "wall_s": time.perf_counter() - started,
        "final_size": grown,
    }


def flops_to_target(curve: list[tuple[int, int, float, float, int]], target: float) -> float:
    for _, _, flops, val_loss, _ in curve:
        if val_loss <= target:
            return flops
    return math.inf


# ------------------------------------------------------------------------ planning


def same_config(a: Any, b: Any) -> bool:
    if hasattr(a, "ln_eps"):
        a = replace(a, ln_eps=b.ln_eps)
    return bool(a == b)


def growth_arms(workload: Workload) -> dict[str, tuple[tuple[int, int], float, float]]:
    """``operator -> ((width, depth) of its small config, factor, depth_factor)`` for every
    registered operator that can grow the family into exactly the big config."""
    task = TaskShape.of(workload_data(workload))
    model = {"family": workload.family, "head_dim": 16, **workload.model}
    big = config_from_spec(
        workload.family, task, {**model, "width": workload.width, "depth": workload.depth}
    )
    w_small = max(1, workload.width // workload.width_div)
    d_small = max(1, workload.depth // workload.depth_div)
    candidates = [(w_small, d_small), (workload.width, d_small), (w_small, workload.depth)]
    arms = {}
    for name in sorted(GROWTH_OPERATORS):
        op = GROWTH_OPERATORS.get(name)
        if workload.family not in op.families:
            continue
        for width, depth in dict.fromkeys(candidates):
            if (width, depth) == (workload.width, workload.depth):
                continue
            try:
                small = config_from_spec(
                    workload.family, task, {**model, "width": width, "depth": depth}
                )
                factor, depth_factor = workload.width / width, workload.depth / depth
                target = growth_target(small, factor, depth_factor)
                if not same_config(target, big):
                    continue
                check_growth(small, target, name, GrowthOptions())
            except ValueError:
                continue
            arms[name] = ((width, depth), factor, depth_factor)
            break
        else:
            print(
                f"  note: {name} supports {workload.family} but cannot grow any small "
                f"config into {workload.width}x{workload.depth}; skipped"
            )
    return arms


def big_flops(workload: Workload, size: tuple[int, int]) -> float:
    task = TaskShape.of(workload_data(workload))
    model = {"family": workload.family, "head_dim": 16, **workload.model}
    config = config_from_spec(workload.family, task, {**model, "width": size[0], "depth": size[1]})
    return float(config_cost(workload.family, config).flops)


def run_all(
    jobs: list[Job], workloads: dict[str, Workload], processes: int
) -> list[dict[str, Any]]:
    ordered = sorted(jobs, key=lambda job: -job.cost)
    payload = [(job, workloads[job.workload]) for job in ordered]
    if processes <= 1:
        return [run_job(item) for item in payload]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        return list(pool.imap_unordered(run_job, payload))


# ------------------------------------------------------------------------ reporting


def fmt(value: float, spec: str = ".3g") -> str:
    return "inf" if math.isinf(value) else format(value, spec)


def mean_or_inf(values: Iterable[float]) -> float:
    values = list(values)
    return math.inf if any(math.isinf(v) for v in values) else statistics.fmean(values)


@dataclass
class ArmSummary:
    name: str
    start: str
    lr: float
    flops: list[float]  # per seed FLOPs-to-target
    ratios: list[float]  # per seed, vs scratch of that seed
    best_val: list[float]  # per seed, the lowest val loss seen (where it stopped, if reached)

    @property
    def reached(self) -> int:
        return sum(not math.isinf(f) for f in self.flops)

    @property
    def ratio(self) -> float:
        return mean_or_inf(self.ratios)

    def key(self) -> tuple[float, int, float]:
        return (self.ratio, -self.reached, statistics.fmean(self.best_val))


def summarise(
    results: list[dict[str, Any]],
    targets: dict[int, float],
    scratch_flops: dict[int, float],
) -> ArmSummary:
    """One arm's summary at its best LR (the grid's lowest mean ratio)."""
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for result in results:
        by_lr.setdefault(result["job"].lr, []).append(result)
    summaries = []
    for lr, runs in by_lr.items():
        runs = sorted(runs, key=lambda r: r["job"].seed)
        flops = [flops_to_target(r["curve"], targets[r["job"].seed]) for r in runs]
        ratios = [f / scratch_flops[r["job"].seed] for f, r in zip(flops, runs, strict=True)]
        job = runs[0]["job"]
        summaries.append(
            ArmSummary(
                name=job.name,
                start=f"{job.size[0]}x{job.size[1]}",
                lr=lr,
                flops=flops,
                ratios=ratios,
                best_val=[min(point[3] for point in r["curve"]) for r in runs],
            )
        )
    return min(summaries, key=ArmSummary.key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, 1 seed (smoke test)")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds (default 2)")
    parser.add_argument("--workloads", default="vit,gpt,cnn", help="comma list of vit, gpt, cnn")
    parser.add_argument(
        "--growth-budget",
        type=float,
        default=1.5,
        help="growth arms and small-alone runs train this many x B epochs",
    )
    parser.add_argument(
        "--grow-at",
        type=float,
        default=0.6,
        help="growth at this fraction of the growth arms' budget",
    )
    parser.add_argument(
        "--lr-after",
        default=",".join(LR_AFTER),
        help="comma list of growth.lr_after values to try (lemon, continue)",
    )
    parser.add_argument(
        "--lrs",
        default=None,
        help="comma list of peak LRs given to every arm (default: the workload's fixed LR)",
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--full-curves",
        action="store_true",
        help="train every run to its budget (no stop at the target)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 2)))
    workloads = {}
    for name in args.workloads.split(","):
        workload = WORKLOADS[name.strip()]
        workloads[workload.key] = quick(workload) if args.quick else workload
    lr_afters = [value.strip() for value in args.lr_after.split(",") if value.strip()]

    def lrs_for(workload: Workload) -> list[float]:
        return [float(v) for v in args.lrs.split(",")] if args.lrs else [workload.lr]

    # phase 1: scratch (the targets)
    jobs = [
        Job(
            key,
            "scratch",
            seed,
            lr,
            w.epochs,
            (w.width, w.depth),
            cost=w.epochs * big_flops(w, (w.width, w.depth)),
        )
        for key, w in workloads.items()
        for seed in seeds
        for lr in lrs_for(w)
    ]
    print(f"P7: {len(jobs)} scratch runs ({args.processes} at a time) ...", flush=True)
    scratch_results = run_all(jobs, workloads, args.processes)

    targets: dict[str, dict[int, float]] = {}
    scratch_flops: dict[str, dict[int, float]] = {}
    scratch_summary: dict[str, ArmSummary] = {}
    scratch_lr: dict[str, float] = {}
    for key in workloads:
        runs = [r for r in scratch_results if r["job"].workload == key]
        final_by_lr: dict[float, list[float]] = {}
        for r in runs:
            final_by_lr.setdefault(r["job"].lr, []).append(r["curve"][-1][3])
        lr = min(final_by_lr, key=lambda v: statistics.fmean(final_by_lr[v]))
        scratch_lr[key] = lr
        chosen = sorted((r for r in runs if r["job"].lr == lr), key=lambda r: r["job"].seed)
        targets[key] = {r["job"].seed: r["curve"][-1][3] for r in chosen}
        scratch_flops[key] = {
            r["job"].seed: flops_to_target(r["curve"], targets[key][r["job"].seed]) for r in chosen
        }
        scratch_summary[key] = summarise(chosen, targets[key], scratch_flops[key])

    # phase 2: growth arms and small-alone controls, stopping at the seed's target
    jobs = []
    arms_of: dict[str, dict[str, tuple[tuple[int, int], float, float]]] = {}
    for key, w in workloads.items():
        arms = growth_arms(w)
        arms_of[key] = arms
        budget = max(2, round(args.growth_budget * w.epochs))
        big = big_flops(w, (w.width, w.depth))
        for seed in seeds:
            target = None if args.full_curves else targets[key][seed]
            for lr in lrs_for(w):
                for op, (size, factor, depth_factor) in arms.items():
                    small = big_flops(w, size)
                    cost = budget * (args.grow_at * small + (1 - args.grow_at) * big)
                    for lr_after in lr_afters:
                        jobs.append(
                            Job(
                                key,
                                op,
                                seed,
                                lr,
                                budget,
                                size,
                                lr_after,
                                args.grow_at,
                                factor,
                                depth_factor,
                                target,
                                cost,
                            )
                        )
                for size in dict.fromkeys(size for size, _, _ in arms.values()):
                    jobs.append(
                        Job(
                            key,
                            "small",
                            seed,
                            lr,
                            budget,
                            size,
                            target=target,
                            cost=budget * big_flops(w, size),
                        )
                    )
    print(f"P7: {len(jobs)} growth and control runs ...", flush=True)
    results = run_all(jobs, workloads, args.processes)

    result_lines: list[str] = []
    for key, w in workloads.items():
        budget = max(2, round(args.growth_budget * w.epochs))
        data = workload_data(w)
        steps_per_epoch = math.ceil(len(data.train) / w.batch_size)
        scratch = scratch_summary[key]
        print()
        print(f"=== P7 {key}: {w.title}")
        print(
            f"big (= scratch = every grown model): {w.family} width {w.width} depth {w.depth}, "
            f"{big_flops(w, (w.width, w.depth)) / 1e6:.2f} MFLOP/sample forward; "
            f"{len(data.train)} train samples, {steps_per_epoch} steps/epoch"
            + (f" (1/{w.slices} of the train windows per epoch)" if w.slices > 1 else "")
        )
        tuning = (
            f"LR grid {args.lrs} for every arm, each arm's best"
            if args.lrs
            else f"fixed shared hyper-parameters for every arm: {w.optimizer} lr {w.lr:g}"
        )
        print(
            f"{tuning}, cosine to 0 over each run's budget, batch {w.batch_size}, "
            f"{len(seeds)} seed(s) {seeds}"
        )
        print(
            f"scratch: B = {w.epochs} epochs (lr {scratch_lr[key]:g}); growth arms and "
            f"small-alone: {budget} epochs ({args.growth_budget:g} B), growth at "
            f"{args.grow_at:g} of that (epoch {args.grow_at * budget:g}); evaluation every "
            "epoch; FLOPs = 3 x forward x samples, small phase included"
        )
        print(
            "target per seed (scratch's final val loss): "
            + ", ".join(f"seed {s}: {targets[key][s]:.4f}" for s in seeds)
        )
        big = big_flops(w, (w.width, w.depth))
        for size in dict.fromkeys(size for size, _, _ in arms_of[key].values()):
            small = big_flops(w, size) / big
            whole = budget * (args.grow_at * small + 1 - args.grow_at) / w.epochs
            print(
                f"start {size[0]}x{size[1]}: {small:.3f} x big's FLOPs per sample; a growth run "
                f"from it costs {whole:.2f} x scratch's budget if trained to its end"
            )
        header = (
            f"  {'arm':<28} {'start':>6} {'FLOPs-to-target':>15} {'ratio':>7} "
            f"{'reached':>8} {'best val':>9}  per-seed ratios"
        )
        print(header)
        print("  " + "-" * (len(header) - 2))

        def row(summary: ArmSummary, note: str = "") -> None:
            per_seed = " ".join(fmt(r, ".2f") for r in summary.ratios)
            lr_note = f" lr {summary.lr:g}" if args.lrs else ""
            print(
                f"  {summary.name:<28} {summary.start:>6} {fmt(mean_or_inf(summary.flops)):>15} "
                f"{fmt(summary.ratio, '.2f'):>7} {summary.reached:>4}/{len(seeds):<3} "
                f"{statistics.fmean(summary.best_val):>9.4f}  {per_seed}{lr_note}{note}"
            )

        row(scratch)
        arm_summaries: list[ArmSummary] = []
        controls: dict[str, ArmSummary] = {}
        for size in dict.fromkeys(size for size, _, _ in arms_of[key].values()):
            runs = [
                r
                for r in results
                if r["job"].workload == key and r["job"].arm == "small" and r["job"].size == size
            ]
            controls[f"{size[0]}x{size[1]}"] = summarise(runs, targets[key], scratch_flops[key])
        for op in arms_of[key]:
            for lr_after in lr_afters:
                runs = [
                    r
                    for r in results
                    if r["job"].workload == key
                    and r["job"].arm == op
                    and r["job"].lr_after == lr_after
                ]
                summary = summarise(runs, targets[key], scratch_flops[key])
                arm_summaries.append(summary)
                control = controls[summary.start]
                row(
                    summary,
                    "  (its small model alone reaches the target!)" if control.reached else "",
                )
        print("  small-alone controls (each small config for the growth arms' budget):")
        for control in controls.values():
            row(
                control,
                "  control FAILS: workload too easy for this start"
                if control.reached
                else "  control ok: not reached",
            )
        if not args.full_curves:
            print(
                "  (runs stop at the first evaluation reaching the target; 'best val' of a "
                "reached run is its loss there)"
            )

        # the headline counts only arms whose small model alone does not reach the target
        valid = [s for s in arm_summaries if controls[s.start].reached == 0]
        if valid:
            best = min(valid, key=ArmSummary.key)
            best_ratio = best.ratio
            print(
                f"best growth arm (among arms whose small-alone control passes): {best.name} "
                f"from {best.start}, mean ratio {fmt(best_ratio, '.2f')} "
                f"({best.reached}/{len(seeds)} seeds reached)"
            )
        else:
            best_ratio = math.nan
            print("no growth arm has a passing small-alone control: no valid best ratio")
        verdict = "PASS" if best_ratio <= GOAL_RATIO else "FAIL"
        result_lines.append(
            f"RESULT P7 {key}_best_ratio={fmt(best_ratio, '.2f')} goal=<={GOAL_RATIO:.2f} {verdict}"
        )
        for summary in arm_summaries:
            op, lr_after = summary.name.split(" (lr_after ")
            figure = f"{key}_{op}_lr{lr_after.rstrip(')')}_ratio"
            verdict = "PASS" if summary.ratio <= GOAL_RATIO else "FAIL"
            result_lines.append(
                f"RESULT P7 {figure}={fmt(summary.ratio, '.2f')} goal=<={GOAL_RATIO:.2f} {verdict}"
            )
        for start, control in controls.items():
            verdict = "PASS" if control.reached == 0 else "FAIL"
            result_lines.append(
                f"RESULT P7 {key}_small{start}_alone_reached={control.reached} goal=<1 {verdict}"
            )

    wall = time.perf_counter() - started
    total_run_s = sum(r["wall_s"] for r in scratch_results + results)
    print()
    print(
        f"total wall {wall:.0f} s ({total_run_s:.0f} s of training in "
        f"{len(scratch_results) + len(results)} runs, {args.processes} at a time)"
    )
    for line in result_lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
