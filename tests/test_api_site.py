"""The API reference page (docs/api.md) is generated from the package
(docs/gen_api.py) and current, and the site (`make docs`) builds with
warnings as errors with every public name of `import pyattn` anchored at the
module that defines it. The build is skipped where mkdocs is not installed
(`make docs` installs it, and CI runs `make docs` before the tests)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys

import pytest

import pyattn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MKDOCS = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or shutil.which("mkdocs")
sys.path.insert(0, os.path.join(ROOT, "docs"))

import gen_api  # noqa: E402


def test_the_api_page_is_generated_and_current():
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as handle:
        page = handle.read()
    assert page == gen_api.render(), "docs/api.md is stale: run python docs/gen_api.py"


def test_the_api_page_lists_every_public_name_of_every_public_module():
    page = gen_api.render()
    for name in pyattn.__all__:
        if name != "__version__":
            assert f"[`pyattn.{name}`]" in page, name
    modules = gen_api.public_modules()
    assert "pyattn.errors" in modules and not any("._" in m for m in modules)
    for module_name in modules:
        assert f"::: {module_name}\n" in page, module_name
        for name in getattr(importlib.import_module(module_name), "__all__", []):
            if not name.startswith("__") and module_name != "pyattn":
                assert f"    - `{name}`:" in page, f"{module_name}.{name}"


@pytest.mark.skipif(MKDOCS is None, reason="needs mkdocs and mkdocstrings[python] (`make docs` installs them)")
def test_api_site_builds_strict_and_anchors_the_public_api(tmp_path):
    result = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in pyattn.__all__ if name != "__version__"
               and f'id="{gen_api._where(getattr(pyattn, name), "pyattn")}.{name}"' not in page]
    assert not missing, f"not anchored on the API page: {missing}"
