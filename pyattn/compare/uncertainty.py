"""Dataset-level uncertainty: bootstrap confidence intervals over documents
and Holm's correction for many tests at once.

Documents are the unit of resampling: a dataset mean of a per-document metric
(or of a token type's score) varies because the documents were drawn from a
larger population, so its interval comes from resampling whole documents with
replacement (percentile bootstrap). Intervals are two-sided at ``confidence``
(default 0.95). The default ``method="expanded_percentile"`` widens the
plain percentile interval, which is too narrow in small samples (about 91%
coverage at 10 documents, 93-94% at 50); coverage measured on simulated data
for both is in ``benchmarks/results/significance.md``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from pyattn.errors import InputError

__all__ = [
    "bootstrap_mean_ci",
    "bootstrap_weights",
    "bootstrap_means",
    "bootstrap_token_means",
    "dataset_statistics",
    "holm",
]


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")


def _check_n_boot(n_boot: int) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InputError(f"n_boot must be a positive integer, got {n_boot!r}")


def bootstrap_weights(n_documents: int, n_boot: int = 2000, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """How many times each document is drawn in each bootstrap resample.

    Parameters
    ----------
    n_documents : int
    n_boot : int
        Number of resamples.
    seed : int or numpy Generator

    Returns
    -------
    numpy.ndarray of float64, shape (n_boot, n_documents)
        Each row sums to ``n_documents`` (a multinomial draw: resampling
        documents with replacement). A resampled mean is ``weights @ values /
        n_documents``.

    Raises
    ------
    ValueError
        If ``n_boot`` or ``n_documents`` is below 1.

    Examples
    --------
    >>> import numpy as np
    >>> weights = bootstrap_weights(3, n_boot=4, seed=0)
    >>> weights.tolist()
    [[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 2.0]]
    >>> (weights @ np.array([1.0, 2.0, 3.0]) / 3).tolist()  # four resampled means of (1, 2, 3)
    [2.3333333333333335, 1.0, 1.0, 2.6666666666666665]
    """
    _check_n_boot(n_boot)
    if n_documents < 1:
        raise InputError(f"need at least one document to resample, got {n_documents}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    draws = rng.integers(0, n_documents, size=(n_boot, n_documents))
    flat = (np.arange(n_boot)[:, None] * n_documents + draws).ravel()
    return np.bincount(flat, minlength=n_boot * n_documents).reshape(n_boot, n_documents).astype(np.float64)


METHODS = ("expanded_percentile", "percentile")


def bootstrap_tail(confidence: float, n: int, method: str) -> float:
    """The lower percentile (in %) at which to cut the bootstrap means.

    ``"percentile"``: (1 - confidence) / 2. ``"expanded_percentile"``
    (Hesterberg 2015, "What teachers should know about the bootstrap", sec.
    6.2): the tail whose normal quantile is ``sqrt(n / (n - 1)) t_{n-1}``,
    widening the percentile interval by the two factors by which it is too
    narrow for a mean in small samples (the bootstrap's divisor n instead
    of n - 1, and z instead of Student's t)."""
    from scipy import stats

    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    alpha = (1 - confidence) / 2
    if method == "percentile" or n < 2:
        return alpha * 100
    return float(stats.norm.cdf(-np.sqrt(n / (n - 1)) * stats.t.ppf(1 - alpha, n - 1))) * 100


def percentile_interval(resampled: np.ndarray, confidence: float, n: int = 0, method: str = "percentile") -> tuple[np.ndarray, np.ndarray]:
    tail = bootstrap_tail(confidence, n, method)
    return np.percentile(resampled, tail, axis=0), np.percentile(resampled, 100 - tail, axis=0)


def bootstrap_mean_ci(
    values, *, n_boot: int = 2000, confidence: float = 0.95, method: str = "expanded_percentile", seed: int | None = 0
) -> tuple[float, float, float]:
    """Mean of per-document values and its percentile bootstrap interval.

    NaN values (documents without a value) are dropped first, as
    ``pandas.Series.mean`` does.

    Parameters
    ----------
    values : array-like, shape (D,)
        One value per document.
    n_boot : int
        Bootstrap resamples.
    confidence : float
        Two-sided coverage of the interval.
    method : {"expanded_percentile", "percentile"}
        ``"percentile"``: the bootstrap means' (1 - confidence)/2 and
        (1 + confidence)/2 quantiles. ``"expanded_percentile"`` (default):
        the same with the tails moved out to correct the percentile
        interval's small-sample narrowness (Hesterberg 2015): the tail whose
        normal quantile is ``sqrt(n/(n-1)) t_{n-1, (1+confidence)/2}``.
    seed : int

    Returns
    -------
    (mean, low, high) : tuple of float
        NaN for all three when no value is left; ``(v, v, v)`` for a single
        value.

    Example
    -------
    >>> mean, low, high = bootstrap_mean_ci([0.1, 0.3, 0.2, 0.4], n_boot=1000, seed=0)
    >>> round(mean, 2), round(low, 2), round(high, 2)
    (0.25, 0.1, 0.4)
    """
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise InputError(f"values must be 1-D (one value per document), got shape {x.shape}")
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    means = bootstrap_weights(len(x), n_boot, seed) @ x / len(x)
    low, high = percentile_interval(means, confidence, len(x), method)
    return float(x.mean()), float(low), float(high)


def bootstrap_means(
    per_document,
    *,
    metrics: Sequence[str] | None = None,
    by: Sequence[str] = ("attention", "mask"),
    document: str = "document",
    n_boot: int = 2000,
    confidence: float = 0.95,
    method: str = "expanded_percentile",
    seed: int | None = 0,
):
    """Bootstrap intervals for every mean in a metrics summary.

    ``per_document`` is the first table :func:`pyattn.compare.similarity.dataset_similarity`
    returns (one row per document x attention choice x mask, a ``document``
    column, one column per metric). The same document resamples serve every
    group and metric (so intervals of different metrics are from the same
    resampled datasets); documents without a value for a metric are left out
    of that metric's mean, as in the means table.

    Parameters
    ----------
    per_document : pandas.DataFrame
    metrics : sequence of str, optional
        Metric columns (default: every column of :data:`pyattn.compare.similarity.METRICS`
        present).
    by : sequence of str
        Grouping columns (default ``("attention", "mask")``; those absent are
        ignored).
    document : str
        Column naming the document (the unit resampled).
    n_boot, confidence, method, seed
        As in :func:`bootstrap_mean_ci`.

    Returns
    -------
    pandas.DataFrame
        One row per group x metric: the grouping columns, ``metric``,
        ``mean``, ``ci_low``, ``ci_high``, ``documents`` (with a value),
        ``confidence``, ``n_boot``, ``method``.

    Examples
    --------
    >>> import pandas as pd
    >>> per_document = pd.DataFrame({"attention": ["final"] * 4, "mask": ["all"] * 4, "document": [0, 1, 2, 3],
    ...                              "spearman_rho": [0.2, 0.4, 0.6, 0.8]})
    >>> row = bootstrap_means(per_document, metrics=["spearman_rho"], n_boot=1000).iloc[0]
    >>> row["attention"], row["metric"], float(row["mean"]), int(row["documents"])
    ('final', 'spearman_rho', 0.5, 4)
    >>> bool(0.2 <= row["ci_low"] < 0.5 < row["ci_high"] <= 0.8)  # inside the range of the documents' values
    True
    """
    import pandas as pd

    from pyattn.compare.similarity import METRICS

    _check_confidence(confidence)
    bootstrap_tail(confidence, 2, method)
    if document not in per_document.columns:
        raise InputError(f"per_document has no {document!r} column (the unit resampled); columns: {list(per_document.columns)}")
    chosen = [m for m in METRICS if m in per_document.columns] if metrics is None else list(metrics)
    missing = [m for m in chosen if m not in per_document.columns]
    if missing or not chosen:
        raise InputError(f"metric columns {missing or chosen} not in per_document; columns: {list(per_document.columns)}")
    keys = [k for k in by if k in per_document.columns]
    documents = pd.unique(per_document[document])
    weights = bootstrap_weights(len(documents), n_boot, seed)
    index = {doc: i for i, doc in enumerate(documents)}
    rows = []
    groups = per_document.groupby(keys, sort=False) if keys else [((), per_document)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        if group[document].duplicated().any():
            raise InputError(f"document ids repeat within group {dict(zip(keys, key))}: one row per document expected (group by more columns?)")
        positions = group[document].map(index).to_numpy()
        for metric in chosen:
            values = np.full(len(documents), np.nan)
            values[positions] = group[metric].to_numpy(dtype=np.float64)
            has = ~np.isnan(values)
            count = int(has.sum())
            if count == 0:
                mean = low = high = float("nan")
            else:
                w = weights[:, has]
                totals = w.sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    resampled = (w @ values[has]) / totals
                resampled = resampled[totals > 0]  # resamples that drew none of these documents have no mean
                mean = float(values[has].mean())
                low, high = (float(v) for v in percentile_interval(resampled, confidence, count, method))
            rows.append({**dict(zip(keys, key)), "metric": metric, "mean": mean, "ci_low": low, "ci_high": high, "documents": count, "confidence": confidence, "n_boot": n_boot, "method": method})
    return pd.DataFrame(rows)


def bootstrap_token_means(
    documents: Iterable[tuple[Sequence[str], object]],
    *,
    merge_forms: bool = False,
    tokens: Sequence[str] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    method: str = "expanded_percentile",
    seed: int | None = 0,
):
    """Bootstrap intervals for the means of a dataset token table
    (:func:`pyattn.compare.tokens.dataset_token_table`), resampling documents.

    For each token type: ``mean_over_all_documents`` (its total score / the
    number of documents) and ``mean_per_occurrence`` (total score / number of
    occurrences, a ratio estimate: both totals are resampled together), each
    with ``_low`` and ``_high`` bounds.

    Parameters
    ----------
    documents : iterable of (tokens, scores)
        ``tokens`` a list of str, ``scores`` shape (N,) per document: tokens
        first, as in :func:`pyattn.compare.tokens.dataset_token_table` (a pair
        given as ``(scores, tokens)`` is refused with an ``InputError``).
    merge_forms : bool
        Group by display form (``compiler`` and ``Ġcompiler`` together).
    tokens : sequence of str, optional
        Only these types (raw tokens, or display forms with ``merge_forms``);
        default every type.
    n_boot, confidence, method, seed
        As in :func:`bootstrap_mean_ci`.

    Returns
    -------
    pandas.DataFrame
        One row per type: ``token`` (the type: raw token, or display form
        with ``merge_forms``), ``documents``, ``occurrences``, ``sum``,
        ``mean_over_all_documents``, ``mean_over_all_documents_low``,
        ``mean_over_all_documents_high``, ``mean_per_occurrence``,
        ``mean_per_occurrence_low``, ``mean_per_occurrence_high``; sorted by
        ``sum``, largest first.

    Examples
    --------
    >>> table = bootstrap_token_means([(["Ġa", "Ġb"], [0.5, -0.1]), (["Ġa"], [0.2])], n_boot=500)
    >>> table[["token", "documents", "sum", "mean_over_all_documents"]].values.tolist()
    [['Ġa', 2, 0.7, 0.35], ['Ġb', 1, -0.1, -0.05]]

    ``Ġa``'s resampled means lie between its two documents' 0.2 and 0.5:

    >>> table.loc[0, ["mean_over_all_documents_low", "mean_over_all_documents_high"]].tolist()
    [0.2, 0.5]
    """
    import pandas as pd
    from scipy import sparse

    from pyattn.compare._pairs import token_pairs
    from pyattn.compare.similarity import display_token

    _check_confidence(confidence)
    bootstrap_tail(confidence, 2, method)
    rows, cols, score_list = [], [], []
    types: dict[str, int] = {}
    n_docs = 0
    for d, doc_tokens, values in token_pairs(documents, "bootstrap_token_means"):
        for token, value in zip(doc_tokens, values):
            name = display_token(token) if merge_forms else token
            if tokens is not None and name not in tokens:
                continue
            rows.append(d)
            cols.append(types.setdefault(name, len(types)))
            score_list.append(value)
        n_docs = d + 1
    if n_docs == 0:
        raise InputError("no documents to aggregate")
    shape = (n_docs, len(types))
    sums = sparse.csr_matrix((score_list, (rows, cols)), shape=shape)  # duplicates add up
    counts = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    weights = bootstrap_weights(n_docs, n_boot, seed)
    boot_sums = np.asarray((sums.T @ weights.T).T)  # (n_boot, T)
    boot_counts = np.asarray((counts.T @ weights.T).T)
    total_sum = np.asarray(sums.sum(axis=0)).ravel()
    total_count = np.asarray(counts.sum(axis=0)).ravel()
    present = np.asarray((counts > 0).sum(axis=0)).ravel()
    over_all_low, over_all_high = percentile_interval(boot_sums / n_docs, confidence, n_docs, method)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_occurrence = np.where(boot_counts > 0, boot_sums / np.where(boot_counts > 0, boot_counts, 1), np.nan)
    # a resample without the type has no per-occurrence mean: take the interval over those that have it
    tail = bootstrap_tail(confidence, n_docs, method)
    occ_low, occ_high = (np.nanpercentile(per_occurrence, q, axis=0) for q in (tail, 100 - tail))
    names = list(types)
    table = pd.DataFrame(
        {
            "token": names,
            "documents": present.astype(int),
            "occurrences": total_count.astype(int),
            "sum": total_sum,
            "mean_over_all_documents": total_sum / n_docs,
            "mean_over_all_documents_low": over_all_low,
            "mean_over_all_documents_high": over_all_high,
            "mean_per_occurrence": total_sum / total_count,
            "mean_per_occurrence_low": occ_low,
            "mean_per_occurrence_high": occ_high,
        }
    )
    return table.sort_values("sum", ascending=False, kind="stable").reset_index(drop=True)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control).

    With the m non-NaN p-values sorted ascending, ``p_(1) <= ... <= p_(m)``,
    the adjusted values are ``max_{j <= i} min(1, (m - j + 1) p_(j))``; a
    hypothesis is rejected at level alpha when its adjusted p-value is
    ``<= alpha``. NaN entries stay NaN and do not count in m.

    Parameters
    ----------
    p_values : array-like of float, any shape
        E.g. (L, H) per-head p-values.

    Returns
    -------
    numpy.ndarray, same shape

    Example
    -------
    >>> holm([0.01, 0.04, 0.03])
    array([0.03, 0.06, 0.06])
    """
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    valid = ~np.isnan(flat)
    if np.any((flat[valid] < 0) | (flat[valid] > 1)):
        raise InputError("p_values must lie in [0, 1]")
    out = np.full(flat.shape, np.nan)
    values = flat[valid]
    m = len(values)
    if m:
        order = np.argsort(values, kind="stable")
        scaled = np.minimum(1.0, (m - np.arange(m)) * values[order])
        adjusted = np.maximum.accumulate(scaled)
        result = np.empty(m)
        result[order] = adjusted
        out[valid] = result
    return out.reshape(p.shape)


#: The level at which :func:`dataset_statistics` counts documents as significant.
SIGNIFICANCE_LEVEL = 0.05


def dataset_statistics(
    per_document,
    *,
    by: Sequence[str] = ("attention", "mask", "attribution_as"),
    document: str = "document",
    n_boot: int = 2000,
    confidence: float = 0.95,
    method: str = "expanded_percentile",
    seed: int | None = 0,
):
    """Every statistic a dataset report shows, from one per-document metrics
    table: where each document falls among the others, Holm across documents,
    and each mean with its bootstrap interval and a p-value summary.

    Parameters
    ----------
    per_document : pandas.DataFrame
        One row per document x group (``by``), a ``document`` column, one
        column per metric of :data:`pyattn.compare.similarity.METRICS` and, where
        p-values were computed (``pyattn compare --significance``),
        ``p_<metric>`` columns (NaN where none).
    by : sequence of str
        The groups (those absent are ignored): statistics are computed among
        the documents of one group, for one metric.
    n_boot, confidence, method, seed
        As in :func:`bootstrap_means`.

    Returns
    -------
    per_document : pandas.DataFrame
        A copy with, for each metric, ``percentile_<metric>``: the share (in
        %) of the group's documents with a value whose value is ``<=`` this
        document's (``scipy.stats.percentileofscore(..., kind="weak")``; 100
        for the highest, NaN without a value); and for each ``p_<metric>``,
        ``p_holm_<metric>``: Holm-adjusted over the group's documents with a
        p-value (:func:`holm`).
    summary : pandas.DataFrame
        :func:`bootstrap_means`' rows (one per group x metric: ``mean``,
        ``ci_low``, ``ci_high``, ``documents``, ...); with p-values also
        ``documents_tested`` (documents with a p-value), ``share_p05`` (the
        share of them with ``p <= 0.05``) and ``share_p05_holm`` (the share
        with a Holm-adjusted p-value ``<= 0.05``, Holm over the group's
        tested documents); NaN where no document was tested.

    Example
    -------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"document": ["a", "b", "c"], "attention": "final", "spearman_rho": [0.1, 0.3, 0.2],
    ...                       "p_spearman_rho": [0.5, 0.01, 0.04]})
    >>> positions, summary = dataset_statistics(table, n_boot=200)
    >>> positions["percentile_spearman_rho"].round(1).tolist(), positions["p_holm_spearman_rho"].round(2).tolist()
    ([33.3, 100.0, 66.7], [0.5, 0.03, 0.08])
    >>> summary[["metric", "documents", "share_p05", "share_p05_holm"]].round(3).values.tolist()
    [['spearman_rho', 3, 0.667, 0.333]]
    """
    import pandas as pd

    from pyattn.compare.similarity import METRICS

    metrics = [m for m in METRICS if m in per_document.columns]
    if not metrics:
        raise InputError(f"per_document has no metric columns ({', '.join(METRICS[:3])}, ...); columns: {list(per_document.columns)}")
    keys = [k for k in by if k in per_document.columns]
    summary = bootstrap_means(per_document, metrics=metrics, by=keys, document=document, n_boot=n_boot, confidence=confidence, method=method, seed=seed)
    positions = per_document.copy()
    tested = [m for m in metrics if f"p_{m}" in per_document.columns]
    for metric in metrics:
        positions[f"percentile_{metric}"] = np.nan
    for metric in tested:
        positions[f"p_holm_{metric}"] = np.nan
    shares = []
    groups = positions.groupby(keys, sort=False) if keys else [((), positions)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            values = group[metric].to_numpy(dtype=np.float64)
            has = ~np.isnan(values)
            if has.any():
                present = np.sort(values[has])
                at_most = np.searchsorted(present, values[has], side="right")  # documents with a value <= this one
                positions.loc[group.index[has], f"percentile_{metric}"] = 100.0 * at_most / has.sum()
            row = {**dict(zip(keys, key)), "metric": metric}
            if metric in tested:
                p = group[f"p_{metric}"].to_numpy(dtype=np.float64)
                adjusted = holm(p)
                positions.loc[group.index, f"p_holm_{metric}"] = adjusted
                count = int((~np.isnan(p)).sum())
                row.update(documents_tested=count,
                           share_p05=float(np.sum(p[~np.isnan(p)] <= SIGNIFICANCE_LEVEL) / count) if count else float("nan"),
                           share_p05_holm=float(np.sum(adjusted[~np.isnan(adjusted)] <= SIGNIFICANCE_LEVEL) / count) if count else float("nan"))
            shares.append(row)
    if tested:
        summary = summary.merge(pd.DataFrame(shares), on=[*keys, "metric"], how="left")
    return positions, summary
