"""The kernels: one layer's attention, reduced without a model.

- :mod:`pyattn.kernels.ops`: Python wrappers over the compiled ops
  (``torch.ops.pyattn.*``, built as ``pyattn._C`` from ``csrc/``) and their
  fake kernels: Longformer's band -> dense matrices or attention received,
  captured queries and keys -> attention received, never ``N x N``;
- :mod:`pyattn.kernels.reference`: readable pure-PyTorch versions of every op
  (what the tests hold the kernels to);
- :mod:`pyattn.kernels.layers`: a model's attention *outputs*, every layer,
  any attention kind, through the ops.

Kernels know nothing of models beyond the tensors they output. The names
``import pyattn`` gives from here are re-exported below.

>>> import torch
>>> from pyattn.kernels import attention_received
>>> band = torch.full((1, 1, 4, 3), 1 / 3)           # (B, H, N, X + w + 1), w = 2, no global
>>> attention_received(band).shape                   # (B, H, N)
torch.Size([1, 1, 4])
"""

from __future__ import annotations

from pyattn.kernels.ops import attention_received, attention_received_layers, band_to_dense, has_cuda_kernels
from pyattn.kernels.layers import AttentionReceived, DenseTooLarge, layer_attention_received, layer_to_dense

__all__ = [
    "AttentionReceived",
    "DenseTooLarge",
    "attention_received",
    "attention_received_layers",
    "band_to_dense",
    "has_cuda_kernels",
    "layer_attention_received",
    "layer_to_dense",
]
