"""Significance follows the ranking convention (``attribution_as``): the
observed statistic of every significance table equals
:func:`pyattn.compare.similarity.similarity` (scipy's correlations, an independent
path) under the same convention, the p-values are the exact formula over a
null built here by hand with ``np.roll``, and signed differs from magnitude
where attributions are negative."""

from __future__ import annotations

import numpy as np
import pytest

from pyattn.compare.agreement import head_agreement, head_agreement_per_document
from pyattn.compare.metrics import similarity_batch
from pyattn.compare.significance import document_significance, permutation_test
from pyattn.compare.similarity import METRICS, similarity

CONVENTIONS = ["magnitude", "signed"]


def signed_pair(n: int = 40, seed: int = 0):
    """Attributions with many negative entries (some tied in magnitude), and an
    attention vector."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    a[::7] = -np.abs(a[1::7][: len(a[::7])]) if n > 7 else a[::7]
    return a, rng.gamma(2.0, size=n)


@pytest.mark.parametrize("attribution_as", CONVENTIONS)
def test_observed_statistic_equals_similarity_under_each_convention(attribution_as):
    a, r = signed_pair()
    table = permutation_test(a, r, n_perm=9, attribution_as=attribution_as).set_index("metric")
    expected = similarity(a, r, attribution_as=attribution_as)
    for metric in METRICS:
        assert table.loc[metric, "observed"] == pytest.approx(expected[metric], abs=1e-12, nan_ok=True), metric
    assert (table["attribution_as"] == attribution_as).all()


@pytest.mark.parametrize("attribution_as", CONVENTIONS)
def test_batch_equals_similarity_row_by_row_under_each_convention(attribution_as):
    rng = np.random.default_rng(3)
    a = rng.integers(-3, 4, size=30).astype(float)  # ties, negative entries, magnitudes that tie across signs
    rows = rng.gamma(2.0, size=(6, 30))
    got = similarity_batch(a, rows, attribution_as=attribution_as)
    for j, row in enumerate(rows):
        expected = similarity(a, row, attribution_as=attribution_as)
        for metric in METRICS:
            assert got[metric][j] == pytest.approx(expected[metric], abs=1e-10, nan_ok=True), (metric, j)


@pytest.mark.parametrize("attribution_as", CONVENTIONS)
def test_p_values_are_the_exact_formula_over_all_circular_shifts(attribution_as):
    # n = 25: the circular-shift group has 24 other elements, all used when n_perm >= 24,
    # so the null is the 24 rolls of the attention vector, built here independently
    a, r = signed_pair(25, seed=1)
    table = permutation_test(a, r, n_perm=99, attribution_as=attribution_as).set_index("metric")
    assert (table["n_perm"] == 24).all()
    observed = similarity(a, r, attribution_as=attribution_as)
    null = [similarity(a, np.roll(r, shift), attribution_as=attribution_as) for shift in range(1, 25)]
    for metric in METRICS:
        values = np.array([row[metric] for row in null])
        tolerance = 1e-12 * max(1.0, abs(observed[metric]))
        expected = (1 + np.sum(values >= observed[metric] - tolerance)) / (1 + 24)
        assert table.loc[metric, "p_value"] == pytest.approx(expected, abs=1e-15), metric


def test_signed_p_values_differ_from_magnitude_where_attributions_are_negative():
    # attention is high exactly where the attribution is strongly *negative*:
    # by magnitude the two agree, signed they disagree
    rng = np.random.default_rng(7)
    n = 60
    a = rng.normal(scale=0.1, size=n)
    strong = np.sort(rng.choice(np.arange(1, n - 1), size=10, replace=False))  # irregular: no shift realigns them
    a[strong] = -3.0 - rng.random(len(strong))
    r = 0.1 + 0.05 * rng.random(n)
    r[strong] = 1.0 + rng.random(len(strong))
    magnitude = permutation_test(a, r, n_perm=59, attribution_as="magnitude").set_index("metric")["p_value"]
    signed = permutation_test(a, r, n_perm=59, attribution_as="signed").set_index("metric")["p_value"]
    for metric in ("spearman_rho", "kendall_tau", "pearson_r", "rbo", "cosine_ranks", "cosine_minmax"):
        assert magnitude[metric] <= 2 / 60, metric  # no shift (at most one) reaches the observed agreement
        assert signed[metric] > 0.5, metric  # the observed value is among the lowest
    assert magnitude["cosine_raw"] == signed["cosine_raw"]  # cosine_raw is always signed


def test_document_significance_passes_the_convention_on():
    a, r = signed_pair(30, seed=2)
    table = document_significance(a, {"final": r}, n_perm=19, attribution_as="signed")
    assert (table["attribution_as"] == "signed").all()
    expected = similarity(a, r, attribution_as="signed")
    assert table.set_index("metric").loc["spearman_rho", "observed"] == pytest.approx(expected["spearman_rho"])


@pytest.mark.parametrize("metric", ["spearman_rho", "pearson_r", "kendall_tau", "rbo"])
def test_head_map_follows_the_convention(metric):
    rng = np.random.default_rng(11)
    a = rng.normal(size=30)
    heads = rng.gamma(2.0, size=(2, 3, 30))
    observed, null = head_agreement_per_document(a, heads, metric=metric, n_perm=9, attribution_as="signed")
    for layer in range(2):
        for head in range(3):
            expected = similarity(a, heads[layer, head], attribution_as="signed")[metric]
            assert observed[layer, head] == pytest.approx(expected, abs=1e-12)
    table = head_agreement([(a, heads)], metric=metric, n_perm=119, attribution_as="signed")
    assert (table["attribution_as"] == "signed").all()
    assert np.allclose(table["mean"].to_numpy(), observed.ravel())


def test_unknown_convention_is_named():
    a, r = signed_pair(10)
    for call in (lambda: permutation_test(a, r, attribution_as="abs"), lambda: similarity_batch(a, r[None], attribution_as="abs"),
                 lambda: head_agreement_per_document(a, r[None, None], attribution_as="abs")):
        with pytest.raises(ValueError, match="attribution_as must be \"magnitude\""):
            call()


def test_the_per_document_object_follows_the_convention(tmp_path):
    from pyattn.attribution import Attribution
    from pyattn.explanation import compose

    rng = np.random.default_rng(12)
    tokens = ["<s>"] + [f"Ġw{i}" for i in range(30)] + ["</s>"]
    scores = rng.normal(size=len(tokens))
    attribution = Attribution(tokens=tokens, input_ids=list(range(len(tokens))), scores=scores, outputs=np.array([0.4, 0.6]),
                              predicted_label=1, target=1, delta=0.0, output_gap=float(scores.sum()), n_steps=8, model_evaluations=8,
                              converged=True, truncated_tokens=0)
    per_head = rng.gamma(2.0, size=(2, 3, len(tokens)))
    result = compose(attribution, per_head, special_tokens=["<s>", "</s>"], masks=["no_special"], attribution_as="signed", significance=19)
    table = result.significance
    assert (table["attribution_as"] == "signed").all()
    # the observed statistic is the similarity table's (the same tokens: mask no_special)
    similarity_rows = result.similarity.set_index("attention")
    for view in ("final", "all"):
        observed = table[table["attention"] == view].set_index("metric")["observed"]
        for metric in METRICS:
            assert observed[metric] == pytest.approx(similarity_rows.loc[view, metric], abs=1e-12, nan_ok=True), (view, metric)
    page = open(result.save_html(tmp_path / "page.html"), encoding="utf-8").read()
    assert "attributions as signed)" in page and "circular shifts of the attention vector, 19 draws" in page
