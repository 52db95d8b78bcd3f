"""Attribution cost on the shipped demo model: the original notebooks'
settings (a fixed 500 steps, internal batch size 2) against n_steps="auto"
with the automatic batch size, for documents of about 512, 2,048 and 4,096
tokens. Each benchmark records model evaluations and the completeness error
reached in extra_info (benchmarks/report.py prints them).

Run: make bench   (or: python -m pytest benchmarks/test_attribution_speed.py --benchmark-only)
PYATTN_BENCH_QUICK=1 runs the 512-token document only.
"""

from __future__ import annotations

import os

import pytest

import pyattn
from pyattn.demo import demo_documents, load_demo

QUICK = bool(os.environ.get("PYATTN_BENCH_QUICK"))
TARGETS = [512] if QUICK else [512, 2048, 4096]

_demo = {}


def demo():
    if not _demo:
        _demo["model"], _demo["tokenizer"] = load_demo()
    return _demo["model"], _demo["tokenizer"]


def document_of(tokens: int) -> str:
    """A machine-learning test document of about `tokens` tokens: test
    documents of that label joined until long enough, then cut."""
    model, tokenizer = demo()
    ids: list[int] = []
    for document in demo_documents("test"):
        if document.label == 0:
            ids += tokenizer(" " + document.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= tokens - 2:
            return tokenizer.decode(ids[: tokens - 2])
    raise LookupError(f"the demo test documents hold fewer than {tokens} tokens")


def _attribute(benchmark, tokens: int, **settings):
    model, tokenizer = demo()
    text = document_of(tokens)
    benchmark.group = f"attribution-{tokens}"
    result = benchmark.pedantic(lambda: pyattn.attribute(model, tokenizer, text, device="cpu", **settings), rounds=1, iterations=1)
    benchmark.extra_info.update(
        model_evaluations=result.model_evaluations,
        relative_error=result.relative_error,
        n_steps=result.n_steps,
        tokens=len(result.tokens),
    )
    return result


@pytest.mark.parametrize("tokens", TARGETS)
def test_attribution_original_settings(benchmark, tokens):
    _attribute(benchmark, tokens, n_steps=500, internal_batch_size=2)


@pytest.mark.parametrize("tokens", TARGETS)
def test_attribution_auto(benchmark, tokens):
    result = _attribute(benchmark, tokens, n_steps="auto", tol=0.01)
    assert result.converged
