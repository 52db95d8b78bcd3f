"""Token tables: top and bottom tokens of a document, overlap of the top sets
by attribution and by attention, aggregation by token type within a document
and across a dataset.

Tokens are kept raw (``Ġcompiler``) next to a display form without the
tokenizer's space marker (``compiler``); ``merge_forms=True`` aggregates the
two forms of a word (``Ġcompiler`` mid-sentence, ``compiler`` at the start) as
one type.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from pyattn.similarity import as_vector, display_token, minmax, top_positions

__all__ = ["top_tokens", "bottom_tokens", "overlap_table", "token_type_totals", "dataset_token_table", "export_table"]


def _scores(values, tokens: Sequence[str]) -> np.ndarray:
    array = as_vector(values, "scores")
    if array.shape != (len(tokens),):
        raise ValueError(f"got {len(tokens)} tokens but scores of shape {array.shape}; expected ({len(tokens)},)")
    return array


def _ranked(tokens, scores, k: int, largest: bool):
    import pandas as pd

    values = _scores(scores, tokens)
    order = np.lexsort((np.arange(len(values)), -values if largest else values))[:k]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "token": [display_token(tokens[i]) for i in order],
            "raw_token": [tokens[i] for i in order],
            "position": order,
            "score": values[order],
        }
    )


def top_tokens(tokens: Sequence[str], scores, k: int = 10):
    """The k highest-scoring tokens: rank, token (display form), raw_token,
    position, score (pandas DataFrame)."""
    return _ranked(tokens, scores, k, largest=True)


def bottom_tokens(tokens: Sequence[str], scores, k: int = 10):
    """The k lowest-scoring (most negative) tokens, lowest first."""
    return _ranked(tokens, scores, k, largest=False)


def overlap_table(tokens: Sequence[str], attribution, attention, percent: float = 5.0):
    """Tokens in the top ``percent`` % by attention only, by attribution
    only, and by both. Returns ``(table, counts)``: ``table`` has one row per
    such position with ``set`` (``"attention only"``, ``"attribution only"``,
    ``"both"``), token, raw_token, position, the min-max normalised
    |attribution| and attention, and both ranks (1 = largest); ``counts``
    counts each token type per set."""
    import pandas as pd
    from scipy import stats

    a = np.abs(_scores(attribution, tokens))
    r = _scores(attention, tokens)
    top_a, top_r = set(top_positions(a, percent).tolist()), set(top_positions(r, percent).tolist())
    rank_a = len(a) + 1 - stats.rankdata(a, method="min")
    rank_r = len(r) + 1 - stats.rankdata(r, method="min")
    norm_a, norm_r = minmax(a), minmax(r)
    rows = []
    for name, positions in (("attention only", top_r - top_a), ("attribution only", top_a - top_r), ("both", top_a & top_r)):
        for i in sorted(positions):
            rows.append(
                {
                    "set": name,
                    "token": display_token(tokens[i]),
                    "raw_token": tokens[i],
                    "position": i,
                    "attribution_norm": norm_a[i],
                    "attention_norm": norm_r[i],
                    "attribution_rank": int(rank_a[i]),
                    "attention_rank": int(rank_r[i]),
                }
            )
    table = pd.DataFrame(rows, columns=["set", "token", "raw_token", "position", "attribution_norm", "attention_norm", "attribution_rank", "attention_rank"])
    counts = table.groupby(["set", "token"]).size().rename("count").reset_index().sort_values(["set", "count", "token"], ascending=[True, False, True])
    return table, counts.reset_index(drop=True)


def token_type_totals(tokens: Sequence[str], scores, merge_forms: bool = False):
    """Per token type within one document: count and sum of scores, sorted by
    sum (largest first). ``type`` is the raw token, with its display form
    beside it; ``merge_forms=True`` groups by the display form instead."""
    import pandas as pd

    values = _scores(scores, tokens)
    frame = pd.DataFrame({"raw_token": list(tokens), "token": [display_token(t) for t in tokens], "score": values})
    key = "token" if merge_forms else "raw_token"
    grouped = frame.groupby(key).agg(count=("score", "size"), sum=("score", "sum"))
    if not merge_forms:
        grouped.insert(0, "token", [display_token(t) for t in grouped.index])
    return grouped.sort_values("sum", ascending=False).reset_index()


def dataset_token_table(documents: Iterable[tuple[Sequence[str], object]], merge_forms: bool = False):
    """Per token type across documents, from ``(tokens, scores)`` pairs:

    - ``documents``: how many documents contain the type;
    - ``occurrences``: how many times it occurs;
    - ``sum``: total score;
    - ``mean_per_occurrence``: sum / occurrences;
    - ``mean_per_document``: sum / documents containing it;
    - ``mean_over_all_documents``: sum / number of documents in the dataset
      (what the original notebook called the mean).

    Sorted by ``sum``, largest first, as the original's per-token table was.
    """
    import pandas as pd

    frames = []
    for index, (tokens, scores) in enumerate(documents):
        values = _scores(scores, tokens)
        frames.append(pd.DataFrame({"document": index, "raw_token": list(tokens), "token": [display_token(t) for t in tokens], "score": values}))
    if not frames:
        raise ValueError("no documents to aggregate")
    frame = pd.concat(frames, ignore_index=True)
    key = "token" if merge_forms else "raw_token"
    grouped = frame.groupby(key).agg(documents=("document", "nunique"), occurrences=("score", "size"), sum=("score", "sum"))
    grouped["mean_per_occurrence"] = grouped["sum"] / grouped["occurrences"]
    grouped["mean_per_document"] = grouped["sum"] / grouped["documents"]
    grouped["mean_over_all_documents"] = grouped["sum"] / len(frames)
    if not merge_forms:
        grouped.insert(0, "token", [display_token(t) for t in grouped.index])
    return grouped.sort_values("sum", ascending=False).reset_index()


def export_table(table, path: str | os.PathLike) -> None:
    """Write a table to ``.csv`` or ``.parquet`` (pyarrow), chosen by the
    file's extension."""
    path = os.fspath(path)
    if path.endswith(".csv"):
        table.to_csv(path, index=False)
    elif path.endswith(".parquet"):
        table.to_parquet(path, index=False)
    else:
        raise ValueError(f"unknown table format for {path!r}: use .csv or .parquet")
