"""Checks of the tensors a model is given (private: for pyattn's own modules)."""

from __future__ import annotations

from pyattn._checks import require_mask, require_token_ids


def check_model_inputs(model, input_ids, attention_mask=None, global_attention_mask=None) -> None:
    """Token ids an integer tensor inside the model's vocabulary, masks
    integer tensors of the same shape: one line naming the argument."""
    require_token_ids("input_ids", input_ids, getattr(getattr(model, "config", None), "vocab_size", None))
    shape = tuple(input_ids.shape) if input_ids.dim() == 2 else (1, input_ids.shape[0])
    require_mask("attention_mask", attention_mask, shape)
    require_mask("global_attention_mask", global_attention_mask, shape)
