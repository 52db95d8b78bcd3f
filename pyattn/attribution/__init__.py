"""Attribution: which tokens drove the prediction.

:mod:`pyattn.attribution.integrated_gradients`
    Layer Integrated Gradients on the embedding layer (:func:`attribute`,
    :func:`attribute_many`, :func:`attribute_stream`, :class:`Attribution`).
:mod:`pyattn.attribution.quadrature`
    The nested quadrature rules of its path integral.
:mod:`pyattn.attribution.single_pass`
    One-pass alternatives: gradient x input, attention x gradient, gradient
    rollout (:func:`pyattn.single_pass`).
:mod:`pyattn.attribution.importance`
    Head importance, ``(L, H)`` (Taylor, head gates).

This package re-exports the names of the 1.0 module ``pyattn.attribution``.
"""

from __future__ import annotations

from pyattn.attribution.integrated_gradients import (
    Attribution,
    MemoryBudgetWarning,
    attribute,
    attribute_many,
    attribute_stream,
    auto_batch_size,
    batch_for_budget,
    default_memory_budget,
    held_bytes,
    memory_features,
    memory_model_description,
    parse_memory_budget,
    predicted_step_bytes,
)

__all__ = [
    "Attribution",
    "MemoryBudgetWarning",
    "attribute",
    "attribute_many",
    "attribute_stream",
    "auto_batch_size",
    "batch_for_budget",
    "default_memory_budget",
    "held_bytes",
    "parse_memory_budget",
    "predicted_step_bytes",
]
