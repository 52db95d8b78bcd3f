"""Attribution cost, measured in one run (ratios within the run).

1. One IG step (forward + backward of the full model, batch 1) on a
   Longformer with longformer-base-4096's exact config (random seeded weights,
   built locally) at 2,048 and 4,096 tokens: transformers' sliding-chunk
   attention against pyattn's fast attention; time and peak RSS above the
   process's level before the step.
2. Model evaluations and seconds to reach 1% completeness on a demo test
   document: the notebooks' method (Captum, Gauss-Legendre 50 steps, batch
   2), the previous doubling loop (benchmarks/attribution_baselines.py) and
   pyattn's nested loop (``n_steps="auto"``), on the demo model (smooth) and
   the demo model with its logits sharpened 300x (needs 129 nodes).
3. Completeness error per evaluation of each quadrature rule on the same two
   models (how the default rule was chosen).

Run: python -m pytest benchmarks/test_attribution_speed.py --benchmark-only \
         --benchmark-json=build/attribution.json
     python benchmarks/attribution_report.py build/attribution.json
PYATTN_BENCH_QUICK=1 skips the 4,096-token step.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch

import pyattn
from attribution_baselines import PeakRSS, base_shaped_longformer, corpus_ids, doubling_loop, notebook_method, sharpened
from pyattn.demo import demo_documents, load_demo
from pyattn.models.fast_attention import fast_attention_context

QUICK = bool(os.environ.get("PYATTN_BENCH_QUICK"))
STEP_TOKENS = [2048] if QUICK else [2048, 4096]
SHARPEN = 300.0
STEP_ROUNDS = int(os.environ.get("PYATTN_BENCH_STEP_ROUNDS", "2"))  # after one warm-up round


@functools.cache
def demo():
    return load_demo()


@functools.cache
def models():
    model, _ = demo()
    return {"smooth": model, "sharpened": sharpened(model, SHARPEN)}


def demo_text() -> str:
    return next(iter(demo_documents("test"))).text


@functools.cache
def base_model():
    return base_shaped_longformer(seed=0)


@pytest.mark.parametrize("tokens", STEP_TOKENS)
@pytest.mark.parametrize("attention", ["transformers", "fast"])
def test_ig_step(benchmark, attention, tokens):
    model = base_model()
    generator = torch.Generator().manual_seed(tokens)
    ids = torch.randint(3, 50265, (1, tokens), generator=generator)
    ids[0, 0], ids[0, -1] = 0, 2
    global_mask = torch.zeros_like(ids)
    global_mask[0, 0] = 1
    embeddings = model.longformer.embeddings

    def step():
        model.zero_grad(set_to_none=True)
        with fast_attention_context(model, attention == "fast"), PeakRSS() as memory:
            points = embeddings(input_ids=ids).detach().requires_grad_(True)
            hook = embeddings.register_forward_hook(lambda module, args, output: points)
            try:
                logits = model(input_ids=ids, global_attention_mask=global_mask).logits
                (grad,) = torch.autograd.grad(logits.softmax(-1)[0, 1], points)
            finally:
                hook.remove()
        return memory.extra_bytes

    benchmark.group = f"ig-step-{tokens}"
    extra = benchmark.pedantic(step, rounds=STEP_ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(peak_rss_extra_gb=extra / 1e9, tokens=tokens, attention=attention)


def _record(benchmark, scores, relative_error, evaluations, steps):
    benchmark.extra_info.update(model_evaluations=int(evaluations), relative_error=float(relative_error), n_steps=int(steps))


@pytest.mark.parametrize("model_name", ["smooth", "sharpened"])
@pytest.mark.parametrize("method", ["notebook", "doubling", "nested"])
def test_to_completeness(benchmark, method, model_name):
    model, tokenizer = models()[model_name], demo()[1]
    text = demo_text()
    benchmark.group = f"to-1%-{model_name}"

    def run():
        if method == "notebook":
            return notebook_method(model, tokenizer, text)
        if method == "doubling":
            return doubling_loop(model, tokenizer, text, tol=0.01)
        r = pyattn.attribute(model, tokenizer, text, tol=0.01, device="cpu")
        benchmark.extra_info["rule"] = r.method
        return r.scores, r.relative_error, r.model_evaluations, r.n_steps

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    _record(benchmark, *result)


@pytest.mark.parametrize("model_name", ["smooth", "sharpened"])
@pytest.mark.parametrize("rule", ["clenshaw-curtis", "trapezoid", "gausslegendre"])
def test_rule_error_per_evaluation(benchmark, rule, model_name):
    """Completeness error at 5, 9, 17, 33, 65 evaluations. Nested rules give all
    four from one 65-node run (their levels); Gauss-Legendre needs four runs."""
    model, tokenizer = models()[model_name], demo()[1]
    text = demo_text()
    benchmark.group = f"rules-{model_name}"

    def run():
        if rule == "gausslegendre":
            errors = {}
            for n in (5, 9, 17, 33, 65):
                r = pyattn.attribute(model, tokenizer, text, n_steps=n, method=rule, device="cpu")
                errors[n] = r.relative_error
            return errors
        r = pyattn.attribute(model, tokenizer, text, n_steps="auto", method=rule, tol=1e-12, max_steps=65, device="cpu")
        return {n: d / abs(r.output_gap) for n, d in r.tries}

    errors = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({f"error_at_{n}": float(e) for n, e in errors.items()})


@pytest.mark.parametrize("rule", ["clenshaw-curtis", "trapezoid", "gausslegendre"])
def test_rule_error_base_shaped(benchmark, rule):
    """The same on the base-shaped Longformer (random seeded weights): one
    document of 512 tokens (the first of benchmarks/test_cli_scale.py's
    corpus slice), up to 17 nodes."""
    model, tokenizer = base_model(), demo()[1]
    text = tokenizer.decode(corpus_ids(tokenizer, 510))
    benchmark.group = "rules-base-512"

    def run():
        if rule == "gausslegendre":
            return {n: pyattn.attribute(model, tokenizer, text, n_steps=n, method=rule, device="cpu").relative_error for n in (5, 9, 17)}
        r = pyattn.attribute(model, tokenizer, text, n_steps="auto", method=rule, tol=1e-12, max_steps=17, device="cpu")
        return {n: d / abs(r.output_gap) for n, d in r.tries}

    errors = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({f"error_at_{n}": float(e) for n, e in errors.items()})
