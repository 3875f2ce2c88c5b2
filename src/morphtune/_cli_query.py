"""``morphtune sweeps|trials|best|pareto|watch``: query a results service over gRPC.

``watch --progress [MODE]`` polls the sweep instead and shows its progress (see
:mod:`morphtune.progress`) until the sweep has finished.

Shared flags: ``--server HOST:PORT``, ``--token`` (default ``$MORPHTUNE_TOKEN``), ``--tls``
(system roots, or ``--tls-ca FILE``; ``--tls-cert``/``--tls-key`` for mutual TLS),
``--timeout`` and ``--json``. Output is a readable table by default, JSON with ``--json``
(``watch`` prints one JSON object per line). gRPC and argument errors print one line
``error: CODE: details`` and exit 2 (bad input: INVALID_ARGUMENT, NOT_FOUND, ...) or 1.

Only argparse and json are imported here; grpc is imported by the command that runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from morphtune._keys import joined_keys

__all__ = [
    "DEFAULT_SERVER",
    "TOKEN_ENV",
    "add_query_commands",
    "format_best",
    "format_pareto",
    "format_table",
]

DEFAULT_SERVER = "127.0.0.1:50051"
TOKEN_ENV = "MORPHTUNE_TOKEN"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_BAD_INPUT_CODES = {"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "UNAUTHENTICATED"}


# ---------------------------------------------------------------------------- formatting


def format_best(best: dict[str, Any]) -> str:
    """A best-config answer (``SweepClient.best``) as a few readable lines."""
    lines = [
        f"sweep {best['sweep_id']}: best {best['metric']} ({best['mode']}) = {best['value']:.6g}",
        f"  trial {best['trial_id']}, iteration {best['iteration']}",
    ]
    lines += [f"  {key} = {value}" for key, value in sorted(joined_keys(best["config"]).items())]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart, under a header line."""
    cells = [list(header), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(row[index]) for row in cells) for index in range(len(header))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _trial_columns(rows: list[dict[str, Any]], wanted: Sequence[str]) -> list[str]:
    if wanted:
        return list(wanted)
    names: list[str] = []
    for row in rows:
        for name in row["numbers"]:
            if name.startswith("metrics.") and name not in names:
                names.append(name)
    return sorted(names)


def _value(row: dict[str, Any], column: str) -> Any:
    if column in row and not isinstance(row[column], dict):
        return row[column]
    for table in ("numbers", "texts"):
        for prefix in ("", "metrics.", "cost.", "signal.", "config."):
            if prefix + column in row[table]:
                return row[table][prefix + column]
    return None


def format_trials(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    shown = _trial_columns(rows, columns)
    header = ["trial", "iter", "state", *(name.removeprefix("metrics.") for name in shown)]
    body = [
        [row["trial_id"], row["iteration"], row["state"], *(_value(row, c) for c in shown)]
        for row in rows
    ]
    return format_table(header, body)


def format_pareto(front: dict[str, Any]) -> str:
    objectives = front["objectives"]
    names = [f"{metric} ({mode})" for metric, mode in objectives]
    lines = [
        f"sweep {front['sweep_id']}: {len(front['points'])} non-dominated of "
        f"{front['candidates']} candidates; hypervolume {front['hypervolume']:.6g} "
        f"(reference {', '.join(f'{v:.6g}' for v in front['reference'])})",
        format_table(
            ["trial", "iter", *names],
            (
                [p["trial_id"], p["iteration"], *(p["values"][m] for m, _ in objectives)]
                for p in front["points"]
            ),
        ),
    ]
    return "\n".join(lines)


def _watch_line(row: dict[str, Any]) -> str:
    metrics = ", ".join(
        f"{name.removeprefix('metrics.')}={_cell(value)}"
        for name, value in sorted(row["numbers"].items())
        if name.startswith("metrics.")
    )
    return f"{row['trial_id']} iter {row['iteration']} ({row['state']}): {metrics}"


# ------------------------------------------------------------------------------ commands


def _client(args: argparse.Namespace) -> Any:
    from morphtune.service.client import SweepClient

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as handle:
            return handle.read()

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    tls = bool(args.tls or args.tls_ca or args.tls_cert)
    return SweepClient(
        args.server,
        timeout=args.timeout,
        token=token,
        tls=tls,
        root_certificates=read(args.tls_ca),
        client_cert=read(args.tls_cert),
        client_key=read(args.tls_key),
    )


def _run(args: argparse.Namespace, action: Callable[[Any], int]) -> int:
    import grpc

    try:
        with _client(args) as client:
            return action(client)
    except grpc.RpcError as exc:
        code = exc.code().name if exc.code() is not None else "UNKNOWN"
        print(f"error: {code}: {exc.details()}", file=sys.stderr)
        return EXIT_BAD_INPUT if code in _BAD_INPUT_CODES else EXIT_FAILED
    except (OSError, ValueError) as exc:  # unreadable certificate, bad condition text, ...
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_OK


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _cmd_sweeps(args: argparse.Namespace) -> int:
    def action(client: Any) -> int:
        if args.sweep:
            sweep = client.get_sweep(args.sweep)
            if args.json:
                _print_json(sweep)
                return EXIT_OK
            objective = sweep["objective"] or {}
            print(f"sweep {sweep['sweep_id']} ({sweep['name']}): status {sweep['status'] or '-'}")
            if objective:
                print(f"  objective {objective['metric']} ({objective['mode']})")
            counts = ", ".join(f"{state} {n}" for state, n in sweep["trial_counts"].items())
            print(f"  trials: {counts}")
            return EXIT_OK
        sweeps = client.list_sweeps()
        if args.json:
            _print_json(sweeps)
        else:
            print("\n".join(sweeps) if sweeps else "(no sweeps)")
        return EXIT_OK

    return _run(args, action)


def _cmd_trials(args: argparse.Namespace) -> int:
    def action(client: Any) -> int:
        rows = list(
            client.list_trials(
                args.sweep,
                args.where,
                order_by=args.order_by or "",
                descending=args.desc,
                scope=args.scope,
                page_size=args.page_size,
                limit=args.limit,
            )
        )
        if args.json:
            _print_json(rows)
        else:
            print(format_trials(rows, args.columns or []))
        return EXIT_OK

    return _run(args, action)


def _cmd_best(args: argparse.Namespace) -> int:
    def action(client: Any) -> int:
        best = client.best(
            args.sweep, metric=args.metric, mode=args.mode, scope=args.scope, constraints=args.where
        )
        if args.json:
            _print_json(best)
        else:
            print(format_best(best))
        return EXIT_OK

    return _run(args, action)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _objective(text: str) -> tuple[str, str]:
    metric, _, mode = text.rpartition(":")
    if not metric or mode not in ("max", "min"):
        raise argparse.ArgumentTypeError(
            f"objective must read METRIC:max or METRIC:min, got {text!r}"
        )
    return metric, mode


def _cmd_pareto(args: argparse.Namespace) -> int:
    def action(client: Any) -> int:
        front = client.pareto(
            args.sweep,
            args.objective or (),
            scope=args.scope,
            constraints=args.where,
            reference=args.reference,
        )
        if args.json:
            _print_json(front)
        else:
            print(format_pareto(front))
        return EXIT_OK

    return _run(args, action)


def _remote_progress(client: Any, sweep_id: str) -> Any:
    """The sweep's progress from a results service: GetSweep (status, manifest, counts),
    ListTrials (the running trials' last iterations) and GetBestConfig (the best so far;
    none while nothing finite was reported)."""
    import time

    import grpc

    from morphtune.progress import BestSoFar, build_progress

    sweep = client.get_sweep(sweep_id)
    counts = sweep["trial_counts"]
    running: list[int] = []
    if counts.get("running"):
        rows = client.list_trials(sweep_id, ["state == running"], page_size=1000)
        running = [int(row["iteration"]) for row in rows]
    best = None
    if any(counts.values()):
        try:
            found = client.best(sweep_id)
        except grpc.RpcError as exc:  # no finite value yet, or no objective to rank by
            if exc.code() not in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                raise
        else:
            best = BestSoFar(found["metric"], found["mode"], found["value"], found["trial_id"])
    return build_progress(sweep_id, sweep["manifest"], counts, running, best, now=time.time())


def _watch_progress(args: argparse.Namespace) -> int:
    """``watch --progress``: the sweep's progress every ``--interval`` seconds until it has
    finished; exit 0 if it completed, 1 if it failed."""
    import time

    from morphtune.progress import ProgressDisplay

    mode = "json" if args.json and args.progress == "auto" else args.progress
    display = ProgressDisplay(mode, sys.stdout)

    def action(client: Any) -> int:
        try:
            while True:
                progress = _remote_progress(client, args.sweep)
                if progress.finished:
                    display.finish(progress)
                    return EXIT_OK if progress.status == "completed" else EXIT_FAILED
                display.update(progress)
                time.sleep(args.interval)
        finally:
            display.close()

    return _run(args, action)


def _cmd_watch(args: argparse.Namespace) -> int:
    if args.progress is not None:
        row_flags = {
            "--trial": args.trial,
            "--resume-token": args.resume_token,
            "--from-end": args.from_end,
            "--count": args.count,
        }
        given = [flag for flag, value in row_flags.items() if value]
        if given:
            print(
                f"error: --progress follows the whole sweep and takes no {', '.join(given)} "
                "(those select result rows to stream)",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        return _watch_progress(args)

    def action(client: Any) -> int:
        stream = client.watch(
            args.sweep,
            resume_token=args.resume_token or "",
            trial_id=args.trial or "",
            from_end=args.from_end,
        )
        shown = 0
        for row, token in stream:
            if args.json:
                print(json.dumps({"row": row, "resume_token": token}, sort_keys=True), flush=True)
            else:
                print(_watch_line(row), flush=True)
            shown += 1
            if args.count is not None and shown >= args.count:
                if not args.json:
                    print(f"resume with --resume-token {token}", file=sys.stderr)
                return EXIT_OK
        return EXIT_OK

    return _run(args, action)


# -------------------------------------------------------------------------------- parser


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=DEFAULT_SERVER, help="host:port of morphtune serve")
    parser.add_argument(
        "--token", help=f"bearer token (default: ${TOKEN_ENV}); never printed or logged"
    )
    parser.add_argument("--tls", action="store_true", help="use TLS (system root certificates)")
    parser.add_argument("--tls-ca", metavar="FILE", help="PEM root certificates (implies --tls)")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM client key (mutual TLS)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _where_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COND",
        help=f"{what}: 'COLUMN OP VALUE' (OP: == != < <= > >= in 'not in'), repeatable; "
        "e.g. 'params <= 1e5', 'state in completed,stopped'",
    )


def _watch_progress_flags(parser: argparse.ArgumentParser) -> None:
    from morphtune.progress import PROGRESS_MODES, interval_seconds

    parser.add_argument(
        "--progress",
        nargs="?",
        const="auto",
        choices=PROGRESS_MODES,
        metavar="MODE",
        help="instead of rows, the sweep's progress (trials done, running, failed, best so "
        "far, elapsed, estimated time left) until it has finished; exit 0 if it completed, 1 "
        "if it failed. MODE: auto (the default; a line updated in place on a terminal, else "
        "plain; json with --json), plain (a line per change), json (JSON lines), quiet "
        "(nothing: just wait)",
    )
    parser.add_argument(
        "--interval",
        type=interval_seconds,
        default=2.0,
        metavar="SECONDS",
        help="with --progress: seconds between polls (default 2)",
    )


def add_query_commands(sub: Any) -> None:
    """Add ``sweeps``, ``trials``, ``best``, ``pareto`` and ``watch`` to ``sub``."""
    sweeps = sub.add_parser("sweeps", help="list the sweeps of a results service, or show one")
    sweeps.add_argument("sweep", nargs="?", help="show this sweep (counts, objective)")
    _connection_flags(sweeps)
    sweeps.set_defaults(handler=_cmd_sweeps)

    trials = sub.add_parser("trials", help="list a sweep's trials (filter, order, pages)")
    trials.add_argument("sweep", help="sweep id")
    _where_flag(trials, "keep rows where this holds")
    trials.add_argument("--order-by", metavar="COLUMN", help="sort by (default trial id)")
    trials.add_argument("--desc", action="store_true", help="sort descending")
    trials.add_argument("--scope", choices=["last", "all"], default="last")
    trials.add_argument("--limit", type=_positive, help="at most this many rows")
    trials.add_argument("--page-size", type=int, default=0, help="rows per request (<= 1000)")
    trials.add_argument(
        "--columns", nargs="+", metavar="COLUMN", help="table columns (default: every metric)"
    )
    _connection_flags(trials)
    trials.set_defaults(handler=_cmd_trials)

    best = sub.add_parser("best", help="query a sweep's best configuration over gRPC")
    best.add_argument("sweep", help="sweep id")
    best.add_argument("--metric", help="metric (default: the sweep's objective)")
    best.add_argument("--mode", choices=["max", "min"], help="direction (default: objective's)")
    best.add_argument("--scope", choices=["last", "all"], default="last")
    _where_flag(best, "a constraint the best row must meet")
    _connection_flags(best)
    best.set_defaults(handler=_cmd_best)

    pareto = sub.add_parser("pareto", help="a sweep's Pareto front and its hypervolume")
    pareto.add_argument("sweep", help="sweep id")
    pareto.add_argument(
        "--objective",
        action="append",
        type=_objective,
        metavar="METRIC:MODE",
        help="2 to 4, repeatable (default: the sweep's objectives)",
    )
    pareto.add_argument("--scope", choices=["last", "all"], default="last")
    pareto.add_argument(
        "--reference", type=float, nargs="+", metavar="V", help="hypervolume reference point"
    )
    _where_flag(pareto, "a constraint candidates must meet")
    _connection_flags(pareto)
    pareto.set_defaults(handler=_cmd_pareto)

    watch = sub.add_parser("watch", help="print a sweep's results as they are written")
    watch.add_argument("sweep", help="sweep id")
    watch.add_argument("--trial", help="only this trial's rows")
    watch.add_argument("--resume-token", metavar="TOKEN", help="continue after this row")
    watch.add_argument("--from-end", action="store_true", help="skip rows already written")
    watch.add_argument("--count", type=_positive, help="stop after this many rows")
    _watch_progress_flags(watch)
    _connection_flags(watch)
    watch.set_defaults(handler=_cmd_watch)
