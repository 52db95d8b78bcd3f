"""The README's Python blocks run, in order, in one namespace: the tour a
newcomer copies works as written."""

from __future__ import annotations

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks() -> list[str]:
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_a_tour():
    blocks = python_blocks()
    assert len(blocks) >= 4 and any("pyattn.explain(" in block for block in blocks)


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tour writes document.html, report.html, head_importance.pt
    namespace: dict = {"__name__": "readme"}
    for number, block in enumerate(python_blocks(), 1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"README python block {number} failed: {type(error).__name__}: {error}\n{block}") from error
    for written in ("document.html", "report.html", "head_importance.pt"):
        assert (tmp_path / written).stat().st_size > 0
