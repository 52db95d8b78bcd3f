"""Loading and checking what a dataset run needs: the device, the model and
its tokenizer (:func:`load_model`, :func:`check_model`), and the documents'
labels as the model's class indices (:func:`resolve_labels`)."""

from __future__ import annotations

import os
from typing import Sequence

from pyattn._checks import check_device, first_line
from pyattn.errors import DataError, ModelError
from pyattn.model_attention import ready_for_attention
from pyattn.pipeline.documents import Document, skip_reason

# check_model and quiet_transformers serve load_model and the CLI (importable, not user API).
__all__ = ["check_device", "load_model", "resolve_labels"]


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


