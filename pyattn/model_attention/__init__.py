"""Attention from a model: text (or input ids) through the model, each layer's
attention reduced with :mod:`pyattn.kernels`.

- :mod:`pyattn.model_attention.received`: :func:`attention` and
  :func:`attention_from_inputs` (attention received per token, per layer,
  streamed; dense on request), the route (band, queries and keys, eager) and
  the checks that the model's attention is a distribution;
- :mod:`pyattn.model_attention.rollout`: attention rolled out over the layers.

The names below are re-exported from :mod:`pyattn.model_attention.received`,
so ``from pyattn.model_attention import attention`` works as before 1.1.
:func:`pyattn.attention` stays the function.
"""

from __future__ import annotations

from pyattn.errors import NotADistribution  # importable here as before 1.1
from pyattn.model_attention.received import (
    ModelAttention,
    attention,
    attention_from_inputs,
    attention_route,
    check_full_rows,
    default_global_attention_mask,
    ready_for_attention,
    refuse_block_sparse,
    use_eager_attention,
)

__all__ = ["ModelAttention", "attention_from_inputs", "attention", "attention_route", "ready_for_attention",
           "default_global_attention_mask", "use_eager_attention"]
