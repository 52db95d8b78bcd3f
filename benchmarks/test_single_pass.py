"""Single-pass explanations (pyattn.attribution.single_pass): cost and faithfulness.

Cost, per document, against floors measured in the same run:
- ``floor_forward``: one forward pass without gradients;
- ``floor_forward_backward``: one forward and one backward pass of the target
  probability down to the embedding output (the backward the single pass
  runs: no parameter gradients), no attention hooks;
- ``single_pass``: all three single-pass methods (gradient x input, attention
  x gradient per layer, gradient-weighted rollout) from one forward and one
  backward pass;
- ``integrated_gradients`` (demo model only): ``pyattn.attribute`` with
  ``n_steps="auto"``.
On the shipped demo model (documents of about 512 and 2,048 tokens) and on a
Longformer with longformer-base-4096's exact config and random seeded weights
(N = 2,048; PYATTN_BENCH_BASE_SIZES="2048 4096" adds 4,096: its backward
needs about 8 GB).

Faithfulness (demo model): AOPC comprehensiveness and sufficiency
(pyattn.compare.faithfulness, deletion, k = 1, 5, 10, 20, 50 %) of each method's
signed ranking beside integrated gradients' and random rankings, over
every 10th test document (PYATTN_BENCH_QUICK=1: every 40th). Per-document
numbers are kept in extra_info; benchmarks/single_pass_report.py turns the
JSON into benchmarks/results/single_pass.md.

On a shared machine, time with the process's CPU time (all threads), which
other jobs' load disturbs far less than wall time:

Run: python -m pytest benchmarks/test_single_pass.py --benchmark-only \\
         --benchmark-timer time.process_time --benchmark-json=build/single_pass.json
     python benchmarks/single_pass_report.py build/single_pass.json > benchmarks/results/single_pass.md
(-k demo and -k base split the run; the report merges several JSON files.)
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import pytest
import torch

import pyattn
from attribution_baselines import base_shaped_longformer
from pyattn.demo import demo_documents, load_demo
from pyattn.compare.faithfulness import faithfulness
from pyattn.models.inputs import embedding_layer, encode, position_ids_for
from pyattn.attribution.single_pass import single_pass, single_pass_from_inputs

QUICK = bool(os.environ.get("PYATTN_BENCH_QUICK"))
DEMO_SIZES = [512] if QUICK else [512, 2048]
BASE_SIZES = [int(n) for n in os.environ.get("PYATTN_BENCH_BASE_SIZES", "2048").split()]
FAITHFULNESS_STRIDE = 40 if QUICK else 10


@functools.cache
def demo():
    return load_demo()


@functools.cache
def base_model():
    """longformer-base-4096's exact config, random seeded weights."""
    return base_shaped_longformer(seed=0)


def demo_text(tokens: int) -> str:
    """Machine-learning test documents joined until about `tokens` tokens."""
    _, tokenizer = demo()
    ids: list[int] = []
    for document in demo_documents("test"):
        if document.label == 0:
            ids += tokenizer(" " + document.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= tokens - 2:
            return tokenizer.decode(ids[: tokens - 2])
    raise LookupError(f"the demo test documents hold fewer than {tokens} tokens")


def demo_inputs(tokens: int) -> dict:
    model, tokenizer = demo()
    return encode(model, tokenizer, demo_text(tokens)).forward_kwargs()


def base_inputs(n: int) -> dict:
    generator = torch.Generator().manual_seed(n)
    input_ids = torch.randint(3, 50265, (1, n), generator=generator)
    input_ids[0, 0], input_ids[0, -1] = 0, 2
    model = base_model()
    global_attention_mask = torch.zeros_like(input_ids)
    global_attention_mask[0, 0] = 1
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), position_ids=position_ids_for(model, input_ids), global_attention_mask=global_attention_mask)


def forward(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def forward_backward(model, inputs):
    """The target probability's gradient with respect to the embedding output
    (as a leaf: no parameter gradients), the backward the single pass runs."""
    leaf = {}

    def hook(module, args, output):
        leaf["x"] = output.detach().requires_grad_(True)
        return leaf["x"]

    handle = embedding_layer(model).register_forward_hook(hook)
    try:
        logits = model(**inputs).logits
        probability = logits.softmax(-1)[0, int(logits.argmax())]
        (grad,) = torch.autograd.grad(probability, [leaf["x"]])
    finally:
        handle.remove()
    return grad


def single(model, inputs):
    kwargs = dict(inputs)
    global_mask = kwargs.pop("global_attention_mask")
    return single_pass_from_inputs(model, global_attention_mask=global_mask, **kwargs)


ROUTES = {"floor_forward": forward, "floor_forward_backward": forward_backward, "single_pass": single}


def _run(benchmark, model, inputs, route, group, rounds, warm_up=True):
    benchmark.group = group
    fn = ROUTES[route]
    if warm_up:
        fn(model, inputs)  # first-call costs (op loading, allocator) are not the route's
    benchmark.pedantic(lambda: fn(model, inputs), rounds=rounds, iterations=1)
    benchmark.extra_info.update(tokens=int(inputs["input_ids"].shape[1]), model=group.split("-")[2])


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("tokens", DEMO_SIZES)
def test_cost_demo(benchmark, tokens, route):
    model, _ = demo()
    _run(benchmark, model, demo_inputs(tokens), route, f"single-pass-demo-{tokens}", rounds=5)


@pytest.mark.parametrize("tokens", DEMO_SIZES)
def test_cost_demo_integrated_gradients(benchmark, tokens):
    model, tokenizer = demo()
    text = demo_text(tokens)
    benchmark.group = f"single-pass-demo-{tokens}"
    pyattn.attribute(model, tokenizer, text, device="cpu")  # warm-up
    result = benchmark.pedantic(lambda: pyattn.attribute(model, tokenizer, text, device="cpu"), rounds=3, iterations=1)
    benchmark.extra_info.update(tokens=len(result.tokens), model="demo", model_evaluations=result.model_evaluations, n_steps=result.n_steps, converged=result.converged)


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("tokens", BASE_SIZES)
def test_cost_base(benchmark, tokens, route):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    # One round, no warm-up: each call takes minutes on 2 shared cores, where
    # one-time costs are small beside it.
    _run(benchmark, base_model(), base_inputs(tokens), route, f"single-pass-base-{tokens}", rounds=1, warm_up=False)


RANKINGS = ("integrated_gradients", "gradient_x_input", "attention_gradient", "attention_gradient_positive", "gradient_rollout")


def test_faithfulness_demo(benchmark):
    """AOPC of each ranking over every FAITHFULNESS_STRIDE-th test document;
    per document also the CPU time (time.process_time, all threads) of the
    single pass and of integrated gradients."""
    model, tokenizer = demo()
    documents = demo_documents("test")[::FAITHFULNESS_STRIDE]
    benchmark.group = "single-pass-faithfulness-demo"
    per_document: dict[str, dict[str, list[float]]] = {name: {"comprehensiveness": [], "sufficiency": []} for name in RANKINGS + ("random",)}
    costs: dict[str, list] = {"tokens": [], "single_pass_seconds": [], "integrated_gradients_seconds": [], "integrated_gradients_model_evaluations": [], "integrated_gradients_converged": []}

    def evaluate():
        for document in documents:
            start = time.process_time()
            sp = single_pass(model, tokenizer, document.text)
            middle = time.process_time()
            ig = pyattn.attribute(model, tokenizer, document.text, device="cpu")
            end = time.process_time()
            assert ig.target == sp.target, "IG and the single pass explain the same (predicted) class"
            rankings = {
                "integrated_gradients": ig.scores,
                "gradient_x_input": sp.gradient_x_input,
                "attention_gradient": sp.attention_gradient_total,
                "attention_gradient_positive": sp.attention_gradient_positive_total,
                "gradient_rollout": sp.gradient_rollout,
            }
            _, aopc = faithfulness(model, tokenizer, document.text, rankings, target=sp.target)
            for row in aopc.itertuples():
                per_document[row.ranking]["comprehensiveness"].append(float(row.comprehensiveness_aopc))
                per_document[row.ranking]["sufficiency"].append(float(row.sufficiency_aopc))
            costs["tokens"].append(len(sp.tokens))
            costs["single_pass_seconds"].append(middle - start)
            costs["integrated_gradients_seconds"].append(end - middle)
            costs["integrated_gradients_model_evaluations"].append(ig.model_evaluations)
            costs["integrated_gradients_converged"].append(bool(ig.converged))

    benchmark.pedantic(evaluate, rounds=1, iterations=1)
    benchmark.extra_info.update(documents=len(documents), stride=FAITHFULNESS_STRIDE, aopc=per_document, costs=costs)
    assert all(np.isfinite(v).all() for scores in per_document.values() for v in scores.values())
