"""Imports point one way: down the package's layers (/work/shared/ARCHITECTURE.md,
`pyattn/__init__.py`'s map). An AST scan of every module of pyattn, module-level
imports and those inside functions alike, fails on

- an import of a module in a higher layer than the importer's, and
- a private name (``_x``) imported from another module that is not itself
  private (a private helper belongs in a private module, ``pyattn._checks``).

Today's exceptions are listed below, each with why; the lists may only
shrink (a listed exception that no longer occurs fails too, so it is removed
with the code that needed it). A module missing from the table fails: a new
module gets a layer when it is written.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "pyattn")

# Lower numbers are lower layers; a module may import its own layer and below.
LAYERS: dict[str, list[str]] = {
    "base": ["pyattn.errors", "pyattn._compat", "pyattn._checks", "pyattn._quiet", "pyattn._malloc"],
    # the compiled ops, their readable references, a model's attention outputs
    "kernels": ["pyattn._C", "pyattn.kernels", "pyattn.kernels.ops", "pyattn.kernels.reference", "pyattn.kernels.layers"],
    # text -> model inputs, the Longformer fast path, q/k capture, the shipped demo model
    "models": ["pyattn.models", "pyattn.models._checks", "pyattn.models._state", "pyattn.models.inputs", "pyattn.models.fast_attention",
               "pyattn.models.qk_capture", "pyattn.models.recompute", "pyattn.demo", "pyattn.demo.data", "pyattn.demo.train"],
    # attention from a model, rollout; attribution and its quadrature, single pass, head importance
    "attention/attribution": ["pyattn.model_attention", "pyattn.model_attention.received", "pyattn.model_attention.rollout", "pyattn.attribution",
                              "pyattn.attribution._checks", "pyattn.attribution._common", "pyattn.attribution.memory",
                              "pyattn.attribution._scheduler", "pyattn.attribution._path_integral",
                              "pyattn.attribution.integrated_gradients", "pyattn.attribution.quadrature",
                              "pyattn.attribution.single_pass", "pyattn.attribution.importance"],
    # comparing attribution with attention (one document or many)
    "compare": ["pyattn.compare", "pyattn.compare._pairs", "pyattn.compare.metrics", "pyattn.compare.similarity", "pyattn.compare.significance",
                "pyattn.compare.uncertainty", "pyattn.compare.agreement", "pyattn.compare.tokens", "pyattn.compare.faithfulness"],
    # HTML and plots of compare's numbers. Below explanation, not above it: an
    # Explanation renders itself with these pages, and the report package
    # never imports explanation (nor the pipeline).
    "report": ["pyattn.report", "pyattn.report._format", "pyattn.report.plots", "pyattn.report.agreement_plots",
               "pyattn.report.statistics"],
    "explanation": ["pyattn.explanation", "pyattn.explanation.result", "pyattn.explanation.document"],
    "pipeline": ["pyattn.pipeline", "pyattn.pipeline.documents", "pyattn.pipeline.store", "pyattn.pipeline.records", "pyattn.pipeline.loading",
                 "pyattn.pipeline.run", "pyattn.pipeline.analysis", "pyattn.pipeline.ray_engine"],
    # the user API: re-exports from every layer below
    "api": ["pyattn"],
    "cli": ["pyattn.cli", "pyattn.cli._flags", "pyattn.cli._checks", "pyattn.cli.attribute", "pyattn.cli.compare",
            "pyattn.cli.importance", "pyattn.cli.report", "pyattn.cli.demo", "pyattn.cli.__main__"],
}
LEVEL = {module: level for level, modules in enumerate(LAYERS.values()) for module in modules}
LAYER_NAME = {module: name for name, modules in LAYERS.items() for module in modules}

# (importer, imported): known upward imports, each with why. Remove an entry
# with the code that needed it.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

# (importer, imported module, name): private names imported across modules today.
KNOWN_PRIVATE: dict[tuple[str, str, str], str] = {
}


def _modules() -> dict[str, str]:
    found = {}
    for base, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(base, name)
                module = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


MODULES = _modules()
KNOWN_MODULES = set(MODULES) | {"pyattn._C"}


def _is_package(module: str) -> bool:
    return MODULES.get(module, "").endswith("__init__.py")


def _imports(module: str):
    """(line, imported module, imported name or None) of every pyattn import in ``module``."""
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "pyattn" or alias.name.startswith("pyattn."):
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if _is_package(module) else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    package = package.rsplit(".", 1)[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            if base != "pyattn" and not base.startswith("pyattn."):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in KNOWN_MODULES:
                    yield node.lineno, submodule, None  # `from pyattn.kernels import ops`: the module ops
                else:
                    yield node.lineno, base, alias.name


def _upward() -> dict[tuple[str, str], list[int]]:
    found: dict[tuple[str, str], list[int]] = {}
    for module in MODULES:
        for line, imported, _ in _imports(module):
            if imported in LEVEL and LEVEL[imported] > LEVEL[module]:
                found.setdefault((module, imported), []).append(line)
    return found


def _private() -> dict[tuple[str, str, str], list[int]]:
    found: dict[tuple[str, str, str], list[int]] = {}
    for module in MODULES:
        for line, imported, name in _imports(module):
            if name and name.startswith("_") and not name.startswith("__") and imported != module \
                    and not any(part.startswith("_") for part in imported.split(".")):
                found.setdefault((module, imported, name), []).append(line)
    return found


def test_the_scan_sees_the_package():
    # guards against a scan that finds nothing, under which every test below passes
    assert len(MODULES) > 30
    imports = [(module, imported) for module in MODULES for _, imported, _ in _imports(module)]
    assert ("pyattn.pipeline.run", "pyattn.pipeline.store") in imports
    assert ("pyattn.explanation.result", "pyattn.report") in imports  # inside a function
    assert ("pyattn.kernels.ops", "pyattn._C") in imports  # `from pyattn import _C`


def test_every_module_has_a_layer():
    missing = sorted(set(MODULES) - set(LEVEL))
    assert not missing, f"give these modules a layer in LAYERS: {missing}"
    stale = sorted(set(LEVEL) - KNOWN_MODULES)
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_import_points_up():
    found = _upward()
    new = {pair: lines for pair, lines in found.items() if pair not in KNOWN_UPWARD}
    assert not new, "imports that point up a layer (move the helper down, or import from a lower module):\n" + "\n".join(
        f"{a} ({LAYER_NAME[a]}) imports {b} ({LAYER_NAME[b]}) on line(s) {lines}" for (a, b), lines in sorted(new.items()))
    gone = sorted(set(KNOWN_UPWARD) - set(found))
    assert not gone, f"no longer happen: remove from KNOWN_UPWARD: {gone}"


def test_no_private_name_crosses_a_module():
    found = _private()
    new = {key: lines for key, lines in found.items() if key not in KNOWN_PRIVATE}
    assert not new, "private names imported from another module (move them to a private module, or make them public):\n" + "\n".join(
        f"{a} imports {name} from {b} on line(s) {lines}" for (a, b, name), lines in sorted(new.items()))
    gone = sorted(set(KNOWN_PRIVATE) - set(found))
    assert not gone, f"no longer happen: remove from KNOWN_PRIVATE: {gone}"


@pytest.mark.parametrize("source,expected", [
    ("from pyattn.pipeline import load_model\n", [("pyattn.pipeline", "load_model")]),
    ("def f():\n    import pyattn.cli\n", [("pyattn.cli", None)]),
    ("from pyattn import explanation\n", [("pyattn.explanation", None)]),
    ("from pyattn import explain\n", [("pyattn", "explain")]),  # the function, from the package
    ("from .compare import similarity\n", [("pyattn.compare.similarity", None)]),
    ("from .compare.similarity import _x\n", [("pyattn.compare.similarity", "_x")]),
])
def test_the_scan_resolves_imports(source, expected, tmp_path, monkeypatch):
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "pyattn.probe", str(path))
    assert [(imported, name) for _, imported, name in _imports("pyattn.probe")] == expected
