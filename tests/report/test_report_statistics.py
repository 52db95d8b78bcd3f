"""The statistics of a dataset report: each document page shows every
metric's value with its permutation p-value beside the dataset mean, its
bootstrap interval and the document's percentile; the index shows every mean
with its interval and the p-value summary. The numbers on the pages are those
of ``pyattn compare``'s files (read back here from the HTML), and those are
checked against independent truths: the exact p-value formula over all
circular shifts built with ``np.roll``, scipy's ``percentileofscore``, a
hand-written Holm step-down, and the bootstrap interval of the plain values.

The store is synthetic (records made from seeded vectors through the
runner's own record maker): no model runs, so each test takes seconds."""

from __future__ import annotations

import html.parser
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pyattn.attribution import Attribution
from pyattn.cli import main
from pyattn.pipeline.documents import Document
from pyattn.pipeline import build_record, stored_attention
from pyattn.compare.similarity import METRICS, similarity, token_masks
from pyattn.pipeline.store import ResultsStore
from pyattn.compare.uncertainty import bootstrap_mean_ci, dataset_statistics
from testing import WORDS

SPECIAL = ["<s>", "</s>", "<unk>", "<pad>", "<mask>"]  # the demo tokenizer's, as `pyattn compare` reads them from the manifest


def records_for(documents: int, seed: int, first: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(first, first + documents):
        words = 12 if i == first else int(rng.integers(30, 50))  # the first is short: fewer tokens than permutations
        tokens = ["<s>"] + ["Ġ" + WORDS[j] for j in rng.integers(0, len(WORDS), words)] + ["</s>"]
        n = len(tokens)
        scores = rng.normal(size=n)
        attribution = Attribution(tokens=tokens, input_ids=list(range(n)), scores=scores, outputs=np.array([0.3, 0.7]),
                                  predicted_label=1, target=1, delta=0.0, output_gap=float(scores.sum()), n_steps=16,
                                  model_evaluations=16, converged=True, truncated_tokens=0)
        per_head = rng.gamma(2.0, size=(2, 3, n))
        per_head[:, :, 0] *= 20  # the first token is global: it receives far more
        records.append(build_record(Document(f"d{i}", i, " ".join(tokens), int(rng.integers(0, 2))), attribution, per_head, SPECIAL,
                                    {0: "machine learning", 1: "programming languages"}).to_row())
    return records


def make_store(path, documents: int = 8, seed: int = 0) -> ResultsStore:
    store = ResultsStore.create(str(path), {"model": "demo", "tokenizer": "demo", "settings": {}})
    store.write_shard(records_for(documents, seed))
    store.close()
    return ResultsStore.open(str(path))


class _Tables(html.parser.HTMLParser):
    """Every <table id=...> of a page as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current = None
        self.row = None
        self.cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self.current = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self.current is not None:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.current = None
        elif tag == "tr" and self.row is not None:
            self.current.append(self.row)
            self.row = None
        elif tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def html_table(path, table_id: str) -> pd.DataFrame:
    parser = _Tables()
    parser.feed(open(path, encoding="utf-8").read())
    header, *rows = parser.tables[table_id]
    return pd.DataFrame(rows, columns=header)


def number(text: str) -> float:
    return float(text) if text else float("nan")


def interval(text: str) -> tuple[float, float]:
    low, high = text.strip("[]").split(", ")
    return float(low), float(high)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A store of 8 documents, `pyattn compare --significance 19`, then `pyattn report`."""
    store = make_store(tmp_path_factory.mktemp("stats") / "store")
    assert main(["compare", "--results", store.path, "--significance", "19", "--quiet"]) == 0
    assert main(["report", "--results", store.path, "--quiet"]) == 0
    return store


def test_document_pages_show_the_numbers_of_compares_files(compared):
    per_document = pd.read_parquet(os.path.join(compared.path, "metrics.parquet"))
    intervals = pd.read_csv(os.path.join(compared.path, "metrics_intervals.csv"))
    reports = os.path.join(compared.path, "reports")
    for number_, doc in enumerate(compared.records()["doc_id"]):
        page = os.path.join(reports, f"document-{number_}.html")
        shown = html_table(page, "document-statistics")
        rows = per_document[(per_document.document == doc) & (per_document["mask"] == "no_special")].set_index("attention")
        assert len(shown) == len(rows) * len(METRICS)  # every attention choice x every metric
        for _, cell in shown.iterrows():
            view, metric = cell["attention received"], cell["metric"]
            row = rows.loc[view]
            summary = intervals[(intervals.attention == view) & (intervals["mask"] == "no_special") & (intervals.metric == metric)].iloc[0]
            close = dict(abs=5.1e-5, nan_ok=True)
            assert number(cell["this document"]) == pytest.approx(row[metric], **close), (doc, view, metric)
            assert number(cell["p (one-sided)"]) == pytest.approx(row[f"p_{metric}"], **close)
            assert number(cell["p, Holm over documents"]) == pytest.approx(row[f"p_holm_{metric}"], **close)
            assert number(cell["dataset mean"]) == pytest.approx(summary["mean"], **close)
            low, high = interval(cell["95% CI of the mean"])
            assert (low, high) == (pytest.approx(summary["ci_low"], abs=5.1e-5), pytest.approx(summary["ci_high"], abs=5.1e-5))
            assert int(cell["documents"]) == summary["documents"] == 8
            assert number(cell["percentile among documents (% with value <= this)"]) == pytest.approx(row[f"percentile_{metric}"], abs=0.051)
        text = open(page, encoding="utf-8").read()
        assert "circular shifts of the attention vector" in text and "n_perm = 11/19 draws per document" in text
        assert "attributions as |attribution| (magnitude)" in text and "2000 resamples" in text
    # the report keeps the numbers it shows beside its pages: compare's, unchanged
    pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(reports, "metrics.parquet")), per_document)
    pd.testing.assert_frame_equal(pd.read_csv(os.path.join(reports, "metrics_intervals.csv")), intervals)


def test_index_shows_every_mean_with_its_interval_and_the_p_value_summary(compared):
    intervals = pd.read_csv(os.path.join(compared.path, "metrics_intervals.csv"))
    index = os.path.join(compared.path, "reports", "index.html")
    shown = html_table(index, "dataset-statistics")
    expected = intervals[intervals["mask"] == "no_special"]
    assert len(shown) == len(expected) == 2 * len(METRICS)  # final and all, every metric
    for (_, cell), (_, row) in zip(shown.iterrows(), expected.iterrows()):
        assert (cell["attention received"], cell["metric"]) == (row["attention"], row["metric"])
        assert number(cell["dataset mean"]) == pytest.approx(row["mean"], abs=5.1e-5)
        assert interval(cell["95% CI of the mean"]) == (pytest.approx(row["ci_low"], abs=5.1e-5), pytest.approx(row["ci_high"], abs=5.1e-5))
        assert number(cell["share of documents with p <= 0.05"]) == pytest.approx(row["share_p05"], abs=5.1e-5)
        assert number(cell["share of documents with p <= 0.05 after Holm over documents"]) == pytest.approx(row["share_p05_holm"], abs=5.1e-5)
    text = open(index, encoding="utf-8").read()
    assert "p: the document&#39;s one-sided circular-shift permutation p-value" in text
    # 8 documents, at most 19 draws: Holm cannot reach 0.05, and the page says so
    assert "the smallest Holm-adjusted p-value possible is 8/20 = 0.4 &gt; 0.05" in text and "needs n_perm &gt;= 159" in text
    documents = html_table_rows_without_id(index)
    assert "p, spearman, final" in documents[0]


def html_table_rows_without_id(path) -> list[list[str]]:
    import re

    text = open(path, encoding="utf-8").read()
    last = text.rindex("<table>")
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", text[last:], re.S)]


def test_compares_statistics_against_independent_truths(compared):
    per_document = pd.read_parquet(os.path.join(compared.path, "metrics.parquet"))
    intervals = pd.read_csv(os.path.join(compared.path, "metrics_intervals.csv"))
    records = compared.records().set_index("doc_id")
    group = per_document[(per_document.attention == "final") & (per_document["mask"] == "no_special")]
    for metric in ("spearman_rho", "kendall_tau", "rbo", "cosine_raw"):
        values = group[metric].to_numpy()
        # percentile: scipy's "weak" percentile of each document among all
        assert np.allclose(group[f"percentile_{metric}"], [stats.percentileofscore(values, v, kind="weak") for v in values])
        # the mean and its interval: the bootstrap of the plain values (same resamples: seed 0, 2,000)
        row = intervals[(intervals.attention == "final") & (intervals["mask"] == "no_special") & (intervals.metric == metric)].iloc[0]
        assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(bootstrap_mean_ci(values, n_boot=2000, seed=0))
        # Holm over the documents, step-down by hand
        p = group[f"p_{metric}"].to_numpy()
        order = np.argsort(p, kind="stable")
        adjusted, running = np.empty(len(p)), 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (len(p) - rank) * p[i]))
            adjusted[i] = running
        assert np.allclose(group[f"p_holm_{metric}"], adjusted)
        assert row["share_p05"] == pytest.approx(np.mean(p <= 0.05)) and row["share_p05_holm"] == pytest.approx(np.mean(adjusted <= 0.05))
        assert row["documents_tested"] == 8
    # the short document (12 words): all 11 circular shifts of its words, the exact formula
    record = records.loc["d0"]
    keep = token_masks(list(record["tokens"]), SPECIAL)["no_special"]
    a, r = np.asarray(record["scores"])[keep], stored_attention(record)[-1].sum(0)[keep]
    observed = similarity(a, r)
    null = [similarity(a, np.roll(r, shift)) for shift in range(1, 12)]
    mine = group.set_index("document").loc["d0"]
    assert mine["significance_n_perm"] == 11
    for metric in METRICS:
        tolerance = 1e-12 * max(1.0, abs(observed[metric]))
        expected = (1 + sum(row[metric] >= observed[metric] - tolerance for row in null)) / 12
        assert mine[f"p_{metric}"] == pytest.approx(expected), metric
        assert mine[metric] == pytest.approx(observed[metric])


def test_report_computes_its_own_statistics_when_asked(tmp_path):
    store = make_store(tmp_path / "store", documents=5, seed=1)
    assert main(["report", "--results", store.path, "--significance", "9", "--attribution-as", "signed", "--quiet"]) == 0
    reports = os.path.join(store.path, "reports")
    per_document = pd.read_parquet(os.path.join(reports, "metrics.parquet"))
    assert set(per_document["attribution_as"]) == {"signed"} and set(per_document["mask"]) == {"no_special"}
    record = store.records().iloc[2]
    keep = token_masks(list(record["tokens"]), SPECIAL)["no_special"]
    expected = similarity(np.asarray(record["scores"])[keep], stored_attention(record).sum((0, 1))[keep], attribution_as="signed")
    shown = html_table(os.path.join(reports, "document-2.html"), "document-statistics").set_index(["attention received", "metric"])
    for metric in METRICS:
        assert number(shown.loc[("all", metric), "this document"]) == pytest.approx(expected[metric], abs=5.1e-5)
    assert shown["p (one-sided)"].map(number).between(0.1, 1).all()  # 9 draws: p >= 1/10
    text = open(os.path.join(reports, "document-2.html"), encoding="utf-8").read()
    assert "computed by `pyattn report` (p-values asked of `pyattn report` (9 permutations))" in text
    assert "attributions as signed scores" in text and "attributions as signed;" in text  # the statistics and the page's own similarity


def test_stale_compare_outputs_are_not_shown(tmp_path):
    store = make_store(tmp_path / "store", documents=4, seed=2)
    assert main(["compare", "--results", store.path, "--quiet"]) == 0
    writer = ResultsStore.create(store.path, {"model": "demo", "tokenizer": "demo", "settings": {}}, resume=True)
    writer.write_shard(records_for(1, seed=3, first=4))  # a fifth document after compare ran
    writer.close()
    assert main(["report", "--results", store.path, "--quiet"]) == 0
    page = open(os.path.join(store.path, "reports", "document-0.html"), encoding="utf-8").read()
    assert "cover 4 documents but the store holds 5 (1 not compared): run `pyattn compare` again" in page
    shown = html_table(os.path.join(store.path, "reports", "document-0.html"), "document-statistics")
    assert set(shown["documents"]) == {"5"}
    assert "No p-values: run `pyattn compare --significance 999`" in page


def test_dataset_statistics_percentiles_skip_missing_values():
    table = pd.DataFrame({"document": list("abcd"), "attention": "final", "mask": "all", "spearman_rho": [0.2, np.nan, 0.2, -0.1]})
    positions, summary = dataset_statistics(table, n_boot=100)
    assert positions["percentile_spearman_rho"].tolist()[::2] == [100.0, 100.0] and np.isnan(positions["percentile_spearman_rho"].iloc[1])
    assert positions["percentile_spearman_rho"].iloc[3] == pytest.approx(100 / 3)
    assert summary.loc[0, "documents"] == 3 and "share_p05" not in summary.columns


def test_index_shows_token_types_with_the_intervals_of_compares_table(compared):
    tokens = pd.read_csv(os.path.join(compared.path, "tokens_intervals.csv"), keep_default_na=False, na_values=[""])
    index = os.path.join(compared.path, "reports", "index.html")
    for table_id, expected in (("tokens-top", tokens.head(15)), ("tokens-bottom", tokens.iloc[::-1].head(15))):
        shown = html_table(index, table_id)
        assert len(shown) == 15
        assert list(shown["token (raw; Ġ = a space before it)"]) == list(expected["token"])
        assert np.allclose(shown["attribution summed over the dataset"].map(number), expected["sum"], atol=5.1e-5)
        assert np.allclose(shown["mean per document (sum / all documents)"].map(number), expected["mean_over_all_documents"], atol=5.1e-5)
        bounds = np.array([interval(text) for text in shown["95% CI (per document)"]])
        assert np.allclose(bounds, expected[["mean_over_all_documents_low", "mean_over_all_documents_high"]], atol=5.1e-5)
    # the table's sums, from the records themselves (signed attribution per raw token, over all documents)
    records = compared.records()
    first = tokens.iloc[0]
    total = sum(float(np.sum(np.asarray(r["scores"])[np.asarray(r["tokens"]) == first["token"]])) for _, r in records.iterrows())
    assert first["sum"] == pytest.approx(total) and first["mean_over_all_documents"] == pytest.approx(total / len(records))


def test_swapped_tables_are_refused():
    """statistics_note takes (intervals, per_document), document_statistics
    (per_document, intervals): swapping them would print a wrong note or an
    empty table silently; both refuse in one line."""
    import pandas as pd
    import pytest

    from pyattn.report.statistics import document_statistics, statistics_note
    from pyattn.compare.uncertainty import dataset_statistics

    metrics = pd.DataFrame({"document": ["a", "b", "c"], "attention": "final", "mask": "all", "spearman_rho": [0.1, 0.3, 0.2]})
    per_document, intervals = dataset_statistics(metrics, n_boot=50)
    assert "all" in statistics_note(intervals, per_document, "all", "x")
    assert len(document_statistics(per_document, intervals, "a", "all")) > 0
    with pytest.raises(TypeError, match="swapped"):
        statistics_note(per_document, intervals, "all", "x")
    with pytest.raises(TypeError, match="swapped"):
        document_statistics(intervals, per_document, "a", "all")
