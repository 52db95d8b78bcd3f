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
from dataclasses import dataclass

import torch

__all__ = ["EncodedDocument", "encode", "position_ids_for", "is_longformer", "embedding_layer", "TruncationWarning"]


class TruncationWarning(UserWarning):
    """A text was longer than max_length and was cut."""


def is_longformer(model: torch.nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "longformer"


def _embeddings_module(model: torch.nn.Module) -> torch.nn.Module | None:
    base = getattr(model, "base_model", model)
    return getattr(base, "embeddings", None)


def embedding_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The embedding layer Layer Integrated Gradients attributes to: the base
    model's ``embeddings`` module (word + position + type embeddings, as the
    original notebooks used) for Longformer, RoBERTa, BERT and most Hugging
    Face encoders; otherwise the input embeddings."""
    module = _embeddings_module(model)
    if isinstance(module, torch.nn.Module):
        return module
    try:
        module = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        module = None
    if isinstance(module, torch.nn.Module):
        return module
    raise ValueError(
        f"cannot find the embedding layer of {type(model).__name__}: expected a Hugging Face model "
        "with `base_model.embeddings` or `get_input_embeddings()`"
    )


def position_ids_for(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Position ids as the model builds them when given none: from
    ``padding_idx + 1`` over non-pad tokens for RoBERTa-style embeddings
    (which carry ``padding_idx``), else ``0 .. N-1``."""
    embeddings = _embeddings_module(model)
    padding_idx = getattr(embeddings, "padding_idx", None)
    if padding_idx is not None:
        not_pad = input_ids.ne(padding_idx).int()
        return (torch.cumsum(not_pad, dim=1).type_as(not_pad) * not_pad).long() + padding_idx
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


@dataclass
class EncodedDocument:
    """One document, encoded. Tensors are ``(1, N)``."""

    tokens: list[str]
    input_ids: torch.Tensor
    baseline_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    global_attention_mask: torch.Tensor | None
    truncated_tokens: int  # text tokens dropped to fit max_length

    def forward_kwargs(self, input_ids: torch.Tensor | None = None) -> dict:
        kwargs = dict(
            input_ids=self.input_ids if input_ids is None else input_ids,
            attention_mask=self.attention_mask,
            position_ids=self.position_ids,
        )
        if self.global_attention_mask is not None:
            kwargs["global_attention_mask"] = self.global_attention_mask
        return kwargs

    def to(self, device) -> "EncodedDocument":
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
        raise ValueError(f"the tokenizer has no {', '.join(missing)} token: pyattn builds [CLS] text [SEP] inputs and [PAD] baselines")
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


def encode(model: torch.nn.Module, tokenizer, text: str, max_length: int | None = None) -> EncodedDocument:
    """Encode one text for attribution and attention. Truncation is reported
    (a :class:`TruncationWarning` and ``truncated_tokens``), never silent."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty: there is nothing to attribute")
    limit = default_max_length(model, tokenizer) if max_length is None else int(max_length)
    if limit < 3:
        raise ValueError(f"max_length must be at least 3 ([CLS] + one token + [SEP]), got {limit}")
    cls_id, sep_id, pad_id = _special_ids(tokenizer)
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
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
    baseline_ids = torch.tensor([[cls_id] + [pad_id] * len(text_ids) + [sep_id]])
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
