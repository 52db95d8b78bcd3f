"""Docs that run: the examples in docstrings are executed (doctest), every
public name is documented, and a few conventions the 1.0 API promises hold."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import pyattn

MODULES_WITH_EXAMPLES = [
    "pyattn.similarity",
    "pyattn.tokens",
    "pyattn.explain",
    "pyattn.layers",
    "pyattn.ops",
    "pyattn.attention",
    "pyattn.importance",
    "pyattn.attribution",
    "pyattn.demo",
    "pyattn.demo.data",
    "pyattn.significance",
    "pyattn.uncertainty",
]


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


@pytest.mark.parametrize("name", [n for n in pyattn.__all__ if n != "__version__"])
def test_every_public_name_is_documented(name):
    value = getattr(pyattn, name)
    doc = inspect.getdoc(value)
    assert doc, f"pyattn.{name} has no docstring"
    if inspect.isfunction(value):  # functions show how they are called
        assert ">>>" in doc, f"pyattn.{name} has no example"


def test_a_tokenizer_that_cannot_load_stops_with_one_line(tmp_path):
    from pyattn.cli import _Refused, _special_tokens

    with pytest.raises(_Refused) as stop:
        _special_tokens(str(tmp_path / "no-such-tokenizer"))
    message = str(stop.value)
    assert message.startswith("cannot load the tokenizer") and "special tokens cannot be told apart" in message
    assert "\n" not in message
