"""Attributions: equal to Captum called directly, complete, with the model's
own position ids, cropped to the document, for Longformer, RoBERTa and BERT."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pyattn
from pyattn.inputs import TruncationWarning, encode, position_ids_for
from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer


@pytest.fixture(scope="module")
def longformer():
    # windows [4, 16, 8]: a 29-token input is padded to 32 inside the model
    return tiny_longformer(seed=7)


@pytest.fixture(scope="module")
def roberta_tokenizer():
    return tiny_tokenizer("roberta")


def test_inputs_as_the_notebooks_built_them(longformer, roberta_tokenizer):
    text = sample_text(27)
    document = encode(longformer, roberta_tokenizer, text)
    ids = document.input_ids[0].tolist()
    assert ids[0] == roberta_tokenizer.cls_token_id and ids[-1] == roberta_tokenizer.sep_token_id
    assert ids[1:-1] == roberta_tokenizer(text, add_special_tokens=False)["input_ids"]
    baseline = document.baseline_ids[0].tolist()
    assert baseline == [ids[0]] + [roberta_tokenizer.pad_token_id] * 27 + [ids[-1]]
    assert document.global_attention_mask[0].tolist() == [1] + [0] * 28
    assert document.tokens[0] == "<s>" and document.tokens[-1] == "</s>"


def test_position_ids_equal_the_models_own(longformer, roberta_tokenizer):
    """The ids the model makes itself when given none (captured at its
    position-embedding layer; Longformer pads inside, so crop) equal ours."""
    for model, tokenizer in [
        (longformer, roberta_tokenizer),
        (tiny_classifier("roberta"), roberta_tokenizer),
        (tiny_classifier("bert"), tiny_tokenizer("bert")),
    ]:
        document = encode(model, tokenizer, sample_text(29, seed=1))
        seen = []
        embeddings = model.base_model.embeddings
        hook = embeddings.position_embeddings.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
        try:
            with torch.no_grad():
                kwargs = document.forward_kwargs()
                kwargs.pop("position_ids")
                model(**kwargs)
        finally:
            hook.remove()
        n = document.input_ids.shape[1]
        assert torch.equal(seen[0][:, :n], document.position_ids), type(model).__name__
    assert document.position_ids[0, 0] == 0  # BERT counts from 0
    longformer_ids = position_ids_for(longformer, torch.tensor([[0, 5, 6, 2]]))
    assert longformer_ids.tolist() == [[2, 3, 4, 5]]  # pad_token_id + 1 = 2


def _captum_directly(model, document, target, n_steps):
    """LayerIntegratedGradients called by hand on the same inputs."""
    from captum.attr import LayerIntegratedGradients

    def forward(input_ids, attention_mask, position_ids, global_attention_mask):
        return model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, global_attention_mask=global_attention_mask
        ).logits.softmax(-1)

    lig = LayerIntegratedGradients(forward, model.longformer.embeddings)
    attributions, delta = lig.attribute(
        document.input_ids,
        baselines=document.baseline_ids,
        target=target,
        additional_forward_args=(document.attention_mask, document.position_ids, document.global_attention_mask),
        n_steps=n_steps,
        method="gausslegendre",
        return_convergence_delta=True,
    )
    return attributions, delta


def test_equal_to_captum_called_directly(longformer, roberta_tokenizer):
    text = sample_text(29, seed=2)
    result = pyattn.attribute(longformer, roberta_tokenizer, text, target=2, n_steps=24, internal_batch_size=5)
    document = encode(longformer, roberta_tokenizer, text)
    attributions, captum_delta = _captum_directly(longformer, document, 2, 24)
    n = document.input_ids.shape[1]
    assert attributions.shape[1] > n  # Captum returns the padded length: pyattn crops
    np.testing.assert_allclose(result.scores, attributions[0, :n].sum(-1).double().numpy(), atol=1e-5, rtol=0)
    # the padded positions carry nothing: cropping loses no attribution
    assert float(attributions[0, n:].abs().max()) == 0.0
    # the real convergence delta, as Captum computes it
    assert result.delta == pytest.approx(float(captum_delta), abs=1e-5)
    assert result.n_steps == 24 and result.model_evaluations == 26 and result.target == 2


def test_auto_steps_reach_completeness(longformer, roberta_tokenizer):
    text = sample_text(25, seed=3)
    result = pyattn.attribute(longformer, roberta_tokenizer, text, tol=0.01)
    document = encode(longformer, roberta_tokenizer, text)
    with torch.no_grad():
        f_input = longformer(**document.forward_kwargs()).logits.softmax(-1)[0, result.predicted_label]
        f_baseline = longformer(**document.forward_kwargs(document.baseline_ids)).logits.softmax(-1)[0, result.predicted_label]
    gap = float(f_input - f_baseline)
    assert result.target == result.predicted_label == int(np.argmax(result.probabilities))
    assert result.converged
    assert abs(result.scores.sum() - gap) <= 0.01 * abs(gap)
    assert result.output_gap == pytest.approx(gap, abs=1e-6)
    steps = [s for s, _ in result.tries]
    assert steps == [8 * 2**k for k in range(len(steps))]
    assert result.model_evaluations == sum(steps) + 2
    assert len(result.scores) == len(result.tokens) == 27


def test_auto_reports_the_cap(longformer, roberta_tokenizer):
    result = pyattn.attribute(longformer, roberta_tokenizer, sample_text(20, seed=4), tol=1e-12, max_steps=16)
    assert not result.converged and result.n_steps == 16 and [s for s, _ in result.tries] == [8, 16]
    assert result.relative_error > 1e-12


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_other_hugging_face_classifiers(kind):
    model = tiny_classifier(kind, seed=3)
    tokenizer = tiny_tokenizer("roberta" if kind == "roberta" else "bert")
    text = sample_text(40, seed=5)
    for target in range(3):  # any class of a multi-class model
        result = pyattn.attribute(model, tokenizer, text, target=target, n_steps="auto")
        assert result.target == target and result.converged
        assert abs(result.scores.sum() - result.output_gap) <= 0.01 * abs(result.output_gap)
        assert len(result.scores) == 42
    frame = result.to_frame()
    assert list(frame.columns) == ["position", "token", "input_id", "score", "score_l2_normalised"]
    assert np.linalg.norm(frame["score_l2_normalised"]) == pytest.approx(1.0)


def test_truncation_is_reported(longformer, roberta_tokenizer):
    with pytest.warns(TruncationWarning, match="dropped 10"):
        result = pyattn.attribute(longformer, roberta_tokenizer, sample_text(30), max_length=22, n_steps=4)
    assert result.truncated_tokens == 10 and len(result.scores) == 22
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pyattn.attribute(longformer, roberta_tokenizer, sample_text(10), n_steps=4).truncated_tokens == 0


def test_bad_input(longformer, roberta_tokenizer):
    with pytest.raises(ValueError, match=r"target must be a class index in 0..2"):
        pyattn.attribute(longformer, roberta_tokenizer, "the model", target=3)
    with pytest.raises(ValueError, match="text is empty"):
        pyattn.attribute(longformer, roberta_tokenizer, "   ")
    with pytest.raises(TypeError, match="text must be a str"):
        pyattn.attribute(longformer, roberta_tokenizer, 12)
    with pytest.raises(ValueError, match='n_steps must be "auto" or a positive int'):
        pyattn.attribute(longformer, roberta_tokenizer, "the model", n_steps=0)
    with pytest.raises(ValueError, match="cannot find the embedding layer"):
        pyattn.inputs.embedding_layer(torch.nn.Linear(2, 2))


def test_many_texts(longformer, roberta_tokenizer):
    texts = [sample_text(12, seed=s) for s in range(3)]
    results = pyattn.attribute_many(longformer, roberta_tokenizer, texts, targets=[0, 1, None], n_steps=8, progress=False)
    assert [r.target for r in results[:2]] == [0, 1] and results[2].target == results[2].predicted_label
    single = pyattn.attribute(longformer, roberta_tokenizer, texts[1], target=1, n_steps=8)
    np.testing.assert_allclose(results[1].scores, single.scores, atol=1e-6)


def test_auto_batch_size_fits_memory(longformer):
    assert pyattn.auto_batch_size(longformer, 4096, 64) >= 1
    assert pyattn.auto_batch_size(longformer, 32, 7) == 7  # tiny: all steps at once


def test_autocast_runs_and_stays_close(longformer, roberta_tokenizer):
    """bfloat16 autocast on the CPU: same shapes, scores near the float32 ones."""
    text = sample_text(20, seed=8)
    exact = pyattn.attribute(longformer, roberta_tokenizer, text, n_steps=16)
    fast = pyattn.attribute(longformer, roberta_tokenizer, text, n_steps=16, autocast=True)
    assert fast.scores.shape == exact.scores.shape and np.isfinite(fast.scores).all()
    assert np.corrcoef(fast.scores, exact.scores)[0, 1] > 0.9
