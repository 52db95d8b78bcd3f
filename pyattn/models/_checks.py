"""Checks of the tensors a model is given (private: for pyattn's own modules)."""

from __future__ import annotations

from pyattn._checks import require_mask, require_token_ids
from pyattn.errors import InputError


def check_model_inputs(model, input_ids, attention_mask=None, global_attention_mask=None) -> None:
    """Token ids an integer tensor inside the model's vocabulary, masks
    integer tensors of the same shape: one line naming the argument."""
    require_token_ids("input_ids", input_ids, getattr(getattr(model, "config", None), "vocab_size", None))
    shape = tuple(input_ids.shape) if input_ids.dim() == 2 else (1, input_ids.shape[0])
    require_mask("attention_mask", attention_mask, shape)
    require_mask("global_attention_mask", global_attention_mask, shape)
    if attention_mask is not None and attention_mask.numel():
        empty = (attention_mask.reshape(shape).sum(-1) == 0).nonzero().flatten().tolist()
        if empty:
            raise InputError(f"attention_mask[{empty[0]}] is all 0: item {empty[0]} has no real token to explain")
    if len(shape) == 2 and shape[0] > 1 and getattr(getattr(model, "config", None), "pad_token_id", 0) is None:
        from pyattn.models.inputs import pools_last_non_pad

        if pools_last_non_pad(model):
            raise InputError(f"input_ids holds {shape[0]} items but {type(model).__name__} has no config.pad_token_id, so it cannot find "
                             "each item's last token: pass one item at a time, or set model.config.pad_token_id")
    limit = _position_limit(model)
    if limit is not None and shape[-1] > limit:
        raise InputError(f"input_ids has {shape[-1]} tokens but {type(model).__name__} has position embeddings for {limit}: "
                         f"use at most {limit} tokens")


def _position_limit(model) -> int | None:
    """The longest input a model with a table of absolute position embeddings
    takes (None for rotary and other models that have no such table)."""
    import torch

    from pyattn.models.inputs import default_max_length

    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None) if hasattr(model, "config") else None
    if not isinstance(getattr(embeddings, "position_embeddings", None), torch.nn.Embedding):
        return None
    return default_max_length(model)
