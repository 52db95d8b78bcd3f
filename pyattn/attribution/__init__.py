"""Attribution: which tokens drove the prediction.

:mod:`pyattn.attribution.integrated_gradients`
    Layer Integrated Gradients on the embedding layer (:func:`attribute`,
    :func:`attribute_many`, :func:`attribute_stream`, :class:`Attribution`).
:mod:`pyattn.attribution.quadrature`
    The nested quadrature rules of its path integral.
:mod:`pyattn.attribution.memory`
    The memory model and budget that size its batches of integration nodes.
:mod:`pyattn.attribution.single_pass`
    One-pass alternatives: gradient x input, attention x gradient, gradient
    rollout (:func:`pyattn.single_pass`).
:mod:`pyattn.attribution.importance`
    Head importance, ``(L, H)`` (Taylor, head gates).

This package re-exports the names of the 1.0 module ``pyattn.attribution``.
The private ``_path_integral`` (one document's integrand and refinement) and
``_scheduler`` (which nodes of which documents share a batch) serve
:mod:`~pyattn.attribution.integrated_gradients`.
"""

from __future__ import annotations

from pyattn.attribution.integrated_gradients import Attribution, attribute, attribute_many, attribute_stream
from pyattn.attribution.memory import (MemoryBudgetWarning, auto_batch_size, batch_for_budget, default_memory_budget, held_bytes,
                                       parse_memory_budget, predicted_step_bytes)
from pyattn.attribution.memory import memory_features, memory_model_description  # noqa: F401  (the benchmarks read them here)

# the 1.0 module's __all__: integrated gradients and the memory budget
__all__ = ["Attribution", "attribute", "attribute_many", "attribute_stream"]
__all__ += ["MemoryBudgetWarning", "auto_batch_size", "batch_for_budget", "default_memory_budget", "held_bytes",
            "parse_memory_budget", "predicted_step_bytes"]
