"""The report page in a real browser: headless Chromium (Debian's ``chromium``, installed by
``scripts/chromium-install.sh``) renders it, takes a screenshot, and the test fails on any
console message, script error, failed load or image that did not decode.

A probe script is put at the top of a copy of the page (the report itself has no script): it
records console errors/warnings, error events (a broken image fires one) and every image's
``naturalWidth``, and writes them into the DOM, which ``--dump-dom`` hands back. Skipped only
when chromium is absent and ``MORPHTUNE_REQUIRE_CHROMIUM`` is unset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from morphtune.cli import main
from tests.report.conftest import Reported
from tests.report.pages import PNG_SIGNATURE, png_size, read_marker
from tests.store.sweeps import write_demo_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1100, 3000)

PROBE = """<script>
(function () {
  var problems = [];
  window.addEventListener("error", function (event) {
    var target = event.target;
    if (target && target !== window && target.tagName) {
      var source = target.currentSrc || target.src || target.href || "";
      problems.push("load failed: " + target.tagName + " " + source.slice(0, 48));
    } else {
      problems.push("script error: " + event.message);
    }
  }, true);
  ["error", "warn"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      problems.push("console." + level + ": " + Array.prototype.join.call(arguments, " "));
      return original.apply(console, arguments);
    };
  });
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    images.forEach(function (image) {
      if (!image.complete || image.naturalWidth === 0) {
        problems.push("image not rendered: " + image.alt);
      }
    });
    var marker = document.createElement("pre");
    marker.id = "report-probe";
    marker.textContent = JSON.stringify({images: images.length, problems: problems});
    document.body.appendChild(marker);
  });
})();
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("MORPHTUNE_REQUIRE_CHROMIUM"):
            pytest.fail("MORPHTUNE_REQUIRE_CHROMIUM is set but chromium is not on PATH")
        pytest.skip("chromium is not installed (bash scripts/chromium-install.sh)")
    return CHROMIUM


def _run(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium,
        "--headless=new",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    if os.geteuid() == 0:
        command.insert(2, "--no-sandbox")  # Chromium's sandbox refuses to run as root
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def _probe(
    chromium: str, page: Path, tmp_path: Path, *extra: str
) -> tuple[dict[str, object], list[str]]:
    """Load a probed copy of ``page``; return the probe's marker and the console lines."""
    text = page.read_text("utf-8")
    assert text.count("<head>") == 1
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), "utf-8")
    done = _run(
        chromium, tmp_path, "--virtual-time-budget=10000", *extra, "--dump-dom", probed.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return read_marker(done.stdout), console


def test_report_renders_without_errors(chromium: str, mo_report: Reported, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    marker, console = _probe(
        chromium,
        mo_report.html,
        tmp_path,
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={shot}",
    )
    assert marker == {"images": 6, "problems": []}
    assert console == []
    png = shot.read_bytes()
    assert png.startswith(PNG_SIGNATURE) and png_size(png) == WINDOW
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3].reshape(-1, 3)
    rgb = (pixels * 255).astype(np.uint32)
    colours = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert len(colours) > 200  # text, tables and figures, not a blank page
    assert (pixels < 0.5).any(axis=1).mean() > 0.01


def test_the_probe_catches_broken_images_and_console_errors(
    chromium: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check above can fail: a report with one image whose PNG header is cut off (so it
    cannot decode) and a console error."""
    write_demo_sweep(tmp_path / "results")
    page = tmp_path / "demo.html"
    assert main(["report", "demo", "--results", str(tmp_path / "results"), "-o", str(page)]) == 0
    text = page.read_text("utf-8")
    start = text.index("base64,") + len("base64,")
    broken = text[:start] + text[start + 40 :]  # 30 bytes: signature and IHDR gone
    broken = broken.replace("</body>", '<script>console.error("planted")</script></body>')
    page.write_text(broken, "utf-8")
    marker, console = _probe(chromium, page, tmp_path)
    problems = " | ".join(str(p) for p in marker["problems"])  # type: ignore[attr-defined]
    assert "image not rendered" in problems and "load failed: IMG" in problems
    assert "console.error: planted" in problems
    assert any("planted" in line for line in console)
