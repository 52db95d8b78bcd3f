"""pyattn.read_records: a store read back as arrays of the right shape, checked
against the model's own attention (densified by the readable reference) and
scipy, on the sample dataset shipped with the package."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

import pyattn
from pyattn.kernels import reference
from pyattn.cli import main
from pyattn.demo import DOCS_CSV
from pyattn.models.inputs import encode
from pyattn.pipeline.store import ResultsStore, StoreError


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "results"
    # the README's quickstart command on the shipped sample: default columns text and label, ids from column id
    assert main(["attribute", "--model", "demo", "--data", DOCS_CSV, "--id-column", "id", "--out", str(out), "--steps", "16",
                 "--limit", "2", "--quiet"]) == 0
    return out


def test_records_have_their_shapes(store_dir):
    records = pyattn.read_records(store_dir)
    assert records["doc_id"].tolist() == ["paper-1", "paper-2"]
    assert "attention_per_head" not in records.columns and "attention_shape" not in records.columns
    for _, record in records.iterrows():
        n = len(record["tokens"])
        assert record["attention"].shape == (3, 4, n) and record["attention"].dtype == np.float32
        assert record["scores"].shape == (n,) and record["input_ids"].shape == (n,)
        assert set(record["metrics"]) == {"final", "all"}


def test_attention_is_the_models_own_received_per_layer_and_head(store_dir):
    model, tokenizer = pyattn.load_demo()
    record = pyattn.read_records(store_dir).iloc[0]
    text = __import__("pandas").read_csv(DOCS_CSV).set_index("id").loc[record["doc_id"], "text"]
    encoded = encode(model, tokenizer, text)
    with torch.no_grad():
        output = model(**encoded.forward_kwargs(), output_attentions=True)
    for layer in range(3):
        dense = reference.band_to_dense(output.attentions[layer].double(), output.global_attentions[layer].double(),
                                        encoded.global_attention_mask)  # (1, H, N, N), readable pure PyTorch
        expected = dense[0].sum(1).numpy()  # column sums: attention each token receives, per head
        np.testing.assert_allclose(record["attention"][layer], expected, rtol=1e-5, atol=1e-6)


def test_metrics_are_dicts_that_scipy_agrees_with(store_dir):
    raw = ResultsStore.open(store_dir).records().iloc[0]
    record = pyattn.read_records(store_dir).iloc[0]
    assert json.loads(raw["metrics"])[1]["attention"] == "all"
    keep = np.array([t not in ("<s>", "</s>") for t in record["tokens"]])
    all_layers = record["attention"].astype(np.float64).sum((0, 1))
    rho = stats.spearmanr(np.abs(record["scores"][keep]), all_layers[keep]).statistic
    assert record["metrics"]["all"]["spearman_rho"] == pytest.approx(rho, abs=1e-6)
    assert record["metrics"]["all"]["mask"] == "no_special" and record["metrics"]["all"]["tokens"] == keep.sum()


def test_not_a_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="not a pyattn results store"):
        pyattn.read_records(tmp_path)


# ------------------------------------------------------------ one record
def test_a_stored_row_is_a_records_row_form(store_dir):
    from pyattn.pipeline import RECORD_COLUMNS, Record

    raw = ResultsStore.open(store_dir).records()
    for _, row in raw.iterrows():
        record = Record.from_row(row)
        assert record.attention.shape == tuple(row["attention_shape"])
        again = record.to_row()
        # every stored column is the record's row form, in the order the runner writes it
        assert list(again) == list(raw.columns)
        for column in raw.columns:
            value = row[column]
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(np.asarray(again[column]), value)
            else:
                assert again[column] == value, column
    frame = pyattn.read_records(store_dir)
    assert list(frame.columns) == list(RECORD_COLUMNS)


def test_the_runner_builds_its_row_through_the_record():
    from pyattn.pipeline import Document, Record, build_record, process_document

    model, tokenizer = pyattn.load_demo()
    document = Document("x", 3, "the borrow checker rejects the program", 1)
    row = process_document(model, tokenizer, document, {"n_steps": 16})
    attribution = pyattn.attribute(model, tokenizer, document.text, n_steps=16)
    record = Record.from_row(row)
    rebuilt = build_record(document, attribution, record.attention, tokenizer.all_special_tokens, pyattn.explanation.label_names(model))
    assert rebuilt.to_row() == row
    assert (record.doc_id, record.index, record.label_name) == ("x", 3, "programming languages")


def test_rows_of_older_stores_are_read():
    """pyattn 1.0 stores: attention as nested lists (L, H, N), F as `probabilities`, no `output` column."""
    from pyattn.pipeline import Record, attribution_from_record

    row = {"doc_id": "old", "index": 0, "tokens": ["<s>", "a", "</s>"], "input_ids": [0, 5, 2], "scores": [0.0, 0.4, 0.1],
           "attention_per_head": [[np.array([1.0, 2.0, 3.0])], [np.array([0.5, 0.5, 0.5])]], "probabilities": [0.2, 0.8],
           "predicted_label": 1, "target": 1, "delta": 0.01, "n_steps": 8, "model_evaluations": 9, "converged": True,
           "truncated_tokens": 0, "metrics": None}
    record = Record.from_row(row)
    assert record.attention.shape == (2, 1, 3) and record.attention.dtype == np.float32
    assert record.outputs.tolist() == [0.2, 0.8] and record.output == "softmax" and record.metrics == {}
    attribution = attribution_from_record(row)
    assert attribution.outputs.tolist() == [0.2, 0.8] and attribution.output_gap == pytest.approx(0.49)
