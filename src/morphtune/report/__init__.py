"""Sweep reports: ``morphtune report SWEEP -o report.html``.

:func:`gather` reads what a report shows from the results store and the sweep's Optuna
study; :func:`render_report` turns it into one self-contained HTML page (figures embedded
as PNG data URIs, no script, nothing fetched); :func:`write_report` writes it atomically.
:func:`build_report` does all three. No Ray here: a report reads files only.
"""

from __future__ import annotations

import os

from morphtune.report._data import (
    FINISHED_STATES,
    NoFinishedTrials,
    ReportData,
    ReportError,
    gather,
)
from morphtune.report._html import check_output, render_report, write_report
from morphtune.store import SweepStore

__all__ = [
    "FINISHED_STATES",
    "NoFinishedTrials",
    "ReportData",
    "ReportError",
    "build_report",
    "check_output",
    "gather",
    "render_report",
    "write_report",
]


def build_report(
    results: str | os.PathLike[str] | SweepStore,
    sweep_id: str,
    output: str | os.PathLike[str],
    *,
    top: int = 10,
    optuna_url: str | None = None,
) -> ReportData:
    """Write the report of ``sweep_id`` (under the results root ``results``) to ``output``
    and return the data it shows. Raises :class:`ReportError` (bad output path, no finished
    trial), ``SweepNotFound``, or ``ValueError`` (a malformed sweep id); nothing is written
    then."""
    check_output(output)
    store = results if isinstance(results, SweepStore) else SweepStore(results)
    data = gather(store, sweep_id, top=top, optuna_url=optuna_url)
    write_report(render_report(data), output)
    return data
