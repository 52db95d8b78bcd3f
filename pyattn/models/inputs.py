"""From text to the tensors attribution and attention need, done the way the
model itself does it.

``[CLS] + text tokens (truncated to max_length - 2) + [SEP]``; the baseline is
``[CLS] + [PAD] ... [PAD] + [SEP]`` of the same length; position ids follow the
model's own rule (RoBERTa-style models, Longformer among them, number
positions from ``pad_token_id + 1``; BERT-style from 0) and are computed from
the *input*, so input and baseline differ only in their token embeddings;
Longformer gets global attention on the first token, as
``LongformerForSequenceClassification`` puts it by itself.
"""

from __future__ import annotations

import warnings
from typing import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pyattn.errors import InputError, ModelError

__all__ = [
    "EncodedDocument",
    "encode",
    "position_ids_for",
    "is_longformer",
    "embedding_layer",
    "TruncationWarning",
    "output_kind",
    "model_output",
    "pools_last_non_pad",
    "check_tokenizer_fits",
]


class TruncationWarning(UserWarning):
    """A text was longer than ``max_length`` and was cut (:func:`encode` says how
    many tokens were dropped).
    """


def is_longformer(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a Longformer (``config.model_type == "longformer"``):
    banded attention with global tokens, rather than full attention.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    bool

    Examples
    --------
    >>> import torch
    >>> from pyattn import load_demo
    >>> is_longformer(load_demo()[0]), is_longformer(torch.nn.Linear(2, 2))
    (True, False)
    """
    return getattr(getattr(model, "config", None), "model_type", None) == "longformer"


#: What F, the function of the logits pyattn explains, can be (see :func:`output_kind`).
OUTPUT_KINDS = ("softmax", "sigmoid", "raw")


def output_kind(model: torch.nn.Module) -> str:
    """What the model's head outputs, read from its config as transformers'
    own loss reads it: ``"sigmoid"`` (one independent probability per label)
    for ``problem_type="multi_label_classification"``, ``"raw"`` (the output
    itself, not a probability) for ``problem_type="regression"`` or for one
    output with no problem_type, ``"softmax"`` (class probabilities) for a
    single-label classifier of at least 2 classes.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face sequence classifier (its ``config``).

    Returns
    -------
    str
        One of ``"softmax"``, ``"sigmoid"``, ``"raw"``.

    Raises
    ------
    ValueError
        A single-label classifier of one class (its softmax is always 1),
        or a problem_type transformers does not know.

    Examples
    --------
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> def head(**config):
    ...     return output_kind(BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, **config)))
    >>> head(num_labels=3), head(num_labels=3, problem_type="multi_label_classification"), head(num_labels=1)
    ('softmax', 'sigmoid', 'raw')
    """
    config = getattr(model, "config", None)
    problem = getattr(config, "problem_type", None)
    labels = int(getattr(config, "num_labels", 2) or 0)
    name = type(model).__name__
    if problem == "multi_label_classification":
        return "sigmoid"
    if problem == "regression" or (problem is None and labels == 1):
        return "raw"
    if problem not in (None, "single_label_classification"):
        raise ModelError(f"{name} has config.problem_type {problem!r}: expected single_label_classification, multi_label_classification or regression")
    if labels < 2:
        raise ModelError(
            f"{name} is a single-label classifier of {labels} class: its softmax is always 1, so there is nothing to explain "
            "(a one-output regression head needs problem_type='regression')"
        )
    return "softmax"


def model_output(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """F of every output, ``(B, C)`` float32 from ``(B, C)`` logits: softmax
    over the classes, the sigmoid of each label, or the raw outputs
    (``kind`` as :func:`output_kind` returns it).

    >>> model_output(torch.tensor([[0.0, 0.0]]), "softmax"), model_output(torch.tensor([[0.0, 2.0]]), "raw")
    (tensor([[0.5000, 0.5000]]), tensor([[0., 2.]]))
    """
    logits = logits.float()
    if kind == "softmax":
        return logits.softmax(-1)
    if kind == "sigmoid":
        return logits.sigmoid()
    if kind == "raw":
        return logits
    raise InputError(f"output kind must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")


def pools_last_non_pad(model: torch.nn.Module) -> bool:
    """Whether the classifier pools at the last token that is not its pad
    token, as transformers' decoder classifiers (GPT-2, Llama, Qwen2,
    Mistral, ... ``*ForSequenceClassification`` with a ``score`` head) find
    it from ``input_ids == config.pad_token_id``.

    >>> from pyattn import load_demo
    >>> pools_last_non_pad(load_demo()[0])  # Longformer pools at [CLS]
    False
    """
    return type(model).__name__.endswith("ForSequenceClassification") and isinstance(getattr(model, "score", None), torch.nn.Linear)


def pooled_position(input_ids: list[int], pad_token_id: int | None) -> int:
    """The position a last-non-pad classifier pools at (transformers' rule:
    the rightmost id that is not the pad id, 0 when every id is pad)."""
    if pad_token_id is None:
        return len(input_ids) - 1
    positions = [i for i, token in enumerate(input_ids) if token != pad_token_id]
    return positions[-1] if positions else 0


def _embeddings_module(model: torch.nn.Module) -> torch.nn.Module | None:
    base = getattr(model, "base_model", model)
    return getattr(base, "embeddings", None)


def embedding_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The embedding layer Layer Integrated Gradients attributes to: the base
    model's ``embeddings`` module (word + position + type embeddings, as the
    original notebooks used) for Longformer, RoBERTa, BERT and most Hugging
    Face encoders; otherwise the input embeddings.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        If the model has neither.

    Examples
    --------
    >>> from pyattn import load_demo
    >>> type(embedding_layer(load_demo()[0])).__name__
    'LongformerEmbeddings'
    """
    module = _embeddings_module(model)
    if isinstance(module, torch.nn.Module):
        return module
    try:
        module = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        module = None
    if isinstance(module, torch.nn.Module):
        return module
    raise ModelError(
        f"cannot find the embedding layer of {type(model).__name__}: expected a Hugging Face model "
        "with `base_model.embeddings` or `get_input_embeddings()`"
    )


def position_ids_for(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Position ids as the model builds them when given none: from
    ``padding_idx + 1`` over non-pad tokens for RoBERTa-style embeddings (which
    carry ``padding_idx``; pads keep ``padding_idx``), else ``0 .. N-1``.

    Parameters
    ----------
    model : torch.nn.Module
    input_ids : torch.Tensor, shape (B, N), int64

    Returns
    -------
    torch.Tensor, shape (B, N), int64

    Examples
    --------
    >>> import torch
    >>> from pyattn import load_demo
    >>> model, tokenizer = load_demo()  # RoBERTa-style: padding_idx 1
    >>> position_ids_for(model, torch.tensor([[0, 5, 6, 1, 1]]))
    tensor([[2, 3, 4, 1, 1]])
    """
    embeddings = _embeddings_module(model)
    padding_idx = getattr(embeddings, "padding_idx", None)
    if padding_idx is not None:
        not_pad = input_ids.ne(padding_idx).int()
        return (torch.cumsum(not_pad, dim=1).type_as(not_pad) * not_pad).long() + padding_idx
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


@dataclass
class EncodedDocument:
    """One document, encoded by :func:`encode`: ``[CLS] text [SEP]``, with the
    baseline and the masks the attribution and the attention use.

    Attributes
    ----------
    tokens : list of str, length N
    input_ids : torch.Tensor, shape (1, N), int64
    baseline_ids : torch.Tensor, shape (1, N), int64
        ``[CLS] pad ... pad [SEP]``: the reference input of Integrated Gradients.
        A classifier that pools at the last non-pad token (GPT-2, Llama, ...)
        gets a baseline it pools at the same position as the input (see
        :func:`encode`).
    attention_mask : torch.Tensor, shape (1, N), int64
    position_ids : torch.Tensor, shape (1, N), int64
        As the model builds them (see :func:`position_ids_for`).
    global_attention_mask : torch.Tensor, shape (1, N), int64, or None
        CLS global for Longformer; None for full-attention models.
    truncated_tokens : int
        Text tokens dropped to fit ``max_length``.

    Examples
    --------
    >>> from pyattn import load_demo
    >>> model, tokenizer = load_demo()
    >>> document = encode(model, tokenizer, "the borrow checker")
    >>> document.tokens
    ['<s>', 'the', 'Ġborrow', 'Ġchecker', '</s>']
    >>> document.baseline_ids.tolist(), document.global_attention_mask.tolist()
    ([[0, 1, 1, 1, 2]], [[1, 0, 0, 0, 0]])
    >>> sorted(document.forward_kwargs())  # what the model is called with
    ['attention_mask', 'global_attention_mask', 'input_ids', 'position_ids']
    """

    tokens: list[str]
    input_ids: torch.Tensor
    baseline_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    global_attention_mask: torch.Tensor | None
    truncated_tokens: int  # text tokens dropped to fit max_length

    def forward_kwargs(self, input_ids: torch.Tensor | None = None) -> dict:
        """The keyword arguments to call the model with (``input_ids`` or the given
        ids, ``attention_mask``, ``position_ids``, and ``global_attention_mask``
        for Longformer).
        """
        kwargs = dict(
            input_ids=self.input_ids if input_ids is None else input_ids,
            attention_mask=self.attention_mask,
            position_ids=self.position_ids,
        )
        if self.global_attention_mask is not None:
            kwargs["global_attention_mask"] = self.global_attention_mask
        return kwargs

    def to(self, device) -> "EncodedDocument":
        """The same document with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return EncodedDocument(
            self.tokens,
            move(self.input_ids),
            move(self.baseline_ids),
            move(self.attention_mask),
            move(self.position_ids),
            move(self.global_attention_mask),
            self.truncated_tokens,
        )


def _special_ids(tokenizer) -> tuple[int, int, int]:
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    missing = [name for name, value in (("cls/bos", cls_id), ("sep/eos", sep_id), ("pad", pad_id)) if value is None]
    if missing:
        raise InputError(f"the tokenizer has no {', '.join(missing)} token: pyattn builds [CLS] text [SEP] inputs and [PAD] baselines")
    return cls_id, sep_id, pad_id


def default_max_length(model: torch.nn.Module, tokenizer=None) -> int:
    """The longest input the model takes: max_position_embeddings, less the
    padding offset for RoBERTa-style models, capped by the tokenizer's."""
    config = model.config
    limit = int(getattr(config, "max_position_embeddings", 512))
    padding_idx = getattr(_embeddings_module(model), "padding_idx", None)
    if padding_idx is not None:
        limit -= padding_idx + 1
    if tokenizer is not None and 0 < getattr(tokenizer, "model_max_length", 0) < 10**8:
        limit = min(limit, int(tokenizer.model_max_length))
    if is_longformer(model):
        # Longformer pads to a multiple of its largest window; stay within positions.
        window = max(config.attention_window) if isinstance(config.attention_window, (list, tuple)) else config.attention_window
        limit -= limit % window
    return limit


def _same_pooled_position(model, tokenizer, ids: list[int], baseline: list[int]) -> list[int]:
    """The baseline of a last-non-pad classifier, changed so that the model
    pools it at the position it pools the input at (else F(baseline) would
    be read at another token than the path integral reads it): text positions
    after the input's pooled one keep the input's (pad) ids; when the input
    pools at a text token and the baseline there is the model's pad id (pad
    = eos), that one position gets the tokenizer's first special token that
    is not the pad (unk, mask, bos, eos, cls, sep). None: a one-line
    ValueError."""
    pad = model.config.pad_token_id
    fill = pooling_fill(model, tokenizer)
    target = pooled_position(ids, pad)
    baseline = [ids[i] if 0 < i < len(ids) - 1 and i > target else token for i, token in enumerate(baseline)]
    if pooled_position(baseline, pad) != target:
        baseline[target] = fill
    return baseline


def pooling_fill(model, tokenizer) -> int:
    """For a last-non-pad classifier (:func:`pools_last_non_pad`): the id
    the baseline gets at the pooled position when the pad would move it,
    the tokenizer's first special token that is not the model's pad (unk,
    mask, bos, eos, cls, sep). A one-line ValueError when the model has no
    ``config.pad_token_id`` or every special token is the pad."""
    name = type(model).__name__
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        raise ModelError(
            f"{name} has no config.pad_token_id: it then pools at the last position and refuses batches of more than one; "
            "set model.config.pad_token_id to the tokenizer's pad token id"
        )
    candidates = (tokenizer.unk_token_id, tokenizer.mask_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    fill = next((c for c in candidates if c is not None and c != pad), None)
    if fill is None:
        raise ModelError(
            f"{name} pools at the last token that is not its pad token (id {pad}), and every special token of the tokenizer is that "
            "pad token: a [PAD] baseline would be read at another position; give the tokenizer an unk or pad token of its own"
        )
    return int(fill)


UNKNOWN_SHARE_LIMIT = 0.5
"""A text of at least :data:`UNKNOWN_MIN_TOKENS` tokens of which more than
this share are the tokenizer's unknown token (or any text whose tokens are
all unknown) is refused: the tokenizer does
not fit the text or the model (attributions of ``[UNK]`` say nothing)."""
UNKNOWN_MIN_TOKENS = 4


def check_tokenizer_fits(model: torch.nn.Module, tokenizer, ids: Sequence[int], where: str = "the text") -> None:
    """Refuse token ids that do not fit the model: an id at or above its
    vocabulary size, or mostly the unknown token (more than
    :data:`UNKNOWN_SHARE_LIMIT` of at least :data:`UNKNOWN_MIN_TOKENS`
    tokens). One ValueError line saying which.

    Parameters
    ----------
    model : torch.nn.Module
    tokenizer
    ids : sequence of int
        Token ids the tokenizer made (special tokens may be included: they
        are not counted as unknown).
    where : str
        Named in the message (``"the text"``, ``"row 3 (id 'a')"``).

    Examples
    --------
    >>> from pyattn import load_demo
    >>> model, tokenizer = load_demo()
    >>> check_tokenizer_fits(model, tokenizer, tokenizer("a typed language")["input_ids"])
    >>> check_tokenizer_fits(model, tokenizer, [0, 10**6, 2])
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: the tokenizer gives id 1000000 for the text but the model's vocabulary has ids 0..1051 only: the tokenizer does not belong to the model
    """
    ids = [int(i) for i in ids]
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    if vocab and ids and (max(ids) >= vocab or min(ids) < 0):
        bad = max(ids) if max(ids) >= vocab else min(ids)
        raise InputError(f"the tokenizer gives id {bad} for {where} but the model's vocabulary has ids 0..{vocab - 1} only: "
                         "the tokenizer does not belong to the model")
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    specials = set(getattr(tokenizer, "all_special_ids", None) or ()) - {unknown_id}
    words = [i for i in ids if i not in specials]
    if unknown_id is None or not words:
        return
    unknown = sum(i == unknown_id for i in words)
    # every token unknown: nothing to explain at any length; mostly unknown:
    # from UNKNOWN_MIN_TOKENS tokens on (a short text may hold one rare word)
    if unknown == len(words) or (len(words) >= UNKNOWN_MIN_TOKENS and unknown > UNKNOWN_SHARE_LIMIT * len(words)):
        raise InputError(f"{unknown} of the {len(words)} tokens of {where} are unknown to the tokenizer "
                         f"({tokenizer.unk_token}): the tokenizer does not fit this text or model (pass the model's own tokenizer)")


def encode(model: torch.nn.Module, tokenizer, text: str, max_length: int | None = None) -> EncodedDocument:
    """Encode one text for attribution and attention: ``[CLS] text [SEP]`` with
    CLS global for Longformer. Truncation is reported (a
    :class:`TruncationWarning` and ``truncated_tokens``), never silent.

    Classifiers that pool at the last token that is not their pad token
    (:func:`pools_last_non_pad`: GPT-2, Llama, Qwen2, Mistral) must pool the
    baseline where they pool the input, so that F(baseline) is the model's
    own output on ``baseline_ids``: when pad = eos the input pools at its
    last text token, and that one position of the baseline gets the
    tokenizer's unk token (or another special token that is not the pad)
    instead of the pad. A tokenizer whose special tokens are all the pad, or
    a model without ``config.pad_token_id``, is refused (ValueError).

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face sequence classifier (its config decides global attention
        and the default length).
    tokenizer
        Its tokenizer.
    text : str
    max_length : int, optional
        Tokens kept including ``[CLS]`` and ``[SEP]`` (at least 3); default the
        model's and tokenizer's limit.

    Returns
    -------
    EncodedDocument
        Tensors of shape (1, N).

    Raises
    ------
    TypeError
        If ``text`` is not a str.
    ValueError
        If ``text`` is empty, ``max_length`` is under 3 or over the model's
        positions, or the tokenizer does not fit (:func:`check_tokenizer_fits`).

    Examples
    --------
    >>> import warnings
    >>> from pyattn import load_demo
    >>> model, tokenizer = load_demo()
    >>> encode(model, tokenizer, "the borrow checker").input_ids.shape
    torch.Size([1, 5])
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     document = encode(model, tokenizer, "the borrow checker", max_length=4)
    >>> document.tokens, document.truncated_tokens, caught[0].category.__name__
    (['<s>', 'the', 'Ġborrow', '</s>'], 1, 'TruncationWarning')
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InputError("text is empty: there is nothing to attribute")
    if max_length is None:
        limit = default_max_length(model, tokenizer)
    else:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise TypeError(f"max_length must be None or an int >= 3, got {max_length!r}")
        limit = int(max_length)
        if limit < 3:
            raise InputError(f"max_length must be at least 3 ([CLS] + one token + [SEP]), got {limit}")
        positions = default_max_length(model)
        if limit > positions:
            raise InputError(f"max_length {limit} is over the model's limit of {positions} tokens (its position embeddings); "
                             f"use max_length <= {positions} or None")
    cls_id, sep_id, pad_id = _special_ids(tokenizer)
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    check_tokenizer_fits(model, tokenizer, [cls_id, sep_id, pad_id, *text_ids])
    kept = limit - 2
    truncated = max(0, len(text_ids) - kept)
    if truncated:
        warnings.warn(
            f"text has {len(text_ids)} tokens; kept the first {kept} (max_length {limit} less [CLS] and [SEP]), "
            f"dropped {truncated}",
            TruncationWarning,
            stacklevel=3,
        )
        text_ids = text_ids[:kept]
    ids = [cls_id, *text_ids, sep_id]
    input_ids = torch.tensor([ids])
    baseline = [cls_id] + [pad_id] * len(text_ids) + [sep_id]
    if pools_last_non_pad(model):
        baseline = _same_pooled_position(model, tokenizer, ids, baseline)
    baseline_ids = torch.tensor([baseline])
    attention_mask = torch.ones_like(input_ids)
    global_attention_mask = None
    if is_longformer(model):
        global_attention_mask = torch.zeros_like(input_ids)
        global_attention_mask[:, 0] = 1
    return EncodedDocument(
        tokens=tokenizer.convert_ids_to_tokens(ids),
        input_ids=input_ids,
        baseline_ids=baseline_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_for(model, input_ids),
        global_attention_mask=global_attention_mask,
        truncated_tokens=truncated,
    )
