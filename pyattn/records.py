"""Reading a results store back as arrays of the right shape.

``pyattn attribute`` stores one Parquet record per document
(:mod:`pyattn.store`): attention received flat beside its shape, the summary
metrics as a JSON string. :func:`read_records` undoes both, so a user gets
what the run computed: per-token vectors as numpy arrays, attention received
per layer and head as an ``(L, H, N)`` array, the metrics as dicts.
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["read_records", "RECORD_COLUMNS"]

#: The columns of :func:`read_records`' table, and what each holds.
RECORD_COLUMNS = {
    "doc_id": "the document's id (its id column's value, or its row number)",
    "index": "its row in the input file, from 0",
    "label": "the true class index (None for a run without labels)",
    "label_name": "the true class's name",
    "tokens": "list of N tokens as the tokenizer wrote them, special tokens included",
    "input_ids": "(N,) int64 array",
    "scores": "(N,) float64 array: the token attributions (integrated gradients)",
    "attention": "(L, H, N) float32 array: attention received by each token, per layer and head",
    "metrics": "dict: attention view ('final', 'all') -> {metric: value}, special tokens excluded (mask 'no_special')",
    "probabilities": "(C,) float64 array: the model's class probabilities",
    "predicted_label": "the predicted class index (and predicted_label_name)",
    "target": "the class explained (and target_name)",
    "delta": "integrated gradients' completeness gap: sum(scores) - (F(input) - F(baseline))",
    "relative_error": "|delta| / |F(input) - F(baseline)|",
    "converged": "whether relative_error reached the run's tolerance",
    "n_steps": "integration steps (and model_evaluations)",
    "truncated_tokens": "tokens cut from the document to fit the maximum length (0: none)",
}


def _metrics_dict(value) -> dict:
    if isinstance(value, dict):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {}
    rows = json.loads(value) if isinstance(value, (str, bytes)) else list(value)
    return {row["attention"]: {k: v for k, v in row.items() if k != "attention"} for row in rows}


def read_records(path: str | os.PathLike):
    """Every document of a results store (``pyattn attribute --out PATH``) as
    one pandas DataFrame, a row per document in input order, with arrays of
    their real shapes.

    Parameters
    ----------
    path : str or os.PathLike
        The store's folder (the one holding ``manifest.json``).

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`RECORD_COLUMNS` (and the run's other stored
        columns: ``text_sha1``, ``compute_dtype``, ...): ``attention`` is an
        ``(L, H, N)`` float32 array per row (``attention[-1].sum(0)`` is the
        final layer's, ``attention.sum((0, 1))`` every layer's attention
        received), ``scores`` and ``input_ids`` ``(N,)`` arrays, ``metrics``
        a dict ``view -> {metric: value}``. Empty (no columns) when no
        document is stored yet.

    Raises
    ------
    pyattn.errors.StoreError
        If ``path`` is not a results store, or a shard is damaged.

    Examples
    --------
    >>> import os, tempfile
    >>> from pyattn import load_demo
    >>> from pyattn.dataset import Document
    >>> from pyattn.runner import process_document
    >>> from pyattn.store import ResultsStore
    >>> model, tokenizer = load_demo()
    >>> folder = tempfile.TemporaryDirectory()
    >>> out = os.path.join(folder.name, "results")
    >>> with ResultsStore.create(out, {"model": "demo"}) as store:
    ...     _ = store.write_shard([process_document(model, tokenizer, Document("a", 0, "the borrow checker rejects the program", 1), {"n_steps": 16})])
    >>> records = read_records(out)
    >>> record = records.iloc[0]
    >>> record["attention"].shape, record["scores"].shape, len(record["tokens"])  # (L, H, N), (N,)
    ((3, 4, 11), (11,), 11)
    >>> sorted(record["metrics"]), round(record["metrics"]["all"]["spearman_rho"], 3)
    (['all', 'final'], 0.3)
    >>> folder.cleanup()
    """
    from pyattn.store import ResultsStore

    store = ResultsStore.open(path)
    frame = store.records()
    if frame.empty:
        return frame
    if "attention_per_head" in frame.columns:
        shapes = frame["attention_shape"] if "attention_shape" in frame.columns else [None] * len(frame)
        attention = []
        for values, shape in zip(frame["attention_per_head"], shapes):
            if shape is not None and not (isinstance(shape, float) and np.isnan(shape)):
                attention.append(np.asarray(values, dtype=np.float32).reshape([int(s) for s in shape]))
            else:  # older stores: nested lists (L, H, N)
                attention.append(np.stack([np.stack(layer) for layer in values]).astype(np.float32))
        frame["attention"] = attention
        frame = frame.drop(columns=[c for c in ("attention_per_head", "attention_shape") if c in frame.columns])
    for column, dtype in (("scores", np.float64), ("input_ids", np.int64), ("probabilities", np.float64)):
        if column in frame.columns:
            frame[column] = [np.asarray(v, dtype=dtype) for v in frame[column]]
    if "tokens" in frame.columns:
        frame["tokens"] = [list(v) for v in frame["tokens"]]
    if "metrics" in frame.columns:
        frame["metrics"] = [_metrics_dict(v) for v in frame["metrics"]]
    first = [c for c in RECORD_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
