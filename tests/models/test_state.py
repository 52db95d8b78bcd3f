"""pyattn leaves the user's model and torch's global state as it found them
(issue 17, family 4), and two threads on one model get what each gets alone
(family 5).

Every public entry point that runs a model is called on a model set up as a
user might leave it mid-work: in training mode, with the default ``sdpa``
attention (BERT), its own gradients in ``.grad``, some parameters frozen, its
own forward and pre-forward hooks, deterministic algorithms on (warn only).
The state is read before and after, from the model itself (parameters,
buffers, every module's ``training`` flag and hook dicts, instance
``forward`` overrides, every config's ``to_dict()`` and attention
implementation, ``.grad`` tensors by identity and value, ``requires_grad``,
devices) and from torch (grad mode, inference mode, deterministic flags,
threads, default dtype, anomaly mode, matmul precision, the torch / numpy /
Python RNG states), and must be equal. Each call runs plain, inside
``torch.no_grad()``, inside ``torch.inference_mode()`` and after
``torch.set_grad_enabled(False)``; and again with a user hook that raises (an
exception, and Ctrl-C) at the first and at a later forward pass mid-call.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import threading

import numpy as np
import pytest
import torch

import pyattn
from pyattn.pipeline.documents import Document
from pyattn.models.inputs import encode
from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer

STEPS = dict(n_steps=4)


# ------------------------------------------------------------------ the state
def model_state(model) -> dict:
    """Everything about the model a pyattn call could change."""
    modules = dict(model.named_modules())
    hooks = {}
    for name, module in modules.items():
        for attribute in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_forward_hooks_with_kwargs",
                          "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called", "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            table = getattr(module, attribute, None)
            if table:
                hooks[(name, attribute)] = [(key, id(value)) for key, value in table.items()]
    configs = {}
    for name, module in modules.items():
        config = getattr(module, "config", None)
        if config is not None:
            configs[name] = (config.to_dict(), getattr(config, "_attn_implementation", None))
    return {
        "parameters": {name: (p.detach().clone(), p.requires_grad, p.device, p.dtype) for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
        "grads": {name: None if p.grad is None else (id(p.grad), p.grad.clone()) for name, p in model.named_parameters()},
        "training": {name: m.training for name, m in modules.items()},
        "forward_overrides": sorted(name for name, m in modules.items() if "forward" in m.__dict__),
        "hooks": hooks,
        "configs": configs,
    }


def torch_state() -> dict:
    return {
        "grad_enabled": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "deterministic": (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        "num_threads": torch.get_num_threads(),
        "default_dtype": torch.get_default_dtype(),
        "anomaly": torch.is_anomaly_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }


def assert_same(before: dict, after: dict, what: str) -> None:
    assert before.keys() == after.keys()
    for key in before:
        left, right = before[key], after[key]
        if key in ("parameters", "buffers", "grads"):
            assert left.keys() == right.keys(), f"{what}: {key} names changed"
            for name in left:
                a, b = left[name], right[name]
                if key == "parameters":
                    assert a[1:] == b[1:], f"{what}: parameter {name} requires_grad/device/dtype changed: {a[1:]} -> {b[1:]}"
                    assert torch.equal(a[0], b[0]), f"{what}: parameter {name} changed"
                elif key == "buffers":
                    assert torch.equal(a, b), f"{what}: buffer {name} changed"
                else:
                    assert (a is None) == (b is None), f"{what}: .grad of {name} changed from {'None' if a is None else 'a tensor'}"
                    if a is not None:
                        assert a[0] == b[0], f"{what}: .grad of {name} is another tensor now"
                        assert torch.equal(a[1], b[1]), f"{what}: .grad of {name} changed in place"
        elif key == "torch_rng":
            assert torch.equal(left, right), f"{what}: torch's RNG state changed"
        elif key == "numpy_rng":
            assert left[0] == right[0] and np.array_equal(left[1], right[1]) and left[2:] == right[2:], f"{what}: numpy's RNG state changed"
        else:
            assert left == right, f"{what}: {key} changed: {left} -> {right}"


# ------------------------------------------------------------------ the models
class UserHooks:
    """A user's own hooks (they must stay), and one that can raise."""

    def __init__(self, model):
        self.calls = 0
        self.raise_at: int | None = None
        self.error: type[BaseException] = RuntimeError
        layer = model.base_model.encoder.layer[-1]
        self.handles = [
            layer.register_forward_hook(self.forward),
            model.base_model.encoder.layer[0].register_forward_pre_hook(lambda module, args: None),
        ]

    def forward(self, module, args, output):
        self.calls += 1
        if self.raise_at is not None and self.calls > self.raise_at:
            raise self.error("the user's hook raised")
        return None


def user_model(kind: str):
    """A tiny seeded model left as a user might leave it."""
    model = tiny_longformer(windows=(4, 8), seed=3) if kind == "longformer" else tiny_classifier(kind, seed=3)
    tokenizer = tiny_tokenizer("bert" if kind == "bert" else "roberta")
    with torch.no_grad():  # transformers installs its output-capturing hooks on the first call: a user's model has run
        model(**tokenizer("the model", return_tensors="pt"), output_attentions=True, output_hidden_states=True)
    model.train()
    generator = torch.Generator().manual_seed(5)
    for name, parameter in model.named_parameters():
        if "embeddings" in name:
            parameter.requires_grad_(False)  # frozen
        else:
            parameter.grad = torch.randn(parameter.shape, generator=generator)  # the user's own gradients
    hooks = UserHooks(model)
    return model, tokenizer, hooks


@pytest.fixture(params=["bert", "roberta", "longformer"])
def setup(request):
    model, tokenizer, hooks = user_model(request.param)
    if request.param == "bert":
        assert model.config._attn_implementation == "sdpa"  # pyattn needs eager: it must put sdpa back
    return request.param, model, tokenizer, hooks


@pytest.fixture(autouse=True)
def deterministic():
    """Deterministic algorithms on (warn only), as a careful user has them."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


# ------------------------------------------------------------------ entry points
TEXT = sample_text(14, seed=1)


def _attribution(model, tokenizer):
    return pyattn.attribute(model, tokenizer, TEXT, target=0, device="cpu", **STEPS)


_STORES = itertools.count()


def _run_attribution(model, tokenizer, tmp):
    from pyattn.pipeline import run_attribution
    from pyattn.pipeline.store import ResultsStore

    documents = [Document("a", 0, TEXT, 1), Document("b", 1, sample_text(9, seed=2), 0)]
    with ResultsStore.create(os.path.join(tmp, f"store-{next(_STORES)}"), {"model": "user"}) as store:
        return run_attribution(model, tokenizer, documents, store, dict(STEPS, device="cpu"), progress=False)


def _rollout(model, tokenizer):
    # rollout by whatever route the model takes (band, q/k, eager)
    return pyattn.attention_from_inputs(model, tokenizer(TEXT, return_tensors="pt")["input_ids"], rollout=True).rollout


ENTRY_POINTS = {
    "attribute": lambda m, t, tmp: pyattn.attribute(m, t, TEXT, device="cpu", **STEPS),
    "attribute_many": lambda m, t, tmp: pyattn.attribute_many(m, t, [TEXT, "a neural network"], progress=False, device="cpu", **STEPS),
    "attribute_stream": lambda m, t, tmp: list(pyattn.attribute_stream(m, t, [TEXT, "a neural network"], device="cpu", **STEPS)),
    "attention": lambda m, t, tmp: pyattn.attention(m, t, TEXT, per_head=True, head_importance=torch.rand(m.config.num_hidden_layers, m.config.num_attention_heads, generator=torch.Generator().manual_seed(0))),
    "attention_from_inputs": lambda m, t, tmp: pyattn.attention_from_inputs(m, t(TEXT, return_tensors="pt")["input_ids"]),
    "explain": lambda m, t, tmp: pyattn.explain(m, t, TEXT, random_rankings=1, significance=9, device="cpu", **STEPS),
    "taylor_importance": lambda m, t, tmp: pyattn.taylor_importance(m, t, [TEXT, "a neural network"], [0, 2], progress=False),
    "head_gate_importance": lambda m, t, tmp: pyattn.head_gate_importance(m, t, [TEXT, "a neural network"], [0, 2], progress=False),
    "single_pass": lambda m, t, tmp: pyattn.single_pass(m, t, TEXT),
    "single_pass_from_inputs": lambda m, t, tmp: pyattn.single_pass_from_inputs(m, t(TEXT, return_tensors="pt")["input_ids"]),
    "faithfulness": lambda m, t, tmp: __import__("pyattn.compare.faithfulness", fromlist=["x"]).faithfulness(
        m, t, TEXT, {"first": np.arange(encode(m, t, TEXT).input_ids.shape[1], dtype=float)}, random_rankings=1),
    "rollout": lambda m, t, tmp: _rollout(m, t),
    "process_document": lambda m, t, tmp: __import__("pyattn.pipeline", fromlist=["x"]).process_document(m, t, Document("a", 0, TEXT, 1), dict(STEPS, device="cpu")),
    "record_of": lambda m, t, tmp: __import__("pyattn.pipeline", fromlist=["x"]).record_of(m, t, Document("a", 0, TEXT, 1), _attribution(m, t), None),
    "run_attribution": _run_attribution,
}

CONTEXTS = {
    "plain": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


@pytest.mark.filterwarnings("ignore::pyattn.explanation.NotConvergedWarning")  # n_steps fixed small for speed; convergence is tested elsewhere
@pytest.mark.parametrize("context", [*CONTEXTS, "set_grad_enabled(False)"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_leaves_the_model_and_torch_as_found(entry, context, setup, tmp_path):
    kind, model, tokenizer, hooks = setup
    previous = torch.is_grad_enabled()
    try:
        if context == "set_grad_enabled(False)":
            torch.set_grad_enabled(False)
            manager = contextlib.nullcontext()
        else:
            manager = CONTEXTS[context]()
        with manager:
            before_model, before_torch = model_state(model), torch_state()
            result = ENTRY_POINTS[entry](model, tokenizer, str(tmp_path))
            after_model, after_torch = model_state(model), torch_state()
    finally:
        torch.set_grad_enabled(previous)
    assert result is not None
    assert hooks.calls > 0, "the user's hook saw pyattn's forward passes"
    assert_same(before_model, after_model, f"{entry} ({context}, {kind})")
    assert_same(before_torch, after_torch, f"{entry} ({context}, {kind})")


class UserStop(Exception):
    pass


@pytest.mark.filterwarnings("ignore::pyattn.explanation.NotConvergedWarning")  # n_steps fixed small for speed; convergence is tested elsewhere
@pytest.mark.parametrize("error", [UserStop, KeyboardInterrupt], ids=["exception", "ctrl-c"])
@pytest.mark.parametrize("when", ["first-forward", "last-forward"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_state_is_restored_after_a_hook_raises_mid_call(entry, when, error, setup, tmp_path):
    """The user's hook raises at the first forward pass of the call, or at its
    last (after the earlier ones ran: mid-call for every entry point with
    more than one forward pass)."""
    kind, model, tokenizer, hooks = setup
    if when == "last-forward":  # count the call's forward passes on a spare copy of the same model
        spare, spare_tokenizer, spare_hooks = user_model(kind)
        ENTRY_POINTS[entry](spare, spare_tokenizer, str(tmp_path))
        raise_at = spare_hooks.calls - 1
    else:
        raise_at = 0
    before_model, before_torch = model_state(model), torch_state()
    hooks.raise_at, hooks.error = raise_at, error
    with pytest.raises(error) as raised:
        ENTRY_POINTS[entry](model, tokenizer, str(tmp_path))
    assert hooks.calls == raise_at + 1, "raised at the forward pass asked for"
    if error is UserStop:
        assert str(raised.value) == "the user's hook raised", "the user's own exception reaches the user"
    hooks.raise_at = None
    assert_same(before_model, model_state(model), f"{entry} after {error.__name__} at forward {raise_at + 1} ({kind})")
    assert_same(before_torch, torch_state(), f"{entry} after {error.__name__} ({kind})")
    # and the model still works as the user left it
    ENTRY_POINTS["attribute"](model, tokenizer, str(tmp_path))


def test_results_inside_no_grad_and_inference_mode_are_the_models_own():
    """Attribution inside inference mode on a frozen model: the scores still
    sum to the model's own F(input) - F(baseline) (up to delta), and equal
    those of a plain call."""
    from pyattn.models.inputs import encode

    model, tokenizer, _ = user_model("bert")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.eval()
    plain = pyattn.attribute(model, tokenizer, TEXT, n_steps=8)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            inside = pyattn.attribute(model, tokenizer, TEXT, n_steps=8)
        document = encode(model, tokenizer, TEXT)
        with torch.no_grad():
            model.set_attn_implementation("eager")
            p_input = model(**document.forward_kwargs()).logits.softmax(-1)[0, inside.target]
            p_baseline = model(**document.forward_kwargs(document.baseline_ids)).logits.softmax(-1)[0, inside.target]
            model.set_attn_implementation("sdpa")
        assert abs(inside.scores.sum() - float(p_input - p_baseline) - inside.delta) < 1e-6
        np.testing.assert_allclose(inside.scores, plain.scores, rtol=0, atol=1e-12)


def test_taylor_importance_on_a_frozen_model_equals_the_models_own_gradients():
    """T3-Vis importance from first principles: (grad x param)^2 of the
    query weight rows of each head, summed, with the gradients taken by
    torch on an unfrozen copy; the frozen model gives the same numbers and
    stays frozen, its .grad untouched."""
    import copy

    model, tokenizer, _ = user_model("bert")
    model.eval()
    reference = copy.deepcopy(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    importance = pyattn.taylor_importance(model, tokenizer, [TEXT], [1], normalise=False, progress=False)
    assert not any(p.requires_grad for p in model.parameters())
    from pyattn.models.inputs import encode

    reference.set_attn_implementation("eager")
    reference.zero_grad(set_to_none=True)
    document = encode(reference, tokenizer, TEXT)
    loss = torch.nn.functional.cross_entropy(reference(**document.forward_kwargs()).logits, torch.tensor([1]))
    loss.backward()
    heads, size = model.config.num_attention_heads, model.config.hidden_size // model.config.num_attention_heads
    expected = torch.zeros(model.config.num_hidden_layers, heads, dtype=torch.float64)
    for index, layer in enumerate(reference.base_model.encoder.layer):
        for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            expected[index] += ((linear.weight.grad * linear.weight).double() ** 2).view(heads, size, -1).sum((1, 2))
            expected[index] += ((linear.bias.grad * linear.bias).double() ** 2).view(heads, size).sum(1)
        dense = layer.attention.output.dense
        expected[index] += ((dense.weight.grad * dense.weight).double() ** 2).view(-1, heads, size).sum((0, 2))
    torch.testing.assert_close(importance.double(), expected, rtol=1e-4, atol=0)


# ------------------------------------------------------------------ threads
@pytest.mark.filterwarnings("ignore::pyattn.explanation.NotConvergedWarning")  # n_steps fixed small for speed; convergence is tested elsewhere
@pytest.mark.parametrize("kind", ["bert", "longformer"])
def test_two_threads_on_one_model_get_what_each_gets_alone(kind):
    model, tokenizer, _ = user_model(kind)
    model.eval()
    texts = [sample_text(10, seed=20), sample_text(23, seed=21), sample_text(6, seed=22), sample_text(15, seed=23)]

    def run(text):
        explanation = pyattn.explain(model, tokenizer, text, faithfulness=False, device="cpu", **STEPS)
        return explanation.attribution.scores, explanation.attention["all"]

    alone = [run(text) for text in texts]
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(texts))

    def worker(index):
        barrier.wait()
        try:
            for _ in range(2):
                results[index] = run(texts[index])
        except BaseException as error:  # noqa: BLE001 - reported below
            results[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for index, (scores, attention) in enumerate(alone):
        got = results[index]
        assert not isinstance(got, BaseException), f"thread {index}: {got!r}"
        np.testing.assert_array_equal(got[0], scores)
        np.testing.assert_array_equal(got[1], attention)


def test_threads_calling_different_entry_points_on_one_model():
    """attribute, attention, taylor_importance and single_pass at once on one
    model: each result equals the one it gets alone."""
    model, tokenizer, _ = user_model("roberta")
    model.eval()
    calls = {
        "attribute": lambda: pyattn.attribute(model, tokenizer, TEXT, **STEPS).scores,
        "attention": lambda: pyattn.attention(model, tokenizer, TEXT, per_head=True).received.per_layer.numpy(),
        "taylor": lambda: pyattn.taylor_importance(model, tokenizer, [TEXT], [1], progress=False).numpy(),
        "single_pass": lambda: pyattn.single_pass(model, tokenizer, TEXT).gradient_x_input,
    }
    alone = {name: call() for name, call in calls.items()}
    results: dict[str, object] = {}
    barrier = threading.Barrier(len(calls))

    def worker(name):
        barrier.wait()
        try:
            results[name] = calls[name]()
        except BaseException as error:  # noqa: BLE001
            results[name] = error

    threads = [threading.Thread(target=worker, args=(name,)) for name in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for name, expected in alone.items():
        assert not isinstance(results[name], BaseException), f"{name}: {results[name]!r}"
        np.testing.assert_array_equal(results[name], expected)


def test_cli_leaves_torch_as_found(tmp_path):
    """The CLI's runner functions (attribute, compare, report) in-process."""
    import pandas as pd

    from pyattn.cli import main

    model, tokenizer, _ = user_model("bert")
    model.eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = tmp_path / "docs.csv"
    pd.DataFrame({"text": [TEXT, sample_text(8, seed=4)], "label": [0, 1]}).to_csv(data, index=False)
    before = torch_state()
    for argv in (["attribute", "--model", folder, "--data", data, "--out", tmp_path / "out", "--steps", "4", "--device", "cpu", "--quiet"],
                 ["compare", "--results", tmp_path / "out", "--quiet"],
                 ["report", "--results", tmp_path / "out", "--out", tmp_path / "reports", "--quiet"]):
        assert main([str(a) for a in argv]) == 0
        assert_same(before, torch_state(), argv[0])


def test_an_abandoned_stream_blocks_no_one_and_puts_the_model_back_when_closed():
    """attribute_stream holds the model only while it computes: a stream left
    waiting at a yield lets another thread explain the same model, leaves the
    caller's grad mode alone, and restores the model when closed."""
    model, tokenizer, _ = user_model("bert")
    before = model_state(model)
    with torch.no_grad():
        stream = pyattn.attribute_stream(model, tokenizer, [TEXT, "a neural network", sample_text(7, seed=9)], group=False, **STEPS)
        next(stream)
        assert not torch.is_grad_enabled(), "the caller's no_grad holds between steps"
    out = []
    other = threading.Thread(target=lambda: out.append(pyattn.attention(model, tokenizer, TEXT)))
    other.start()
    other.join(timeout=120)
    assert not other.is_alive() and len(out) == 1, "the other thread was not blocked"
    stream.close()
    assert_same(before, model_state(model), "after the stream was closed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("entry", ["attribute", "explain", "single_pass"])
def test_a_call_on_another_device_moves_the_model_back(entry):
    """device="cuda" for a model on the CPU: the work runs on the GPU, the
    model (and the user's .grad) is back on the CPU afterwards, and the
    scores are the CPU ones up to float32 rounding."""
    model, tokenizer, _ = user_model("bert")
    model.eval()
    before = model_state(model)
    calls = {
        "attribute": lambda device: pyattn.attribute(model, tokenizer, TEXT, device=device, **STEPS).scores,
        "explain": lambda device: pyattn.explain(model, tokenizer, TEXT, device=device, faithfulness=False, **STEPS).attribution.scores,
        "single_pass": lambda device: pyattn.single_pass(model, tokenizer, TEXT, device=device).gradient_x_input,
    }
    on_gpu = calls[entry]("cuda")
    assert_same(before, model_state(model), f"{entry} on cuda")
    np.testing.assert_allclose(on_gpu, calls[entry]("cpu"), rtol=1e-3, atol=1e-6)
