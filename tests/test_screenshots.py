"""Screenshots of what a user sees, taken in headless Chromium: a document
report and the index page of the quickstart (the shipped docs.csv through
`pyattn attribute`, `compare`, `report`), and the notebook's inline view of
`pyattn.explain`. Written to build/screenshots/; the document report is
copied to docs/report.png, the README's picture, when PYATTN_UPDATE_DOCS=1. Skipped, saying why, where
Chromium is not installed (.ci/run installs Debian's package)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import pyattn
from pyattn.cli import main
from pyattn.demo import DOCS_CSV

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(ROOT, "build", "screenshots")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium; .ci/run installs it)")


def screenshot(page: str, name: str, profile, width: int = 1400, height: int = 1800) -> str:
    """Render ``page`` in headless Chromium into build/screenshots/NAME.png;
    fail on a console error or a blank picture."""
    os.makedirs(SHOTS, exist_ok=True)
    shot = os.path.join(SHOTS, f"{name}.png")
    if os.path.exists(shot):
        os.remove(shot)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0"]
    result = subprocess.run([CHROMIUM, *flags, f"--window-size={width},{height}", f"--screenshot={shot}", f"file://{os.path.abspath(page)}"],
                            capture_output=True, text=True, timeout=120)
    assert os.path.exists(shot), result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line and re.search(r"error", line, re.I)]
    assert not errors, errors
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10, f"{shot} looks blank"
    return shot


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "results"
    assert main(["attribute", "--model", "demo", "--data", DOCS_CSV, "--id-column", "id", "--out", str(out), "--quiet"]) == 0
    assert main(["compare", "--results", str(out), "--quiet"]) == 0
    assert main(["report", "--results", str(out), "--quiet"]) == 0
    return out / "reports"


def test_document_report_screenshot(quickstart, tmp_path):
    shot = screenshot(str(quickstart / "document-0.html"), "report", tmp_path / "profile")
    if os.environ.get("PYATTN_UPDATE_DOCS") == "1":  # the README's picture, refreshed on request only (a test run leaves the tree clean)
        os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
        shutil.copyfile(shot, os.path.join(ROOT, "docs", "report.png"))


def test_index_screenshot(quickstart, tmp_path):
    screenshot(str(quickstart / "index.html"), "index", tmp_path / "profile")


def test_notebook_view_screenshot(tmp_path):
    model, tokenizer = pyattn.load_demo()
    document = min(pyattn.demo_documents("test"), key=lambda d: len(d.text))
    result = pyattn.explain(model, tokenizer, document.text)
    inline = result._repr_html_()
    assert "<html" not in inline and "Top tokens" not in inline and "data:image/png" not in inline  # a fragment, without the report's rest
    page = tmp_path / "notebook.html"
    # a notebook output cell is about 900 px wide
    page.write_text(f'<!DOCTYPE html><html><body style="margin: 0; width: 900px">{inline}</body></html>', encoding="utf-8")
    screenshot(str(page), "notebook", tmp_path / "profile", width=960, height=700)
