"""Dataset runs: read documents from a file, attribute each, and keep the
results in a :class:`pyattn.store.ResultsStore` as they are made, so that a
crash loses at most one shard's worth and ``resume`` picks up where it
stopped."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from pyattn.store import ResultsStore

__all__ = ["Document", "load_documents", "run_attribution", "RunSummary", "DataError"]


class DataError(ValueError):
    """The input data cannot be read as asked."""


@dataclass
class Document:
    doc_id: str
    index: int
    text: Any
    label: int | None


def load_documents(path: str, text_column: str = "text", label_column: str | None = "label", id_column: str | None = None) -> list[Document]:
    """Documents from a CSV, JSONL or Parquet file, or a Hugging Face dataset
    given as ``name:split`` (needs the ``datasets`` library and network).

    ``label_column`` may be absent from the file only if given as None;
    ``id_column`` None numbers the rows. Texts are not checked here: the run
    skips (and lists) empty or non-string ones.
    """
    import pandas as pd

    if os.path.exists(path):
        lower = path.lower()
        try:
            if lower.endswith(".csv"):
                frame = pd.read_csv(path)
            elif lower.endswith((".jsonl", ".ndjson")):
                frame = pd.read_json(path, lines=True)
            elif lower.endswith(".parquet"):
                frame = pd.read_parquet(path)
            else:
                raise DataError(f"cannot tell the format of {path!r}: use a .csv, .jsonl or .parquet file")
        except DataError:
            raise
        except Exception as error:
            raise DataError(f"cannot read {path!r}: {type(error).__name__}: {error}") from error
    elif ":" in path and os.path.sep not in path:
        name, split = path.rsplit(":", 1)
        try:
            import datasets
        except ImportError as error:
            raise DataError(f"{path!r} is not a file; reading it as a Hugging Face dataset needs `pip install datasets`") from error
        frame = datasets.load_dataset(name, split=split).to_pandas()
    else:
        raise DataError(f"data file {path!r} does not exist")
    missing = [c for c in (text_column, label_column, id_column) if c is not None and c not in frame.columns]
    if missing:
        raise DataError(f"{path!r} has no column(s) {missing}; its columns are {list(frame.columns)} (set --text-column / --label-column / --id-column)")
    documents = []
    for index, row in enumerate(frame.itertuples(index=False)):
        values = dict(zip(frame.columns, row))
        label = values.get(label_column) if label_column else None
        label = None if label is None or (isinstance(label, float) and label != label) else int(label)
        doc_id = str(values[id_column]) if id_column else str(index)
        documents.append(Document(doc_id, index, values[text_column], label))
    ids = [d.doc_id for d in documents]
    if len(set(ids)) != len(ids):
        raise DataError(f"the ids in column {id_column!r} are not unique")
    return documents


@dataclass
class RunSummary:
    total: int
    already_done: int
    processed: int = 0
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    not_converged: int = 0


def _record(document: Document, attribution, per_layer) -> dict:
    return {
        "doc_id": document.doc_id,
        "index": document.index,
        "label": document.label,
        "text_sha1": hashlib.sha1(document.text.encode()).hexdigest(),
        "tokens": list(attribution.tokens),
        "input_ids": list(attribution.input_ids),
        "scores": [float(s) for s in attribution.scores],
        "delta": float(attribution.delta),
        "relative_error": float(attribution.relative_error),
        "n_steps": int(attribution.n_steps),
        "model_evaluations": int(attribution.model_evaluations),
        "converged": bool(attribution.converged),
        "probabilities": [float(p) for p in attribution.probabilities],
        "predicted_label": int(attribution.predicted_label),
        "target": int(attribution.target),
        "truncated_tokens": int(attribution.truncated_tokens),
        "attention_per_layer": [[float(v) for v in layer] for layer in per_layer],
    }


def run_attribution(
    model,
    tokenizer,
    documents: Sequence[Document],
    store: ResultsStore,
    attribute_kwargs: dict | None = None,
    shard_size: int = 4,
    progress: bool = True,
) -> RunSummary:
    """Attribute every document not yet in ``store``; write shards of
    ``shard_size`` documents as they finish. Returns a summary."""
    from tqdm.auto import tqdm

    import pyattn
    from pyattn.attention import attention

    attribute_kwargs = dict(attribute_kwargs or {})
    done = store.done_ids()
    todo = [d for d in documents if d.doc_id not in done]
    summary = RunSummary(total=len(documents), already_done=len(documents) - len(todo))
    streamed = getattr(model.config, "attention_window", None) is not None
    pending: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(todo, desc="attributing", unit="doc", disable=not progress)
    for document in bar:
        if not isinstance(document.text, str) or not document.text.strip():
            reason = "empty text" if isinstance(document.text, str) else f"not a string ({type(document.text).__name__})"
            summary.skipped.append({"doc_id": document.doc_id, "index": document.index, "reason": reason})
            continue
        result = pyattn.attribute(model, tokenizer, document.text, **attribute_kwargs)
        try:
            received = attention(model, tokenizer, document.text, max_length=attribute_kwargs.get("max_length"), stream=streamed).received
        except ValueError as error:
            raise DataError(f"the model gave no usable attentions for document {document.doc_id}: {error}") from error
        pending.append(_record(document, result, received.per_layer[:, 0].cpu().numpy()))
        summary.processed += 1
        summary.not_converged += not result.converged
        if len(pending) >= shard_size:
            store.write_shard(pending)
            pending = []
    if pending:
        store.write_shard(pending)
    if summary.skipped:
        store.add_skipped(summary.skipped)
    summary.seconds = time.perf_counter() - start
    return summary
