"""One comparison path (issue 20): for the same document, `pyattn.explain`,
`pyattn compare` (`compare_results`) and `pyattn report`'s statistics
(`report_results`) give the same similarity metrics and the same permutation
p-values (same draws, same seed), because all three go through
`pyattn.explanation.compare_document`."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import pyattn
from pyattn.pipeline import Document, ResultsStore, compare_results, process_document, read_records, report_results
from pyattn.compare.similarity import METRICS

TEXT = ("the borrow checker rejects the program because a mutable reference outlives the scope of the vector, "
        "so the compiler asks for an explicit lifetime on the function that returns the slice")
N_STEPS = 16
N_PERM = 19  # fewer than the document's tokens: random circular shifts, drawn from the same seed on every path
VIEWS = ("final", "all")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """The three paths' numbers for one document: {path: {(view, metric): (value, p)}}."""
    model, tokenizer = pyattn.load_demo()
    special = tokenizer.all_special_tokens
    explanation = pyattn.explain(model, tokenizer, TEXT, n_steps=N_STEPS, rollout=False, faithfulness=False,
                                 masks=["no_special"], significance=N_PERM)
    folder = str(tmp_path_factory.mktemp("one-path") / "run")
    with ResultsStore.create(folder, {"model": "demo", "tokenizer": "demo", "settings": {"n_steps": N_STEPS}}) as store:
        store.write_shard([process_document(model, tokenizer, Document("d0", 0, TEXT, None), {"n_steps": N_STEPS})])
    store = ResultsStore.open(folder)
    compared, _, _ = compare_results(store, masks=("no_special",), special_tokens=special, progress=False, n_boot=50,
                                     significance=N_PERM)
    report_results(store, special_tokens=special, progress=False, n_boot=50, significance=N_PERM)
    reported = pd.read_parquet(os.path.join(folder, "reports", "metrics.parquet"))
    stored = read_records(folder).iloc[0]

    found = {}
    table = explanation.similarity.set_index(["attention", "mask"])
    p_values = explanation.significance.set_index(["attention", "mask", "metric"])
    found["explain"] = {(view, metric): (table.loc[(view, "no_special"), metric], p_values.loc[(view, "no_special", metric), "p_value"])
                        for view in VIEWS for metric in METRICS}
    for name, frame in (("compare", compared), ("report", reported)):
        rows = frame[(frame["document"] == "d0") & (frame["mask"] == "no_special")].set_index("attention")
        found[name] = {(view, metric): (rows.loc[view, metric], rows.loc[view, f"p_{metric}"]) for view in VIEWS for metric in METRICS}
    found["record"] = {(view, metric): (stored["metrics"][view][metric], None) for view in VIEWS for metric in METRICS}
    return found, explanation, stored


def test_the_paths_see_the_same_document(paths):
    _, explanation, stored = paths
    np.testing.assert_array_equal(explanation.attribution.scores, stored["scores"])
    np.testing.assert_array_equal(explanation.per_head, stored["attention"].astype(np.float64))
    assert len(explanation.tokens) > N_PERM + 2  # so the p-values come from drawn shifts, not all of them


def test_the_numbers_are_real(paths):
    found, _, _ = paths
    values = np.array([value for value, _ in found["explain"].values()], dtype=float)
    p = np.array([p for _, p in found["explain"].values()], dtype=float)
    assert np.isfinite(values).sum() >= len(METRICS)  # not a comparison of NaNs
    assert np.isfinite(p).all() and (p > 0).all() and (p <= 1).all()
    assert len(set(np.round(p, 12))) > 1


@pytest.mark.parametrize("path", ["compare", "report", "record"])
def test_metrics_and_p_values_equal_explains(paths, path):
    found, _, _ = paths
    for key, (value, p) in found["explain"].items():
        other_value, other_p = found[path][key]
        assert other_value == pytest.approx(value, abs=1e-12, nan_ok=True), (path, key, "metric")
        if other_p is not None:
            assert other_p == pytest.approx(p, abs=1e-12, nan_ok=True), (path, key, "p-value")


def test_a_path_that_computes_differently_is_caught(paths):
    """The comparison above can fail: the same document with signed
    attributions (another convention) differs from explain's numbers."""
    found, _, stored = paths
    model, tokenizer = pyattn.load_demo()
    signed = pyattn.explanation.compare_document(stored["scores"], stored["tokens"], np.array(stored["attention"]), masks=["no_special"],
                                                 special_tokens=tokenizer.all_special_tokens, attribution_as="signed",
                                                 significance=N_PERM)
    table = signed[1].set_index("attention")
    differs = [key for key, (value, _) in found["explain"].items()
               if not table.loc[key[0], key[1]] == pytest.approx(value, abs=1e-12, nan_ok=True)]
    assert differs
