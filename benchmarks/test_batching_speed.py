"""Documents per second for short documents: several documents' integration
nodes in one forward + backward (``attribute_many(group=True)``, the default)
against one document at a time (``group=False``), same run, same settings
(n_steps="auto", tol 0.01, the default memory budget, demo model, CPU).

16 demo test documents of 128-300 tokens (110-250 words, capped at 300
tokens). Every grouped result equals its one-at-a-time result
(tests/attribution/test_batching.py); here only the time is measured.

Run (on a quiet machine):
    python -m pytest benchmarks/test_batching_speed.py --benchmark-only --benchmark-json=build/batching.json
    python benchmarks/batching_report.py build/batching.json
PYATTN_BENCH_QUICK=1: 4 documents, one round (to check that it works).
"""

from __future__ import annotations

import os

import pytest

import pyattn
from pyattn.demo import demo_documents, load_demo

QUICK = bool(os.environ.get("PYATTN_BENCH_QUICK"))
N_DOCUMENTS = 4 if QUICK else 16
MAX_TOKENS = 300

_cache: dict = {}


def _inputs():
    if "inputs" not in _cache:
        model, tokenizer = load_demo()
        texts = [d.text for d in demo_documents("test", n=N_DOCUMENTS, min_words=110, max_words=250)]
        _cache["inputs"] = (model, tokenizer, texts)
    return _cache["inputs"]


@pytest.mark.parametrize("mode", ["one_at_a_time", "grouped"])
def test_short_documents_per_second(benchmark, mode):
    model, tokenizer, texts = _inputs()
    benchmark.group = "short-documents"

    def run():
        return pyattn.attribute_many(model, tokenizer, texts, progress=False, group=mode == "grouped", device="cpu", max_length=MAX_TOKENS)

    results = benchmark.pedantic(run, rounds=1 if QUICK else 3, iterations=1, warmup_rounds=0 if QUICK else 1)
    tokens = [len(r.tokens) for r in results]
    benchmark.extra_info.update(
        documents=len(texts), tokens_min=min(tokens), tokens_max=max(tokens), tokens_total=sum(tokens),
        model_evaluations=sum(r.model_evaluations for r in results), converged=sum(r.converged for r in results),
    )
