"""The report in a real browser: headless Chromium renders every chart, logs no errors, and a screenshot is saved.

Skipped when no Chromium is installed (Debian: ``apt-get install chromium``; CI installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess

import pytest

from pretune.report import report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         "--disable-extensions", "--disable-background-networking", "--enable-logging=stderr", "--v=0"]
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    # A private profile, so runs never share state; a timeout, so a hung browser fails the test instead of CI.
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium_without_errors(saved_run, tmp_path):
    page = report(saved_run)["html"]
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the browser parsed every chart as SVG with its marks inside
    charts = re.findall(r'<svg[^>]*data-chart="([\w-]+)"', dom.stdout)
    assert charts == ["search-history", "search-by-samples", "importances", "learning-curves", "training-loss",
                      "pareto"]
    assert dom.stdout.count("<circle") >= 10
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Failed to load" in ln]
    assert console == [], console

    shot = os.environ.get("PRETUNE_SCREENSHOT_DIR", str(tmp_path))
    png = os.path.join(shot, "report.png")
    os.makedirs(shot, exist_ok=True)
    out = _chromium(tmp_path, f"--screenshot={png}", "--window-size=1024,2600", page.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1024, 2600)
    assert os.path.getsize(png) > 20_000  # charts and tables, not a blank page
