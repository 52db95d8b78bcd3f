"""Similarity between a document's token attributions and the attention its
tokens receive.

All metrics compare two vectors over the same token positions: ``attribution``
(per-token scores) and ``attention`` (attention received, never negative).

Signed or magnitude, always said: by default (``attribution_as="magnitude"``)
attributions enter every metric except ``cosine_raw`` as magnitudes
``|attribution|`` -- a strongly negative token mattered too (it pushed toward
another class), as the original notebooks argued, and attention has no sign to
tell support from opposition. ``attribution_as="signed"`` compares the signed
scores instead (a token that opposes the prediction then ranks last).
``cosine_raw`` always uses the signed scores. Every table :func:`compare`
returns carries an ``attribution_as`` column.

Conventions, stated once:

- *min-max*: ``(x - min) / (max - min)`` of each vector on its own.
- *ranks* run upward: the smallest value has rank 1 and the largest rank ``n``
  (``scipy.stats.rankdata``, ties averaged), so cosine of ranks weighs the
  most important tokens most.
- *top k%*: the ``ceil(k/100 * n)`` positions with the largest values.

Fixed from the original notebooks (``../shared/reference/``):

- the all-layers 95th-percentile threshold was taken from the final layer's
  values; here every threshold comes from the vector it cuts;
- the "top 95% ranks" cut kept ranks ``<= ceil(0.95 n)``, i.e. dropped the top
  5% and kept the rest; here the top-5% versions keep the top 5%;
- the all-layers Kendall tau printed was the layer-12 value; here each
  attention choice gets its own;
- a column named Jaccard held a thresholded cosine; here ``jaccard_top`` is the
  Jaccard index of the two top-k% position sets.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from pyattn._checks import ATTRIBUTION_AS, check_attribution_as  # noqa: F401  (ATTRIBUTION_AS importable here as before)
from pyattn.errors import InputError, MissingSpecialTokens  # MissingSpecialTokens importable here as before 1.1
# The metric core; these names are importable here as before 1.1 (their home is pyattn.compare.metrics).
from pyattn.compare.metrics import (  # noqa: F401
    METRICS,
    as_array,
    as_vector,
    cosine,
    minmax,
    rank_biased_overlap,
    similarity_batch,
    top_k_count,
    top_positions,
)

__all__ = [
    "similarity",
    "compare",
    "dataset_similarity",
    "token_masks",
    "MASKS",
    "MissingSpecialTokens",
]


def similarity(
    attribution,
    attention,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    attribution_as: str = "magnitude",
) -> dict[str, float]:
    """Every metric for one pair of vectors, as a dict (see :data:`METRICS`):
    the batch of one of :func:`pyattn.compare.metrics.similarity_batch`.

    Parameters
    ----------
    attribution, attention:
        ``(N,)`` each, over the same positions.
    attribution_as:
        ``"magnitude"`` compares ``|attribution|`` (default), ``"signed"`` the
        signed scores; ``cosine_raw`` always uses the signed scores.

    Examples
    --------
    >>> round(similarity([3.0, -2.0, 0.5], [0.7, 0.2, 0.1])["spearman_rho"], 3)
    1.0
    >>> round(similarity([3.0, -2.0, 0.5], [0.7, 0.2, 0.1], attribution_as="signed")["spearman_rho"], 3)
    0.5
    """
    check_attribution_as(attribution_as)
    a_raw = as_vector(attribution, "attribution")
    r = as_vector(attention, "attention")
    if a_raw.shape != r.shape:
        raise InputError(f"attribution has {a_raw.shape[0]} tokens but attention has {r.shape[0]}; they must match")
    if len(a_raw) < 2:
        raise InputError(f"need at least 2 tokens to compare, got {len(a_raw)}")
    batch = similarity_batch(a_raw, r[None, :], top_percent=top_percent, rbo_p=rbo_p, attribution_as=attribution_as)
    return {name: float(values[0]) for name, values in batch.items()}


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from stop_words import get_stop_words

    return frozenset(get_stop_words("english"))


def display_token(token: str) -> str:
    """A token as a reader sees it: without the BPE space marker ('Ġ') or
    the WordPiece continuation marker ('##')."""
    return token.replace("Ġ", "").replace("▁", "").removeprefix("##")



def token_masks(tokens: Sequence[str], special_tokens: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Boolean masks over positions (True = kept):

    - ``all``: every position;
    - ``no_special``: without the special tokens (``special_tokens``, e.g. the
      tokenizer's ``all_special_tokens``);
    - ``alphabetic``: tokens whose display form is alphabetic (no punctuation,
      numbers or specials);
    - ``no_stopwords``: alphabetic tokens that are not English stopwords (the
      list shipped in the ``stop-words`` package; nothing is downloaded).

    Without ``special_tokens`` (None or empty) only ``all`` is returned: the
    other masks would keep the special tokens while their names say they do
    not. Asking :func:`compare` for one of them then raises
    :class:`MissingSpecialTokens`.

    >>> token_masks(["<s>", "Ġcat", ",", "</s>"], ["<s>", "</s>"])["no_special"].nonzero()[0].tolist()
    [1, 2]
    """
    if not special_tokens:
        return {"all": np.ones(len(tokens), bool)}
    special = set(special_tokens)
    shown = [display_token(t) for t in tokens]
    no_special = np.array([t not in special for t in tokens])
    alphabetic = np.array([s.isalpha() for s in shown]) & no_special
    stop = _stopwords()
    no_stopwords = alphabetic & np.array([s.lower() not in stop for s in shown])
    return {"all": np.ones(len(tokens), bool), "no_special": no_special, "alphabetic": alphabetic, "no_stopwords": no_stopwords}


MASKS = ("all", "no_special", "alphabetic", "no_stopwords")


def compare(
    attribution,
    attentions: Mapping[str, object],
    tokens: Sequence[str] | None = None,
    special_tokens: Sequence[str] | None = None,
    masks: Sequence[str] = MASKS,
    top_percent: float = 5.0,
    rbo_p: float = 0.9,
    attribution_as: str = "magnitude",
):
    """A tidy table of every metric for one document.

    Parameters
    ----------
    attribution:
        ``(N,)`` per-token attributions.
    attentions:
        Name (e.g. ``"final"``, ``"all"``, ``"0-5"``, ``"final, scaled"``) ->
        attention received ``(N,)``.
    tokens, special_tokens:
        Needed for every mask but ``all`` (see :func:`token_masks`); a mask
        that drops special tokens without being told which they are raises
        :class:`MissingSpecialTokens` rather than silently keeping them.
    attribution_as:
        ``"magnitude"`` or ``"signed"`` (see :func:`similarity`).

    Returns
    -------
    pandas.DataFrame
        One row per (attention, mask): ``attention``, ``mask``, ``tokens``
        (how many positions the mask keeps), ``attribution_as``, and one
        column per metric in :data:`METRICS`.

    >>> table = compare([0.5, -2.0, 1.0, 0.1], {"final": [0.1, 0.5, 0.3, 0.1]}, masks=["all"])
    >>> table[["attention", "mask", "tokens", "attribution_as"]].values.tolist()
    [['final', 'all', 4, 'magnitude']]
    """
    import pandas as pd

    check_attribution_as(attribution_as)
    a = as_vector(attribution, "attribution")
    if tokens is not None and len(tokens) != len(a):
        raise InputError(f"got {len(tokens)} tokens for {len(a)} attribution scores")
    masks = [masks] if isinstance(masks, str) else list(masks)
    unknown = [m for m in masks if m not in MASKS]
    if unknown:
        raise InputError(f"unknown masks {unknown}: choose from {list(MASKS)}")
    if tokens is None and any(m != "all" for m in masks):
        raise InputError(f"masks {[m for m in masks if m != 'all']} need the document's tokens: pass tokens=")
    available = token_masks(tokens, special_tokens) if tokens is not None else {"all": np.ones(len(a), bool)}
    missing = [m for m in masks if m not in available]
    if missing:
        raise MissingSpecialTokens(
            f"masks {missing} drop special tokens, but no special tokens were given: pass "
            "special_tokens=tokenizer.all_special_tokens (or use masks=['all'])"
        )
    rows = []
    for name, values in attentions.items():
        r = as_vector(values, f"attention {name!r}")
        if r.shape != a.shape:
            raise InputError(f"attention {name!r} has {r.shape[0]} tokens but attribution has {a.shape[0]}")
        for mask_name in masks:
            keep = available[mask_name]
            metrics = (
                similarity(a[keep], r[keep], top_percent, rbo_p, attribution_as)
                if keep.sum() >= 2
                else dict.fromkeys(METRICS, float("nan"))
            )
            rows.append({"attention": name, "mask": mask_name, "tokens": int(keep.sum()), "attribution_as": attribution_as, **metrics})
    return pd.DataFrame(rows)


def dataset_similarity(tables: Sequence[object], document_ids: Sequence[object] | None = None):
    """Dataset-level similarity from per-document :func:`compare` tables.

    Parameters
    ----------
    tables : sequence of pandas.DataFrame
        One :func:`compare` table per document (same attention choices and
        masks in each).
    document_ids : sequence, optional
        One id per table (default ``0 .. len(tables) - 1``), written to the
        ``document`` column.

    Returns
    -------
    per_document : pandas.DataFrame
        Every document's rows with a ``document`` column.
    means : pandas.DataFrame
        One row per attention choice x mask (x ``attribution_as``): for each
        metric its mean over documents (``<metric>_mean``), its standard
        deviation (``<metric>_std``, NaN for one document), and ``documents``,
        the number of documents with a value of the first metric
        (``cosine_raw``).

    Raises
    ------
    ValueError
        If ``tables`` is empty or ``document_ids`` has another length.

    Examples
    --------
    >>> first = compare([0.5, -2.0, 1.0, 0.1], {"final": [0.1, 0.5, 0.3, 0.1]}, masks=["all"])
    >>> second = compare([1.0, 2.0, 3.0, 4.0], {"final": [0.1, 0.2, 0.3, 0.4]}, masks=["all"])
    >>> per_document, means = dataset_similarity([first, second], document_ids=["a", "b"])
    >>> per_document[["document", "spearman_rho"]].round(4).values.tolist()
    [['a', 0.9487], ['b', 1.0]]
    >>> means[["attention", "mask", "spearman_rho_mean", "documents"]].round(4).values.tolist()
    [['final', 'all', 0.9743, 2]]
    """
    import pandas as pd

    if not tables:
        raise InputError("no per-document tables to aggregate")
    ids = list(range(len(tables))) if document_ids is None else list(document_ids)
    if len(ids) != len(tables):
        raise InputError(f"got {len(tables)} tables but {len(ids)} document ids")
    per_document = pd.concat([table.assign(document=doc) for doc, table in zip(ids, tables)], ignore_index=True)
    metrics = [m for m in METRICS if m in per_document.columns]
    keys = [k for k in ("attention", "mask", "attribution_as") if k in per_document.columns]
    grouped = per_document.groupby(keys, sort=False)[metrics]
    means = grouped.mean().add_suffix("_mean").join(grouped.std().add_suffix("_std")).join(grouped.count()[metrics[:1]].rename(columns={metrics[0]: "documents"}))
    return per_document, means.reset_index()
