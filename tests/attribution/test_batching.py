"""Several documents' integration nodes in one forward + backward (issue 13,
item 4): every result equals the document's one-at-a-time result (which
tests/attribution/test_attribution.py proves equal to Captum), evaluation counts stay
honest (rows through the encoder), and the automatic refinement runs per
document (converged documents drop out, the others refine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyattn
from pyattn.attribution import attribute_stream
from testing import sample_text, tiny_classifier, tiny_longformer, tiny_tokenizer

# different lengths: the tiny Longformer pads to multiples of 16 inside (32, 48, 64, 16),
# the group pads every row to the longest; position 0 is a global token
LENGTHS = [(29, 1), (7, 2), (41, 3), (18, 4), (3, 5)]


class _EncoderRows:
    """Rows (examples) and calls reaching the encoder: full-model evaluations."""

    def __init__(self, model):
        self.rows, self.calls = 0, 0
        self.handle = model.base_model.encoder.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.rows += args[0].shape[0]
        self.calls += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _sharpened(model, head, factor: float):
    """Random tiny classifiers are nearly uniform (F(input) - F(baseline) ~ 1e-6,
    below float32's resolution of a probability): sharpen the last layer so
    that the completeness error compared is well above rounding."""
    with torch.no_grad():
        head.weight.mul_(factor)
        head.bias.mul_(factor)
    return model


def _models(dtype=torch.float32):
    longformer, bert = tiny_longformer(seed=7), tiny_classifier("bert", seed=3)
    return {
        "longformer": (_sharpened(longformer, longformer.classifier.out_proj, 300.0).to(dtype), tiny_tokenizer("roberta")),
        "bert": (_sharpened(bert, bert.classifier, 300.0).to(dtype), tiny_tokenizer("bert")),
    }


MODELS = _models()
# float64 models: a batch's shape changes nothing above float64 rounding, so
# convergence decisions (a level more or less) cannot flip on float32 noise
MODELS64 = _models(torch.float64)


def _texts():
    return [sample_text(n, seed=seed) for n, seed in LENGTHS]


def _assert_same(grouped, single, same_convergence: bool = True):
    assert grouped.tokens == single.tokens
    scale = float(np.abs(single.scores).max())
    np.testing.assert_allclose(grouped.scores, single.scores, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(grouped.probabilities, single.probabilities, rtol=1e-5, atol=1e-7)
    # F(input) - F(baseline) is a difference of two float32 probabilities: a
    # different batch shape rounds each by up to an ulp (6e-8 near 1), so the
    # gap and the completeness error agree to 1e-5 relative plus that rounding
    rounding = 5e-7
    assert grouped.output_gap == pytest.approx(single.output_gap, rel=1e-5, abs=rounding)
    assert grouped.relative_error == pytest.approx(single.relative_error, rel=1e-5, abs=rounding / abs(single.output_gap))
    assert grouped.target == single.target
    if same_convergence:
        assert grouped.converged == single.converged
    assert grouped.n_steps == single.n_steps and grouped.model_evaluations == single.model_evaluations
    assert [steps for steps, _ in grouped.tries] == [steps for steps, _ in single.tries]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_grouped_equal_one_at_a_time_float32(kind):
    """In float32 a different batch shape rounds differently: scores and
    probabilities agree to 1e-5, the gap to 1e-5 plus float32 rounding;
    ``converged`` may flip only for a document within rounding of the
    tolerance, so it is compared in float64 below."""
    model, tokenizer = MODELS[kind]
    texts = _texts()
    singles = [pyattn.attribute(model, tokenizer, text, n_steps=9, internal_batch_size=4, device="cpu") for text in texts]
    grouped = pyattn.attribute_many(model, tokenizer, texts, n_steps=9, internal_batch_size=16, progress=False, device="cpu")
    for g, s in zip(grouped, singles):
        _assert_same(g, s, same_convergence=False)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("n_steps", [9, "auto"])
def test_grouped_equal_one_at_a_time(kind, n_steps):
    model, tokenizer = MODELS64[kind]
    texts = _texts()
    # trapezoid: its slower convergence makes the documents stop at different levels
    kwargs = dict(n_steps=n_steps, method="trapezoid", tol=5e-4, max_steps=65, device="cpu")
    singles = [pyattn.attribute(model, tokenizer, text, internal_batch_size=4, **kwargs) for text in texts]
    with _EncoderRows(model) as counter:
        grouped = pyattn.attribute_many(model, tokenizer, texts, internal_batch_size=16, progress=False, **kwargs)
    for g, s in zip(grouped, singles):
        _assert_same(g, s)
    # honest counts: every row through the encoder belongs to one document's evaluations
    assert counter.rows == sum(g.model_evaluations for g in grouped)
    # grouped for real: fewer forwards than documents' levels run alone at 16 nodes a batch
    alone = sum(len(s.tries) for s in singles)
    assert counter.calls < alone
    if n_steps == "auto":
        # refinement per document: some converged at the first level, others went on
        assert len({g.n_steps for g in grouped}) > 1, "test data should make documents converge at different levels"


def test_explicit_targets_and_fixed_rule_grouped():
    """Given targets (one per text) and a non-nested rule (Gauss-Legendre: F(input)
    and F(baseline) by plain forwards) group the same way."""
    model, tokenizer = MODELS["longformer"]
    texts = _texts()[:3]
    targets = [0, 2, 1]
    kwargs = dict(n_steps=6, method="gausslegendre", device="cpu")
    singles = [pyattn.attribute(model, tokenizer, t, target=c, internal_batch_size=6, **kwargs) for t, c in zip(texts, targets)]
    grouped = pyattn.attribute_many(model, tokenizer, texts, targets=targets, internal_batch_size=18, progress=False, **kwargs)
    for g, s in zip(grouped, singles):
        _assert_same(g, s)
    assert [g.target for g in grouped] == targets


def test_stream_yields_each_document_once_when_finished():
    model, tokenizer = MODELS["bert"]
    texts = _texts()
    progress: dict[int, list] = {}

    def on_progress_for(index):
        progress[index] = []
        return lambda done, planned: progress[index].append((done, planned))

    seen = []
    for index, result in attribute_stream(model, tokenizer, texts, n_steps="auto", tol=2e-3, internal_batch_size=12, device="cpu",
                                          on_progress_for=on_progress_for):
        seen.append(index)
        assert result.n_steps == progress[index][-1][1]  # finished: its last level's nodes are all done
        assert progress[index][-1][0] == result.model_evaluations
    assert sorted(seen) == list(range(len(texts)))


def test_one_at_a_time_when_grouping_is_off():
    model, tokenizer = MODELS["longformer"]
    texts = _texts()[:3]
    with _EncoderRows(model) as counter:
        results = pyattn.attribute_many(model, tokenizer, texts, n_steps=9, internal_batch_size=16, progress=False, group=False, device="cpu")
    assert counter.calls == len(texts)  # one batch of 9 nodes per document, never shared
    assert counter.rows == sum(r.model_evaluations for r in results) == 27


def test_runner_grouped_records_equal_one_at_a_time(tmp_path):
    from pyattn.pipeline.documents import Document
    from pyattn.pipeline import run_attribution
    from pyattn.pipeline.store import ResultsStore

    model, tokenizer = MODELS64["longformer"]
    documents = [Document(f"d{i}", i, text, None) for i, text in enumerate(_texts())]
    stores = {}
    for group in (True, False):
        store = ResultsStore.create(str(tmp_path / f"group_{group}"), {"settings": {}})
        finished = []
        summary = run_attribution(model, tokenizer, documents, store, {"n_steps": "auto", "tol": 5e-4, "max_steps": 65, "internal_batch_size": 16, "device": "cpu"},
                                  progress=False, label_column=None, group=group, on_record=lambda r: finished.append(r["doc_id"]))
        store.close()
        assert summary.processed == len(documents) and sorted(finished) == sorted(d.doc_id for d in documents)
        stores[group] = ResultsStore.open(str(tmp_path / f"group_{group}")).records().set_index("doc_id")
    grouped, single = stores[True], stores[False]
    assert sorted(grouped.index) == sorted(single.index) and grouped.index.is_unique
    for doc_id in single.index:
        a, b = np.asarray(grouped.loc[doc_id, "scores"]), np.asarray(single.loc[doc_id, "scores"])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
        assert grouped.loc[doc_id, "model_evaluations"] == single.loc[doc_id, "model_evaluations"]


def test_cli_attribute_with_a_memory_budget(tmp_path, capsys):
    """`pyattn attribute --memory-budget` runs grouped documents and stores each once."""
    import pandas as pd

    from pyattn.cli import main
    from pyattn.pipeline.store import ResultsStore

    data = tmp_path / "docs.csv"
    pd.DataFrame({"text": ["a compiler for a typed language", "neural network training data", "the parser and the runtime"]}).to_csv(data, index=False)
    code = main(["attribute", "--model", "demo", "--data", str(data), "--out", str(tmp_path / "out"), "--label-column", "",
                 "--steps", "3", "--memory-budget", "3GB", "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    records = ResultsStore.open(str(tmp_path / "out")).records()
    assert sorted(records["doc_id"].astype(str)) == ["0", "1", "2"]
    assert (records["model_evaluations"] == 3).all()
