"""The ``morphtune`` command.

Heavy imports (torch, Ray, gRPC) happen inside the subcommand that needs them, so
``morphtune best`` starts in a fraction of a second and ``morphtune spec check`` never
starts Ray.

Exit status: 0 success, 1 runtime failure (a gRPC error, a failed sweep), 2 bad input
(an invalid spec, a bad argument).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from morphtune._cli_jobs import add_job_commands
from morphtune._cli_query import add_query_commands, format_best
from morphtune._cli_report import add_report_command
from morphtune._serve_cli import add_serve_arguments

__all__ = ["format_best", "main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_SERVER = "127.0.0.1:50051"


def _load_spec_or_exit(path: str) -> Any:
    from morphtune.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


def _spec_from_env_or_exit(name: str) -> Any:
    """The spec in environment variable ``name`` (how SubmitSweep ships it to a Ray job)."""
    import os

    from morphtune.spec import SpecError, parse_spec

    text = os.environ.get(name)
    if not text:
        print(f"error: --spec-env {name}: the variable is unset or empty", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    try:
        return parse_spec(text, source=f"${name}")
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


def _cmd_run(args: argparse.Namespace) -> int:
    if (args.spec is None) == (args.spec_env is None):
        print("error: run needs exactly one of SPEC (a file) or --spec-env VAR", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.spec_env is not None:
        spec = _spec_from_env_or_exit(args.spec_env)
    else:
        spec = _load_spec_or_exit(args.spec)  # validated before Ray starts
    from morphtune.runner import SweepExistsError, run_sweep

    display = _progress_display(args.progress)
    try:
        with _stdout_for(args.progress):
            outcome = run_sweep(
                spec,
                address=args.address,
                results_root=args.results,
                sweep_id=args.sweep_id,
                overwrite=args.overwrite,
                verbose=args.verbose,
                progress=display,
                progress_interval_s=args.progress_interval,
            )
    except SweepExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _print_outcome(outcome, args.progress)
    return EXIT_OK


def _progress_display(mode: str) -> Any:
    """The display of ``--progress MODE``: JSON lines go to stdout (with the summary, for
    machines), status lines to stderr (stdout keeps the summary alone)."""
    from morphtune.progress import ProgressDisplay

    return ProgressDisplay(mode, sys.stdout if mode == "json" else sys.stderr)


def _stdout_for(mode: str) -> Any:
    """With ``--progress json``, stdout carries JSON lines only: whatever else the sweep
    prints meanwhile (Tune's tables, forwarded worker output) goes to stderr. The display
    keeps the real stdout, taken before."""
    import contextlib

    if mode == "json":
        return contextlib.redirect_stdout(sys.stderr)
    return contextlib.nullcontext()


def _print_outcome(outcome: Any, mode: str) -> None:
    """The sweep's summary: indented JSON, or with ``--progress json`` one JSON line (event
    ``summary``) after the progress lines, so every line of stdout is one JSON object."""
    summary = _outcome_summary(outcome)
    if mode == "json":
        print(json.dumps({"event": "summary", **summary}, default=str), flush=True)
    else:
        print(json.dumps(summary, indent=2, default=str))


def _outcome_summary(outcome: Any) -> dict[str, Any]:
    summary = {
        "sweep_id": outcome.sweep_id,
        "results": str(outcome.results_dir),
        "wall_s": round(outcome.wall_s, 1),
        "trials": outcome.trial_states,
        "best": outcome.best,
    }
    if outcome.pareto is not None:
        summary["pareto"] = outcome.pareto
    if outcome.subnets is not None:
        summary["subnets"] = outcome.subnets
    return summary


def _cmd_resume(args: argparse.Namespace) -> int:
    from morphtune.runner import resume_sweep

    display = _progress_display(args.progress)
    try:
        with _stdout_for(args.progress):
            outcome = resume_sweep(
                args.sweep,
                results_root=args.results,
                address=args.address,
                verbose=args.verbose,
                progress=display,
                progress_interval_s=args.progress_interval,
            )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _print_outcome(outcome, args.progress)
    return EXIT_OK


def _cmd_spec(args: argparse.Namespace) -> int:
    if args.action == "schema":
        from morphtune.spec import SweepSpec

        print(json.dumps(SweepSpec.model_json_schema(), indent=2))
        return EXIT_OK
    if args.file is None:
        print(f"error: morphtune spec {args.action} needs a FILE", file=sys.stderr)
        return EXIT_BAD_INPUT
    spec = _load_spec_or_exit(args.file)
    if args.action == "check":
        print(f"{args.file}: ok (sweep {spec.name!r}, {len(spec.search.space)} searched keys)")
    else:
        print(spec.to_yaml(), end="")
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from morphtune._serve_cli import run_serve

    return run_serve(args, args.results)


def _best_checkpoint(results: str, sweep: str) -> str:
    """The checkpoint of the sweep's best trial (its objective, each trial's last report)."""
    from morphtune.store import SweepStore

    best = SweepStore(results).best(sweep)
    path = best.metrics.get("checkpoint_path")
    if not path:
        raise ValueError(
            f"the best trial {best.trial_id} of sweep {sweep!r} (iteration {best.iteration}) "
            "reported no checkpoint_path"
        )
    return str(path)


def _is_checkpoint_argument(value: str) -> bool:
    """Whether export's positional argument names a checkpoint (a file, a directory
    holding ``trial_state.pt``, or any path) rather than a sweep id."""
    from pathlib import Path

    from morphtune.methods.sparsity._export import CHECKPOINT_FILE

    path = Path(value)
    if path.is_file() or (path.is_dir() and (path / CHECKPOINT_FILE).is_file()):
        return True
    return "/" in value or "\\" in value or value.endswith(".pt")


def _cmd_export(args: argparse.Namespace) -> int:
    sources = [args.source is not None, args.check is not None, args.best is not None]
    if sum(sources) != 1:
        print(
            "error: give exactly one of SWEEP (export its best trial, or --trial ID), "
            "CHECKPOINT (to export), --best SWEEP (export the sweep's best trial as a sparse "
            "file) or --check FILE",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if args.source is not None and not _is_checkpoint_argument(args.source):
        return _export_sweep(args)
    chosen = [
        flag
        for flag, value in (
            ("--trial", args.trial),
            ("--iteration", args.iteration),
            ("--metric", args.metric),
            ("--mode", args.mode),
            ("--subnet", args.subnet),
        )
        if value is not None
    ]
    if args.verify:
        chosen.append("--verify")
    if chosen:
        print(f"error: {', '.join(chosen)} go with export SWEEP, not here", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.format in ("auto", "torch"):
        print(
            f"error: --format {args.format} goes with export SWEEP; a checkpoint or --best "
            "is written as a sparse file (--format csr or bitmask)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    args.checkpoint = args.source
    if args.best is not None:
        try:
            args.checkpoint = _best_checkpoint(args.results, args.best)
        except (LookupError, ValueError) as exc:  # no such sweep, no results, no checkpoint
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.checkpoint is not None and args.output is None:
        print("error: export needs -o/--output OUT for the sparse file", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.check is not None and args.output is not None:
        print("error: --check reads FILE; it takes no -o/--output", file=sys.stderr)
        return EXIT_BAD_INPUT
    from morphtune.methods.sparsity._export import export_checkpoint, load_sparse

    try:
        if args.check is None:
            info = export_checkpoint(args.checkpoint, args.output, fmt=args.format or "csr")
            print(info.summary())
            return EXIT_OK
        if _is_torch_archive(args.check):  # a model file export SWEEP wrote as torch
            from morphtune.export import load_exported

            model = load_exported(args.check).model
        else:
            model = load_sparse(args.check)
    except (FileNotFoundError, IsADirectoryError, ValueError) as exc:
        # SparseFormatError is a ValueError: a corrupt or foreign file is bad input.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # cannot write the output (permissions, a full disk)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(format_sparse_model(args.check, model))
    return EXIT_OK


def _is_torch_archive(path: str) -> bool:
    """Whether ``path`` is a ``torch.save`` zip archive (not a sparse export)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return "header.json" not in names and any(name.endswith("/data.pkl") for name in names)


def _export_sweep(args: argparse.Namespace) -> int:
    """``export SWEEP [--trial ID] -o OUT``: a trial's model as a standalone file."""
    if args.output is None:
        print("error: export SWEEP needs -o/--output OUT for the model file", file=sys.stderr)
        return EXIT_BAD_INPUT
    from morphtune.export import ExportMismatch, export_trial

    try:
        result = export_trial(
            args.results,
            args.source,
            args.output,
            trial_id=args.trial,
            iteration=args.iteration,
            metric=args.metric,
            mode=args.mode,
            subnet=args.subnet,
            fmt=args.format or "auto",
            verify=args.verify,
        )
    except (LookupError, ValueError) as exc:
        # unknown sweep, trial or iteration; no finished result; no checkpoint; a bad
        # subnet or output path (ExportError, SweepNotFound and NoResults among them)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ExportMismatch, OSError) as exc:  # a model that does not reproduce; a full disk
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    return EXIT_OK


def format_sparse_model(path: str, model: Any) -> str:
    """One line about a model loaded from a sparse export: family, size, density."""
    from morphtune.methods.sparsity._masks import find_masks

    config = model.config
    params = sum(param.numel() for param in model.parameters())
    masks = find_masks(model)
    masked = sum(mask.numel() for mask in masks.values())
    kept = sum(int(mask.sum()) for mask in masks.values())
    density = f"density {kept / masked:.4f}" if masked else "no masks"
    return (
        f"{path}: ok ({config.family}, width {config.width}, depth {config.depth}, "
        f"{params:,} params, {len(masks)} masked tensors, {density})"
    )


def _progress_flags(parser: argparse.ArgumentParser) -> None:
    from morphtune.progress import PROGRESS_MODES, interval_seconds

    parser.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="live progress: auto (a line updated in place on a terminal, else plain), plain "
        "(a status line on stderr per change), json (JSON lines on stdout, then the summary "
        "as one JSON line), quiet (only the summary)",
    )
    parser.add_argument(
        "--progress-interval",
        type=interval_seconds,
        default=2.0,
        metavar="SECONDS",
        help="how often progress is read from the results store (default 2)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="morphtune",
        description="Search how to scale a neural network: growth, sparsity, subnet choice.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sweep spec on local or remote Ray")
    run.add_argument("spec", nargs="?", help="sweep spec YAML file")
    run.add_argument(
        "--spec-env", metavar="VAR", help="read the spec YAML from environment variable VAR"
    )
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    run.add_argument("--results", help="results root (default: the spec's storage.results)")
    run.add_argument("--sweep-id", help="sweep id (default: the spec's name)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing sweep's results")
    run.add_argument("-v", "--verbose", action="count", default=0, help="Tune/Ray output")
    _progress_flags(run)
    run.set_defaults(handler=_cmd_run)

    resume = sub.add_parser(
        "resume", help="continue a sweep whose driver stopped, where it left off"
    )
    resume.add_argument("sweep", help="sweep id")
    resume.add_argument("--results", default="./morphtune-results", help="results root")
    resume.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    resume.add_argument("-v", "--verbose", action="count", default=0, help="Tune/Ray output")
    _progress_flags(resume)
    resume.set_defaults(handler=_cmd_resume)

    spec = sub.add_parser(
        "spec", help="check a sweep spec, show it resolved, or print the JSON Schema"
    )
    spec.add_argument("action", choices=["check", "show", "schema"])
    spec.add_argument("file", nargs="?")
    spec.set_defaults(handler=_cmd_spec)

    serve = sub.add_parser("serve", help="serve the results store over gRPC (+ /metrics)")
    serve.add_argument("--results", default="./morphtune-results", help="results root")
    add_serve_arguments(serve)  # host, port, metrics, tokens, TLS, limits, --ray-address
    serve.set_defaults(handler=_cmd_serve)

    add_query_commands(sub)  # sweeps, trials, best, pareto, watch (gRPC clients)
    add_job_commands(sub)  # submit, status, cancel, logs (the Ray Jobs API of a cluster)
    add_report_command(sub)  # report: a self-contained HTML report of a sweep

    export = sub.add_parser(
        "export",
        help="write a sweep's trial (default: the best) as a standalone model file; "
        "or a trial checkpoint as a sparse file, or --check one",
    )
    export.add_argument(
        "source",
        nargs="?",
        metavar="SWEEP|CHECKPOINT",
        help="a sweep id under --results, or a trial_state.pt (or its directory)",
    )
    export.add_argument("-o", "--output", help="model file to write")
    export.add_argument("--trial", metavar="ID", help="with SWEEP: the trial (default: the best)")
    export.add_argument(
        "--iteration",
        type=int,
        metavar="N",
        help="with SWEEP: the checkpointed iteration (default: the latest still on disk)",
    )
    export.add_argument(
        "--metric", help="with SWEEP: choose the best trial by this metric (default: objective)"
    )
    export.add_argument("--mode", choices=["max", "min"], help="with --metric: its direction")
    export.add_argument(
        "--subnet",
        metavar="S",
        help="with SWEEP, a supernet trial: largest (default), smallest, a JSON object or "
        "name=value pairs (width=32,depth=1)",
    )
    export.add_argument(
        "--format",
        choices=["auto", "torch", "csr", "bitmask"],
        default=None,
        help="the file: auto (SWEEP's default: sparse csr for a masked model, else a torch "
        "checkpoint), torch, or masked weights as csr (a CHECKPOINT's default) or bitmask",
    )
    export.add_argument(
        "--verify",
        action="store_true",
        help="with SWEEP: re-measure the written model's validation accuracy and require "
        "the stored one",
    )
    export.add_argument(
        "--check", metavar="FILE", help="load an exported model file back and describe it"
    )
    export.add_argument(
        "--best", metavar="SWEEP", help="export the checkpoint of the sweep's best trial"
    )
    export.add_argument(
        "--results", default="./morphtune-results", help="results root (with SWEEP or --best)"
    )
    export.set_defaults(handler=_cmd_export)

    demo = sub.add_parser("demo", help="run a sweep, serve it, read the best config over gRPC")
    demo.add_argument("spec", help="sweep spec YAML file")
    demo.add_argument("--results", help="results root (default: the spec's storage.results)")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _cmd_demo(args: argparse.Namespace) -> int:
    spec = _load_spec_or_exit(args.spec)
    from morphtune.demo import run_demo

    return run_demo(spec, results_root=args.results)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
