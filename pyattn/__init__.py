"""pyattn: which tokens drove a long-document classifier's prediction, and does
its attention agree?

The compiled core (``pyattn._C``) turns Longformer's banded attention into dense
matrices on request and into attention received per token without ever
building the ``N x N`` matrix.
"""

from __future__ import annotations

import torch  # noqa: F401  (the extension needs torch's libraries loaded first)

from pyattn.ops import attention_received, band_to_dense, has_cuda_kernels
from pyattn.attribution import Attribution, attribute, attribute_many, auto_batch_size
from pyattn.longformer import (
    AttentionReceived,
    DenseTooLarge,
    layer_attention_received,
    layer_to_dense,
)

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "attribute",
    "attribute_many",
    "auto_batch_size",
    "AttentionReceived",
    "DenseTooLarge",
    "attention_received",
    "band_to_dense",
    "has_cuda_kernels",
    "layer_attention_received",
    "layer_to_dense",
    "__version__",
]
