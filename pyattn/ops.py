"""Thin wrappers over the compiled ops ``torch.ops.pyattn.*`` and their fake
(shape-only) kernels for ``torch.compile`` / meta tensors.

Shapes (one layer of a Longformer model output):

- ``local_attn``: ``(B, H, N, X + w + 1)``, the layer's ``attentions`` entry;
- ``global_attn``: ``(B, H, N_pad >= N, X)``, the layer's ``global_attentions``
  entry (rows past ``N`` are ignored); ``None`` when ``X == 0``;
- ``global_attention_mask``: ``(B, N)``, bool or int, 1 where a token is
  global; required when ``X > 0``. Item ``b``'s ``m``-th global position (in
  ascending order) is slot ``m``; unused slots are ignored.

See ``../shared/LONGFORMER_LAYOUT.md`` for the layout the kernels implement.
"""

from __future__ import annotations

import torch

from pyattn import _C  # noqa: F401  (loads the library, registering the ops)

__all__ = ["band_to_dense", "attention_received", "has_cuda_kernels"]


def band_to_dense(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense attention matrices from Longformer's banded output.

    Returns
    -------
    torch.Tensor
        ``A`` of shape ``(B, H, N, N)``, dtype and device of ``local_attn``:
        ``A[b, h, i, j]`` is the attention query ``i`` pays to key ``j``. Every
        valid row sums to 1; rows of padding positions are 0.

    This is ``N * N`` per head: 12 heads x 4096^2 float32 is 805 MB. For the
    attention a token receives, use :func:`attention_received`, which never
    builds it.
    """
    return torch.ops.pyattn.band_to_dense.default(local_attn, global_attn, global_attention_mask)


def attention_received(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention each token receives: column sums of the dense matrix, computed
    from the band without building it.

    Parameters
    ----------
    head_weights:
        ``(H,)``, optional. If given, heads are fused:
        ``R[b, j] = sum_h head_weights[h] * sum_i A[b, h, i, j]``.
    row_weights:
        ``(B, N)``, optional: a weight per query row,
        ``R[b, h, j] = sum_i row_weights[b, i] * A[b, h, i, j]`` (a vector times
        the matrix; attention rollout is built from it).

    Returns
    -------
    torch.Tensor
        ``(B, H, N)``, or ``(B, N)`` with ``head_weights``; dtype and device of
        ``local_attn`` (accumulated in float32, or float64 for float64 input).
    """
    return torch.ops.pyattn.attention_received.default(
        local_attn, global_attn, global_attention_mask, head_weights, row_weights
    )


def has_cuda_kernels() -> bool:
    """Whether this build of ``pyattn._C`` carries the CUDA kernels."""
    return bool(torch.ops.pyattn.has_cuda_kernels())


def _check_devices(local_attn: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, tensor in others.items():
        if tensor is not None and tensor.device != local_attn.device:
            raise RuntimeError(
                f"{name} is on {tensor.device} but local_attn is on {local_attn.device}; "
                "all arguments must be on one device"
            )


@torch.library.register_fake("pyattn::band_to_dense")
def _band_to_dense_fake(local_attn, global_attn, global_attention_mask):
    torch._check(local_attn.dim() == 4, lambda: "local_attn must be 4-D (B, H, N, X + w + 1)")
    _check_devices(local_attn, global_attn=global_attn, global_attention_mask=global_attention_mask)
    B, H, N, _ = local_attn.shape
    return local_attn.new_empty((B, H, N, N))


@torch.library.register_fake("pyattn::attention_received")
def _attention_received_fake(local_attn, global_attn, global_attention_mask, head_weights, row_weights):
    torch._check(local_attn.dim() == 4, lambda: "local_attn must be 4-D (B, H, N, X + w + 1)")
    _check_devices(
        local_attn,
        global_attn=global_attn,
        global_attention_mask=global_attention_mask,
        head_weights=head_weights,
        row_weights=row_weights,
    )
    B, H, N, _ = local_attn.shape
    if head_weights is not None:
        return local_attn.new_empty((B, N))
    return local_attn.new_empty((B, H, N))
