"""``morphtune report SWEEP -o report.html``: a self-contained HTML report of a sweep.

Reads the results store (and the sweep's Optuna study, for parameter importances) directly:
no service, no Ray. Exit status 0 on success; 2 for bad input (a malformed or unknown sweep
id, a sweep with no finished trial, an output path that cannot be written), with one line
``error: ...`` on stderr and no file written; 1 for a corrupt store.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_report_command"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def add_report_command(sub: Any) -> None:
    """Register ``report`` on the ``morphtune`` subparsers ``sub``."""
    report = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a sweep",
        description="Write one HTML file (figures embedded, nothing fetched) with the "
        "optimisation history, Pareto front, parallel coordinates, parameter importances, "
        "per-trial timelines of width/depth/density/balance ratio, quality against compute "
        "and the top configurations.",
    )
    report.add_argument("sweep", help="sweep id")
    report.add_argument("-o", "--output", required=True, help="HTML file to write")
    report.add_argument("--results", default="./morphtune-results", help="results root")
    report.add_argument(
        "--top", type=_positive, default=10, help="rows in the top-configurations table"
    )
    report.add_argument(
        "--optuna",
        metavar="URL",
        help="Optuna storage holding the sweep's study (default: the sweep's optuna.db, "
        "else the URL its manifest records)",
    )
    report.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from morphtune.report import ReportError, build_report
    from morphtune.store import StoreError, SweepNotFound, SweepStore

    try:
        store = SweepStore(args.results)
        data = build_report(store, args.sweep, args.output, top=args.top, optuna_url=args.optuna)
    except SweepNotFound as error:
        known = _known_sweeps(store)
        print(f"error: {error}; sweeps there: {known}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ReportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as error:  # a corrupt file in the store
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    best = data.best
    print(
        f"wrote {args.output}: sweep {data.sweep_id}, {len(data.trials)} trials, best "
        f"{data.primary.metric} = {best.values[0]:.6g} (trial {best.trial.trial_id})"
    )
    return EXIT_OK


def _known_sweeps(store: Any) -> list[str]:
    try:
        return list(store.list_sweeps())
    except OSError:
        return []
