"""The shipped demo model: loads offline, is accurate on held-out documents,
and its attributions point at the words that carry the label."""

from __future__ import annotations

import os

import numpy as np
import pytest

import pyattn
from pyattn.demo import LABEL_WORDS, MODEL_DIR, demo_documents, load_demo
from pyattn.demo.train import accuracy


@pytest.fixture(scope="module")
def demo():
    os.environ["HF_HUB_OFFLINE"] = "1"  # prove no network is needed
    return load_demo()


def test_loads_offline_from_the_package(demo):
    model, tokenizer = demo
    assert type(model).__name__ == "LongformerForSequenceClassification" and not model.training
    windows = model.config.attention_window
    assert len(set(windows)) == len(windows) > 1  # a different window per layer
    assert model.config.num_attention_heads > 1
    size = os.path.getsize(os.path.join(MODEL_DIR, "model.safetensors"))
    assert size < 8 * 1024**2
    assert tokenizer.pad_token_id == model.config.pad_token_id
    assert tokenizer.convert_ids_to_tokens(tokenizer(" compiler", add_special_tokens=False)["input_ids"]) == ["Ġcompiler"]


def test_documents_are_deterministic_balanced_and_long(demo):
    _, tokenizer = demo
    test = demo_documents("test")
    assert test == demo_documents("test") and test != demo_documents("validation")
    assert sum(d.label for d in test) == len(test) // 2
    lengths = [len(tokenizer(d.text)["input_ids"]) for d in test]
    assert min(lengths) < 400 and 3000 < max(lengths) <= 4096
    with pytest.raises(ValueError, match="split must be one of"):
        demo_documents("dev")


def test_held_out_accuracy(demo):
    """A 60-document slice of the test split here; `python -m pyattn.demo.train
    --evaluate` measures all 200 (README)."""
    model, tokenizer = demo
    assert accuracy(model, tokenizer, demo_documents("test", n=60)) >= 0.95


def _words(tokens):
    return [t.replace("Ġ", "").lower() for t in tokens]


def test_top_attributed_tokens_carry_the_label(demo):
    model, tokenizer = demo
    short = [d for d in demo_documents("test", n=80) if len(d.text.split()) < 400]
    short = [d for d in short if d.label == 0][:3] + [d for d in short if d.label == 1][:3]
    assert len(short) == 6
    hits, total = 0, 0
    for document in short:
        result = pyattn.attribute(model, tokenizer, document.text)
        if result.predicted_label != document.label:
            continue
        assert result.converged and result.relative_error <= 0.01  # completeness on the demo model
        top = np.argsort(-result.scores)[:10]
        words = _words([result.tokens[i] for i in top])
        hits += sum(word in LABEL_WORDS[document.label] for word in words)
        total += len(words)
    assert total >= 20
    assert hits / total >= 0.6, f"only {hits} of the top-{total} attributed tokens are label words"
