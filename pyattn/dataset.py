"""Dataset runs: read documents from a file, attribute each, and keep the
results in a :class:`pyattn.store.ResultsStore` as they are made, so that a
crash loses at most one shard's worth and ``resume`` picks up where it
stopped."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from pyattn.store import ResultsStore

__all__ = [
    "Document",
    "DataError",
    "RunSummary",
    "compare_results",
    "load_documents",
    "load_model",
    "process_document",
    "report_results",
    "run_attribution",
    "skip_reason",
]


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


def _record(document: Document, attribution, per_head, special_tokens) -> dict:
    import json

    from pyattn.similarity import compare

    choices = {"final": per_head[-1].sum(0), "all": per_head.sum((0, 1))}
    metrics = compare(attribution.scores, choices, attribution.tokens, special_tokens=special_tokens, masks=["no_special"])
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
        # attention received per layer and head, (L, H, N): heads can be
        # summed or weighted by any head importance later
        "attention_per_head": per_head.astype("float32").tolist(),
        # similarity to attention received (final layer, all layers; special
        # tokens dropped), as JSON rows; `pyattn compare` computes every choice
        "metrics": json.dumps(metrics.to_dict(orient="records")),
    }


def skip_reason(document: Document) -> str | None:
    """Why a document cannot be attributed (None if it can)."""
    if not isinstance(document.text, str):
        return f"not a string ({type(document.text).__name__})"
    if not document.text.strip():
        return "empty text"
    return None


def process_document(model, tokenizer, document: Document, attribute_kwargs: dict) -> dict:
    """Attribution and attention received of one document, as a store record."""
    import pyattn
    from pyattn.attention import attention

    result = pyattn.attribute(model, tokenizer, document.text, **attribute_kwargs)
    streamed = getattr(model.config, "attention_window", None) is not None
    try:
        received = attention(model, tokenizer, document.text, max_length=attribute_kwargs.get("max_length"), per_head=True, stream=streamed).received
    except ValueError as error:
        raise DataError(f"the model gave no usable attentions for document {document.doc_id}: {error}") from error
    return _record(document, result, received.per_layer[:, 0].cpu().numpy(), tokenizer.all_special_tokens)


def load_model(name: str, tokenizer_name: str | None = None, trust_remote_code: bool = False, device: str | None = None):
    """``demo`` is the shipped demo model; anything else goes to transformers
    (a local path or a hub name), with remote code off unless asked for."""
    import pyattn

    if name == "demo":
        model, tokenizer = pyattn.load_demo()
    else:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            model = AutoModelForSequenceClassification.from_pretrained(name, trust_remote_code=trust_remote_code).eval()
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise DataError(f"cannot load model {name!r}: {error}") from error
    if device:
        model = model.to(device)
    return model, tokenizer


class _ShardWriter:
    """Collects records and writes a shard every ``size`` of them."""

    def __init__(self, store: ResultsStore, size: int):
        self.store, self.size, self.pending = store, size, []

    def add(self, record: dict) -> None:
        self.pending.append(record)
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.write_shard(self.pending)
            self.pending = []


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

    attribute_kwargs = dict(attribute_kwargs or {})
    done = store.done_ids()
    todo = [d for d in documents if d.doc_id not in done]
    summary = RunSummary(total=len(documents), already_done=len(documents) - len(todo))
    writer = _ShardWriter(store, shard_size)
    start = time.perf_counter()
    for document in tqdm(todo, desc="attributing", unit="doc", disable=not progress):
        reason = skip_reason(document)
        if reason:
            summary.skipped.append({"doc_id": document.doc_id, "index": document.index, "reason": reason})
            continue
        record = process_document(model, tokenizer, document, attribute_kwargs)
        writer.add(record)
        summary.processed += 1
        summary.not_converged += not record["converged"]
    writer.flush()
    if summary.skipped:
        store.add_skipped(summary.skipped)
    summary.seconds = time.perf_counter() - start
    return summary


def _per_head(record):
    """A stored record's attention received, (L, H, N) float64."""
    import numpy as np

    return np.stack([np.stack(layer) for layer in record["attention_per_head"]]).astype(np.float64)  # (L, H, N)


def compare_results(store: ResultsStore, head_importance=None, ranges=(), masks=("no_special", "alphabetic", "no_stopwords"), special_tokens=(), progress: bool = True):
    """Similarity of every stored document's attributions to its attention
    received: final layer, all layers, each layer range (numbered from 0, inclusive), and the same
    scaled by ``head_importance`` ``(L, H)`` when given; for each mask.

    Writes ``metrics.parquet`` (per document), ``metrics_summary.csv`` (means
    per attention choice x mask), ``tokens.parquet`` / ``tokens.csv`` (token
    types across the dataset) into the store and returns
    ``(per_document, summary, tokens)``."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from pyattn.longformer import AttentionReceived
    from pyattn.similarity import attention_choices, compare, dataset_similarity
    from pyattn.tokens import dataset_token_table, export_table

    records = store.records()
    if records.empty:
        raise DataError(f"{store.path} holds no results yet: run `pyattn attribute` first")
    weights = None if head_importance is None else np.asarray(head_importance, dtype=np.float64)
    tables, ids, token_docs = [], [], []
    for _, record in tqdm(records.iterrows(), total=len(records), desc="comparing", unit="doc", disable=not progress):
        per_head = _per_head(record)
        if weights is not None and weights.shape != per_head.shape[:2]:
            raise DataError(f"head importance has shape {weights.shape} but the stored attention has {per_head.shape[0]} layers x {per_head.shape[1]} heads")
        plain = AttentionReceived(torch.from_numpy(per_head.sum(1))[:, None], head_weighted=False, per_head=False)
        scaled = None if weights is None else AttentionReceived(torch.from_numpy((per_head * weights[:, :, None]).sum(1))[:, None], head_weighted=True, per_head=False)
        choices = attention_choices(plain, scaled, ranges)
        tokens = list(record["tokens"])
        tables.append(compare(np.asarray(record["scores"]), choices, tokens, special_tokens=special_tokens, masks=masks))
        ids.append(record["doc_id"])
        token_docs.append((tokens, np.asarray(record["scores"])))
    per_document, summary = dataset_similarity(tables, ids)
    tokens_table = dataset_token_table(token_docs)
    export_table(per_document, os.path.join(store.path, "metrics.parquet"))
    export_table(summary, os.path.join(store.path, "metrics_summary.csv"))
    export_table(tokens_table, os.path.join(store.path, "tokens.parquet"))
    export_table(tokens_table, os.path.join(store.path, "tokens.csv"))
    return per_document, summary, tokens_table


def report_results(store: ResultsStore, out: str | None = None, head_importance=None, special_tokens=(), label_names=None, progress: bool = True) -> str:
    """An HTML report per stored document and an ``index.html`` (in
    ``STORE/reports`` unless ``out``); returns the index's path."""
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from pyattn.report import document_report, index_report
    from pyattn.similarity import similarity

    out = out or os.path.join(store.path, "reports")
    records = store.records()
    if records.empty:
        raise DataError(f"{store.path} holds no results yet: run `pyattn attribute` first")
    rows = []
    for _, record in tqdm(records.iterrows(), total=len(records), desc="reports", unit="doc", disable=not progress):
        per_head = _per_head(record)
        scores = np.asarray(record["scores"])
        name = f"document-{record['index']}.html"
        choices = {"final": per_head[-1].sum(0), "all": per_head.sum((0, 1))}
        predicted = label_names[record["predicted_label"]] if label_names else record["predicted_label"]
        document_report(
            os.path.join(out, name), list(record["tokens"]), scores, choices, title=f"document {record['doc_id']}",
            facts={"label": record["label"], "predicted": predicted, "steps": record["n_steps"], "completeness error": f"{record['relative_error']:.2%}"},
            special_tokens=special_tokens, per_layer=list(per_head.sum(1)), per_head=per_head[-1], head_importance=head_importance,
        )
        metrics = similarity(scores, choices["all"])
        rows.append({"document": str(record["doc_id"]), "report": name, "label": record["label"], "predicted": predicted,
                     "tokens": len(scores), "steps": int(record["n_steps"]),
                     "spearman, final": similarity(scores, choices["final"])["spearman_rho"], "spearman, all": metrics["spearman_rho"]})
    return index_report(os.path.join(out, "index.html"), pd.DataFrame(rows), title=f"pyattn results: {store.manifest().get('model')}")
