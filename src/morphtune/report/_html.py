"""The report page: one self-contained HTML file (inline CSS, figures as base64 PNG data
URIs, no script, nothing fetched), and writing it atomically."""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from morphtune._atomic import atomic_write
from morphtune.report._charts import (
    Chart,
    compute_chart,
    history_chart,
    importance_chart,
    parallel_chart,
    pareto_chart,
    timeline_chart,
)
from morphtune.report._data import ReportData, ReportError

__all__ = ["check_output", "render_report", "write_report"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1060px; padding: 0 1.2em 3em; color: #1b1b1b; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
     margin-top: 1.8em; }
.meta { color: #666; font-size: 0.9em; }
nav a { margin-right: 0.9em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.2em; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; font-size: 0.85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right;
         white-space: nowrap; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
tr.best td { background: #fdecea; font-weight: 600; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85em; }
.note { color: #555; font-style: italic; }
"""

_SECTIONS = (
    ("summary", "Summary"),
    ("top", "Top configurations"),
    ("history", "Optimisation history"),
    ("pareto", "Pareto front"),
    ("parallel", "Parallel coordinates"),
    ("importances", "Parameter importances"),
    ("timelines", "Timelines"),
    ("compute", "Quality against compute"),
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return _e(int(value))
        return _e(f"{value:.5g}")
    return _e(value)


def _figure(chart: Chart) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(chart.alt)}" '
        f'width="{chart.width}" height="{chart.height}">'
        f"<figcaption>{_e(chart.alt)}.</figcaption></figure>"
    )


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(header: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]], text: int) -> str:
    """``rows`` as (css class, cells already escaped); the first ``text`` columns are left
    aligned."""

    def cell(tag: str, index: int, content: str) -> str:
        css = ' class="text"' if index < text else ""
        return f"<{tag}{css}>{content}</{tag}>"

    head = "".join(cell("th", index, _e(name)) for index, name in enumerate(header))
    body = "".join(
        f'<tr class="{css}">'
        + "".join(cell("td", index, content) for index, content in enumerate(cells))
        + "</tr>"
        for css, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------- sections


def _summary(data: ReportData) -> str:
    manifest = data.manifest
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
    search = spec.get("search", {}) if isinstance(spec, dict) else {}
    best = data.best
    items: list[tuple[str, str]] = [
        ("Sweep", _e(data.sweep_id)),
        ("Status", _e(manifest.get("status", "unknown"))),
        ("Objectives", _e(", ".join(o.label for o in data.objectives))),
        (
            "Trials",
            _e(", ".join(f"{n} {state}" for state, n in sorted(data.counts.items())) or "none"),
        ),
        (
            "Best",
            f"{_e(data.primary.metric)} = {_cell(best.values[0])} (trial "
            f"{_e(best.trial.trial_id)}, iteration {best.iteration})",
        ),
    ]
    if isinstance(search, dict):
        sampler, scheduler = search.get("sampler") or {}, search.get("scheduler") or {}
        if isinstance(sampler, dict) and sampler.get("name"):
            items.append(("Sampler", _e(sampler["name"])))
        if isinstance(scheduler, dict) and scheduler.get("name"):
            items.append(("Scheduler", _e(scheduler["name"])))
    if data.searched:
        items.append(("Searched", _e(", ".join(p.key for p in data.searched))))
    for key, label in (("created", "Started"), ("finished", "Finished")):
        stamp = manifest.get(key)
        if isinstance(stamp, int | float) and math.isfinite(stamp):
            items.append((label, _e(_utc(float(stamp)))))
        elif isinstance(stamp, str) and stamp:
            items.append((label, _e(stamp)))
    wall = manifest.get("wall_s")
    if isinstance(wall, int | float) and math.isfinite(wall):
        items.append(("Wall time", _e(f"{wall:.1f} s")))
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in items)
    return f"<dl>{body}</dl>"


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def _top(data: ReportData) -> str:
    multi = data.pareto is not None
    header = [
        "rank",
        "trial",
        "state",
        *(o.label for o in data.objectives),
        "iteration",
        *(["on front"] if multi else []),
        *(p.key for p in data.searched),
        *data.costs,
    ]
    rows = []
    for row in data.top:
        trial = row.trial
        last = {name: _last_finite(trial.series[name]) for name in data.costs}
        cells = [
            _e(row.rank),
            _e(trial.trial_id),
            _e(trial.state),
            *(_cell(value) for value in row.values),
            _e(row.iteration),
            *([_cell(row.on_front)] if multi else []),
            *(_cell(p.value(trial.config)) for p in data.searched),
            *(_cell(last[name]) for name in data.costs),
        ]
        rows.append(("best" if row.rank == 1 else "", cells))
    ranked = len(data.ranked())
    caption = (
        f"<p>The {len(data.top)} best of {ranked} ranked trials by {_e(data.primary.label)} "
        "(each trial's last report; failed trials are not ranked). Costs are the last "
        "reported values.</p>"
    )
    return caption + _table(header, rows, text=3)


def _last_finite(values: Any) -> float | None:
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return finite[-1] if finite else None


def _importances(data: ReportData, chart: Chart | None) -> str:
    parts = []
    if chart is not None:
        parts.append(_figure(chart))
    if data.importances.note:
        parts.append(_note(data.importances.note))
    counts = data.importances.study_trials
    if counts:
        listed = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        parts.append(f"<p>Optuna study {_e(data.sweep_id)}: {_e(listed)} trials.</p>")
    return "".join(parts)


def _chart_or_note(
    make: Callable[[ReportData], Chart | None], data: ReportData, why_not: str
) -> tuple[str, Chart | None]:
    chart = make(data)
    return (_figure(chart) if chart is not None else _note(why_not)), chart


# --------------------------------------------------------------------------------- page


def render_report(data: ReportData, *, generated: float | None = None) -> str:
    """The whole page for ``data``."""
    from morphtune import __version__

    bodies = {
        "summary": _summary(data),
        "top": _top(data),
        "history": _figure(history_chart(data)),
        "pareto": _chart_or_note(
            pareto_chart,
            data,
            "A single-objective sweep has no Pareto front."
            if len(data.objectives) < 2
            else "No trial reported a finite value for every objective.",
        )[0],
        "parallel": _chart_or_note(
            parallel_chart,
            data,
            "Nothing was searched: no search space, and no config value varies across trials.",
        )[0],
        "importances": _importances(data, importance_chart(data)),
        "timelines": _chart_or_note(
            timeline_chart, data, "The trials reported no width, depth, density or balance ratio."
        )[0],
        "compute": _chart_or_note(
            compute_chart, data, "The trials reported no compute spent (train_flops, wall_s)."
        )[0],
    }
    stamp = _utc(time.time() if generated is None else generated)
    nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title in _SECTIONS)
    sections = "".join(
        f'<section id="{key}"><h2>{_e(title)}</h2>{bodies[key]}</section>'
        for key, title in _SECTIONS
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>morphtune report: {_e(data.sweep_id)}</title><style>{_STYLE}</style></head>"
        f"<body><header><h1>Sweep {_e(data.sweep_id)}</h1>"
        f'<p class="meta">morphtune {_e(__version__)} report, generated {_e(stamp)}</p>'
        f"<nav>{nav}</nav></header>{sections}</body></html>\n"
    )


def check_output(path: str | os.PathLike[str]) -> Path:
    """``path`` if a report can be written there, else :class:`ReportError` saying why
    (checked before any work, so a bad ``-o`` fails at once)."""
    output = Path(path)
    if output.is_dir():
        raise ReportError(f"-o/--output {str(output)!r}: is a directory, not a file path")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.exists():
        raise ReportError(f"-o/--output {str(output)!r}: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise ReportError(f"-o/--output {str(output)!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(f"-o/--output {str(output)!r}: directory {str(parent)!r} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise ReportError(f"-o/--output {str(output)!r}: the existing file is not writable")
    return output


def write_report(page: str, path: str | os.PathLike[str]) -> Path:
    """Write ``page`` to ``path`` atomically (temp file beside it, fsync, rename): a reader
    sees the old file or the whole new one, and a failed write leaves nothing behind."""
    output = check_output(path)
    encoded = page.encode("utf-8")
    try:
        atomic_write(output, lambda handle: handle.write(encoded))
    except OSError as error:
        reason = error.strerror or str(error)
        raise ReportError(f"-o/--output {str(output)!r}: cannot write: {reason}") from error
    return output
