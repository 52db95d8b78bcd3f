"""Running documents into a results store: the plan (:func:`plan_run`: what
is left, verifying on resume that every finished document's text is
unchanged), one :class:`pyattn.pipeline.records.Record` per document
(:func:`process_document`, :func:`record_of`), progress by tokens
(:class:`RunProgress`) and the run itself (:func:`run_attribution`; Ray's in
:mod:`pyattn.pipeline.ray_engine` goes through the same steps). One
:class:`pyattn.pipeline.store.ShardWriter` writes the records, by count and by
elapsed time. ``Ctrl-C`` stops a run cleanly: finished documents are written
and :class:`pyattn.errors.Interrupted` says how many.

A record holds the document's attention received per layer and head
(stored as a flat Parquet ``list<float32>`` beside its shape ``[L, H, N]``):
``4 * L * H`` bytes per token before compression (48 B on the demo model,
576 B on Longformer-base).

How this relates to :func:`pyattn.explain`: a dataset run goes through the
same stages as one ``explain`` call, document by document. A record is made
by :func:`pyattn.attribute` (the same attribution), attention received per
layer and head from :func:`pyattn.attention` (streamed layer by layer for
Longformer, so no layer's attention is kept), and the record's summary
metrics by :func:`pyattn.explanation.compose`, ``explain``'s comparison stage.
``pyattn compare`` and ``pyattn report`` (:mod:`pyattn.pipeline.analysis`)
compute every document's metrics and p-values with
:func:`pyattn.explanation.compare_document`, the function ``compose`` uses.
Two things stay per-document only, because they need the model's full
attention tensors or more forward passes than a dataset run should pay for:
attention rollout and faithfulness (AOPC); call :func:`pyattn.explain` on
the documents where you want them.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pyattn._checks import first_line
from pyattn.models._state import preserving
from pyattn.errors import Interrupted, ModelError, StoreError
from pyattn.explanation import label_names
from pyattn.model_attention import ready_for_attention
from pyattn.pipeline.documents import Document, skip_reason
from pyattn.pipeline.loading import resolve_labels
from pyattn.pipeline.records import Record
from pyattn.pipeline.store import ResultsStore, ShardWriter

# RunProgress, finish_run, record_of and runnable_with_sizes are the steps
# the Ray engine shares with run_attribution (importable, not user API).
__all__ = ["RunSummary", "build_record", "plan_run", "process_document", "run_attribution", "text_hash"]


@dataclass
class RunSummary:
    """What a dataset run did (returned by :func:`run_attribution`, and
    :func:`plan_run`'s plan before it starts).

    Attributes
    ----------
    total : int
        Documents given.
    already_done : int
        Found in the store (a resumed run skips them).
    processed : int
        Attributed and written in this run.
    skipped : list of dict
        ``doc_id``, ``index`` and ``reason`` of each document that cannot run.
    seconds : float
        Wall time of the run.
    not_converged : int
        Records whose attribution did not reach its completeness tolerance.

    Examples
    --------
    >>> summary = RunSummary(total=3, already_done=1)
    >>> summary.processed, summary.skipped, summary.not_converged
    (0, [], 0)
    """
    total: int
    already_done: int
    processed: int = 0
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    not_converged: int = 0


def text_hash(text: str) -> str:
    """SHA-1 of a document's UTF-8 text, as stored in ``text_sha1`` (a resumed
    run refuses a document whose text has changed since).

    Parameters
    ----------
    text : str

    Returns
    -------
    str
        40 hex digits.

    Examples
    --------
    >>> text_hash("hello")  # the SHA-1 test value of "hello"
    'aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d'
    """
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


# ----------------------------------------------------------------- records
def build_record(document: Document, attribution, per_head, special_tokens, names: dict[int, str]) -> Record:
    """The :class:`Record` of one document from its attribution and its
    attention received ``per_head`` ``(L, H, N)`` (kept as float32); its
    ``metrics`` are :func:`pyattn.explanation.compose`'s similarity table
    (views ``final`` and ``all``, mask ``no_special``), as :func:`pyattn.explain`
    computes them.

    Examples
    --------
    >>> import numpy as np, pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> text = "the borrow checker rejects the program"
    >>> attribution = pyattn.attribute(model, tokenizer, text, n_steps=16)
    >>> per_head = np.ones((3, 4, len(attribution.tokens)))
    >>> record = build_record(Document("a", 0, text, 1), attribution, per_head, tokenizer.all_special_tokens, {1: "programming languages"})
    >>> record.attention.dtype, record.label_name, sorted(record.metrics)
    (dtype('float32'), 'programming languages', ['all', 'final'])
    """
    import numpy as np

    from pyattn.explanation import compose

    per_head = np.asarray(per_head, dtype=np.float32)
    # The same comparison stage as pyattn.explain (views final and all, mask no_special).
    metrics = compose(attribution, per_head, special_tokens=special_tokens, masks=["no_special"]).similarity
    return Record(
        doc_id=document.doc_id,
        index=document.index,
        label=document.label,
        label_name=names.get(document.label) if document.label is not None else None,
        text_sha1=text_hash(document.text),
        tokens=list(attribution.tokens),
        input_ids=np.asarray(attribution.input_ids, dtype=np.int64),
        scores=np.asarray(attribution.scores, dtype=np.float64),
        delta=float(attribution.delta),
        relative_error=float(attribution.relative_error),
        # the dtype the model ran in, and the completeness error against the
        # float32 model's own outputs (the same as relative_error in float32)
        compute_dtype=attribution.autocast_dtype or "float32",
        float32_relative_error=float(attribution.relative_error if attribution.float32_relative_error is None else attribution.float32_relative_error),
        n_steps=int(attribution.n_steps),
        model_evaluations=int(attribution.model_evaluations),
        converged=bool(attribution.converged),
        # F of every class on the input, and what F is (softmax, sigmoid or raw)
        output=attribution.output,
        outputs=np.asarray(attribution.outputs, dtype=np.float64),
        predicted_label=int(attribution.predicted_label),
        predicted_label_name=names.get(int(attribution.predicted_label)),
        target=int(attribution.target),
        target_name=names.get(int(attribution.target)),
        truncated_tokens=int(attribution.truncated_tokens),
        # attention received per layer and head, float32: heads can be summed
        # or weighted by any head importance later
        attention=per_head,
        # similarity to attention received (final layer, all layers; special
        # tokens dropped); `pyattn compare` computes every choice
        metrics={row.pop("attention"): row for row in metrics.to_dict(orient="records")},
    )


@preserving(gradients=True)
def process_document(model, tokenizer, document: Document, attribute_kwargs: dict, names: dict[int, str] | None = None) -> dict:
    """Attribution and attention received of one document, as a store record
    (the same stages as :func:`pyattn.explain`: see the module docstring).

    Parameters
    ----------
    model, tokenizer
        A sequence classifier and its tokenizer.
    document : Document
        With a resolved (integer or None) label.
    attribute_kwargs : dict
        Passed to :func:`pyattn.attribute` (``n_steps``, ``max_length``, ...).
    names : dict of int to str, optional
        Class names (default :func:`pyattn.explanation.label_names` of the model).

    Returns
    -------
    dict
        One record in its stored row form (:meth:`Record.to_row` of
        :func:`build_record`; :meth:`Record.from_row` reads it back):
        ``doc_id``, ``index``, ``label`` and its name,
        ``text_sha1``, ``tokens`` and ``input_ids`` (N), ``scores`` (the
        attribution, N), ``delta``, ``relative_error``, ``n_steps``,
        ``model_evaluations``, ``converged``, ``output`` (what F is:
        softmax, sigmoid or raw) and ``outputs`` (F of each class, C), predicted
        and target class and names, ``truncated_tokens``, ``attention_shape``
        ``[L, H, N]`` and ``attention_per_head`` (flat, float32), and
        ``metrics`` (JSON rows of :func:`pyattn.explanation.compose`'s similarity
        table, mask ``no_special``).

    Raises
    ------
    ModelError
        If the model returns no usable attentions.

    Examples
    --------
    >>> from pyattn import load_demo
    >>> model, tokenizer = load_demo()
    >>> record = process_document(model, tokenizer, Document("a", 0, "the borrow checker rejects the program", 1), {"n_steps": 16})
    >>> record["attention_shape"], len(record["attention_per_head"]) == 3 * 4 * 11, len(record["scores"])
    ([3, 4, 11], True, 11)
    >>> record["label_name"], record["predicted_label_name"], record["converged"]
    ('programming languages', 'programming languages', True)
    """
    import warnings

    from pyattn.attribution import attribute
    from pyattn.models.inputs import TruncationWarning

    attribute_kwargs = dict(attribute_kwargs)
    route = attribute_kwargs.pop("attention_route", "auto")  # how attention is read, not an attribution setting
    ready_for_attention(model, route)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # recorded in truncated_tokens
        result = attribute(model, tokenizer, document.text, **attribute_kwargs)
    return record_of(model, tokenizer, document, result, attribute_kwargs.get("max_length"), names, route)


@preserving()
def record_of(model, tokenizer, document: Document, result, max_length: int | None, names: dict[int, str] | None = None,
              attention_route: str = "auto") -> dict:
    """The store record of one document's finished attribution: its
    attention received is computed here."""
    import warnings

    from pyattn.model_attention import attention
    from pyattn.models.inputs import TruncationWarning

    route = ready_for_attention(model, attention_route)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        streamed = route == "band"
        try:
            received = attention(model, tokenizer, document.text, max_length=max_length, per_head=True, stream=streamed, route=attention_route).received
        except (ValueError, IndexError) as error:
            raise ModelError(f"the model gave no usable attentions for document {document.doc_id}: {first_line(error)}") from error
    per_head = received.per_layer[:, 0].detach().cpu().numpy()
    return build_record(document, result, per_head, tokenizer.all_special_tokens, label_names(model) if names is None else names).to_row()


# --------------------------------------------------------------------- runs
def plan_run(store: ResultsStore, documents: Sequence[Document], force: bool = False) -> tuple[list[Document], RunSummary]:
    """What is left to do in ``store``: the documents not yet stored (those
    that cannot run go to ``summary.skipped``). A stored document whose text
    has changed since is always refused (a :class:`StoreError` naming them):
    its result would no longer describe its text. ``force`` is accepted for
    the callers' sake and changes nothing here.

    Parameters
    ----------
    store : ResultsStore
    documents : sequence of Document
    force : bool

    Returns
    -------
    todo : list of Document
        To run, in input order.
    summary : RunSummary
        ``total``, ``already_done`` and ``skipped`` filled in.

    Raises
    ------
    StoreError
        If a stored document's text has changed.

    Examples
    --------
    >>> import os, tempfile
    >>> from pyattn.pipeline.store import ResultsStore
    >>> folder = tempfile.TemporaryDirectory()
    >>> with ResultsStore.create(os.path.join(folder.name, "run"), {"model": "demo"}) as store:
    ...     _ = store.write_shard([{"doc_id": "a", "index": 0, "text_sha1": text_hash("a stored text")}])
    >>> documents = [Document("a", 0, "a stored text", 1), Document("b", 1, "a new text", 0), Document("c", 2, " ", 0)]
    >>> todo, summary = plan_run(store, documents)
    >>> [d.doc_id for d in todo], summary.already_done, summary.skipped
    (['b'], 1, [{'doc_id': 'c', 'index': 2, 'reason': 'empty text'}])
    >>> plan_run(store, [Document("a", 0, "the text changed", 1)])
    Traceback (most recent call last):
    ...
    pyattn.errors.StoreError: cannot resume ...: 1 finished document(s) have a different text now: 'a' (row 0); use a new store (another `path`)
    >>> folder.cleanup()
    """
    done = store.done_hashes()
    changed = [d for d in documents if d.doc_id in done and done[d.doc_id] is not None and isinstance(d.text, str) and text_hash(d.text) != done[d.doc_id]]
    if changed:
        names = ", ".join(f"{d.doc_id!r} (row {d.index})" for d in changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise StoreError(f"cannot resume {store.path}: {len(changed)} finished document(s) have a different text now: {names}; use a new store (another `path`)")
    todo = [d for d in documents if d.doc_id not in done]
    summary = RunSummary(total=len(documents), already_done=len(documents) - len(todo))
    runnable = []
    for document in todo:
        reason = skip_reason(document)
        if reason:
            summary.skipped.append({"doc_id": document.doc_id, "index": document.index, "reason": reason})
        else:
            runnable.append(document)
    return runnable, summary


def runnable_with_sizes(tokenizer, documents, summary, max_length: int | None) -> tuple[list, list[int]]:
    """Tokenize each document once: those whose every token is unknown to the
    tokenizer have nothing to explain and are skipped with that reason (as
    empty texts are), so one odd row does not stop a dataset run (a tokenizer
    that does not fit the data as a whole is refused before the run: the CLI
    checks that); the others are returned with their lengths as attributed
    ([CLS] and [SEP] in, capped at ``max_length``)."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    kept, sizes = [], []
    for document in documents:
        ids = tokenizer(document.text, add_special_tokens=False)["input_ids"]
        if unknown is not None and ids and all(i == unknown for i in ids):
            summary.skipped.append({"doc_id": document.doc_id, "index": document.index,
                                    "reason": f"every one of its {len(ids)} token(s) is unknown to the tokenizer"})
            continue
        kept.append(document)
        sizes.append(min(len(ids) + 2, max_length) if max_length else len(ids) + 2)
    return kept, sizes


class RunProgress:
    """A progress bar by tokens (so its ETA weighs long documents by their
    length), with documents counted beside it."""

    def __init__(self, sizes: Sequence[int], enabled: bool, desc: str = "attributing"):
        from tqdm.auto import tqdm

        self.documents = len(sizes)
        self.done = 0
        self.bar = tqdm(total=int(sum(sizes)), desc=desc, unit="tok", unit_scale=True, disable=not enabled, dynamic_ncols=True)
        self.bar.set_postfix_str(f"0/{self.documents} docs")
        self.shown: dict = {}  # per document in flight: tokens already shown

    def within(self, tokens: int, key=None):
        """A callback for :func:`pyattn.attribute`'s ``on_progress(done,
        planned)``: moves the bar through document ``key`` as its
        integration nodes are evaluated (up to 95% of its tokens: a further
        refinement may follow). Several documents may be in flight at once
        (grouped batches); each moves its own share."""

        def on_progress(done: int, planned: int) -> None:
            target = int(tokens * min(0.95, done / max(planned, 1)))
            shown = self.shown.get(key, 0)
            if target > shown:
                self.bar.update(target - shown)
                self.shown[key] = target

        return on_progress

    def update(self, tokens: int, key=None) -> None:
        """Document ``key`` is finished: the rest of its tokens."""
        self.done += 1
        self.bar.update(int(tokens) - self.shown.pop(key, 0))
        self.bar.set_postfix_str(f"{self.done}/{self.documents} docs")

    def close(self) -> None:
        self.bar.close()


def finish_run(store: ResultsStore, writer: ShardWriter, summary: RunSummary, start: float) -> None:
    """Write what is pending and the skipped list (also after Ctrl-C)."""
    writer.flush()
    if summary.skipped:
        store.add_skipped(summary.skipped)
    summary.seconds = time.perf_counter() - start


def _attributed_records(model, tokenizer, documents, sizes, attribute_kwargs: dict, names, bar: RunProgress, group: bool):
    """``(document, size, record)`` for each document as it finishes (grouped
    runs may finish documents out of order)."""
    import warnings

    from pyattn.attribution import attribute_stream
    from pyattn.models.inputs import TruncationWarning

    route = attribute_kwargs.get("attention_route", "auto")
    ready_for_attention(model, route)
    kwargs = {k: v for k, v in attribute_kwargs.items() if k not in ("target", "on_progress", "attention_route")}
    targets = [attribute_kwargs.get("target")] * len(documents)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # recorded in truncated_tokens
        stream = attribute_stream(model, tokenizer, [d.text for d in documents], targets, group=group,
                                  on_progress_for=lambda i: bar.within(sizes[i], key=documents[i].doc_id), **kwargs)
        with contextlib.closing(stream):  # ended here, also when a record fails: the model is put back now
            for index, result in stream:
                document = documents[index]
                yield document, sizes[index], record_of(model, tokenizer, document, result, attribute_kwargs.get("max_length"), names, route)


@preserving(gradients=True)
def run_attribution(
    model,
    tokenizer,
    documents: Sequence[Document],
    store: ResultsStore,
    attribute_kwargs: dict | None = None,
    shard_size: int = 4,
    progress: bool = True,
    flush_seconds: float | None = 60.0,
    force: bool = False,
    on_record: Callable[[dict], Any] | None = None,
    label_column: str | None = "label",
    group: bool = True,
) -> RunSummary:
    """Attribute every document not yet in ``store`` in this process; a shard
    is written every ``shard_size`` documents or ``flush_seconds`` seconds.
    Ctrl-C writes the finished documents and raises :class:`Interrupted`.
    ``label_column`` None allows documents without labels. With ``group``
    several documents' integration nodes share a forward + backward when
    they fit (:func:`pyattn.attribution.attribute_stream`; results equal the
    one-at-a-time ones); a document is written only when it is finished.

    Parameters
    ----------
    model, tokenizer
        A sequence classifier and its tokenizer.
    documents : sequence of Document
        Labels as class indices or class names (resolved with
        :func:`resolve_labels`).
    store : ResultsStore
        Created (holding its lock).
    attribute_kwargs : dict, optional
        Passed to :func:`pyattn.attribute`.
    shard_size : int
    progress : bool
        Show a progress bar (by tokens).
    flush_seconds : float or None
    force : bool
        As for :func:`plan_run`.
    on_record : callable, optional
        Called with each record after it is queued.
    label_column : str or None
        None allows documents without labels.
    group : bool
        Let several documents' nodes share a forward + backward.

    Returns
    -------
    RunSummary

    Raises
    ------
    Interrupted
        On Ctrl-C, after writing what was finished.
    DataError, StoreError, ModelError
        Bad labels, a changed text on resume, a model without attentions.

    Examples
    --------
    >>> import os, tempfile
    >>> from pyattn import load_demo
    >>> from pyattn.pipeline.store import ResultsStore
    >>> model, tokenizer = load_demo()
    >>> documents = [Document("a", 0, "the borrow checker rejects the program", "programming languages"), Document("b", 1, "", None)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with ResultsStore.create(os.path.join(folder, "run"), {"model": "demo"}) as store:
    ...         summary = run_attribution(model, tokenizer, documents, store, {"n_steps": 16}, progress=False)
    ...     stored = ResultsStore.open(store.path).records()
    >>> summary.total, summary.processed, summary.skipped
    (2, 1, [{'doc_id': 'b', 'index': 1, 'reason': 'empty text'}])
    >>> stored[["doc_id", "label", "n_steps"]].values.tolist()
    [['a', 1, 16]]
    """
    attribute_kwargs = dict(attribute_kwargs or {})
    documents = resolve_labels(documents, model, label_column)
    todo, summary = plan_run(store, documents, force)
    todo, sizes = runnable_with_sizes(tokenizer, todo, summary, attribute_kwargs.get("max_length"))
    names = label_names(model)
    writer = ShardWriter(store, shard_size, flush_seconds)
    start = time.perf_counter()
    bar = RunProgress(sizes, progress)
    try:
        for document, size, record in _attributed_records(model, tokenizer, todo, sizes, attribute_kwargs, names, bar, group):
            writer.add(record)
            summary.processed += 1
            summary.not_converged += not record["converged"]
            bar.update(size, key=document.doc_id)
            if on_record is not None:
                on_record(record)
    except KeyboardInterrupt:
        bar.close()
        finish_run(store, writer, summary, start)
        raise Interrupted(summary) from None
    except BaseException:
        bar.close()
        finish_run(store, writer, summary, start)  # finished documents are kept
        raise
    bar.close()
    finish_run(store, writer, summary, start)
    return summary


