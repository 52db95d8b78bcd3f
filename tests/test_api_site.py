"""The API reference site (`make docs`) builds with warnings as errors and
lists every public name of `import pyattn` on its one API page. Skipped
where mkdocs is not installed (`make docs` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import pyattn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MKDOCS = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or shutil.which("mkdocs")


@pytest.mark.skipif(MKDOCS is None, reason="needs mkdocs and mkdocstrings[python] (`make docs` installs them)")
def test_api_site_builds_strict_and_lists_the_public_api(tmp_path):
    result = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    functions_of_their_module = {"explain": "pyattn.explanation.explain", "attention": "pyattn.model_attention.attention",
                                 "single_pass": "pyattn.single_pass_attribution.single_pass"}
    missing = [name for name in pyattn.__all__ if name != "__version__"
               and f'id="{functions_of_their_module.get(name, "pyattn." + name)}"' not in page]
    assert not missing, f"not on the API page: {missing}"
