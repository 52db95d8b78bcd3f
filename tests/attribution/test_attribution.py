"""Attributions: equal to Captum called directly, complete, with the model's
own position ids, cropped to the document, for Longformer, RoBERTa and BERT."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pyattn
from pyattn.models.inputs import TruncationWarning, encode, position_ids_for
from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer


@pytest.fixture(scope="module")
def longformer():
    # windows [4, 16, 8]: a 29-token input is padded to 32 inside the model
    return tiny_longformer(seed=7)


@pytest.fixture(scope="module")
def demo_model():
    return pyattn.load_demo()


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
    """Gauss-Legendre at 24 nodes: Captum's own rule, F(input) and F(baseline)
    by two plain forwards."""
    text = sample_text(29, seed=2)
    result = pyattn.attribute(longformer, roberta_tokenizer, text, target=2, n_steps=24, method="gausslegendre", internal_batch_size=5)
    document = encode(longformer, roberta_tokenizer, text)
    attributions, captum_delta = _captum_directly(longformer, document, 2, 24)
    n = document.input_ids.shape[1]
    assert attributions.shape[1] > n  # Captum returns the padded length: pyattn crops
    np.testing.assert_allclose(result.scores, attributions[0, :n].sum(-1).double().numpy(), atol=1e-6, rtol=0)
    # the padded positions carry nothing: cropping loses no attribution
    assert float(attributions[0, n:].abs().max()) == 0.0
    # the real convergence delta, as Captum computes it
    assert result.delta == pytest.approx(float(captum_delta), abs=1e-6)
    assert result.n_steps == 24 and result.model_evaluations == 26 and result.target == 2


@pytest.mark.parametrize("method", ["clenshaw-curtis", "trapezoid"])
def test_nested_rule_equal_to_captum_at_the_same_nodes(monkeypatch, longformer, roberta_tokenizer, method):
    """Captum's LayerIntegratedGradients made to integrate at pyattn's nodes
    and weights (its approximation_parameters patched) gives pyattn's scores:
    the gradients, the interpolation and the padding are Captum's."""
    import captum.attr._core.integrated_gradients as captum_ig
    import captum.attr._utils.batching as captum_batching

    from pyattn.attribution.quadrature import rule

    alphas, weights = rule(method, 17)

    def parameters(name):
        return (lambda n: weights.tolist()), (lambda n: alphas.tolist())

    monkeypatch.setattr(captum_ig, "approximation_parameters", parameters)
    monkeypatch.setattr(captum_batching, "approximation_parameters", parameters)
    text = sample_text(29, seed=6)
    result = pyattn.attribute(longformer, roberta_tokenizer, text, target=1, n_steps=17, method=method, internal_batch_size=4)
    document = encode(longformer, roberta_tokenizer, text)
    attributions, captum_delta = _captum_directly(longformer, document, 1, 17)
    n = document.input_ids.shape[1]
    expected = attributions[0, :n].sum(-1).double().numpy()
    np.testing.assert_allclose(result.scores, expected, atol=1e-6 * np.abs(expected).max(), rtol=0)
    assert result.delta == pytest.approx(float(captum_delta), abs=1e-6)
    # nested: 17 nodes, 17 evaluations (F(input), F(baseline) are the end nodes)
    assert result.n_steps == 17 and result.model_evaluations == 17


class _EncoderCounter:
    """Counts examples that reach the encoder (full-model evaluations); the
    embedding-only run stops before it."""

    def __init__(self, model):
        self.examples = 0
        self.handle = model.base_model.encoder.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.examples += args[0].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_auto_steps_reach_completeness_reusing_every_evaluation(longformer, roberta_tokenizer):
    text = sample_text(25, seed=3)
    with _EncoderCounter(longformer) as counter:
        result = pyattn.attribute(longformer, roberta_tokenizer, text, tol=0.01, internal_batch_size=3)
    document = encode(longformer, roberta_tokenizer, text)
    with torch.no_grad():
        probabilities = longformer(**document.forward_kwargs()).logits.softmax(-1)[0]
        f_baseline = longformer(**document.forward_kwargs(document.baseline_ids)).logits.softmax(-1)[0, result.predicted_label]
    gap = float(probabilities[result.predicted_label] - f_baseline)
    assert result.target == result.predicted_label == int(probabilities.argmax())
    np.testing.assert_allclose(result.probabilities, probabilities.numpy(), atol=1e-6)
    assert result.converged and result.relative_error <= 0.01
    assert abs(result.scores.sum() - gap) <= 0.01 * abs(gap)
    assert result.output_gap == pytest.approx(gap, abs=1e-7)
    steps = [s for s, _ in result.tries]
    assert steps == [2**k + 1 for k in range(2, 2 + len(steps))]  # checked from 5 nodes, each level's nodes doubled
    # every node evaluated once: the model ran exactly n_steps examples
    assert counter.examples == result.model_evaluations == result.n_steps
    assert len(result.scores) == len(result.tokens) == 27


def test_token_change_is_the_change_between_levels(demo_model, longformer, roberta_tokenizer):
    """token_change compares the last two levels: the same as two separate
    fixed-step runs at 9 and 17 nodes (one node per batch, so that each node's
    value does not depend on its batch)."""
    model, tokenizer = demo_model
    text = next(iter(pyattn.demo_documents("test"))).text
    settings = dict(max_length=128, internal_batch_size=1)
    with pytest.warns(TruncationWarning):
        coarse = pyattn.attribute(model, tokenizer, text, n_steps=9, **settings)
        fine = pyattn.attribute(model, tokenizer, text, n_steps=17, **settings)
    difference = fine.scores - coarse.scores
    assert fine.previous_n_steps == 9 and fine.token_change > 1e-4  # a real change, far above rounding
    assert fine.token_change == pytest.approx(np.linalg.norm(difference) / np.linalg.norm(fine.scores), rel=1e-6)
    assert fine.token_change_max == pytest.approx(np.abs(difference).max() / np.abs(fine.scores).max(), rel=1e-6)
    np.testing.assert_allclose(fine.score_error, np.abs(difference), atol=1e-12)
    # a rule with no embedded coarser level has no estimate, and says so
    odd = pyattn.attribute(longformer, roberta_tokenizer, sample_text(22, seed=9), n_steps=12)
    assert np.isnan(odd.token_change) and odd.score_error is None and odd.previous_n_steps is None


def test_converged_means_the_same_for_fixed_and_auto_steps(demo_model):
    """Issue 9: a fixed n_steps with a large completeness error is not
    'converged'; the error is always reported, and converged <=> error <= tol."""
    model, tokenizer = demo_model
    text = next(iter(pyattn.demo_documents("test"))).text
    coarse = pyattn.attribute(model, tokenizer, text, n_steps=2)
    assert coarse.relative_error > 0.1 and not coarse.converged
    for n_steps in (2, 3, 5, 9, "auto"):
        result = pyattn.attribute(model, tokenizer, text, n_steps=n_steps, tol=0.05)
        assert result.converged == (abs(result.scores.sum() - result.output_gap) <= 0.05 * abs(result.output_gap))
        assert np.isfinite(result.relative_error)
    # the sum can converge before the tokens do: both are reported
    auto = pyattn.attribute(model, tokenizer, text, tol=0.01)
    assert auto.converged and np.isfinite(auto.token_change) and auto.previous_n_steps == (auto.n_steps - 1) // 2 + 1


def test_progress_callback(longformer, roberta_tokenizer):
    seen = []
    result = pyattn.attribute(longformer, roberta_tokenizer, sample_text(15), n_steps=17, internal_batch_size=4, on_progress=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == seen[-1][1] == result.n_steps == 17


def test_auto_reports_the_cap(longformer, roberta_tokenizer):
    result = pyattn.attribute(longformer, roberta_tokenizer, sample_text(20, seed=4), tol=1e-12, max_steps=17)
    assert not result.converged and result.n_steps == 17 and [s for s, _ in result.tries] == [5, 9, 17]
    assert result.relative_error > 1e-12 and result.model_evaluations == 17


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
    with pytest.raises(ValueError, match='n_steps must be "auto" or an int 1..4096'):
        pyattn.attribute(longformer, roberta_tokenizer, "the model", n_steps=0)
    with pytest.raises(ValueError, match="cannot find the embedding layer"):
        pyattn.models.inputs.embedding_layer(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "argument, value, message",
    [
        ("n_steps", 2.5, r'n_steps must be "auto" or an int 1..4096, got 2.5'),
        ("n_steps", True, r'n_steps must be "auto" or an int 1..4096, got True'),
        ("n_steps", "10", r"n_steps must be .* got '10'"),
        ("tol", 0, r"tol must be a finite number > 0 .* got 0"),
        ("tol", -0.1, r"tol must be a finite number > 0 .* got -0.1"),
        ("tol", float("nan"), r"tol must be a finite number > 0 .* got nan"),
        ("tol", float("inf"), r"tol must be a finite number > 0 .* got inf"),
        ("max_length", 2, r"max_length must be None or an int >= 3 .* got 2"),
        ("max_length", 10.0, r"max_length must be None or an int >= 3 .* got 10.0"),
        ("target", -1, r"target must be a class index in 0..2 .* got -1"),
        ("target", 1.0, r"target must be a class index in 0..2 .* got 1.0"),
        ("target", True, r"target must be a class index in 0..2 .* got True"),
        ("internal_batch_size", 0, r"internal_batch_size must be None \(fit to memory\) or a positive int, got 0"),
        ("internal_batch_size", 1.5, r"internal_batch_size must be .* got 1.5"),
        ("device", "cuda:7", r"device='cuda:7' does not exist"),
        ("device", "gpu", r"device='gpu' is not a device: use cpu, cuda, cuda:N or mps"),
        ("method", "simpson", r"method must be one of clenshaw-curtis, trapezoid, gausslegendre.* got 'simpson'"),
        ("method", "gausslegendre", r'n_steps="auto" refines a nested rule .* method .gausslegendre. is not nested'),
        ("max_steps", 1, r"max_steps must be an int 2..4096, got 1"),
    ],
)
def test_arguments_are_checked_before_any_work(longformer, roberta_tokenizer, argument, value, message):
    """Issue 10: one ValueError naming the argument, its value and what is
    allowed, raised before the model runs (no example reaches the encoder)."""
    with _EncoderCounter(longformer) as counter:
        with pytest.raises(ValueError, match=message):
            pyattn.attribute(longformer, roberta_tokenizer, "the model", **{argument: value})
        with pytest.raises(ValueError, match=message):
            pyattn.attribute_many(longformer, roberta_tokenizer, ["the model", "a model"], progress=False, **{argument: value})
    assert counter.examples == 0


def test_attribute_many_checks_every_target_first(longformer, roberta_tokenizer):
    with _EncoderCounter(longformer) as counter:
        with pytest.raises(ValueError, match=r"targets\[1\]: target must be a class index in 0..2 .* got 5"):
            pyattn.attribute_many(longformer, roberta_tokenizer, ["the model", "a model"], targets=[0, 5], progress=False)
    assert counter.examples == 0


def test_many_texts(longformer, roberta_tokenizer):
    texts = [sample_text(12, seed=s) for s in range(3)]
    results = pyattn.attribute_many(longformer, roberta_tokenizer, texts, targets=[0, 1, None], n_steps=8, progress=False)
    assert [r.target for r in results[:2]] == [0, 1] and results[2].target == results[2].predicted_label
    single = pyattn.attribute(longformer, roberta_tokenizer, texts[1], target=1, n_steps=8)
    np.testing.assert_allclose(results[1].scores, single.scores, atol=1e-6)


def test_auto_batch_size_fits_memory(longformer):
    assert pyattn.auto_batch_size(longformer, 4096, 64) >= 1
    assert pyattn.auto_batch_size(longformer, 32, 7) == 7  # tiny: all steps at once


def test_autocast_reports_both_completeness_errors(longformer, roberta_tokenizer):
    """bfloat16 autocast on the CPU: scores near the float32 ones, and the
    completeness error against the float32 model's own gap reported beside
    the one against the autocast model's gap."""
    text = sample_text(20, seed=8)
    exact = pyattn.attribute(longformer, roberta_tokenizer, text, n_steps=17)
    fast = pyattn.attribute(longformer, roberta_tokenizer, text, n_steps=17, autocast=True)
    assert fast.autocast_dtype == "bfloat16" and exact.autocast_dtype is None and exact.float32_relative_error is None
    assert fast.scores.shape == exact.scores.shape and np.isfinite(fast.scores).all()
    assert np.corrcoef(fast.scores, exact.scores)[0, 1] > 0.9
    assert fast.float32_output_gap == pytest.approx(exact.output_gap, abs=1e-6)
    assert fast.float32_relative_error == pytest.approx(abs(fast.scores.sum() - exact.output_gap) / abs(exact.output_gap), rel=1e-3)
    with pytest.raises(ValueError, match=r'autocast must be False, True, "bfloat16" or "float16", got \'int8\''):
        pyattn.attribute(longformer, roberta_tokenizer, text, autocast="int8")


def test_autocast_refinement_stops_at_the_rounding_floor(longformer, roberta_tokenizer):
    """Under bfloat16 autocast a tolerance far below bfloat16's rounding
    cannot be met: n_steps="auto" stops once two doublings have not halved
    the completeness error (stalled, not converged) instead of running to
    max_steps; in float32 the same request refines on."""
    text = sample_text(20, seed=8)
    half = pyattn.attribute(longformer, roberta_tokenizer, text, autocast="bfloat16", tol=1e-9, max_steps=257)
    assert half.stalled and not half.converged
    assert half.n_steps < 257
    errors = [error for _, error in half.tries]
    assert min(errors[-2:]) > 0.5 * errors[-3]  # the rule, read from the tries it reports
    assert all(min(errors[i + 1 : i + 3]) <= 0.5 * errors[i] for i in range(len(errors) - 3))  # and not earlier
    full = pyattn.attribute(longformer, roberta_tokenizer, text, tol=1e-9, max_steps=65)
    assert not full.stalled and full.n_steps == 65
