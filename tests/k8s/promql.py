"""Metric names in PromQL expressions, and the names morphtune and Ray export.

:func:`metric_names` is a small lexer, not a PromQL parser: it drops strings, label
matchers, grouping clauses, ranges and durations, then keeps the identifiers that are not
called (functions, aggregations) and not keywords. That is exact for the expressions in
our alerts and dashboard (``promtool check rules`` parses the alerts for real).
"""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry

KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "start",
        "end",
    }
)
#: series Prometheus itself adds for every scrape target
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_DURATION_AFTER_OFFSET = re.compile(r"\boffset\s+-?(?:\d+[smhdwy]|\d+ms)+")
_TOKENS = re.compile(
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?"
)


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects."""
    text = _STRINGS.sub('""', expression)
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _DURATION_AFTER_OFFSET.sub(" ", text)
    names = set()
    for match in _TOKENS.finditer(text):
        name = match.group("name")
        if name is None or match.group("call") or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def _sample_names(name: str, kind: str) -> set[str]:
    """The series one metric family of this type exposes (prometheus_client's naming)."""
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
    return {name}


@functools.cache
def morphtune_metric_names() -> frozenset[str]:
    """Every series name the results service exports, from the code that registers them:
    the store collector's families and the gRPC server metrics."""
    from morphtune.metrics import GrpcServerMetrics, SweepCollector
    from morphtune.store import SweepStore

    with tempfile.TemporaryDirectory() as root:
        collector = SweepCollector(SweepStore(root))
        families = list(collector.describe())
        registry = CollectorRegistry()
        GrpcServerMetrics.register(registry)
        families += list(registry.collect())
    names: set[str] = set()
    for family in families:
        names |= _sample_names(family.name, family.type)
    return frozenset(names)


@functools.cache
def ray_metric_names() -> frozenset[str]:
    """Ray's metric names, from the installed Ray: the gauges its reporter agent defines
    (exported with the ``ray_`` prefix) and the names its own Grafana panels query."""
    import ray

    root = Path(ray.__file__).resolve().parent / "dashboard"
    names: set[str] = set()
    reporter = (root / "modules" / "reporter" / "reporter_agent.py").read_text()
    names |= {f"ray_{name}" for name in re.findall(r'Gauge\(\s*"([a-z0-9_]+)"', reporter)}
    for panels in (root / "modules" / "metrics" / "dashboards").glob("*_panels.py"):
        names |= set(re.findall(r"\bray_[a-z0-9_]+", panels.read_text()))
    return frozenset(names)
