"""The statistics tables of a dataset report: each document's metrics with
their p-values beside the dataset's means, intervals and the document's place
among the others; and the index's summary of every mean.

Both are read from the two tables :func:`pyattn.compare.uncertainty.dataset_statistics`
returns (the ones ``pyattn compare`` writes as ``metrics.parquet`` and
``metrics_intervals.csv``), so the HTML shows exactly the numbers of those
files, rounded for display (4 decimals; percentiles 1).
"""

from __future__ import annotations

import math

import numpy as np

from pyattn.report._format import decimals
from pyattn.errors import InputError

__all__ = ["document_statistics", "summary_statistics", "display_document_statistics", "display_summary_statistics", "statistics_note",
           "display_token_intervals"]

DOCUMENT_COLUMNS = {
    "attention": "attention received",
    "metric": "metric",
    "value": "this document",
    "p_value": "p (one-sided)",
    "p_holm": "p, Holm over documents",
    "mean": "dataset mean",
    "ci": "95% CI of the mean",
    "documents": "documents",
    "percentile": "percentile among documents (% with value <= this)",
}

SUMMARY_COLUMNS = {
    "attention": "attention received",
    "metric": "metric",
    "mean": "dataset mean",
    "ci": "95% CI of the mean",
    "documents": "documents",
    "share_p05": "share of documents with p <= 0.05",
    "share_p05_holm": "share of documents with p <= 0.05 after Holm over documents",
}


def _select(table, mask: str):
    return table[table["mask"] == mask] if "mask" in table.columns else table


def _check_order(per_document, intervals, function: str) -> None:
    """Refuse the two tables in the wrong order (they would give an empty
    table or a wrong note, silently)."""
    if "ci_low" in getattr(per_document, "columns", ()) and "ci_low" not in getattr(intervals, "columns", ()):
        raise TypeError(f"{function}: the per-document table and the intervals table are swapped "
                        "(the intervals table is the one with ci_low / ci_high)")


def document_statistics(per_document, intervals, document, mask: str):
    """One document's statistics: one row per attention choice x metric.

    Parameters
    ----------
    per_document, intervals : pandas.DataFrame
        The two tables of :func:`pyattn.compare.uncertainty.dataset_statistics` (or
        ``metrics.parquet`` and ``metrics_intervals.csv`` of ``pyattn compare``).
    document : object
        The document's id (compared as text).
    mask : str
        The token mask whose rows are shown.

    Returns
    -------
    pandas.DataFrame
        ``attention``, ``metric``, ``value``, ``p_value``, ``p_holm``,
        ``n_perm`` (NaN without p-values), ``mean``, ``ci_low``, ``ci_high``,
        ``documents``, ``percentile``.

    Raises
    ------
    KeyError
        When ``per_document`` has no ``document`` or ``attention`` column, or
        ``intervals`` no ``attention``/``metric``/``mean``/``ci_low``/``ci_high``/``documents``.

    An unknown ``document`` or ``mask`` gives an empty table (no error).

    Examples
    --------
    >>> import pandas as pd
    >>> from pyattn.compare.uncertainty import dataset_statistics
    >>> metrics = pd.DataFrame({"document": ["a", "b", "c"], "attention": "final", "mask": "all",
    ...                         "spearman_rho": [0.1, 0.3, 0.2], "p_spearman_rho": [0.5, 0.01, 0.04],
    ...                         "significance_n_perm": 99})
    >>> per_document, intervals = dataset_statistics(metrics, n_boot=200)
    >>> row = document_statistics(per_document, intervals, "b", "all").iloc[0]
    >>> row["metric"], float(row["value"]), float(row["p_value"]), round(float(row["p_holm"]), 2), float(row["percentile"])
    ('spearman_rho', 0.3, 0.01, 0.03, 100.0)
    >>> round(float(row["mean"]), 2), int(row["documents"])
    (0.2, 3)
    """
    _check_order(per_document, intervals, "document_statistics")
    import pandas as pd

    from pyattn.compare.similarity import METRICS

    rows = _select(per_document, mask)
    rows = rows[rows["document"].astype(str) == str(document)]
    means = _select(intervals, mask).set_index(["attention", "metric"])
    out = []
    for _, row in rows.iterrows():
        for metric in METRICS:
            if metric not in rows.columns:
                continue
            summary = means.loc[(row["attention"], metric)] if (row["attention"], metric) in means.index else None
            out.append({
                "attention": row["attention"],
                "metric": metric,
                "value": row[metric],
                "p_value": row.get(f"p_{metric}", np.nan),
                "p_holm": row.get(f"p_holm_{metric}", np.nan),
                "n_perm": row.get("significance_n_perm", np.nan),
                "mean": np.nan if summary is None else summary["mean"],
                "ci_low": np.nan if summary is None else summary["ci_low"],
                "ci_high": np.nan if summary is None else summary["ci_high"],
                "documents": np.nan if summary is None else summary["documents"],
                "percentile": row.get(f"percentile_{metric}", np.nan),
            })
    return pd.DataFrame(out)


def summary_statistics(intervals, mask: str):
    """The index's summary: ``intervals`` (one row per attention choice x
    mask x metric) restricted to ``mask``.

    Parameters
    ----------
    intervals : pandas.DataFrame
        The second table of :func:`pyattn.compare.uncertainty.dataset_statistics`
        (``metrics_intervals.csv`` of ``pyattn compare``). Without a ``mask``
        column every row is kept.
    mask : str
        The token mask whose rows are kept.

    Returns
    -------
    pandas.DataFrame
        The rows of ``mask``, with all of ``intervals``' columns, indexed from 0.
        An unknown ``mask`` gives an empty table (no error).

    Examples
    --------
    Two masks' rows of an intervals table; the rows of one are kept:

    >>> import pandas as pd
    >>> intervals = pd.DataFrame({"attention": "final", "mask": ["all", "no_special"], "metric": "spearman_rho",
    ...                           "mean": [0.2, 0.25], "documents": 3})
    >>> summary_statistics(intervals, "no_special")[["mask", "mean"]].values.tolist()
    [['no_special', 0.25]]
    >>> len(summary_statistics(intervals, "alphabetic"))
    0
    """
    return _select(intervals, mask).reset_index(drop=True)


def _interval(low, high) -> str:
    text_low, text_high = decimals(low), decimals(high)
    return f"[{text_low}, {text_high}]" if text_low and text_high else ""


def display_document_statistics(table):
    """:func:`document_statistics` as labelled text columns (p-value columns
    left out when no p-value was computed).

    Parameters
    ----------
    table : pandas.DataFrame
        A table of :func:`document_statistics`.

    Returns
    -------
    pandas.DataFrame
        One row per row of ``table``; every column text, headed by its label:
        values, p-values and means to 4 decimals, the interval as
        ``"[low, high]"``, documents as an integer, the percentile to 1
        decimal; an empty string where the number is NaN.

    Raises
    ------
    KeyError
        When ``table`` lacks one of :func:`document_statistics`' columns.

    Examples
    --------
    One row as :func:`document_statistics` gives it (see its example):

    >>> import pandas as pd
    >>> row = {"attention": "final", "metric": "spearman_rho", "value": 0.3, "p_value": 0.01, "p_holm": 0.03, "n_perm": 99,
    ...        "mean": 0.2, "ci_low": 0.1, "ci_high": 0.3, "documents": 3, "percentile": 100.0}
    >>> display_document_statistics(pd.DataFrame([row])).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'attention received': 'final', 'metric': 'spearman_rho', 'this document': '0.3000', 'p (one-sided)': '0.0100',
     'p, Holm over documents': '0.0300', 'dataset mean': '0.2000', '95% CI of the mean': '[0.1000, 0.3000]',
     'documents': '3', 'percentile among documents (% with value <= this)': '100.0'}

    Without p-values their columns are left out:

    >>> list(display_document_statistics(pd.DataFrame([{**row, "p_value": float("nan")}])).columns)[2:4]
    ['this document', 'dataset mean']
    """
    import pandas as pd

    with_p = "p_value" in table.columns and table["p_value"].notna().any()
    shown = pd.DataFrame({
        DOCUMENT_COLUMNS["attention"]: table["attention"],
        DOCUMENT_COLUMNS["metric"]: table["metric"],
        DOCUMENT_COLUMNS["value"]: [decimals(v) for v in table["value"]],
    })
    if with_p:
        shown[DOCUMENT_COLUMNS["p_value"]] = [decimals(v) for v in table["p_value"]]
        shown[DOCUMENT_COLUMNS["p_holm"]] = [decimals(v) for v in table["p_holm"]]
    shown[DOCUMENT_COLUMNS["mean"]] = [decimals(v) for v in table["mean"]]
    shown[DOCUMENT_COLUMNS["ci"]] = [_interval(low, high) for low, high in zip(table["ci_low"], table["ci_high"])]
    shown[DOCUMENT_COLUMNS["documents"]] = [decimals(v, 0) for v in table["documents"]]
    shown[DOCUMENT_COLUMNS["percentile"]] = [decimals(v, 1) for v in table["percentile"]]
    return shown


def display_summary_statistics(table):
    """:func:`summary_statistics` as labelled text columns (the shares only
    when p-values were computed).

    Parameters
    ----------
    table : pandas.DataFrame
        A table of :func:`summary_statistics` (one row per attention choice x
        metric).

    Returns
    -------
    pandas.DataFrame
        The same rows as text under the labels of the index page: means and
        shares to 4 decimals, the interval as ``"[low, high]"``, documents
        as an integer; an empty string where the number is NaN.

    Raises
    ------
    KeyError
        When ``table`` lacks ``attention``, ``metric``, ``mean``, ``ci_low``,
        ``ci_high`` or ``documents``.

    Examples
    --------
    >>> import pandas as pd
    >>> summary = pd.DataFrame({"attention": ["final"], "metric": "spearman_rho", "mean": 0.2, "ci_low": 0.1, "ci_high": 0.3,
    ...                         "documents": 3, "share_p05": 2 / 3, "share_p05_holm": 1 / 3})
    >>> display_summary_statistics(summary).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'attention received': 'final', 'metric': 'spearman_rho', 'dataset mean': '0.2000', '95% CI of the mean': '[0.1000, 0.3000]',
     'documents': '3', 'share of documents with p <= 0.05': '0.6667',
     'share of documents with p <= 0.05 after Holm over documents': '0.3333'}
    """
    import pandas as pd

    shown = pd.DataFrame({
        SUMMARY_COLUMNS["attention"]: table["attention"],
        SUMMARY_COLUMNS["metric"]: table["metric"],
        SUMMARY_COLUMNS["mean"]: [decimals(v) for v in table["mean"]],
        SUMMARY_COLUMNS["ci"]: [_interval(low, high) for low, high in zip(table["ci_low"], table["ci_high"])],
        SUMMARY_COLUMNS["documents"]: [decimals(v, 0) for v in table["documents"]],
    })
    if "share_p05" in table.columns and table["share_p05"].notna().any():
        shown[SUMMARY_COLUMNS["share_p05"]] = [decimals(v) for v in table["share_p05"]]
        shown[SUMMARY_COLUMNS["share_p05_holm"]] = [decimals(v) for v in table["share_p05_holm"]]
    return shown


def statistics_note(intervals, per_document, mask: str, source: str) -> str:
    """What the statistics tables mean, in words: the mask, the ranking
    convention, the null and its draws, the bootstrap, the source.

    Parameters
    ----------
    intervals, per_document : pandas.DataFrame
        The two tables of :func:`pyattn.compare.uncertainty.dataset_statistics`
        (note the order: ``intervals`` first).
    mask : str
        The token mask the tables show.
    source : str
        Where the numbers come from (a file name), quoted at the end.

    Returns
    -------
    str
        One paragraph. Without an ``attribution_as`` column the convention is
        stated as magnitude. When p-values were computed and too few draws
        were made for any document to pass Holm at 0.05, it says so and how
        many draws would be needed.

    Raises
    ------
    KeyError
        When ``intervals`` has rows of ``mask`` but lacks ``confidence``,
        ``n_boot`` or ``method``.

    Examples
    --------
    Three documents, each tested with 99 circular shifts:

    >>> import pandas as pd
    >>> from pyattn.compare.uncertainty import dataset_statistics
    >>> per_document, intervals = dataset_statistics(pd.DataFrame({"document": ["a", "b", "c"], "attention": "final", "mask": "all",
    ...     "spearman_rho": [0.1, 0.3, 0.2], "p_spearman_rho": [0.5, 0.01, 0.04], "significance_n_perm": 99}), n_boot=200)
    >>> print(statistics_note(intervals, per_document, "all", "metrics.parquet"))  # doctest: +NORMALIZE_WHITESPACE
    Token mask all; attributions as |attribution| (magnitude) in every metric but cosine_raw (always signed).
    p: one-sided permutation p-value for agreement greater than chance, null: circular shifts of the attention
    vector over the mask's tokens, n_perm = 99 draws per document (all shifts when a document has fewer tokens),
    p = (1 + #{null >= observed}) / (1 + n_perm); Holm: adjusted over the documents' p-values of the same
    attention and metric. Dataset mean over the documents with a value, with its bootstrap 95% interval
    (documents resampled, 200 resamples, expanded percentile). Source: metrics.parquet.

    With 30 documents and 99 draws no document can pass Holm, and the note says so:

    >>> many = pd.DataFrame({"document": range(30), "attention": "final", "mask": "all",
    ...                      "spearman_rho": 0.5, "p_spearman_rho": 0.01, "significance_n_perm": 99})
    >>> positions, means = dataset_statistics(many, n_boot=200)
    >>> print(statistics_note(means, positions, "all", "metrics.parquet"))  # doctest: +ELLIPSIS
    Token mask all; ... the smallest Holm-adjusted p-value possible is 30/100 = 0.3 > 0.05: no document can pass Holm at 0.05 (that needs n_perm >= 599). ...
    """
    _check_order(per_document, intervals, "statistics_note")
    rows = _select(per_document, mask)
    convention = str(rows["attribution_as"].iloc[0]) if "attribution_as" in rows.columns and len(rows) else "magnitude"
    first = _select(intervals, mask)
    parts = [
        f"Token mask {mask}" + (" (special tokens dropped)" if mask == "no_special" else "") + "; attributions as "
        + ("|attribution| (magnitude)" if convention == "magnitude" else "signed scores") + " in every metric but cosine_raw (always signed).",
    ]
    if any(c.startswith("p_") and not c.startswith("p_holm_") for c in rows.columns) and rows.filter(like="p_spearman").notna().any().any():
        draws = sorted({int(v) for v in rows.get("significance_n_perm", []) if v == v and int(v) > 0})
        null = str(rows["significance_null"].iloc[0]).replace("_", " ") if "significance_null" in rows.columns else "circular shift"
        parts.append(
            f"p: one-sided permutation p-value for agreement greater than chance, null: {null}s of the attention vector over the "
            f"mask's tokens, n_perm = {'/'.join(map(str, draws)) or '?'} draws per document (all shifts when a document has fewer tokens), "
            "p = (1 + #{null >= observed}) / (1 + n_perm); Holm: adjusted over the documents' p-values of the same attention and metric."
        )
        tested = int(rows["document"].nunique())
        if draws and tested / (1 + max(draws)) > 0.05:
            parts.append(
                f"With {tested} documents and at most {max(draws)} draws, the smallest Holm-adjusted p-value possible is "
                f"{tested}/{1 + max(draws)} = {tested / (1 + max(draws)):.3g} > 0.05: no document can pass Holm at 0.05 "
                f"(that needs n_perm >= {math.ceil(tested / 0.05) - 1})."
            )
    else:
        parts.append("No p-values: run `pyattn compare --significance 999` (or `pyattn report --significance 999`) for them.")
    if len(first):
        parts.append(
            f"Dataset mean over the documents with a value, with its bootstrap {float(first['confidence'].iloc[0]):.0%} interval "
            f"(documents resampled, {int(first['n_boot'].iloc[0])} resamples, {str(first['method'].iloc[0]).replace('_', ' ')})."
        )
    parts.append(f"Source: {source}.")
    return " ".join(parts)


TOKEN_COLUMNS = {
    "token": "token (raw; Ġ = a space before it)",
    "documents": "documents with it",
    "occurrences": "occurrences",
    "sum": "attribution summed over the dataset",
    "mean_over_all_documents": "mean per document (sum / all documents)",
    "mean_over_all_documents_ci": "95% CI (per document)",
    "mean_per_occurrence": "mean per occurrence",
    "mean_per_occurrence_ci": "95% CI (per occurrence)",
}


def display_token_intervals(table, k: int = 15, end: str = "top"):
    """The ``k`` token types with the largest (``end="top"``) or most
    negative (``"bottom"``) summed signed attribution of a
    :func:`pyattn.compare.uncertainty.bootstrap_token_means` table (its rows are sorted
    by ``sum``, largest first), as labelled text columns.

    Parameters
    ----------
    table : pandas.DataFrame
        A table of :func:`pyattn.compare.uncertainty.bootstrap_token_means`, in its
        order (largest ``sum`` first); it is not re-sorted here.
    k : int
        How many token types to show (fewer when the table is shorter).
    end : {"top", "bottom"}
        ``"top"``: the largest sums, largest first; ``"bottom"``: the most
        negative sums, most negative first.

    Returns
    -------
    pandas.DataFrame
        ``k`` rows (at most); counts as integers, sums and means to 4
        decimals, intervals as ``"[low, high]"``.

    Raises
    ------
    pyattn.errors.InputError
        A ``ValueError``. When ``end`` is neither ``"top"`` nor ``"bottom"``.

    Examples
    --------
    >>> from pyattn.compare.uncertainty import bootstrap_token_means
    >>> table = bootstrap_token_means([(["Ġa", "Ġb"], [0.5, -0.1]), (["Ġa"], [0.2])], n_boot=500)
    >>> top = display_token_intervals(table, k=1)
    >>> top.iloc[:, :5].values.tolist()  # token, documents with it, occurrences, sum, sum / 2 documents
    [['Ġa', 2, 2, '0.7000', '0.3500']]
    >>> display_token_intervals(table, k=1, end="bottom").iloc[:, :5].values.tolist()
    [['Ġb', 1, 1, '-0.1000', '-0.0500']]
    >>> display_token_intervals(table, end="middle")
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: end must be "top" or "bottom", got 'middle'
    """
    import pandas as pd

    if end not in ("top", "bottom"):
        raise InputError(f'end must be "top" or "bottom", got {end!r}')
    rows = table.head(k) if end == "top" else table.iloc[::-1].head(k)
    return pd.DataFrame({
        TOKEN_COLUMNS["token"]: rows["token"].astype(str),
        TOKEN_COLUMNS["documents"]: rows["documents"].astype(int),
        TOKEN_COLUMNS["occurrences"]: rows["occurrences"].astype(int),
        TOKEN_COLUMNS["sum"]: [decimals(v) for v in rows["sum"]],
        TOKEN_COLUMNS["mean_over_all_documents"]: [decimals(v) for v in rows["mean_over_all_documents"]],
        TOKEN_COLUMNS["mean_over_all_documents_ci"]: [_interval(a, b) for a, b in zip(rows["mean_over_all_documents_low"], rows["mean_over_all_documents_high"])],
        TOKEN_COLUMNS["mean_per_occurrence"]: [decimals(v) for v in rows["mean_per_occurrence"]],
        TOKEN_COLUMNS["mean_per_occurrence_ci"]: [_interval(a, b) for a, b in zip(rows["mean_per_occurrence_low"], rows["mean_per_occurrence_high"])],
    })
