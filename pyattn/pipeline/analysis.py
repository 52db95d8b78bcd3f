"""Reading a results store back: layer ranges, the store's model shape,
``pyattn compare`` (:func:`compare_results`: each document's metrics and
p-values, the dataset's tables) and ``pyattn report`` (:func:`report_results`:
a page per document and an index).

Every document's metrics and p-values come from
:func:`pyattn.explanation.compare_document`, the function
:func:`pyattn.explain` computes them with, so a notebook and a dataset run
give the same numbers for the same document.
"""

from __future__ import annotations

import math
import os

from pyattn._checks import head_importance_tensor
from pyattn.errors import DataError, InputError, StoreError
from pyattn.pipeline.records import attribution_from_record, stored_attention
from pyattn.pipeline.store import ResultsStore

# store_shape serves the CLI (importable, not user API).
__all__ = ["check_report_dir", "compare_results", "parse_layer_ranges", "report_results"]


def parse_layer_ranges(layers: str | None, num_layers: int) -> list[tuple[int, int]]:
    """``"0-5,6-11"`` -> ``[(0, 5), (6, 11)]``: layers numbered from 0,
    negative numbers from the end (``-1`` the last), ranges inclusive; each
    checked against ``num_layers``. Returns the ranges as 0-based indices.

    >>> parse_layer_ranges("0-1, -1", 4)
    [(0, 1), (3, 3)]
    """
    import re

    ranges = []
    for part in (layers or "").split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(-?\d+)(?:\s*-\s*(-?\d+))?", part)
        if not match:
            raise InputError(f"layers={part!r} is not a layer or range: use e.g. 0-5,6-11 (layers numbered from 0, -1 the last)")
        bounds = []
        for value in (match.group(1), match.group(2) or match.group(1)):
            number = int(value)
            if not -num_layers <= number < num_layers:
                raise InputError(f"layers={part!r}: layer {number} does not exist; the model has {num_layers} layers, 0..{num_layers - 1} (or -1..-{num_layers})")
            bounds.append(number % num_layers)
        if bounds[0] > bounds[1]:
            raise InputError(f"layers={part!r} is empty: its first layer ({bounds[0]}) comes after its last ({bounds[1]})")
        ranges.append((bounds[0], bounds[1]))
    return ranges


def store_shape(store: ResultsStore) -> tuple[int, int] | None:
    """(layers, heads) of the model that filled ``store`` (None if empty)."""
    manifest = store.manifest()
    if "num_layers" in manifest and "num_heads" in manifest:
        return int(manifest["num_layers"]), int(manifest["num_heads"])
    records = store.records()
    if records.empty:
        return None
    shape = stored_attention(records.iloc[0]).shape
    return shape[0], shape[1]


def compare_results(store: ResultsStore, head_importance=None, ranges=(), masks=("no_special", "alphabetic", "no_stopwords"), special_tokens=(), progress: bool = True,
                    n_boot: int = 2000, head_map: bool = False, head_map_perm: int | None = None, significance: int = 0,
                    attribution_as: str = "magnitude"):
    """Similarity of every stored document's attributions to its attention
    received: final layer, all layers, each 0-based inclusive layer range
    ``(first, last)``, and the same scaled by ``head_importance`` ``(L, H)``
    when given; for each mask.

    Writes into the store ``metrics.parquet`` (per document),
    ``metrics_summary.csv`` (means per attention choice x mask),
    ``metrics_intervals.csv`` (each mean with its bootstrap 95% interval over
    documents, ``n_boot`` resamples, and with ``significance`` the share of
    documents with p <= 0.05, before and after Holm over the documents:
    :func:`pyattn.compare.uncertainty.dataset_statistics`), where ``metrics.parquet``
    also gets each document's ``percentile_<metric>`` among the documents
    (and ``p_holm_<metric>``),
    ``tokens.parquet`` / ``tokens.csv`` (token types across the dataset) and,
    with ``head_map`` (off by default: thousands of permutations of every
    document, about 3 s per 2,048-token document for 12 x 12 heads),
    ``head_agreement.csv`` / ``head_agreement.png``: per
    layer x head, the mean Spearman of that head's attention received with
    the attributions (as ``attribution_as`` says; special tokens held in place), its interval, a
    dataset-level circular-shift permutation p-value and its Holm correction
    (:func:`pyattn.head_agreement`; ``head_map_perm`` draws, default enough
    for Holm over all heads), beside head importance when given;
    ``tokens_intervals.csv``: bootstrap intervals of the token table's means
    (:func:`pyattn.bootstrap_token_means`). With ``significance`` > 0,
    ``metrics.parquet`` also holds ``p_<metric>`` columns: each document's
    one-sided permutation p-value (circular-shift null, ``significance``
    draws; the mask's tokens only, as the metric), with the null and the
    draws used in ``significance_null`` and ``significance_n_perm``.
    ``attribution_as`` (``"magnitude"``, the default, or ``"signed"``) is the
    attributions' ranking convention in every metric, p-value and the head
    map; every table names it.

    Parameters
    ----------
    store : ResultsStore
    head_importance : array-like, shape (L, H), optional
    ranges : sequence of (int, int)
        Layer ranges, from 0, inclusive (see ``parse_layer_ranges``).
    masks : sequence of str
        Token masks (:data:`pyattn.compare.similarity.MASKS`); all but ``"all"`` need
        ``special_tokens``.
    special_tokens : sequence of str
    progress : bool
    n_boot : int
    head_map : bool
    head_map_perm : int, optional
    significance : int
    attribution_as : {"magnitude", "signed"}

    Returns
    -------
    per_document : pandas.DataFrame
        :func:`pyattn.compare.similarity.compare` rows of every document, with
        ``document``.
    summary : pandas.DataFrame
        Means per attention choice x mask
        (:func:`pyattn.compare.similarity.dataset_similarity`).
    tokens : pandas.DataFrame
        :func:`pyattn.compare.tokens.dataset_token_table` of the attributions.

    Raises
    ------
    DataError
        If the store is empty, head importance does not fit, or scores are not
        finite.

    Examples
    --------
    A store of one document, made by :func:`pyattn.pipeline.run_attribution`:

    >>> import os, tempfile
    >>> from pyattn import load_demo
    >>> from pyattn.pipeline import Document, ResultsStore, run_attribution
    >>> model, tokenizer = load_demo()
    >>> folder = tempfile.TemporaryDirectory()
    >>> with ResultsStore.create(os.path.join(folder.name, "run"), {"model": "demo"}) as store:
    ...     _ = run_attribution(model, tokenizer, [Document("a", 0, "the borrow checker rejects the program", 1)], store, {"n_steps": 16}, progress=False)
    >>> per_document, summary, tokens = compare_results(store, ranges=[(0, 1)], special_tokens=tokenizer.all_special_tokens, progress=False, n_boot=200)
    >>> summary[summary["mask"] == "no_special"]["attention"].tolist(), int(summary["documents"].max())
    (['final', 'all', '0-1'], 1)
    >>> sorted(name for name in os.listdir(store.path) if name.endswith((".csv", ".parquet")))
    ['metrics.parquet', 'metrics_intervals.csv', 'metrics_summary.csv', 'tokens.csv', 'tokens.parquet', 'tokens_intervals.csv']
    >>> folder.cleanup()
    """
    import numpy as np
    from tqdm.auto import tqdm

    from pyattn.compare.similarity import dataset_similarity
    from pyattn.compare.tokens import dataset_token_table, export_table

    records = store.records()
    if records.empty:
        raise DataError(f"{store.path} holds no results yet: run `pyattn attribute` first")
    weights = None if head_importance is None else head_importance_tensor(head_importance).numpy()  # finite, >= 0
    tables, ids, token_docs, heads_input, special_masks = [], [], [], [], []
    for _, record in tqdm(records.iterrows(), total=len(records), desc="comparing", unit="doc", disable=not progress):
        per_head = stored_attention(record)
        if weights is not None and weights.shape != per_head.shape[:2]:
            raise DataError(f"head importance has shape {weights.shape} but the stored attention has {per_head.shape[0]} layers x {per_head.shape[1]} heads")
        scores = np.asarray(record["scores"], dtype=np.float64)
        if not np.isfinite(scores).all():
            raise DataError(f"document {record['doc_id']!r} has non-finite attribution scores in the store")
        tokens = list(record["tokens"])
        tables.append(_document_table(scores, tokens, per_head, weights, ranges, special_tokens, masks, significance, attribution_as))
        ids.append(record["doc_id"])
        token_docs.append((tokens, scores))
        if head_map:
            special = set(special_tokens)
            heads_input.append((scores, per_head))
            special_masks.append(np.array([t in special for t in tokens]))
    per_document, summary = dataset_similarity(tables, ids)
    tokens_table = dataset_token_table(token_docs)
    from pyattn.compare.uncertainty import bootstrap_token_means, dataset_statistics

    per_document, intervals = dataset_statistics(per_document, n_boot=n_boot)
    export_table(per_document, os.path.join(store.path, "metrics.parquet"))
    export_table(summary, os.path.join(store.path, "metrics_summary.csv"))
    export_table(intervals, os.path.join(store.path, "metrics_intervals.csv"))
    export_table(bootstrap_token_means(token_docs, n_boot=n_boot), os.path.join(store.path, "tokens_intervals.csv"))
    if head_map:
        from pyattn.compare.agreement import head_agreement
        from pyattn.report.agreement_plots import head_agreement_png

        agreement = head_agreement(heads_input, special_masks=special_masks, n_perm=head_map_perm, n_boot=n_boot, attribution_as=attribution_as)
        export_table(agreement, os.path.join(store.path, "head_agreement.csv"))
        with open(os.path.join(store.path, "head_agreement.png"), "wb") as image:
            image.write(head_agreement_png(agreement, head_importance=weights))
    export_table(tokens_table, os.path.join(store.path, "tokens.parquet"))
    export_table(tokens_table, os.path.join(store.path, "tokens.csv"))
    return per_document, summary, tokens_table


def _document_table(scores, tokens, per_head, weights, ranges, special_tokens, masks, significance: int, attribution_as: str):
    """One document's :func:`pyattn.compare.similarity.compare` rows from
    :func:`pyattn.explanation.compare_document` (the comparison
    :func:`pyattn.explain` makes), with significance a ``p_<metric>`` column
    per metric: the permutation p-value of that row's attention view over
    that row's mask (circular-shift null), and ``significance_null`` /
    ``significance_n_perm`` (the draws used: all m - 1 shifts when a mask
    keeps m <= significance tokens)."""
    import numpy as np

    from pyattn.explanation import compare_document
    from pyattn.compare.similarity import METRICS

    _, table, p_values = compare_document(scores, tokens, per_head, head_importance=weights, layer_ranges=ranges,
                                          special_tokens=special_tokens, masks=masks, attribution_as=attribution_as,
                                          significance=significance, p_masks=masks)
    if not significance:
        return table
    table = table.copy()
    for column in METRICS:
        table[f"p_{column}"] = np.nan
    table["significance_null"] = "circular_shift"
    table["significance_n_perm"] = 0
    if p_values is None:
        return table
    found = p_values.set_index(["attention", "mask"])
    for index, row in table.iterrows():
        key = (row["attention"], row["mask"])
        if key not in found.index:
            continue
        result = found.loc[[key]]
        for metric, p in zip(result["metric"], result["p_value"]):
            table.loc[index, f"p_{metric}"] = p
        table.loc[index, "significance_n_perm"] = int(result["n_perm"].iloc[0])
    return table


REPORT_MARKER = ".pyattn-report"


def _flags(record) -> str:
    """What a reader of the index must know about one document: it did not
    converge, it was truncated (empty when neither)."""
    flags = []
    if not bool(record["converged"]):
        flags.append(f"NOT converged (completeness error {float(record['relative_error']):.1%})")
    if int(record.get("truncated_tokens", 0) or 0):
        flags.append(f"truncated ({int(record['truncated_tokens']):,} tokens dropped)")
    return "; ".join(flags)


def check_report_dir(out: str) -> None:
    """Refuse a report folder that holds files pyattn did not write there
    (a :class:`pyattn.errors.StoreError` naming ``out``).

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> check_report_dir(os.path.join(folder.name, "new"))  # a new folder is fine
    >>> open(os.path.join(folder.name, "mine.txt"), "w").close()
    >>> check_report_dir(folder.name)
    Traceback (most recent call last):
    ...
    pyattn.errors.StoreError: ... holds files pyattn did not write; choose another `out` (pyattn never overwrites them)
    >>> folder.cleanup()
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise StoreError(f"out={out!r} is a file, not a folder")
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, REPORT_MARKER)):
        raise StoreError(f"{out} holds files pyattn did not write; choose another `out` (pyattn never overwrites them)")


def _stored_statistics(store: ResultsStore, records, mask: str, attribution_as: str | None):
    """``pyattn compare``'s per-document table and intervals when they describe
    this store as it is now: ``(per_document, intervals, None)``, or
    ``(None, None, why not)``."""
    import pandas as pd

    metrics_file = os.path.join(store.path, "metrics.parquet")
    intervals_file = os.path.join(store.path, "metrics_intervals.csv")
    if not (os.path.exists(metrics_file) and os.path.exists(intervals_file)):
        return None, None, "no `pyattn compare` outputs in the store"
    per_document = pd.read_parquet(metrics_file)
    intervals = pd.read_csv(intervals_file)
    if "percentile_spearman_rho" not in per_document.columns or "attribution_as" not in intervals.columns:
        return None, None, "the store's `pyattn compare` outputs come from an older pyattn (run `pyattn compare` again)"
    stored_ids = set(per_document["document"].astype(str))
    ids = set(records["doc_id"].astype(str))
    if stored_ids != ids:
        return None, None, (f"the store's `pyattn compare` outputs cover {len(stored_ids)} documents but the store holds {len(ids)} "
                            f"({len(ids - stored_ids)} not compared): run `pyattn compare` again")
    if mask not in set(per_document["mask"]):
        return None, None, f"the store's `pyattn compare` outputs have no rows for mask {mask!r}"
    used = set(per_document["attribution_as"])
    if attribution_as is not None and used != {attribution_as}:
        return None, None, f"the store's `pyattn compare` outputs take attributions as {sorted(used)}, not {attribution_as!r}"
    return per_document, intervals, None


def report_results(store: ResultsStore, out: str | None = None, head_importance=None, special_tokens=(), label_names=None, progress: bool = True,
                   significance: int = 0, attribution_as: str | None = None, n_boot: int = 2000,
                   head_importance_name: str = "head importance") -> str:
    """An HTML report per stored document (``document-<n>.html``, ``n`` its
    position in the store, never a name taken from the store's contents) and
    an ``index.html`` linking only those, in ``STORE/reports`` unless ``out``;
    returns the index's path. A folder holding files pyattn did not write is
    refused.

    Each document page shows, for every attention choice x metric over the
    mask ``no_special`` (``all`` without special tokens): the document's
    value, its permutation p-value and the Holm-adjusted one (over the
    documents) when computed, the dataset mean with its bootstrap 95%
    interval and the document's percentile among the documents. The index
    shows every mean with its interval and, with p-values, the share of
    documents with p <= 0.05 before and after Holm; the metric distributions
    and the head map when ``pyattn compare`` made them.

    The numbers are ``pyattn compare``'s (``metrics.parquet``,
    ``metrics_intervals.csv`` in the store) when those describe the store as
    it is; else (or with ``significance`` > 0: that many circular-shift
    permutations per document, computed here) the report computes them
    itself. Either way it writes the numbers it shows to ``metrics.parquet``
    and ``metrics_intervals.csv`` in ``out``. ``attribution_as``:
    ``"magnitude"`` or ``"signed"``; None takes ``pyattn compare``'s (else
    magnitude).

    Each document's report is the :class:`pyattn.Explanation` that :func:`pyattn.explanation.compose`
    rebuilds from its record (no rollout or faithfulness: they need the model).

    Parameters
    ----------
    store : ResultsStore
    out : str, optional
        The report folder.
    head_importance : array-like, shape (L, H), optional
    head_importance_name : str
        Its plot's title: say which importance (e.g. "Taylor head
        importance"); the CLI names the file it was read from.
    special_tokens : sequence of str
        The index's Spearman columns use mask ``no_special`` when given, else
        ``all`` (and say which).
    label_names : dict of int to str, or sequence of str, optional
    progress : bool
    significance : int
        Permutations per document computed here (0: use compare's, if any).
    attribution_as : {"magnitude", "signed"} or None
    n_boot : int
        Bootstrap resamples for the intervals.

    Returns
    -------
    str
        The index's path.

    Raises
    ------
    StoreError
        If ``out`` holds files pyattn did not write.
    DataError
        If the store is empty.

    Examples
    --------
    A store of one document, its record written by hand:

    >>> import os, tempfile, pyattn
    >>> from pyattn.pipeline import Document, ResultsStore, process_document
    >>> model, tokenizer = pyattn.load_demo()
    >>> document = Document("a", 0, "the borrow checker rejects the program", 1)
    >>> folder = tempfile.TemporaryDirectory()
    >>> with ResultsStore.create(os.path.join(folder.name, "run"), {"model": "demo"}) as store:
    ...     _ = store.write_shard([process_document(model, tokenizer, document, {"n_steps": 16})])
    >>> index = report_results(store, special_tokens=tokenizer.all_special_tokens, progress=False)
    >>> os.path.relpath(index, store.path), sorted(os.listdir(os.path.dirname(index)))
    ('reports/index.html', ['.pyattn-report', 'document-0.html', 'index.html', 'metrics.parquet', 'metrics_intervals.csv', 'tokens_intervals.csv'])
    >>> "spearman, final (no_special)" in open(index, encoding="utf-8").read()
    True
    >>> folder.cleanup()
    """
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from pyattn.explanation import compose
    from pyattn.report import index_report
    from pyattn.report.statistics import (
        display_document_statistics,
        display_summary_statistics,
        display_token_intervals,
        document_statistics,
        statistics_note,
        summary_statistics,
    )
    from pyattn._checks import check_attribution_as
    from pyattn.compare.similarity import dataset_similarity
    from pyattn.compare.tokens import export_table
    from pyattn.compare.uncertainty import dataset_statistics

    if attribution_as is not None:
        check_attribution_as(attribution_as)
    if isinstance(significance, bool) or not isinstance(significance, int) or significance < 0:
        raise InputError(f"significance must be a number of permutations >= 0 (0: none), got {significance!r}")
    weights = None if head_importance is None else head_importance_tensor(head_importance).numpy()  # finite, >= 0: before any file
    mask = "no_special" if special_tokens else "all"
    out = out or os.path.join(store.path, "reports")
    check_report_dir(out)
    records = store.records()
    if records.empty:
        raise DataError(f"{store.path} holds no results yet: run `pyattn attribute` first")
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, REPORT_MARKER), "w").close()
    names = {int(k): v for k, v in (label_names or {}).items()} if isinstance(label_names, dict) else dict(enumerate(label_names or []))

    # The dataset statistics first: every page shows the document among the others.
    per_document, intervals, why = (None, None, f"p-values asked of `pyattn report` ({significance} permutations)") if significance else \
        _stored_statistics(store, records, mask, attribution_as)
    if per_document is not None:
        attribution_as = str(per_document["attribution_as"].iloc[0])
        source = (f"`pyattn compare` ({os.path.join(store.path, 'metrics.parquet')} and metrics_intervals.csv); "
                  "the same numbers are copied to metrics.parquet and metrics_intervals.csv beside these pages")
    else:
        attribution_as = attribution_as or "magnitude"
        tables, ids = [], []
        for _, record in tqdm(records.iterrows(), total=len(records), desc="statistics", unit="doc", disable=not progress):
            per_head = stored_attention(record)
            scores = np.asarray(record["scores"], dtype=np.float64)
            tables.append(_document_table(scores, list(record["tokens"]), per_head, weights, (), special_tokens, [mask], significance,
                                          attribution_as))
            ids.append(record["doc_id"])
        per_document, _ = dataset_similarity(tables, ids)
        per_document, intervals = dataset_statistics(per_document, n_boot=n_boot)
        source = f"computed by `pyattn report` ({why}); written to metrics.parquet and metrics_intervals.csv beside these pages"
    tokens_file = os.path.join(store.path, "tokens_intervals.csv")
    if why is None and os.path.exists(tokens_file):  # from the same `pyattn compare` run as the metrics
        token_intervals = pd.read_csv(tokens_file, keep_default_na=False, na_values=[""])
    else:
        from pyattn.compare.uncertainty import bootstrap_token_means

        token_intervals = bootstrap_token_means(((list(r["tokens"]), np.asarray(r["scores"], dtype=np.float64)) for _, r in records.iterrows()),
                                                n_boot=n_boot)
    export_table(per_document, os.path.join(out, "metrics.parquet"))
    export_table(intervals, os.path.join(out, "metrics_intervals.csv"))
    export_table(token_intervals, os.path.join(out, "tokens_intervals.csv"))
    note = statistics_note(intervals, per_document, mask, source)
    with_p = "p_spearman_rho" in per_document.columns and per_document["p_spearman_rho"].notna().any()

    def name_of(record, column, index_column):
        stored = record.get(column) if column in record else None
        if isinstance(stored, str):
            return stored
        value = record.get(index_column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return names.get(int(value), str(int(value)) if isinstance(value, (int, float, np.integer)) else str(value))

    rows = []
    for number, (_, record) in enumerate(tqdm(records.iterrows(), total=len(records), desc="reports", unit="doc", disable=not progress)):
        per_head = stored_attention(record)
        scores = np.asarray(record["scores"], dtype=np.float64)
        name = f"document-{number}.html"
        predicted = name_of(record, "predicted_label_name", "predicted_label")
        label = name_of(record, "label_name", "label")
        # The same Explanation as pyattn.explain builds, from the stored record
        # (no rollout or faithfulness: they need the model).
        known = dict(names)
        for column, index_column in (("predicted_label_name", "predicted_label"), ("target_name", "target")):
            if isinstance(record.get(column), str):
                known[int(record[index_column])] = record[column]
        explanation = compose(attribution_from_record(record), per_head, text="", head_importance=head_importance,
                              special_tokens=special_tokens, label_names=known, attribution_as=attribution_as)
        explanation.head_importance_name = head_importance_name
        statistics = document_statistics(per_document, intervals, record["doc_id"], mask)
        heading = f"This document among the {len(records)} documents (mask {mask})"
        explanation.save_html(os.path.join(out, name), title=f"document {record['doc_id']}", facts={"label": label},
                              tables=[(heading, display_document_statistics(statistics), note, "document-statistics")])
        # The index uses the same masks as `compare` and says which.
        table = explanation.similarity[explanation.similarity["mask"] == mask].set_index("attention")
        row = {"document": str(record["doc_id"]), "report": name, "label": label, "predicted": predicted,
               "tokens": len(scores), "steps": int(record["n_steps"]),
               f"spearman, final ({mask})": table.loc["final", "spearman_rho"],
               f"spearman, all ({mask})": table.loc["all", "spearman_rho"],
               "flags": _flags(record)}
        if with_p:
            found = statistics.set_index(["attention", "metric"])
            for view in ("final", "all"):
                if (view, "spearman_rho") in found.index:
                    row[f"p, spearman, {view}"] = found.loc[(view, "spearman_rho"), "p_value"]
        rows.append(row)
    convention = "|attribution|" if attribution_as == "magnitude" else "signed attribution"
    notes = [f"Documents (table below): Spearman of {convention} with attention received, over the tokens of mask '{mask}'"
             + (" (special tokens dropped)." if mask == "no_special" else " (no special tokens known: all tokens).")
             + (" p: the document's one-sided circular-shift permutation p-value (see the note to the next table)." if with_p else "")]
    summary_tables = [(f"Every metric across the {len(records)} documents (mask {mask})", display_summary_statistics(summary_statistics(intervals, mask)),
                       note, "dataset-statistics")]
    token_note = ("Signed attribution of each token type (raw tokens, special tokens included), summed over the documents; means with "
                  f"bootstrap 95% intervals (documents resampled, {n_boot} resamples, expanded percentile). Source: "
                  + ("`pyattn compare` (tokens_intervals.csv in the store)" if why is None and os.path.exists(tokens_file) else "computed by `pyattn report`")
                  + "; all types in tokens_intervals.csv beside these pages.")
    summary_tables.append(("Token types with the largest summed attribution (supporting the prediction)",
                           display_token_intervals(token_intervals, 15, "top"), token_note, "tokens-top"))
    summary_tables.append(("Token types with the most negative summed attribution (opposing the prediction)",
                           display_token_intervals(token_intervals, 15, "bottom"), None, "tokens-bottom"))
    images = []
    metrics_file = os.path.join(store.path, "metrics.parquet")
    if os.path.exists(metrics_file):  # written by `pyattn compare`
        from pyattn.report.plots import metric_distributions_png

        compared = pd.read_parquet(metrics_file)
        shown = mask if mask in set(compared["mask"]) else None
        images.append((f"Each metric across documents (from `pyattn compare`, mask {shown or 'as stored'})",
                       metric_distributions_png(compared, mask=shown)))
    agreement_file = os.path.join(store.path, "head_agreement.png")
    if os.path.exists(agreement_file):
        agreement_table = os.path.join(store.path, "head_agreement.csv")
        documents = int(pd.read_csv(agreement_table)["documents"].max()) if os.path.exists(agreement_table) else None
        stale = documents is not None and documents != len(records)
        with open(agreement_file, "rb") as image:
            images.append(("Agreement per layer x head (from `pyattn compare --head-map`: mean Spearman per head over documents; "
                           "dots: Holm-significant at 0.05 over all heads)"
                           + (f" -- OUT OF DATE: made from {documents} documents, the store holds {len(records)}; run `pyattn compare --head-map` again"
                              if stale else ""), image.read()))
    else:
        notes.append("Run `pyattn compare --head-map` on this store for the head agreement map"
                     + ("" if os.path.exists(metrics_file) else ", and `pyattn compare` for the metric distributions") + ".")
    return index_report(os.path.join(out, "index.html"), pd.DataFrame(rows), title=f"pyattn results: {store.manifest().get('model')}",
                        notes=notes, images=images, tables=summary_tables)
