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

    try:
        outcome = run_sweep(
            spec,
            address=args.address,
            results_root=args.results,
            sweep_id=args.sweep_id,
            overwrite=args.overwrite,
            verbose=args.verbose,
        )
    except SweepExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(_outcome_summary(outcome), indent=2, default=str))
    return EXIT_OK


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

    try:
        outcome = resume_sweep(
            args.sweep, results_root=args.results, address=args.address, verbose=args.verbose
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(_outcome_summary(outcome), indent=2, default=str))
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


def _cmd_export(args: argparse.Namespace) -> int:
    sources = [args.checkpoint is not None, args.check is not None, args.best is not None]
    if sum(sources) != 1:
        print(
            "error: give exactly one of CHECKPOINT (to export), --best SWEEP (export the "
            "sweep's best trial) or --check FILE",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
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
            info = export_checkpoint(args.checkpoint, args.output, fmt=args.format)
            print(info.summary())
            return EXIT_OK
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
    run.set_defaults(handler=_cmd_run)

    resume = sub.add_parser(
        "resume", help="continue a sweep whose driver stopped, where it left off"
    )
    resume.add_argument("sweep", help="sweep id")
    resume.add_argument("--results", default="./morphtune-results", help="results root")
    resume.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    resume.add_argument("-v", "--verbose", action="count", default=0, help="Tune/Ray output")
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

    export = sub.add_parser(
        "export", help="write a trial checkpoint as a sparse file, or --check one"
    )
    export.add_argument("checkpoint", nargs="?", help="trial_state.pt or its directory")
    export.add_argument("-o", "--output", help="sparse file to write")
    export.add_argument(
        "--format",
        choices=["csr", "bitmask"],
        default="csr",
        help="masked weights as (default csr)",
    )
    export.add_argument("--check", metavar="FILE", help="load a sparse file back and describe it")
    export.add_argument(
        "--best", metavar="SWEEP", help="export the checkpoint of the sweep's best trial"
    )
    export.add_argument(
        "--results", default="./morphtune-results", help="results root (with --best)"
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
