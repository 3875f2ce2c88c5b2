"""Helpers for the report tests: parse a report page, and write small sweeps through the real
store writer (no Ray) for the cases a real sweep does not reach cheaply."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from morphtune.store import ResultWriter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Page:
    """What a report page holds: images, links, section ids and table rows (cell text)."""

    images: list[dict[str, str]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # every src= and href=
    sections: list[str] = field(default_factory=list)
    scripts: int = 0
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_note = False
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name in ("src", "href"):
            if name in values:
                self.page.references.append(values[name])
        if tag == "img":
            self.page.images.append(values)
        elif tag == "section":
            self.page.sections.append(values.get("id", ""))
        elif tag == "script":
            self.page.scripts += 1
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "p" and "note" in values.get("class", ""):
            self._in_note = True
            self.page.notes.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.page.rows.append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "p":
            self._in_note = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_note:
            self.page.notes[-1] += data


def parse_page(text: str) -> Page:
    parser = _Parser()
    parser.feed(text)
    parser.close()
    return parser.page


def png_of(image: dict[str, str]) -> bytes:
    """The PNG bytes of an ``<img>`` whose src is a base64 PNG data URI (else ValueError)."""
    prefix = "data:image/png;base64,"
    source = image.get("src", "")
    if not source.startswith(prefix):
        raise ValueError(f"not an embedded PNG: {source[:60]!r}")
    return base64.b64decode(source[len(prefix) :], validate=True)


def png_size(png: bytes) -> tuple[int, int]:
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# ------------------------------------------------------------------------- store sweeps


def flat_config(**values: Any) -> dict[str, Any]:
    return {"model.family": "gan", **values}


def write_gan_like_sweep(root: Path, sweep_id: str = "gan-like") -> dict[str, list[float]]:
    """A sparse-GAN-shaped sweep (objective ``fd``, min) with the signals a GAN engine
    reports, written through the real writer; no Optuna study. Returns each trial's
    balance_ratio per iteration."""
    writer = ResultWriter(root, sweep_id)
    writer.write_manifest(
        {
            "sweep_id": sweep_id,
            "objective": {"metric": "fd", "mode": "min"},
            "objectives": [{"metric": "fd", "mode": "min"}],
            "spec": {
                "search": {
                    "space": {
                        "sparsity.d_density": {"type": "float", "low": 0.2, "high": 0.8},
                        "sparsity.method": {
                            "type": "categorical",
                            "choices": ["gan_single", "gan_double"],
                        },
                    },
                    "sampler": {"name": "random"},
                    "scheduler": {"name": "fifo"},
                }
            },
            "status": "completed",
        }
    )
    plans = {
        "g0": ("gan_single", 0.5, [3.0, 2.0, 1.5], [0.40, 0.50, 0.52]),
        "g1": ("gan_double", 0.3, [2.5, 1.2, 0.9], [0.30, 0.45, 0.50]),
        "g2": ("gan_double", 0.7, [4.0, 3.5, 3.1], [0.60, 0.55, 0.51]),
    }
    ratios: dict[str, list[float]] = {}
    for trial_id, (method, d_density, fds, balance) in plans.items():
        config = flat_config(**{"sparsity.method": method, "sparsity.d_density": d_density})
        rows = [
            {
                "trial_id": trial_id,
                "iteration": step + 1,
                "status": "running",
                "config": config,
                "metrics": {
                    "fd": fds[step],
                    "balance_ratio": balance[step],
                    "density": 0.5,
                    "d_density": d_density + 0.05 * step,
                    "train_flops": 1e6 * (step + 1),
                    "wall_s": 0.5 * (step + 1),
                    "params": 1000.0,
                    "nonzero_params": 500.0,
                },
            }
            for step in range(3)
        ]
        writer.write_results(rows)
        writer.write_trial(trial_id, "completed", config=config, last_iteration=3)
        ratios[trial_id] = balance
    return ratios


def write_unfinished_sweep(root: Path, sweep_id: str = "unfinished") -> None:
    """A sweep whose trials are still running or failed: nothing finished."""
    writer = ResultWriter(root, sweep_id)
    writer.write_manifest({"sweep_id": sweep_id, "objective": {"metric": "val_acc", "mode": "max"}})
    config = {"model.width": 8}
    writer.write_results(
        [
            {
                "trial_id": trial_id,
                "iteration": 1,
                "status": "running",
                "config": config,
                "metrics": {"val_acc": value},
            }
            for trial_id, value in (("r0", 0.4), ("f0", 0.9))
        ]
    )
    writer.write_trial("f0", "failed", config=config, error="diverged", last_iteration=1)


def read_marker(dom: str) -> dict[str, Any]:
    """The JSON the probe script appended to the page (``<pre id="report-probe">``)."""
    start = dom.find('<pre id="report-probe">')
    if start < 0:
        raise AssertionError("the probe marker is missing from the dumped DOM")
    end = dom.index("</pre>", start)
    body = dom[start + len('<pre id="report-probe">') : end]
    return dict(json.loads(html.unescape(body)))
