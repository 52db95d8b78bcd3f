"""Head and layer agreement map: which heads' attention agrees with the
attributions, across a dataset, and how sure is that?

For every layer x head (both numbered from 0): the metric (default Spearman's
rho of attention received by that head with |attribution|, or with the signed
attribution under ``attribution_as="signed"``) in each document,
its mean over documents with a bootstrap interval (documents resampled), and a
permutation p-value for "this head's agreement is greater than chance" across
the dataset, Holm-corrected over all L x H heads.

How the per-document nulls are combined: each null draw permutes every
document independently (circular shift or blocks, as in
:mod:`pyattn.compare.significance`, special tokens held in place) and takes the mean
of the metric over documents; the p-value is
``(1 + #{null means >= observed mean}) / (1 + n_perm)``, one-sided. This
tests the dataset mean that the table reports, against the null that in no
document does the head's attention agree with the attributions beyond what
their local structure produces by chance (and it needs no assumption that the
per-document p-values are continuous, as Fisher's or Stouffer's combinations
do).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from pyattn.compare._pairs import attribution_attention_pair
from pyattn.compare.significance import null_permutations, check_special_mask, TIE_TOLERANCE
from pyattn._checks import check_attribution_as
from pyattn.errors import InputError
from pyattn.compare.metrics import LINEAR_METRICS, METRICS, as_array, as_vector, cosine_matrix, linear_vectors, similarity_batch
from pyattn.compare.uncertainty import percentile_interval, bootstrap_tail, bootstrap_weights, holm

__all__ = ["head_agreement", "head_agreement_per_document"]


def _attention_heads(values, n: int, index: int) -> np.ndarray:
    array = as_array(values)
    if array.ndim != 3 or array.shape[2] != n:
        raise InputError(f"document {index}: attention must have shape (layers, heads, {n}) (per-head attention received, {n} tokens as in its attribution), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"document {index}: attention contains NaN or infinite values")
    return array


def _linear_statistics(a: np.ndarray, heads: np.ndarray, permutations: np.ndarray, metric: str, attribution_as: str = "magnitude") -> tuple[np.ndarray, np.ndarray]:
    """Observed (K,) and null (P, K) statistics for K heads, for a metric that
    is a cosine of transformed vectors (:data:`pyattn.compare.metrics.LINEAR_METRICS`):
    permuting the attention by pi equals permuting the attribution's
    transform by pi's inverse, so the null is one matrix product."""
    x, rows = linear_vectors(metric, a, heads, attribution_as)
    observed = cosine_matrix(x[None, :], rows)[0]
    chunk = max(1, 4_000_000 // len(x))
    null = np.empty((len(permutations), len(rows)))
    for start in range(0, len(permutations), chunk):
        inverse = np.argsort(permutations[start : start + chunk], axis=1)
        null[start : start + chunk] = cosine_matrix(x[inverse], rows)
    return observed, null


def head_agreement_per_document(
    attribution,
    attention,
    *,
    metric: str = "spearman_rho",
    null: str = "circular_shift",
    n_perm: int = 999,
    block_size: int | None = None,
    special_mask=None,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    seed: int | np.random.Generator | None = 0,
    attribution_as: str = "magnitude",
) -> tuple[np.ndarray, np.ndarray]:
    """One document's agreement per head and its null draws.

    Parameters
    ----------
    attribution : array-like, shape (N,)
    attention : array-like, shape (L, H, N)
        Attention received per layer and head.
    metric : str
        One of :data:`pyattn.compare.similarity.METRICS`. ``spearman_rho``,
        ``pearson_r`` and ``cosine_raw`` are computed for all heads and draws
        in one matrix product; the others head by head.
    null, n_perm, block_size, special_mask
        As in :func:`pyattn.compare.significance.permutation_test`.
    top_percent, rbo_p
        As in :func:`pyattn.compare.similarity.similarity`.
    seed : int or numpy Generator
    attribution_as : {"magnitude", "signed"}
        The attributions' ranking convention in the metric (as in
        :func:`pyattn.compare.similarity.similarity`).

    Returns
    -------
    observed : numpy.ndarray, shape (L, H)
    null : numpy.ndarray, shape (n_perm, L, H)
        The metric on each null draw (the same draws for every head):
        without replacement, never the identity, as in
        :func:`pyattn.compare.significance.null_permutations`; when the null group
        has no more than ``n_perm`` other elements, ``n_perm`` uniform draws
        with replacement instead (valid, slightly conservative: draws of the
        identity tie).

    Raises
    ------
    ValueError
        For an unknown metric or a shape that does not match.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> attribution = rng.normal(size=60)
    >>> attention = np.stack([np.abs(attribution), rng.random(60)])[None]  # (L=1, H=2, N=60)
    >>> observed, null = head_agreement_per_document(attribution, attention, n_perm=99)
    >>> observed.round(3).tolist(), null.shape
    ([[1.0, -0.208]], (99, 1, 2))
    >>> ((1 + (null >= observed).sum(0)) / (1 + 99)).tolist()  # one-sided permutation p-values
    [[0.05, 0.98]]

    Head 0 is not at the smallest p-value, 0.01: 60 tokens have only 59
    circular shifts besides the identity, fewer than 99, so the draws are
    with replacement and the identity draws among them tie with the
    observed value.
    """
    check_attribution_as(attribution_as)
    a = as_vector(attribution, "attribution")
    heads = _attention_heads(attention, len(a), 0)
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}: choose from {list(METRICS)}")
    L, H, N = heads.shape
    flat = heads.reshape(L * H, N)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    permutations = null_permutations(N, n_perm, null, block_size=block_size, special_mask=special_mask, seed=rng)
    if len(permutations) < n_perm:
        # a group smaller than n_perm + 1 (a short document): uniform draws with replacement keep
        # every document at n_perm draws, so that the j-th draws of all documents can be averaged
        permutations = null_permutations(N, n_perm, null, block_size=block_size, special_mask=special_mask, seed=rng, replace=True)
    if metric in LINEAR_METRICS:
        observed, null_values = _linear_statistics(a, flat, permutations, metric, attribution_as)
    else:
        unique, inverse = np.unique(permutations, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        observed = np.empty(L * H)
        null_values = np.empty((n_perm, L * H))
        for k, row in enumerate(flat):
            options = dict(metrics=[metric], top_percent=top_percent, rbo_p=rbo_p, attribution_as=attribution_as)
            observed[k] = similarity_batch(a, row[None, :], **options)[metric][0]
            null_values[:, k] = similarity_batch(a, row[unique], **options)[metric][inverse]
    return observed.reshape(L, H), null_values.reshape(n_perm, L, H)


def head_agreement(
    documents: Sequence[tuple[object, object]],
    *,
    metric: str = "spearman_rho",
    null: str = "circular_shift",
    n_perm: int | None = None,
    block_size: int | None = None,
    special_masks: Sequence[object] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    method: str = "expanded_percentile",
    alpha: float = 0.05,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    seed: int | None = 0,
    attribution_as: str = "magnitude",
):
    """Agreement of every head's attention received with the attributions,
    across a dataset.

    Parameters
    ----------
    documents : sequence of (attribution, attention)
        Per document: ``attribution`` shape (N,), ``attention`` shape
        (L, H, N) (attention received per layer and head, numpy or torch),
        attribution first as in every comparison (a pair given as
        ``(attention, attribution)`` is refused with an ``InputError``).
        N may differ between documents; L and H may not.
    metric : str
        The agreement metric (default ``spearman_rho``), one of
        :data:`pyattn.compare.similarity.METRICS`.
    null : {"circular_shift", "block", "naive_shuffle"}
        Per-document null (see :mod:`pyattn.compare.significance`).
    n_perm : int, optional
        Null draws (each permutes every document). The smallest p-value is
        ``1 / (1 + n_perm)`` and Holm multiplies it by the number of heads
        K = L x H, so no head can be significant unless ``n_perm >= K /
        alpha - 1`` (2,879 for 12 x 12 heads at 0.05); a smaller value
        warns. Default: ``max(999, ceil(2 K / alpha) - 1)`` (5,759 for
        12 x 12 heads), room for a Holm-adjusted p-value of alpha / 2.
    block_size : int, optional
        For ``null="block"``.
    special_masks : sequence of boolean arrays (N,), optional
        Per document, True at special tokens (held in place).
    n_boot, confidence, method
        Bootstrap over documents (see :func:`pyattn.compare.uncertainty.bootstrap_mean_ci`).
    alpha : float
        Level for the ``significant`` column (Holm-adjusted p <= alpha).
    top_percent, rbo_p
        As in :func:`pyattn.compare.similarity.similarity`.
    seed : int
        Seeds every draw.
    attribution_as : {"magnitude", "signed"}
        ``|attribution|`` (default) or the signed scores in the metric.

    Returns
    -------
    pandas.DataFrame
        One row per layer x head (layer-major, both from 0): ``layer``,
        ``head``, ``metric``, ``mean`` (over documents with a value),
        ``ci_low``, ``ci_high``, ``documents``, ``p_value`` (dataset-level
        permutation test of the mean, one-sided "greater"), ``p_holm`` (Holm
        over all heads with a p-value), ``significant`` (``p_holm <= alpha``),
        ``share_documents_p05`` (share of documents whose own per-document
        p-value, same draws, is <= 0.05), ``n_perm``, ``null``,
        ``attribution_as``.

    Raises
    ------
    ValueError
        If ``documents`` is empty, the documents' L x H differ, a vector's
        length does not match, or an option is unknown.

    Examples
    --------
    Three documents; head 0 of the one layer attends exactly as
    ``|attribution|``, head 1 at random:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> documents = []
    >>> for _ in range(3):
    ...     attribution = rng.normal(size=60)
    ...     documents.append((attribution, np.stack([np.abs(attribution), rng.random(60)])[None]))  # (L=1, H=2, N)
    >>> table = head_agreement(documents, n_perm=199, n_boot=200)
    >>> table[["layer", "head", "mean", "p_value", "p_holm", "significant"]].round(3).values.tolist()
    [[0, 0, 1.0, 0.005, 0.01, True], [0, 1, -0.04, 0.68, 0.68, False]]

    Head 0's p-value is the smallest possible, ``1 / (1 + 199)``, and Holm
    doubles it for two heads.
    """
    import pandas as pd

    if len(documents) == 0:
        raise InputError("documents is empty: give (attribution, attention per head) pairs")
    if special_masks is not None and len(special_masks) != len(documents):
        raise InputError(f"got {len(special_masks)} special_masks for {len(documents)} documents")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha!r}")
    check_attribution_as(attribution_as)
    bootstrap_tail(confidence, 2, method)
    first = attribution_attention_pair(documents[0], 0)
    heads_total = int(np.prod(_attention_heads(first[1], len(as_vector(first[0], "document 0: attribution")), 0).shape[:2]))
    if n_perm is None:
        n_perm = max(999, math.ceil(2 * heads_total / alpha) - 1)
    elif heads_total / (1 + n_perm) > alpha:
        warnings.warn(
            f"n_perm={n_perm} cannot give a Holm-adjusted p-value below {heads_total}/{n_perm + 1} = {heads_total / (n_perm + 1):.3g} "
            f"over {heads_total} heads, above alpha={alpha}: no head can be significant; use n_perm >= {math.ceil(heads_total / alpha) - 1}",
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    observed_all, null_sums, null_counts, per_doc_significant = [], None, None, None
    shape = None
    for d, pair in enumerate(documents):
        attribution, attention = attribution_attention_pair(pair, d)
        a = as_vector(attribution, f"document {d}: attribution")
        heads = _attention_heads(attention, len(a), d)
        if shape is None:
            shape = heads.shape[:2]
        elif heads.shape[:2] != shape:
            raise InputError(f"document {d}: attention has {heads.shape[0]} layers x {heads.shape[1]} heads, document 0 had {shape[0]} x {shape[1]}")
        mask = None if special_masks is None else check_special_mask(special_masks[d], len(a))
        observed, null_values = head_agreement_per_document(
            a, heads, metric=metric, null=null, n_perm=n_perm, block_size=block_size, special_mask=mask, top_percent=top_percent, rbo_p=rbo_p, seed=rng,
            attribution_as=attribution_as,
        )
        has = ~np.isnan(observed)
        if null_sums is None:
            null_sums = np.zeros_like(null_values)
            null_counts = np.zeros(shape)
            per_doc_significant = np.zeros(shape)
        null_sums += np.where(has[None], null_values, 0.0)
        null_counts += has
        tolerance = TIE_TOLERANCE * np.maximum(1.0, np.abs(observed))
        with np.errstate(invalid="ignore"):
            p_document = (1 + (null_values >= (observed - tolerance)[None]).sum(axis=0)) / (1 + n_perm)
        per_doc_significant += has & (p_document <= 0.05)
        observed_all.append(observed)
    values = np.stack(observed_all).reshape(len(documents), -1)  # (D, L*H)
    has = ~np.isnan(values)
    counts = has.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)
        null_means = (null_sums.reshape(n_perm, -1) / np.maximum(null_counts.reshape(-1), 1))
        tolerance = TIE_TOLERANCE * np.maximum(1.0, np.abs(mean))
        p_value = (1 + (null_means >= (mean - tolerance)[None]).sum(axis=0)) / (1 + n_perm)
    p_value = np.where(counts > 0, p_value, np.nan)
    weights = bootstrap_weights(len(documents), n_boot, rng)
    low = np.full(values.shape[1], np.nan)
    high = np.full(values.shape[1], np.nan)
    for k in range(values.shape[1]):
        present = has[:, k]
        if not present.any():
            continue
        w = weights[:, present]
        totals = w.sum(axis=1)
        resampled = (w[totals > 0] @ values[present, k]) / totals[totals > 0]
        low[k], high[k] = percentile_interval(resampled, confidence, int(present.sum()), method)
    p_holm = holm(p_value)
    L, H = shape
    layer, head = np.divmod(np.arange(L * H), H)
    with np.errstate(invalid="ignore"):
        share = per_doc_significant.reshape(-1) / np.where(counts > 0, counts, np.nan)
    return pd.DataFrame(
        {
            "layer": layer,
            "head": head,
            "metric": metric,
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "documents": counts,
            "p_value": p_value,
            "p_holm": p_holm,
            "significant": p_holm <= alpha,
            "share_documents_p05": share,
            "n_perm": n_perm,
            "null": null,
            "attribution_as": attribution_as,
        }
    )
