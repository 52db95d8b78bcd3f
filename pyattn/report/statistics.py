"""The statistics tables of a dataset report: each document's metrics with
their p-values beside the dataset's means, intervals and the document's place
among the others; and the index's summary of every mean.

Both are read from the two tables :func:`pyattn.uncertainty.dataset_statistics`
returns (the ones ``pyattn compare`` writes as ``metrics.parquet`` and
``metrics_intervals.csv``), so the HTML shows exactly the numbers of those
files, rounded for display (4 decimals; percentiles 1).
"""

from __future__ import annotations

import math

import numpy as np

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


def document_statistics(per_document, intervals, document, mask: str):
    """One document's statistics: one row per attention choice x metric.

    Parameters
    ----------
    per_document, intervals : pandas.DataFrame
        The two tables of :func:`pyattn.uncertainty.dataset_statistics` (or
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

    Example
    -------
    >>> document_statistics(positions, intervals, "d0", "no_special")  # doctest: +SKIP
    """
    import pandas as pd

    from pyattn.similarity import METRICS

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
    mask x metric) restricted to ``mask``."""
    return _select(intervals, mask).reset_index(drop=True)


def _number(value, digits: int = 4) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if np.isnan(value) else f"{value:.{digits}f}"


def _interval(low, high) -> str:
    text_low, text_high = _number(low), _number(high)
    return f"[{text_low}, {text_high}]" if text_low and text_high else ""


def display_document_statistics(table):
    """:func:`document_statistics` as labelled text columns (p-value columns
    left out when no p-value was computed)."""
    import pandas as pd

    with_p = "p_value" in table.columns and table["p_value"].notna().any()
    shown = pd.DataFrame({
        DOCUMENT_COLUMNS["attention"]: table["attention"],
        DOCUMENT_COLUMNS["metric"]: table["metric"],
        DOCUMENT_COLUMNS["value"]: [_number(v) for v in table["value"]],
    })
    if with_p:
        shown[DOCUMENT_COLUMNS["p_value"]] = [_number(v) for v in table["p_value"]]
        shown[DOCUMENT_COLUMNS["p_holm"]] = [_number(v) for v in table["p_holm"]]
    shown[DOCUMENT_COLUMNS["mean"]] = [_number(v) for v in table["mean"]]
    shown[DOCUMENT_COLUMNS["ci"]] = [_interval(low, high) for low, high in zip(table["ci_low"], table["ci_high"])]
    shown[DOCUMENT_COLUMNS["documents"]] = [_number(v, 0) for v in table["documents"]]
    shown[DOCUMENT_COLUMNS["percentile"]] = [_number(v, 1) for v in table["percentile"]]
    return shown


def display_summary_statistics(table):
    """:func:`summary_statistics` as labelled text columns (the shares only
    when p-values were computed)."""
    import pandas as pd

    shown = pd.DataFrame({
        SUMMARY_COLUMNS["attention"]: table["attention"],
        SUMMARY_COLUMNS["metric"]: table["metric"],
        SUMMARY_COLUMNS["mean"]: [_number(v) for v in table["mean"]],
        SUMMARY_COLUMNS["ci"]: [_interval(low, high) for low, high in zip(table["ci_low"], table["ci_high"])],
        SUMMARY_COLUMNS["documents"]: [_number(v, 0) for v in table["documents"]],
    })
    if "share_p05" in table.columns and table["share_p05"].notna().any():
        shown[SUMMARY_COLUMNS["share_p05"]] = [_number(v) for v in table["share_p05"]]
        shown[SUMMARY_COLUMNS["share_p05_holm"]] = [_number(v) for v in table["share_p05_holm"]]
    return shown


def statistics_note(intervals, per_document, mask: str, source: str) -> str:
    """What the statistics tables mean, in words: the mask, the ranking
    convention, the null and its draws, the bootstrap, the source."""
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
    :func:`pyattn.uncertainty.bootstrap_token_means` table (its rows are sorted
    by ``sum``, largest first), as labelled text columns."""
    import pandas as pd

    if end not in ("top", "bottom"):
        raise ValueError(f'end must be "top" or "bottom", got {end!r}')
    rows = table.head(k) if end == "top" else table.iloc[::-1].head(k)
    return pd.DataFrame({
        TOKEN_COLUMNS["token"]: rows["token"].astype(str),
        TOKEN_COLUMNS["documents"]: rows["documents"].astype(int),
        TOKEN_COLUMNS["occurrences"]: rows["occurrences"].astype(int),
        TOKEN_COLUMNS["sum"]: [_number(v) for v in rows["sum"]],
        TOKEN_COLUMNS["mean_over_all_documents"]: [_number(v) for v in rows["mean_over_all_documents"]],
        TOKEN_COLUMNS["mean_over_all_documents_ci"]: [_interval(a, b) for a, b in zip(rows["mean_over_all_documents_low"], rows["mean_over_all_documents_high"])],
        TOKEN_COLUMNS["mean_per_occurrence"]: [_number(v) for v in rows["mean_per_occurrence"]],
        TOKEN_COLUMNS["mean_per_occurrence_ci"]: [_interval(a, b) for a, b in zip(rows["mean_per_occurrence_low"], rows["mean_per_occurrence_high"])],
    })
