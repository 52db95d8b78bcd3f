"""Activation recomputation (issue 18: attribute at 8,192 tokens within the
memory budget): the same scores, the activations kept for the backward pass
counted from first principles (saved-tensor hooks), the automatic choice, and
the user's model put back as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pyattn
from pyattn.attribution import _scheduler, memory
from pyattn.models.recompute import layer_stack, recomputed_layers
from pyattn.attribution.memory import MemoryBudgetWarning, gated_mlp, predicted_step_bytes
from pyattn.errors import InputError, ModelError
from pyattn.models.inputs import encode

TEXT = "the compiler checks every typed program and the network learns its weights from data " * 12


@pytest.fixture(scope="module")
def demo():
    return pyattn.load_demo()


def _saved_bytes(model, document) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one
    forward (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    embeddings = model.get_input_embeddings()
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(**document.forward_kwargs()).logits
    torch.autograd.grad(logits[0, 0], embeddings.weight)
    return sum(seen.values())


def test_the_same_scores_with_and_without_recomputation(demo):
    model, tokenizer = demo
    plain = pyattn.attribute(model, tokenizer, TEXT, n_steps=9, recompute=False)
    again = pyattn.attribute(model, tokenizer, TEXT, n_steps=9, recompute=True)
    assert np.allclose(plain.scores, again.scores, rtol=0, atol=1e-7)
    assert plain.model_evaluations == again.model_evaluations == 9
    assert abs(again.delta) <= abs(plain.delta) + 1e-7


def test_recomputation_keeps_the_layer_inputs_only(demo):
    """First principles: outside the layers, autograd keeps what goes in and
    out of them; with recomputation the per-layer activations are not kept."""
    model, tokenizer = demo
    document = encode(model, tokenizer, TEXT)
    plain = _saved_bytes(model, document)
    with recomputed_layers(model):
        again = _saved_bytes(model, document)
    n, hidden, layers = document.input_ids.shape[1], model.config.hidden_size, model.config.num_hidden_layers
    assert again < plain / 3, (again, plain)
    assert again >= layers * 4 * n * hidden  # at least every layer's input


def test_the_model_comes_back_as_it_went_in(demo):
    model, tokenizer = demo
    stack = layer_stack(model)
    own = stack[1].forward  # a user's own instance-level forward survives
    stack[1].forward = own
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with recomputed_layers(model):
                assert all("forward" in layer.__dict__ for layer in stack)
                raise RuntimeError("inside")
        assert [("forward" in layer.__dict__) for layer in stack] == [False, True, False]
        assert stack[1].__dict__["forward"] is own
        pyattn.attribute(model, tokenizer, "a typed language", n_steps=5, recompute=True)
        assert stack[1].__dict__["forward"] is own and "forward" not in stack[0].__dict__
    finally:
        del stack[1].forward


def test_automatic_recomputation_only_when_one_step_does_not_fit(demo, monkeypatch):
    model, tokenizer = demo
    used = []
    real = _scheduler.recomputed_layers

    def spy(m):
        used.append(True)
        return real(m)

    monkeypatch.setattr(_scheduler, "recomputed_layers", spy)
    n = len(encode(model, tokenizer, TEXT).input_ids[0])
    held = memory.held_bytes("cpu")
    plain_step = predicted_step_bytes(model, n, 1)
    recomputed_step = predicted_step_bytes(model, n, 1, recompute=True)
    assert recomputed_step < plain_step
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemoryBudgetWarning)
        roomy = pyattn.attribute(model, tokenizer, TEXT, n_steps=5, memory_budget=held + 100 * plain_step)
        assert not used
        tight = pyattn.attribute(model, tokenizer, TEXT, n_steps=5, memory_budget=held + (plain_step + recomputed_step) // 2)
        assert used  # one recomputed step fits, a plain one does not: no warning
    assert np.allclose(roomy.scores, tight.scores, rtol=0, atol=1e-7)
    used.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pyattn.attribute(model, tokenizer, TEXT, n_steps=5, memory_budget="1MB")
    messages = [str(w.message) for w in caught if issubclass(w.category, MemoryBudgetWarning)]
    assert used and len(messages) == 1 and "with activation recomputation" in messages[0] and "batch 1" in messages[0]
    used.clear()
    pyattn.attribute(model, tokenizer, TEXT, n_steps=5, memory_budget="1MB", internal_batch_size=1)
    assert not used  # an explicit batch size runs as asked


def test_bad_recompute_values_and_models_without_a_layer_stack(demo):
    model, tokenizer = demo
    with pytest.raises(InputError, match="recompute must be True, False or None"):
        pyattn.attribute(model, tokenizer, "a typed language", n_steps=5, recompute="yes")
    with pytest.raises(ModelError, match="no stack of"):
        with recomputed_layers(torch.nn.Linear(2, 2)):
            pass


def test_gated_feed_forward_blocks_are_recognised():
    from zoo import build

    assert all(gated_mlp(build(name)[0]) for name in ("ModernBERT", "Llama", "Qwen2", "Mistral"))
    assert not any(gated_mlp(build(name)[0]) for name in ("DistilBERT", "ELECTRA", "Longformer", "GPT-2", "BigBird original_full"))


@pytest.mark.parametrize("name", ["ModernBERT", "Qwen2", "DistilBERT", "BigBird original_full", "GPT-2", "XLM-R"])
def test_every_architecture_recomputes_to_the_same_scores(name):
    from zoo import LONG, build

    model, tokenizer = build(name)
    text = LONG
    plain = pyattn.attribute(model, tokenizer, text, n_steps=5, recompute=False)
    again = pyattn.attribute(model, tokenizer, text, n_steps=5, recompute=True)
    assert len(layer_stack(model)) == model.config.num_hidden_layers
    assert np.allclose(plain.scores, again.scores, rtol=1e-5, atol=1e-7), np.abs(plain.scores - again.scores).max()
