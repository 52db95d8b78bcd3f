"""One record per document: the :class:`Record` a run writes, its Parquet row
form, and reading a results store back as arrays of the right shape.

``pyattn attribute`` stores one Parquet row per document
(:mod:`pyattn.pipeline.store`): attention received flat beside its shape, the
summary metrics as a JSON string. :meth:`Record.to_row` writes that form and
:meth:`Record.from_row` undoes it; :func:`read_records` gives a user what the
run computed: per-token vectors as numpy arrays, attention received per layer
and head as an ``(L, H, N)`` array, the metrics as dicts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = ["Record", "read_records", "RECORD_COLUMNS", "stored_attention", "attribution_from_record"]

#: The columns of :func:`read_records`' table (the fields of :class:`Record`), and what each holds.
RECORD_COLUMNS = {
    "doc_id": "the document's id (its id column's value, or its row number)",
    "index": "its row in the input file, from 0",
    "label": "the true class index (None for a run without labels)",
    "label_name": "the true class's name",
    "text_sha1": "SHA-1 of the document's text (a resumed run refuses a changed text)",
    "tokens": "list of N tokens as the tokenizer wrote them, special tokens included",
    "input_ids": "(N,) int64 array",
    "scores": "(N,) float64 array: the token attributions (integrated gradients)",
    "delta": "integrated gradients' completeness gap: sum(scores) - (F(input) - F(baseline))",
    "relative_error": "|delta| / |F(input) - F(baseline)|",
    "compute_dtype": "the dtype the model ran in (float32, or the autocast dtype)",
    "float32_relative_error": "the completeness error against the float32 model's own outputs",
    "n_steps": "integration steps",
    "model_evaluations": "forward + backward passes the attribution took",
    "converged": "whether relative_error reached the run's tolerance",
    "output": "what the model's output F is: softmax, sigmoid or raw",
    "outputs": "(C,) float64 array: F of each class on the input (stores of pyattn 1.0: `probabilities`)",
    "predicted_label": "the predicted class index",
    "predicted_label_name": "its name",
    "target": "the class explained",
    "target_name": "its name",
    "truncated_tokens": "tokens cut from the document to fit the maximum length (0: none)",
    "attention": "(L, H, N) float32 array: attention received by each token, per layer and head",
    "metrics": "dict: attention view ('final', 'all') -> {metric: value}, special tokens excluded (mask 'no_special')",
}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _metrics_dict(value) -> dict:
    if isinstance(value, dict):
        return value
    if _missing(value):
        return {}
    rows = json.loads(value) if isinstance(value, (str, bytes)) else list(value)
    return {row["attention"]: {k: v for k, v in row.items() if k != "attention"} for row in rows}


def _attention_array(values, shape) -> np.ndarray:
    """``(L, H, N)`` float32 from the stored flat list and its shape (or the
    nested lists of older stores)."""
    if shape is not None and not _missing(shape):
        return np.asarray(values, dtype=np.float32).reshape([int(s) for s in shape])
    return np.stack([np.stack(layer) for layer in values]).astype(np.float32)


@dataclass
class Record:
    """One document's results, as a dataset run makes them and a results store
    keeps them: the fields of :data:`RECORD_COLUMNS`. :meth:`to_row` gives the
    Parquet row (attention flat in ``attention_per_head`` beside
    ``attention_shape`` ``[L, H, N]``, metrics as JSON rows);
    :meth:`from_row` reads one back (rows of older stores included).

    Examples
    --------
    >>> import numpy as np
    >>> record = Record(doc_id="a", index=0, label=1, label_name="yes", text_sha1="0" * 40, tokens=["[CLS]", "hi", "[SEP]"],
    ...                 input_ids=np.array([0, 5, 2]), scores=np.array([0.0, 0.5, 0.0]), attention=np.ones((2, 1, 3), np.float32),
    ...                 metrics={"final": {"mask": "no_special", "spearman_rho": 0.5}})
    >>> row = record.to_row()
    >>> row["attention_shape"], len(row["attention_per_head"]), row["metrics"]
    ([2, 1, 3], 6, '[{"attention": "final", "mask": "no_special", "spearman_rho": 0.5}]')
    >>> back = Record.from_row(row)
    >>> back.attention.shape, back.metrics["final"]["spearman_rho"], back.scores.dtype
    ((2, 1, 3), 0.5, dtype('float64'))
    """
    doc_id: Any
    index: int
    tokens: list
    input_ids: np.ndarray
    scores: np.ndarray
    attention: np.ndarray
    label: int | None = None
    label_name: str | None = None
    text_sha1: str | None = None
    metrics: dict = field(default_factory=dict)
    output: str = "softmax"
    outputs: np.ndarray | None = None
    predicted_label: int | None = None
    predicted_label_name: str | None = None
    target: int | None = None
    target_name: str | None = None
    delta: float | None = None
    relative_error: float | None = None
    compute_dtype: str | None = None
    float32_relative_error: float | None = None
    converged: bool | None = None
    n_steps: int | None = None
    model_evaluations: int | None = None
    truncated_tokens: int = 0

    def to_row(self) -> dict:
        """The Parquet row form (plain Python values, attention flat float32)."""
        attention = np.asarray(self.attention, dtype=np.float32)
        row = {}
        for name in RECORD_COLUMNS:
            value = getattr(self, name)
            if name == "attention":
                row["attention_shape"] = [int(s) for s in attention.shape]
                row["attention_per_head"] = attention.ravel().tolist()
            elif name == "metrics":
                row["metrics"] = json.dumps([{"attention": view, **values} for view, values in self.metrics.items()])
            elif name in ("input_ids",):
                row[name] = [int(i) for i in value]
            elif name in ("scores", "outputs"):
                row[name] = None if value is None else [float(v) for v in value]
            elif name == "tokens":
                row[name] = list(value)
            else:
                row[name] = value
        return row

    @classmethod
    def from_row(cls, row: Mapping) -> "Record":
        """A record from its stored row (a dict or a row of
        ``ResultsStore.records()``); columns a store of an older pyattn lacks
        get their defaults (``probabilities`` is read as ``outputs``)."""
        get = row.get
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            name = item.name
            if name == "attention":
                values[name] = _attention_array(row["attention_per_head"], get("attention_shape"))
            elif name == "metrics":
                values[name] = _metrics_dict(get("metrics"))
            elif name == "outputs":
                stored = get("outputs") if "outputs" in row else get("probabilities")
                values[name] = None if stored is None else np.asarray(stored, dtype=np.float64)
            elif name in ("scores", "input_ids"):
                values[name] = np.asarray(row[name], dtype=np.float64 if name == "scores" else np.int64)
            elif name == "tokens":
                values[name] = list(row[name])
            elif name in row:
                values[name] = row[name]
        return cls(**values)


def stored_attention(record) -> np.ndarray:
    """A stored row's attention received, ``(L, H, N)`` float64 (flat
    ``list<float32>`` with ``attention_shape``, or the older nested lists).

    Examples
    --------
    >>> stored_attention({"attention_per_head": [1.0] * 6, "attention_shape": [2, 1, 3]}).shape
    (2, 1, 3)
    """
    return _attention_array(record["attention_per_head"], record.get("attention_shape")).astype(np.float64)


def attribution_from_record(record):
    """The :class:`pyattn.Attribution` a stored row (or :class:`Record`) was
    made from (the fields a record keeps; per-level details such as ``tries``
    are not stored).

    Examples
    --------
    >>> row = {"tokens": ["a", "b"], "input_ids": [1, 2], "scores": [0.25, 0.5], "outputs": [0.1, 0.9], "predicted_label": 1,
    ...        "target": 1, "delta": 0.01, "n_steps": 16, "model_evaluations": 17, "converged": True, "truncated_tokens": 0,
    ...        "attention_per_head": [1.0, 1.0], "attention_shape": [1, 1, 2], "doc_id": "d", "index": 0}
    >>> attribution = attribution_from_record(row)
    >>> attribution.scores.tolist(), round(attribution.output_gap, 2), attribution.output
    ([0.25, 0.5], 0.74, 'softmax')
    """
    from pyattn.attribution import Attribution

    record = record if isinstance(record, Record) else Record.from_row(record)
    delta = float(record.delta)
    return Attribution(
        tokens=list(record.tokens),
        input_ids=[int(i) for i in record.input_ids],
        scores=record.scores,
        outputs=record.outputs,
        predicted_label=int(record.predicted_label),
        target=int(record.target),
        delta=delta,
        output_gap=float(record.scores.sum()) - delta,  # delta = sum(scores) - gap
        n_steps=int(record.n_steps),
        model_evaluations=int(record.model_evaluations),
        converged=bool(record.converged),
        truncated_tokens=int(record.truncated_tokens),
        output=str(record.output),
    )


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
    >>> from pyattn.pipeline import Document, ResultsStore, process_document
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
    import pandas as pd

    from pyattn.pipeline.store import ResultsStore

    frame = ResultsStore.open(path).records()
    if frame.empty:
        return frame
    stored = {"attention_per_head", "attention_shape", "probabilities"}
    rows = []
    for _, row in frame.iterrows():
        record = Record.from_row(row)
        rows.append({**{name: getattr(record, name) for name in RECORD_COLUMNS}, **{c: row[c] for c in frame.columns if c not in RECORD_COLUMNS and c not in stored}})
    return pd.DataFrame(rows, index=frame.index)
