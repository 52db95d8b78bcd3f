"""Docs that run: every module's docstring examples are executed (doctest),
every public name is documented, and a few conventions the 1.0 API promises
hold.

Modules are discovered by walking the package, so a new module is covered
without editing this file; its public API is its ``__all__``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import pyattn


def _modules() -> list[str]:
    names = ["pyattn"]
    for info in pkgutil.walk_packages(pyattn.__path__, "pyattn."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue  # the compiled _C and private modules
        names.append(info.name)
    return sorted(names)


MODULES = _modules()


def _public(module_name: str) -> list[tuple[str, str]]:
    module = importlib.import_module(module_name)
    return [(module_name, name) for name in getattr(module, "__all__", ())]


PUBLIC = [pair for module_name in MODULES for pair in _public(module_name)]


def test_the_walk_finds_the_package():
    # a guard on the discovery itself: if it found nothing, every test below would pass vacuously
    for expected in ("pyattn.pipeline", "pyattn.report", "pyattn.report.plots", "pyattn.demo.data", "pyattn.cli"):
        assert expected in MODULES
    assert len(PUBLIC) > 150


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_its_public_api(name):
    module = importlib.import_module(name)
    assert inspect.getdoc(module), f"{name} has no module docstring"
    assert hasattr(module, "__all__"), f"{name} has no __all__ naming its public API"
    missing = [entry for entry in module.__all__ if not hasattr(module, entry)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) in {name} failed (output above)"


# The only public examples allowed to be skipped, and why (a Ray cluster, or minutes of work).
SKIPPED_EXAMPLES = {
    "pyattn.pipeline.ray_engine.run_attribution_ray": "starts a Ray cluster",
    "pyattn.demo.train.train": "retrains the demo model: 11-15 minutes",
    "pyattn.demo.train.main": "evaluates 200 documents, or retrains",
}


def _needs_example(value) -> bool:
    """Functions and classes show how they are called; exceptions and warnings
    are raised by pyattn, not called by users, so a docstring saying when is
    enough."""
    if inspect.isclass(value) and issubclass(value, BaseException):
        return False
    return inspect.isfunction(value) or inspect.isclass(value)


@pytest.mark.parametrize(("module_name", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_every_public_name_is_documented(module_name, name):
    value = getattr(importlib.import_module(module_name), name)
    if not (inspect.isfunction(value) or inspect.isclass(value)):
        return  # constants (tuples, strings) carry no docstring of their own; the module's describes them
    doc = inspect.getdoc(value)
    assert doc and doc != inspect.getdoc(object), f"{module_name}.{name} has no docstring"
    if _needs_example(value):
        assert ">>>" in doc, f"{module_name}.{name} has no example"
        examples = doctest.DocTestParser().get_examples(doc)
        runs = [example for example in examples if not example.options.get(doctest.SKIP)]
        if f"{module_name}.{name}" not in SKIPPED_EXAMPLES:
            assert runs, f"{module_name}.{name}: every example is skipped (+SKIP); give it one that runs"


def test_a_tokenizer_that_cannot_load_stops_with_one_line(tmp_path):
    from pyattn.cli._checks import special_tokens
    from pyattn.cli._flags import Refused

    with pytest.raises(Refused) as stop:
        special_tokens(str(tmp_path / "no-such-tokenizer"))
    message = str(stop.value)
    assert message.startswith("cannot load the tokenizer") and "special tokens cannot be told apart" in message
    assert "\n" not in message
