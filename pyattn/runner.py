"""Running documents into a results store, and reading the store back.

Both engines (one process here, Ray in :mod:`pyattn.ray_engine`) go through
the same steps: the model is loaded and checked (:func:`load_model`), labels
are resolved against it (:func:`resolve_labels`), :func:`plan_run` decides
what is left to do (verifying on resume that every finished document's text
is unchanged), each document becomes one record (:func:`process_document`)
and one :class:`pyattn.store.ShardWriter` writes them, by count and by
elapsed time. ``Ctrl-C`` stops a run cleanly: finished documents are written
and :class:`Interrupted` says how many.

A record holds the document's attention received per layer and head as a
flat Parquet ``list<float32>`` (``attention_per_head``, shape in
``attention_shape`` = ``[L, H, N]``): ``4 * L * H`` bytes per token before
compression (48 B on the demo model, 576 B on Longformer-base).

How this relates to :func:`pyattn.explain`: a dataset run goes through the
same stages as one ``explain`` call, document by document. A record is made
by :func:`pyattn.attribute` (the same attribution), attention received per
layer and head from :func:`pyattn.attention` (streamed layer by layer for
Longformer, so no layer's attention is kept), and the record's summary
metrics by :func:`pyattn.explanation.compose`, ``explain``'s comparison stage.
:func:`compare_results` computes the dataset's tables from the stored
records with ``compose``'s own building blocks
(:func:`pyattn.explanation.attention_views` and
:func:`pyattn.compare.similarity.compare`), and :func:`report_results` rebuilds each
document's :class:`pyattn.Explanation` with ``compose`` from its record. Two
things stay per-document only, because they need the model's full
attention tensors or more forward passes than a dataset run should pay for:
attention rollout and faithfulness (AOPC); call :func:`pyattn.explain` on
the documents where you want them.
"""

from __future__ import annotations

import hashlib
import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pyattn.model_attention import ready_for_attention
from pyattn.explanation import label_names
from pyattn.dataset import Document, skip_reason
from pyattn.errors import DataError, InputError, Interrupted, ModelError, StoreError  # Interrupted, ModelError importable here as before 1.1
from pyattn.store import ResultsStore, ShardWriter
from pyattn._checks import first_line, head_importance_tensor
from pyattn.models._state import preserving

__all__ = [
    "Interrupted",
    "ModelError",
    "RunSummary",
    "check_device",
    "compare_results",
    "label_names",
    "load_model",
    "plan_run",
    "process_document",
    "report_results",
    "resolve_labels",
    "run_attribution",
    "text_hash",
]


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


# ----------------------------------------------------------------- devices
def check_device(device: str | None) -> str | None:
    """``device`` if it names a device this machine has, else a ValueError
    naming it. None (the default device) passes.

    Parameters
    ----------
    device : str or None
        ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns
    -------
    str or None
        ``device`` unchanged.

    Raises
    ------
    ValueError
        If it is not a device, or not one this machine has.

    Examples
    --------
    >>> check_device("cpu"), check_device(None)
    ('cpu', None)
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: device='gpu' is not a device: use cpu, cuda, cuda:N or mps
    """
    import torch

    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device={device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device={device!r} does not exist: no CUDA GPU is visible on this machine (use cpu)")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"device={device!r} does not exist: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return device
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"device={device!r} does not exist: MPS is not available on this machine (use cpu)")
        return device
    raise InputError(f"device={device!r}: pyattn runs on cpu, cuda, cuda:N or mps")


# ------------------------------------------------------------------ models
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def check_model(model, tokenizer, name: str = "the model") -> None:
    """Refuse a model pyattn cannot explain: a head whose output F is not
    defined (:func:`pyattn.models.inputs.output_kind`: softmax of a single-label
    classifier of at least 2 classes, sigmoid of a multi-label one, raw
    output of a regression head), or a tokenizer whose ids do not fit the
    model's vocabulary."""
    from pyattn.model_attention import refuse_block_sparse
    from pyattn.models.inputs import output_kind, pooling_fill, pools_last_non_pad

    config = model.config
    try:
        output_kind(model)
        if pools_last_non_pad(model):
            pooling_fill(model, tokenizer)
        refuse_block_sparse(model)  # every record holds attention
    except ValueError as error:
        raise ModelError(f"{name}: {error}") from None
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if vocab and len(tokenizer) > vocab:
        raise ModelError(
            f"the tokenizer has {len(tokenizer)} tokens but {name} has a vocabulary of {vocab}: they do not belong together "
            "(pass the model's own tokenizer as `tokenizer_name`)"
        )
    special = [i for i in (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) if i is not None]
    if vocab and any(i >= vocab for i in special):
        raise ModelError(f"the tokenizer's special token ids {sorted(set(special))} do not fit {name}'s vocabulary of {vocab}")


def load_model(name: str, tokenizer_name: str | None = None, trust_remote_code: bool = False, device: str | None = None):
    """Load and check a sequence classifier and its tokenizer.

    ``demo`` is the shipped demo model (``tokenizer_name`` must then be
    None); anything else goes to transformers (a local folder or a hub
    name) with remote code off unless asked for and pickled weights refused;
    the model keeps its own attention (sdpa) where pyattn reads queries and
    keys (:func:`pyattn.model_attention.attention_route`), and is switched to
    ``eager`` (which returns attention probabilities) otherwise.
    Every refusal is a one-line :class:`ModelError`: no classification head
    (transformers would add a random one), a regression head, no tokenizer
    files, a tokenizer that does not fit the model, unreadable weights.

    Parameters
    ----------
    name : str
        ``"demo"``, a local folder or a Hugging Face hub name.
    tokenizer_name : str, optional
        Another tokenizer than the model's own.
    trust_remote_code : bool
    device : str, optional

    Returns
    -------
    (model, tokenizer)
        The model in eval mode, and its tokenizer.

    Raises
    ------
    ModelError

    Examples
    --------
    >>> model, tokenizer = load_model("demo")
    >>> type(model).__name__, model.training, model.config._attn_implementation
    ('LongformerForSequenceClassification', False, 'eager')
    >>> load_model("no/such-folder")
    Traceback (most recent call last):
    ...
    pyattn.errors.ModelError: model folder 'no/such-folder' does not exist
    """
    from pyattn.demo import load_demo

    if name == "demo":
        if tokenizer_name:
            raise ModelError(f"tokenizer_name={tokenizer_name!r} cannot be used with name='demo' (the demo model has its own tokenizer); drop `tokenizer_name`")
        model, tokenizer = load_demo()
    else:
        quiet_transformers()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer_source = tokenizer_name or name
        if os.path.isdir(name):
            if not os.path.isfile(os.path.join(name, "config.json")):
                raise ModelError(f"model folder {name!r} has no config.json: it is not a saved transformers model")
            if not any(os.path.exists(os.path.join(name, f)) for f in _WEIGHT_FILES):
                raise ModelError(f"model folder {name!r} has no weights (model.safetensors or pytorch_model.bin)")
        elif os.path.sep in name or name.startswith("."):
            raise ModelError(f"model folder {name!r} does not exist")
        if os.path.isdir(tokenizer_source) and not any(os.path.exists(os.path.join(tokenizer_source, f)) for f in _TOKENIZER_FILES):
            where = f"tokenizer_name={tokenizer_source!r} is a folder with" if tokenizer_name else f"model folder {tokenizer_source!r} has"
            raise ModelError(
                f"{where} no tokenizer files (tokenizer.json, vocab.txt, ...)"
                + ("" if tokenizer_name else "; save the tokenizer there or pass `tokenizer_name`")
            )
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name, trust_remote_code=trust_remote_code, output_loading_info=True
            )
        except Exception as error:  # transformers, safetensors and torch.load raise many types
            text = str(error)
            if "Weights only load failed" in text or "UnpicklingError" in type(error).__name__:
                raise ModelError(f"cannot load model {name!r}: its weights are a pickle that holds more than tensors; pyattn loads only safe weights") from None
            if "trust_remote_code" in text:
                raise ModelError(f"model {name!r} needs its own code to run; pass trust_remote_code=True only if you trust its source") from None
            raise ModelError(f"cannot load model {name!r}: {type(error).__name__}: {first_line(error)}") from None
        model = model.eval()
        head = [key for key in info.get("missing_keys", ()) if not key.startswith(getattr(model, "base_model_prefix", "\0") + ".")]
        if head:
            raise ModelError(
                f"model {name!r} has no trained classification head (missing {sorted(head)[:3]}): transformers would add a random one; "
                "fine-tune it for classification first"
            )
        if info.get("mismatched_keys"):
            raise ModelError(f"model {name!r} has weights of the wrong shape for its config: {sorted(info['mismatched_keys'])[:3]}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=trust_remote_code)
        except Exception as error:
            raise ModelError(f"cannot load the tokenizer {tokenizer_source!r}: {type(error).__name__}: {first_line(error)}") from None
        check_model(model, tokenizer, f"model {name!r}")
    ready_for_attention(model)
    if device:
        model = model.to(device)
    return model, tokenizer


def resolve_labels(documents: Sequence[Document], model, column: str | None = "label") -> list[Document]:
    """Labels as class indices of ``model``: class names mapped through its
    ``label2id`` (case as written), indices checked against its classes.
    With a label ``column``, every document with a text needs a label.

    Parameters
    ----------
    documents : sequence of Document
    model
        A sequence classifier (its ``config.num_labels`` and ``label2id``).
    column : str or None
        The label column the documents came from (named in errors); None
        allows documents without labels.

    Returns
    -------
    list of Document
        New documents with integer (or None) labels.

    Raises
    ------
    DataError
        Naming the row: a missing label, an unknown class name, an index out
        of range.

    Examples
    --------
    >>> from pyattn import load_demo
    >>> model = load_demo()[0]
    >>> [d.label for d in resolve_labels([Document("a", 0, "x", "programming languages"), Document("b", 1, "y", 0)], model)]
    [1, 0]
    >>> resolve_labels([Document("a", 0, "x", 5)], model)
    Traceback (most recent call last):
    ...
    pyattn.errors.DataError: row 0 (id 'a'): label 5 is out of range: the model has 2 classes, 0..1
    """
    from pyattn.models.inputs import output_kind

    classes = int(model.config.num_labels)
    label2id = {str(k): int(v) for k, v in (getattr(model.config, "label2id", None) or {}).items()}
    regression = output_kind(model) == "raw"
    resolved = []
    for document in documents:
        label = document.label
        where = f"row {document.index} (id {document.doc_id!r})"
        if regression and label is not None and column is not None:
            raise DataError(f"{where}: the model has a regression head, whose labels are not classes; pass label_column=None to run without labels")
        if label is None and column is not None and skip_reason(document) is None:
            raise DataError(f"{where}: no label in column {column!r}; fill it in, or pass label_column=None to run without labels")
        if isinstance(label, str):
            if label not in label2id:
                raise DataError(f"{where}: label {label!r} is not one of the model's class names {sorted(label2id)}")
            label = label2id[label]
        elif label is not None and not 0 <= label < classes:
            raise DataError(f"{where}: label {label} is out of range: the model has {classes} classes, 0..{classes - 1}")
        resolved.append(Document(document.doc_id, document.index, document.text, label))
    return resolved


# ----------------------------------------------------------------- records
def _record(document: Document, attribution, per_head, special_tokens, names: dict[int, str]) -> dict:
    import numpy as np

    from pyattn.explanation import compose

    per_head = np.asarray(per_head, dtype=np.float32)
    # The same comparison stage as pyattn.explain (views final and all, mask no_special).
    metrics = compose(attribution, per_head, special_tokens=special_tokens, masks=["no_special"]).similarity
    return {
        "doc_id": document.doc_id,
        "index": document.index,
        "label": document.label,
        "label_name": names.get(document.label) if document.label is not None else None,
        "text_sha1": text_hash(document.text),
        "tokens": list(attribution.tokens),
        "input_ids": [int(i) for i in attribution.input_ids],
        "scores": [float(s) for s in attribution.scores],
        "delta": float(attribution.delta),
        "relative_error": float(attribution.relative_error),
        # the dtype the model ran in, and the completeness error against the
        # float32 model's own outputs (the same as relative_error in float32)
        "compute_dtype": attribution.autocast_dtype or "float32",
        "float32_relative_error": float(attribution.relative_error if attribution.float32_relative_error is None else attribution.float32_relative_error),
        "n_steps": int(attribution.n_steps),
        "model_evaluations": int(attribution.model_evaluations),
        "converged": bool(attribution.converged),
        # F of every class on the input, and what F is (softmax, sigmoid or raw)
        "output": attribution.output,
        "outputs": [float(p) for p in attribution.outputs],
        "predicted_label": int(attribution.predicted_label),
        "predicted_label_name": names.get(int(attribution.predicted_label)),
        "target": int(attribution.target),
        "target_name": names.get(int(attribution.target)),
        "truncated_tokens": int(attribution.truncated_tokens),
        # attention received per layer and head, (L, H, N) flattened, float32:
        # heads can be summed or weighted by any head importance later
        "attention_shape": [int(s) for s in per_head.shape],
        "attention_per_head": per_head.ravel().tolist(),
        # similarity to attention received (final layer, all layers; special
        # tokens dropped), as JSON rows; `pyattn compare` computes every choice
        "metrics": json.dumps(metrics.to_dict(orient="records")),
    }


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
        One record: ``doc_id``, ``index``, ``label`` and its name,
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
    return _record(document, result, per_head, tokenizer.all_special_tokens, label_names(model) if names is None else names)


def attribution_from_record(record):
    """The :class:`pyattn.Attribution` a stored record was made from (the
    fields a record keeps; per-level details such as ``tries`` are not
    stored)."""
    import numpy as np

    from pyattn.attribution import Attribution

    scores = np.asarray(record["scores"], dtype=np.float64)
    delta = float(record["delta"])
    return Attribution(
        tokens=list(record["tokens"]),
        input_ids=[int(i) for i in record["input_ids"]],
        scores=scores,
        # stores written before pyattn named F kept softmax probabilities as "probabilities"
        outputs=np.asarray(record["outputs"] if "outputs" in record else record["probabilities"], dtype=np.float64),
        predicted_label=int(record["predicted_label"]),
        target=int(record["target"]),
        delta=delta,
        output_gap=float(scores.sum()) - delta,  # delta = sum(scores) - gap
        n_steps=int(record["n_steps"]),
        model_evaluations=int(record["model_evaluations"]),
        converged=bool(record["converged"]),
        truncated_tokens=int(record["truncated_tokens"]),
        output=str(record["output"]) if "output" in record else "softmax",
    )


def stored_attention(record):
    """A stored record's attention received, ``(L, H, N)`` float64 (flat
    ``list<float32>`` with ``attention_shape``, or the older nested lists)."""
    import numpy as np

    values = record["attention_per_head"]
    shape = record.get("attention_shape") if hasattr(record, "get") else None
    if shape is not None and not (isinstance(shape, float) and math.isnan(shape)):
        return np.asarray(values, dtype=np.float64).reshape([int(s) for s in shape])
    return np.stack([np.stack(layer) for layer in values]).astype(np.float64)


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
    >>> from pyattn.store import ResultsStore
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
    >>> from pyattn.store import ResultsStore
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


# ------------------------------------------------------- reading the store
def parse_layer_ranges(layers: str | None, num_layers: int) -> list[tuple[int, int]]:
    """``"0-5,6-11"`` -> ``[(0, 5), (6, 11)]``: layers numbered from 0,
    negative numbers from the end (``-1`` the last), ranges inclusive; each
    checked against ``num_layers``. Returns the ranges as 0-based indices."""
    import re

    ranges = []
    for part in (layers or "").split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(-?\d+)(?:\s*-\s*(-?\d+))?", part)
        if not match:
            raise InputError(f"layers={part!r} is not a layer or range: use e.g. 0-5,6-11 (layers numbered from 0, -1 the last)")
        bounds = []
        for value in (match.group(1), match.group(2) or match.group(1)):
            number = int(value)
            if not -num_layers <= number < num_layers:
                raise InputError(f"layers={part!r}: layer {number} does not exist; the model has {num_layers} layers, 0..{num_layers - 1} (or -1..-{num_layers})")
            bounds.append(number % num_layers)
        if bounds[0] > bounds[1]:
            raise InputError(f"layers={part!r} is empty: its first layer ({bounds[0]}) comes after its last ({bounds[1]})")
        ranges.append((bounds[0], bounds[1]))
    return ranges


def store_shape(store: ResultsStore) -> tuple[int, int] | None:
    """(layers, heads) of the model that filled ``store`` (None if empty)."""
    manifest = store.manifest()
    if "num_layers" in manifest and "num_heads" in manifest:
        return int(manifest["num_layers"]), int(manifest["num_heads"])
    records = store.records()
    if records.empty:
        return None
    shape = stored_attention(records.iloc[0]).shape
    return shape[0], shape[1]


def compare_results(store: ResultsStore, head_importance=None, ranges=(), masks=("no_special", "alphabetic", "no_stopwords"), special_tokens=(), progress: bool = True,
                    n_boot: int = 2000, head_map: bool = False, head_map_perm: int | None = None, significance: int = 0,
                    attribution_as: str = "magnitude"):
    """Similarity of every stored document's attributions to its attention
    received: final layer, all layers, each 0-based inclusive layer range
    ``(first, last)``, and the same scaled by ``head_importance`` ``(L, H)``
    when given; for each mask.

    Writes into the store ``metrics.parquet`` (per document),
    ``metrics_summary.csv`` (means per attention choice x mask),
    ``metrics_intervals.csv`` (each mean with its bootstrap 95% interval over
    documents, ``n_boot`` resamples, and with ``significance`` the share of
    documents with p <= 0.05, before and after Holm over the documents:
    :func:`pyattn.compare.uncertainty.dataset_statistics`), where ``metrics.parquet``
    also gets each document's ``percentile_<metric>`` among the documents
    (and ``p_holm_<metric>``),
    ``tokens.parquet`` / ``tokens.csv`` (token types across the dataset) and,
    with ``head_map`` (off by default: thousands of permutations of every
    document, about 3 s per 2,048-token document for 12 x 12 heads),
    ``head_agreement.csv`` / ``head_agreement.png``: per
    layer x head, the mean Spearman of that head's attention received with
    the attributions (as ``attribution_as`` says; special tokens held in place), its interval, a
    dataset-level circular-shift permutation p-value and its Holm correction
    (:func:`pyattn.head_agreement`; ``head_map_perm`` draws, default enough
    for Holm over all heads), beside head importance when given;
    ``tokens_intervals.csv``: bootstrap intervals of the token table's means
    (:func:`pyattn.bootstrap_token_means`). With ``significance`` > 0,
    ``metrics.parquet`` also holds ``p_<metric>`` columns: each document's
    one-sided permutation p-value (circular-shift null, ``significance``
    draws; the mask's tokens only, as the metric), with the null and the
    draws used in ``significance_null`` and ``significance_n_perm``.
    ``attribution_as`` (``"magnitude"``, the default, or ``"signed"``) is the
    attributions' ranking convention in every metric, p-value and the head
    map; every table names it.

    Parameters
    ----------
    store : ResultsStore
    head_importance : array-like, shape (L, H), optional
    ranges : sequence of (int, int)
        Layer ranges, from 0, inclusive (see ``parse_layer_ranges``).
    masks : sequence of str
        Token masks (:data:`pyattn.compare.similarity.MASKS`); all but ``"all"`` need
        ``special_tokens``.
    special_tokens : sequence of str
    progress : bool
    n_boot : int
    head_map : bool
    head_map_perm : int, optional
    significance : int
    attribution_as : {"magnitude", "signed"}

    Returns
    -------
    per_document : pandas.DataFrame
        :func:`pyattn.compare.similarity.compare` rows of every document, with
        ``document``.
    summary : pandas.DataFrame
        Means per attention choice x mask
        (:func:`pyattn.compare.similarity.dataset_similarity`).
    tokens : pandas.DataFrame
        :func:`pyattn.compare.tokens.dataset_token_table` of the attributions.

    Raises
    ------
    DataError
        If the store is empty, head importance does not fit, or scores are not
        finite.

    Examples
    --------
    >>> import os, tempfile
    >>> from pyattn import load_demo
    >>> from pyattn.store import ResultsStore
    >>> model, tokenizer = load_demo()
    >>> folder = tempfile.TemporaryDirectory()
    >>> with ResultsStore.create(os.path.join(folder.name, "run"), {"model": "demo"}) as store:
    ...     _ = store.write_shard([process_document(model, tokenizer, Document("a", 0, "the borrow checker rejects the program", 1), {"n_steps": 16})])
    >>> per_document, summary, tokens = compare_results(store, ranges=[(0, 1)], special_tokens=tokenizer.all_special_tokens, progress=False, n_boot=200)
    >>> summary[summary["mask"] == "no_special"]["attention"].tolist(), int(summary["documents"].max())
    (['final', 'all', '0-1'], 1)
    >>> sorted(name for name in os.listdir(store.path) if name.endswith((".csv", ".parquet")))
    ['metrics.parquet', 'metrics_intervals.csv', 'metrics_summary.csv', 'tokens.csv', 'tokens.parquet', 'tokens_intervals.csv']
    >>> folder.cleanup()
    """
    import numpy as np
    from tqdm.auto import tqdm

    from pyattn.explanation import attention_views
    from pyattn.compare.similarity import compare, dataset_similarity
    from pyattn.compare.tokens import dataset_token_table, export_table

    records = store.records()
    if records.empty:
        raise DataError(f"{store.path} holds no results yet: run `pyattn attribute` first")
    weights = None if head_importance is None else head_importance_tensor(head_importance).numpy()  # finite, >= 0
    tables, ids, token_docs, heads_input, special_masks = [], [], [], [], []
    for _, record in tqdm(records.iterrows(), total=len(records), desc="comparing", unit="doc", disable=not progress):
        per_head = stored_attention(record)
        if weights is not None and weights.shape != per_head.shape[:2]:
            raise DataError(f"head importance has shape {weights.shape} but the stored attention has {per_head.shape[0]} layers x {per_head.shape[1]} heads")
        scores = np.asarray(record["scores"], dtype=np.float64)
        if not np.isfinite(scores).all():
            raise DataError(f"document {record['doc_id']!r} has non-finite attribution scores in the store")
        tokens = list(record["tokens"])
        choices = attention_views(per_head, weights, ranges)
        table = compare(scores, choices, tokens, special_tokens=special_tokens, masks=masks, attribution_as=attribution_as)
        if significance:
            table = _with_p_values(table, scores, choices, tokens, special_tokens, significance, attribution_as)
        tables.append(table)
        ids.append(record["doc_id"])
        token_docs.append((tokens, scores))
        if head_map:
            special = set(special_tokens)
            heads_input.append((scores, per_head))
            special_masks.append(np.array([t in special for t in tokens]))
    per_document, summary = dataset_similarity(tables, ids)
    tokens_table = dataset_token_table(token_docs)
    from pyattn.compare.uncertainty import bootstrap_token_means, dataset_statistics

    per_document, intervals = dataset_statistics(per_document, n_boot=n_boot)
    export_table(per_document, os.path.join(store.path, "metrics.parquet"))
    export_table(summary, os.path.join(store.path, "metrics_summary.csv"))
    export_table(intervals, os.path.join(store.path, "metrics_intervals.csv"))
    export_table(bootstrap_token_means(token_docs, n_boot=n_boot), os.path.join(store.path, "tokens_intervals.csv"))
    if head_map:
        from pyattn.compare.agreement import head_agreement
        from pyattn.report.agreement_plots import head_agreement_png

        agreement = head_agreement(heads_input, special_masks=special_masks, n_perm=head_map_perm, n_boot=n_boot, attribution_as=attribution_as)
        export_table(agreement, os.path.join(store.path, "head_agreement.csv"))
        with open(os.path.join(store.path, "head_agreement.png"), "wb") as image:
            image.write(head_agreement_png(agreement, head_importance=weights))
    export_table(tokens_table, os.path.join(store.path, "tokens.parquet"))
    export_table(tokens_table, os.path.join(store.path, "tokens.csv"))
    return per_document, summary, tokens_table


def _with_p_values(table, scores, choices, tokens, special_tokens, n_perm: int, attribution_as: str = "magnitude"):
    """``table`` (one document's :func:`pyattn.compare.similarity.compare` rows) with a
    ``p_<metric>`` column per metric: the permutation p-value of that row's
    attention choice over that row's mask (circular-shift null), and
    ``significance_null`` / ``significance_n_perm`` (the draws used: all m - 1
    shifts when a mask keeps m <= n_perm tokens)."""
    import numpy as np

    from pyattn.compare.significance import permutation_test
    from pyattn.compare.similarity import METRICS, token_masks

    masks = token_masks(tokens, special_tokens)
    table = table.copy()
    for column in METRICS:
        table[f"p_{column}"] = np.nan
    table["significance_null"] = "circular_shift"
    table["significance_n_perm"] = 0
    for index, row in table.iterrows():
        keep = masks[row["mask"]]
        if keep.sum() < 3:
            continue
        result = permutation_test(scores[keep], np.asarray(choices[row["attention"]])[keep], n_perm=n_perm, null="circular_shift",
                                  attribution_as=attribution_as).set_index("metric")
        for metric, p in result["p_value"].items():
            table.loc[index, f"p_{metric}"] = p
        table.loc[index, "significance_n_perm"] = int(result["n_perm"].iloc[0])
    return table


REPORT_MARKER = ".pyattn-report"


def _flags(record) -> str:
    """What a reader of the index must know about one document: it did not
    converge, it was truncated (empty when neither)."""
    flags = []
    if not bool(record["converged"]):
        flags.append(f"NOT converged (completeness error {float(record['relative_error']):.1%})")
    if int(record.get("truncated_tokens", 0) or 0):
        flags.append(f"truncated ({int(record['truncated_tokens']):,} tokens dropped)")
    return "; ".join(flags)


def check_report_dir(out: str) -> None:
    """Refuse a report folder that holds files pyattn did not write there."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise StoreError(f"out={out!r} is a file, not a folder")
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, REPORT_MARKER)):
        raise StoreError(f"{out} holds files pyattn did not write; choose another `out` (pyattn never overwrites them)")


def _stored_statistics(store: ResultsStore, records, mask: str, attribution_as: str | None):
    """``pyattn compare``'s per-document table and intervals when they describe
    this store as it is now: ``(per_document, intervals, None)``, or
    ``(None, None, why not)``."""
    import pandas as pd

    metrics_file = os.path.join(store.path, "metrics.parquet")
    intervals_file = os.path.join(store.path, "metrics_intervals.csv")
    if not (os.path.exists(metrics_file) and os.path.exists(intervals_file)):
        return None, None, "no `pyattn compare` outputs in the store"
    per_document = pd.read_parquet(metrics_file)
    intervals = pd.read_csv(intervals_file)
    if "percentile_spearman_rho" not in per_document.columns or "attribution_as" not in intervals.columns:
        return None, None, "the store's `pyattn compare` outputs come from an older pyattn (run `pyattn compare` again)"
    stored_ids = set(per_document["document"].astype(str))
    ids = set(records["doc_id"].astype(str))
    if stored_ids != ids:
        return None, None, (f"the store's `pyattn compare` outputs cover {len(stored_ids)} documents but the store holds {len(ids)} "
                            f"({len(ids - stored_ids)} not compared): run `pyattn compare` again")
    if mask not in set(per_document["mask"]):
        return None, None, f"the store's `pyattn compare` outputs have no rows for mask {mask!r}"
    used = set(per_document["attribution_as"])
    if attribution_as is not None and used != {attribution_as}:
        return None, None, f"the store's `pyattn compare` outputs take attributions as {sorted(used)}, not {attribution_as!r}"
    return per_document, intervals, None


def report_results(store: ResultsStore, out: str | None = None, head_importance=None, special_tokens=(), label_names=None, progress: bool = True,
                   significance: int = 0, attribution_as: str | None = None, n_boot: int = 2000,
                   head_importance_name: str = "head importance") -> str:
    """An HTML report per stored document (``document-<n>.html``, ``n`` its
    position in the store, never a name taken from the store's contents) and
    an ``index.html`` linking only those, in ``STORE/reports`` unless ``out``;
    returns the index's path. A folder holding files pyattn did not write is
    refused.

    Each document page shows, for every attention choice x metric over the
    mask ``no_special`` (``all`` without special tokens): the document's
    value, its permutation p-value and the Holm-adjusted one (over the
    documents) when computed, the dataset mean with its bootstrap 95%
    interval and the document's percentile among the documents. The index
    shows every mean with its interval and, with p-values, the share of
    documents with p <= 0.05 before and after Holm; the metric distributions
    and the head map when ``pyattn compare`` made them.

    The numbers are ``pyattn compare``'s (``metrics.parquet``,
    ``metrics_intervals.csv`` in the store) when those describe the store as
    it is; else (or with ``significance`` > 0: that many circular-shift
    permutations per document, computed here) the report computes them
    itself. Either way it writes the numbers it shows to ``metrics.parquet``
    and ``metrics_intervals.csv`` in ``out``. ``attribution_as``:
    ``"magnitude"`` or ``"signed"``; None takes ``pyattn compare``'s (else
    magnitude).

    Each document's report is the :class:`pyattn.Explanation` that :func:`pyattn.explanation.compose`
    rebuilds from its record (no rollout or faithfulness: they need the model).

    Parameters
    ----------
    store : ResultsStore
    out : str, optional
        The report folder.
    head_importance : array-like, shape (L, H), optional
    head_importance_name : str
        Its plot's title: say which importance (e.g. "Taylor head
        importance"); the CLI names the file it was read from.
    special_tokens : sequence of str
        The index's Spearman columns use mask ``no_special`` when given, else
        ``all`` (and say which).
    label_names : dict of int to str, or sequence of str, optional
    progress : bool
    significance : int
        Permutations per document computed here (0: use compare's, if any).
    attribution_as : {"magnitude", "signed"} or None
    n_boot : int
        Bootstrap resamples for the intervals.

    Returns
    -------
    str
        The index's path.

    Raises
    ------
    StoreError
        If ``out`` holds files pyattn did not write.
    DataError
        If the store is empty.

    Examples
    --------
    >>> import os, tempfile
    >>> from pyattn import load_demo
    >>> from pyattn.store import ResultsStore
    >>> model, tokenizer = load_demo()
    >>> folder = tempfile.TemporaryDirectory()
    >>> with ResultsStore.create(os.path.join(folder.name, "run"), {"model": "demo"}) as store:
    ...     _ = store.write_shard([process_document(model, tokenizer, Document("a", 0, "the borrow checker rejects the program", 1), {"n_steps": 16})])
    >>> index = report_results(store, special_tokens=tokenizer.all_special_tokens, progress=False)
    >>> os.path.relpath(index, store.path), sorted(os.listdir(os.path.dirname(index)))
    ('reports/index.html', ['.pyattn-report', 'document-0.html', 'index.html', 'metrics.parquet', 'metrics_intervals.csv', 'tokens_intervals.csv'])
    >>> "spearman, final (no_special)" in open(index, encoding="utf-8").read()
    True
    >>> folder.cleanup()
    """
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from pyattn.explanation import attention_views, compose
    from pyattn.report import index_report
    from pyattn.report.statistics import (
        display_document_statistics,
        display_summary_statistics,
        display_token_intervals,
        document_statistics,
        statistics_note,
        summary_statistics,
    )
    from pyattn._checks import check_attribution_as
    from pyattn.compare.similarity import compare, dataset_similarity
    from pyattn.compare.tokens import export_table
    from pyattn.compare.uncertainty import dataset_statistics

    if attribution_as is not None:
        check_attribution_as(attribution_as)
    if isinstance(significance, bool) or not isinstance(significance, int) or significance < 0:
        raise ValueError(f"significance must be a number of permutations >= 0 (0: none), got {significance!r}")
    weights = None if head_importance is None else head_importance_tensor(head_importance).numpy()  # finite, >= 0: before any file
    mask = "no_special" if special_tokens else "all"
    out = out or os.path.join(store.path, "reports")
    check_report_dir(out)
    records = store.records()
    if records.empty:
        raise DataError(f"{store.path} holds no results yet: run `pyattn attribute` first")
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, REPORT_MARKER), "w").close()
    names = {int(k): v for k, v in (label_names or {}).items()} if isinstance(label_names, dict) else dict(enumerate(label_names or []))

    # The dataset statistics first: every page shows the document among the others.
    per_document, intervals, why = (None, None, f"p-values asked of `pyattn report` ({significance} permutations)") if significance else \
        _stored_statistics(store, records, mask, attribution_as)
    if per_document is not None:
        attribution_as = str(per_document["attribution_as"].iloc[0])
        source = (f"`pyattn compare` ({os.path.join(store.path, 'metrics.parquet')} and metrics_intervals.csv); "
                  "the same numbers are copied to metrics.parquet and metrics_intervals.csv beside these pages")
    else:
        attribution_as = attribution_as or "magnitude"
        tables, ids = [], []
        for _, record in tqdm(records.iterrows(), total=len(records), desc="statistics", unit="doc", disable=not progress):
            per_head = stored_attention(record)
            scores = np.asarray(record["scores"], dtype=np.float64)
            tokens = list(record["tokens"])
            views = attention_views(per_head, weights)
            table = compare(scores, views, tokens, special_tokens=special_tokens, masks=[mask], attribution_as=attribution_as)
            if significance:
                table = _with_p_values(table, scores, views, tokens, special_tokens, significance, attribution_as)
            tables.append(table)
            ids.append(record["doc_id"])
        per_document, _ = dataset_similarity(tables, ids)
        per_document, intervals = dataset_statistics(per_document, n_boot=n_boot)
        source = f"computed by `pyattn report` ({why}); written to metrics.parquet and metrics_intervals.csv beside these pages"
    tokens_file = os.path.join(store.path, "tokens_intervals.csv")
    if why is None and os.path.exists(tokens_file):  # from the same `pyattn compare` run as the metrics
        token_intervals = pd.read_csv(tokens_file, keep_default_na=False, na_values=[""])
    else:
        from pyattn.compare.uncertainty import bootstrap_token_means

        token_intervals = bootstrap_token_means(((list(r["tokens"]), np.asarray(r["scores"], dtype=np.float64)) for _, r in records.iterrows()),
                                                n_boot=n_boot)
    export_table(per_document, os.path.join(out, "metrics.parquet"))
    export_table(intervals, os.path.join(out, "metrics_intervals.csv"))
    export_table(token_intervals, os.path.join(out, "tokens_intervals.csv"))
    note = statistics_note(intervals, per_document, mask, source)
    with_p = "p_spearman_rho" in per_document.columns and per_document["p_spearman_rho"].notna().any()

    def name_of(record, column, index_column):
        stored = record.get(column) if column in record else None
        if isinstance(stored, str):
            return stored
        value = record.get(index_column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return names.get(int(value), str(int(value)) if isinstance(value, (int, float, np.integer)) else str(value))

    rows = []
    for number, (_, record) in enumerate(tqdm(records.iterrows(), total=len(records), desc="reports", unit="doc", disable=not progress)):
        per_head = stored_attention(record)
        scores = np.asarray(record["scores"], dtype=np.float64)
        name = f"document-{number}.html"
        predicted = name_of(record, "predicted_label_name", "predicted_label")
        label = name_of(record, "label_name", "label")
        # The same Explanation as pyattn.explain builds, from the stored record
        # (no rollout or faithfulness: they need the model).
        known = dict(names)
        for column, index_column in (("predicted_label_name", "predicted_label"), ("target_name", "target")):
            if isinstance(record.get(column), str):
                known[int(record[index_column])] = record[column]
        explanation = compose(attribution_from_record(record), per_head, text="", head_importance=head_importance,
                              special_tokens=special_tokens, label_names=known, attribution_as=attribution_as)
        explanation.head_importance_name = head_importance_name
        statistics = document_statistics(per_document, intervals, record["doc_id"], mask)
        heading = f"This document among the {len(records)} documents (mask {mask})"
        explanation.save_html(os.path.join(out, name), title=f"document {record['doc_id']}", facts={"label": label},
                              tables=[(heading, display_document_statistics(statistics), note, "document-statistics")])
        # The index uses the same masks as `compare` and says which.
        table = explanation.similarity[explanation.similarity["mask"] == mask].set_index("attention")
        row = {"document": str(record["doc_id"]), "report": name, "label": label, "predicted": predicted,
               "tokens": len(scores), "steps": int(record["n_steps"]),
               f"spearman, final ({mask})": table.loc["final", "spearman_rho"],
               f"spearman, all ({mask})": table.loc["all", "spearman_rho"],
               "flags": _flags(record)}
        if with_p:
            found = statistics.set_index(["attention", "metric"])
            for view in ("final", "all"):
                if (view, "spearman_rho") in found.index:
                    row[f"p, spearman, {view}"] = found.loc[(view, "spearman_rho"), "p_value"]
        rows.append(row)
    convention = "|attribution|" if attribution_as == "magnitude" else "signed attribution"
    notes = [f"Documents (table below): Spearman of {convention} with attention received, over the tokens of mask '{mask}'"
             + (" (special tokens dropped)." if mask == "no_special" else " (no special tokens known: all tokens).")
             + (" p: the document's one-sided circular-shift permutation p-value (see the note to the next table)." if with_p else "")]
    summary_tables = [(f"Every metric across the {len(records)} documents (mask {mask})", display_summary_statistics(summary_statistics(intervals, mask)),
                       note, "dataset-statistics")]
    token_note = ("Signed attribution of each token type (raw tokens, special tokens included), summed over the documents; means with "
                  f"bootstrap 95% intervals (documents resampled, {n_boot} resamples, expanded percentile). Source: "
                  + ("`pyattn compare` (tokens_intervals.csv in the store)" if why is None and os.path.exists(tokens_file) else "computed by `pyattn report`")
                  + "; all types in tokens_intervals.csv beside these pages.")
    summary_tables.append(("Token types with the largest summed attribution (supporting the prediction)",
                           display_token_intervals(token_intervals, 15, "top"), token_note, "tokens-top"))
    summary_tables.append(("Token types with the most negative summed attribution (opposing the prediction)",
                           display_token_intervals(token_intervals, 15, "bottom"), None, "tokens-bottom"))
    images = []
    metrics_file = os.path.join(store.path, "metrics.parquet")
    if os.path.exists(metrics_file):  # written by `pyattn compare`
        from pyattn.report.plots import metric_distributions_png

        compared = pd.read_parquet(metrics_file)
        shown = mask if mask in set(compared["mask"]) else None
        images.append((f"Each metric across documents (from `pyattn compare`, mask {shown or 'as stored'})",
                       metric_distributions_png(compared, mask=shown)))
    agreement_file = os.path.join(store.path, "head_agreement.png")
    if os.path.exists(agreement_file):
        agreement_table = os.path.join(store.path, "head_agreement.csv")
        documents = int(pd.read_csv(agreement_table)["documents"].max()) if os.path.exists(agreement_table) else None
        stale = documents is not None and documents != len(records)
        with open(agreement_file, "rb") as image:
            images.append(("Agreement per layer x head (from `pyattn compare --head-map`: mean Spearman per head over documents; "
                           "dots: Holm-significant at 0.05 over all heads)"
                           + (f" -- OUT OF DATE: made from {documents} documents, the store holds {len(records)}; run `pyattn compare --head-map` again"
                              if stale else ""), image.read()))
    else:
        notes.append("Run `pyattn compare --head-map` on this store for the head agreement map"
                     + ("" if os.path.exists(metrics_file) else ", and `pyattn compare` for the metric distributions") + ".")
    return index_report(os.path.join(out, "index.html"), pd.DataFrame(rows), title=f"pyattn results: {store.manifest().get('model')}",
                        notes=notes, images=images, tables=summary_tables)
