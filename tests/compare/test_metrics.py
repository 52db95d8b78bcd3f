"""The one metric core (pyattn.compare.metrics): a scalar is a batch of one.
The batch form, the scalar form (similarity) and the head agreement map give
the same numbers for every metric, on continuous data, on ties and on
constant vectors (whose correlations are NaN)."""

from __future__ import annotations

import numpy as np
import pytest

from pyattn.compare.agreement import head_agreement, head_agreement_per_document
from pyattn.compare.metrics import LINEAR_METRICS, METRICS, cosine, linear_vectors, rank_biased_overlap, similarity_batch
from pyattn.compare.similarity import similarity


def _pairs(n: int, rng: np.random.Generator):
    """(name, attribution, attention rows) covering the defined edge cases."""
    rows = rng.gamma(2.0, size=(4, n))
    yield "continuous", rng.normal(size=n), rows
    yield "ties", np.round(rng.normal(size=n)), np.round(rows)
    yield "integers", rng.integers(-2, 3, n).astype(float), rng.integers(0, 3, (4, n)).astype(float)
    yield "constant attribution", np.full(n, 0.1), rows
    yield "zero attribution", np.zeros(n), rows
    constant_rows = rows.copy()
    constant_rows[1] = 0.3  # a constant attention row among others
    constant_rows[2] = 0.0
    yield "constant attention", rng.normal(size=n), constant_rows


def _same(batch: float, scalar: float) -> bool:
    return (np.isnan(batch) and np.isnan(scalar)) or abs(batch - scalar) <= 1e-12


@pytest.mark.parametrize("attribution_as", ["magnitude", "signed"])
@pytest.mark.parametrize("n", [2, 3, 9, 40, 400])  # 400 tokens: Kendall through scipy, row by row
def test_the_batch_and_the_scalar_form_agree_on_every_metric(n, attribution_as):
    rng = np.random.default_rng(n)
    for name, a, rows in _pairs(n, rng):
        batch = similarity_batch(a, rows, top_percent=10.0, rbo_p=0.8, attribution_as=attribution_as)
        assert list(batch) == list(METRICS)
        for j, row in enumerate(rows):
            scalar = similarity(a, row, top_percent=10.0, rbo_p=0.8, attribution_as=attribution_as)
            for metric in METRICS:
                assert _same(batch[metric][j], scalar[metric]), (name, j, metric, batch[metric][j], scalar[metric])


def test_constant_vectors_have_no_correlation():
    rng = np.random.default_rng(0)
    a, r = rng.normal(size=12), rng.random(12)
    for first, second in ((np.full(12, 0.1), r), (a, np.full(12, 0.3)), (np.zeros(12), r)):
        got = similarity(first, second)
        for metric in ("kendall_tau", "spearman_rho", "pearson_r", "cosine_minmax"):
            assert np.isnan(got[metric]), metric
        assert np.isnan(similarity_batch(first, second[None], metrics=["pearson_r"])["pearson_r"][0])
    assert np.isnan(similarity(np.zeros(12), r)["cosine_raw"]) and not np.isnan(similarity(np.full(12, 0.1), r)["cosine_raw"])


def test_the_scalar_helpers_are_batches_of_one():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert cosine(x, y) == pytest.approx(float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)), abs=1e-15)
    got = similarity_batch(x, y[None], metrics=["rbo"], rbo_p=0.7, attribution_as="signed")["rbo"][0]
    assert got == rank_biased_overlap(x, y, 0.7)


@pytest.mark.parametrize("metric", LINEAR_METRICS)
def test_linear_vectors_give_the_metric_as_a_cosine(metric):
    rng = np.random.default_rng(2)
    a, rows = rng.normal(size=25), rng.random((3, 25))
    x, transformed = linear_vectors(metric, a, rows)
    expected = similarity_batch(a, rows, metrics=[metric])[metric]
    assert np.allclose([cosine(x, row) for row in transformed], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("attribution_as", ["magnitude", "signed"])
@pytest.mark.parametrize("metric", METRICS)
def test_the_agreement_map_equals_per_head_scalar_metrics(metric, attribution_as):
    rng = np.random.default_rng(3)
    n = 30
    a = rng.normal(size=n)
    heads = rng.random((2, 3, n))
    heads[0, 1] = 0.25  # a head that attends evenly: no correlation
    heads[1, 2] = np.round(heads[1, 2] * 2)  # ties
    observed, null = head_agreement_per_document(a, heads, metric=metric, n_perm=20, attribution_as=attribution_as)
    for layer in range(2):
        for head in range(3):
            expected = similarity(a, heads[layer, head], attribution_as=attribution_as)[metric]
            assert _same(observed[layer, head], expected), (layer, head, observed[layer, head], expected)
    # the dataset mean is the mean of the documents' scalar metrics
    documents = [(rng.normal(size=n), rng.random((1, 2, n))) for _ in range(3)]
    table = head_agreement(documents, metric=metric, n_perm=39, n_boot=50, attribution_as=attribution_as)
    for k, row in table.iterrows():
        values = [similarity(d[0], d[1][0, k], attribution_as=attribution_as)[metric] for d in documents]
        assert row["mean"] == pytest.approx(np.nanmean(values), abs=1e-12)
