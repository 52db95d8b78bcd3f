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

import math

import torch

from pyattn import _C  # noqa: F401  (loads the library, registering the ops)
from pyattn._checks import require_tensor, require_tensor_sequence

__all__ = [
    "band_to_dense",
    "attention_received",
    "attention_received_layers",
    "attention_received_qk",
    "global_tables",
    "has_cuda_kernels",
]

from typing import Sequence


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

    >>> import torch, pyattn
    >>> band = torch.full((1, 1, 4, 3), 1 / 3)  # B=1, H=1, N=4, no globals (X=0), window w=2
    >>> pyattn.band_to_dense(band, None, None).shape
    torch.Size([1, 1, 4, 4])
    >>> pyattn.attention_received(band, None, None)  # column sums; rows 0 and 3 reach past the ends
    tensor([[[0.6667, 1.0000, 1.0000, 0.6667]]])
    """
    _require_tensors(local_attn, global_attn, global_attention_mask)
    return torch.ops.pyattn.band_to_dense.default(local_attn, global_attn, global_attention_mask)


def attention_received(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    row_weights: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
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

    out_dtype:
        dtype of the result. Default: float32 for float16 and bfloat16 inputs
        (a column sum over N rows overflows float16 at the CLS column for N of
        a few thousand), else the dtype of ``local_attn``.

    Returns
    -------
    torch.Tensor
        ``(B, H, N)``, or ``(B, N)`` with ``head_weights``, on the device of
        ``local_attn``; accumulated in float32 (float64 for float64 input).
        Differentiable in ``local_attn``, ``global_attn``, ``head_weights``
        and ``row_weights``.

    Examples
    --------
    >>> import torch, pyattn
    >>> from pyattn.kernels import reference
    >>> model, tokenizer = pyattn.load_demo()
    >>> ids = tokenizer("the borrow checker rejects the program", return_tensors="pt")["input_ids"]  # (B, N) = (1, 11)
    >>> mask = torch.zeros_like(ids)
    >>> mask[:, 0] = 1  # CLS global
    >>> with torch.no_grad():
    ...     out = model(ids, global_attention_mask=mask, output_attentions=True)
    >>> received = attention_received(out.attentions[-1], out.global_attentions[-1], mask)
    >>> received.shape  # (B, H, N)
    torch.Size([1, 4, 11])
    >>> received.sum(-1)  # every query row is a distribution: N in all per head
    tensor([[11.0000, 11.0000, 11.0000, 11.0000]])
    >>> torch.allclose(received, reference.attention_received(out.attentions[-1], out.global_attentions[-1], mask), atol=1e-5)
    True
    """
    _require_tensors(local_attn, global_attn, global_attention_mask, head_weights, row_weights)
    return torch.ops.pyattn.attention_received.default(
        local_attn, global_attn, global_attention_mask, head_weights, row_weights, out_dtype
    )


def attention_received_layers(
    local_attn: Sequence[torch.Tensor],
    global_attn: Sequence[torch.Tensor | None] | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    row_weights: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """:func:`attention_received` for every layer of a model output in one
    call (windows may differ per layer). Layers are numbered from 0.

    Parameters
    ----------
    local_attn:
        L tensors ``(B, H, N, X + w_l + 1)`` (``output.attentions``).
    global_attn:
        L tensors ``(B, H, N_pad, X)`` (``output.global_attentions``), or None
        when no token is global.
    global_attention_mask:
        ``(B, N)``, the mask the model ran with.
    head_weights:
        ``(L, H)``, optional: heads fused per layer as in
        :func:`attention_received`.
    row_weights:
        ``(B, N)`` for every layer, or ``(L, B, N)``, optional.
    out_dtype:
        As in :func:`attention_received`.

    Returns
    -------
    torch.Tensor
        ``(L, B, H, N)``, or ``(L, B, N)`` with ``head_weights``.
        Differentiable like :func:`attention_received`.

    Examples
    --------
    >>> import torch, pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> ids = tokenizer("the borrow checker rejects the program", return_tensors="pt")["input_ids"]
    >>> mask = torch.zeros_like(ids)
    >>> mask[:, 0] = 1
    >>> with torch.no_grad():
    ...     out = model(ids, global_attention_mask=mask, output_attentions=True)
    >>> [layer.shape[-1] for layer in out.attentions]  # X + w + 1: windows 32, 64, 128 differ per layer
    [34, 66, 130]
    >>> received = attention_received_layers(out.attentions, out.global_attentions, mask)
    >>> received.shape  # (L, B, H, N)
    torch.Size([3, 1, 4, 11])
    >>> torch.allclose(received[2], attention_received(out.attentions[2], out.global_attentions[2], mask))
    True
    """
    require_tensor_sequence("local_attn", local_attn, "(B, H, N, X + w + 1)")
    if global_attn is not None:
        require_tensor_sequence("global_attn", global_attn, "(B, H, N_pad, X)", allow_none=True)
    _require_tensors(None, None, global_attention_mask, head_weights, row_weights, head_shape="(L, H)", row_shape="(B, N) or (L, B, N)")
    local = list(local_attn)
    glob = [] if global_attn is None else list(global_attn)
    if glob and all(g is None for g in glob):
        glob = []
    return torch.ops.pyattn.attention_received_layers.default(
        local, glob, global_attention_mask, head_weights, row_weights, out_dtype
    )


def _require_tensors(local_attn, global_attn, global_attention_mask, head_weights=None, row_weights=None,
                     head_shape: str = "(H,)", row_shape: str = "(B, N)") -> None:
    """One line naming the argument for anything that is not a tensor (a
    numpy array, a list), before the dispatcher's own message."""
    for name, value, shape in (
        ("local_attn", local_attn, "(B, H, N, X + w + 1)"),
        ("global_attn", global_attn, "(B, H, N_pad, X)"),
        ("global_attention_mask", global_attention_mask, "(B, N)"),
        ("head_weights", head_weights, head_shape),
        ("row_weights", row_weights, row_shape),
    ):
        if value is not None:
            require_tensor(name, value, shape)


def has_cuda_kernels() -> bool:
    """Whether this build of ``pyattn._C`` carries the CUDA kernels.

    >>> isinstance(has_cuda_kernels(), bool)
    True
    """
    return bool(torch.ops.pyattn.has_cuda_kernels())


# --- Fake (shape-only) kernels: the same shape, dtype and device checks as
# csrc/prepare.h, with the same messages. ------------------------------------


def _check_inputs(local_attn, global_attn, global_attention_mask, head_weights=None, row_weights=None) -> int:
    """The checks of ``csrc/prepare.h`` that shapes, dtypes and devices
    decide; returns the window ``w``. (What the mask's values say is checked
    by the real kernels only.)"""

    def fail(message: str):
        raise RuntimeError(message)

    if local_attn.dim() != 4:
        fail(f"local_attn must be 4-D (B, H, N, X + w + 1), got {local_attn.dim()}-D tensor of shape {list(local_attn.shape)}")
    if global_attn is not None and global_attn.dim() != 4:
        fail(f"global_attn must be 4-D (B, H, N_pad, X), got {global_attn.dim()}-D tensor of shape {list(global_attn.shape)}")
    if global_attention_mask is not None and global_attention_mask.dim() != 2:
        fail(f"global_attention_mask must be 2-D (B, N), got {global_attention_mask.dim()}-D tensor of shape {list(global_attention_mask.shape)}")
    B, H, N, D = local_attn.shape
    X = 0 if global_attn is None else global_attn.shape[3]
    w = D - X - 1
    if w < 2 or w % 2:
        fail(
            f"local_attn's last dimension must be X + w + 1 for an even window w >= 2, with X = {X} global slots "
            f"(global_attn.size(3)); got last dimension {D} (local_attn shape {list(local_attn.shape)}), which leaves w = {w}"
        )
    if global_attn is not None:
        for d, expected, what in ((0, B, "batch B"), (1, H, "heads H")):
            if global_attn.shape[d] != expected:
                fail(f"global_attn has shape {list(global_attn.shape)} but its dimension {d} ({what}) must be {expected} to match local_attn")
        if global_attn.shape[2] < N:
            fail(f"global_attn has shape {list(global_attn.shape)} but its dimension 2 (N_pad) must be at least N = {N}, the sequence length of local_attn")
    if global_attention_mask is not None:
        for d, expected, what in ((0, B, "batch B"), (1, N, "sequence length N")):
            if global_attention_mask.shape[d] != expected:
                fail(f"global_attention_mask has shape {list(global_attention_mask.shape)} but its dimension {d} ({what}) must be {expected} to match local_attn")
    elif X > 0:
        fail(f"global_attention_mask is required when global_attn has X = {X} global slots: it says which positions are global")
    if head_weights is not None and tuple(head_weights.shape) != (H,):
        fail(f"head_weights must have shape (H,) = ({H},) to match local_attn's heads, got shape {list(head_weights.shape)}")
    if row_weights is not None and tuple(row_weights.shape) != (B, N):
        fail(f"row_weights must have shape (B, N) = ({B}, {N}) to match local_attn, got shape {list(row_weights.shape)}")
    if not local_attn.dtype.is_floating_point:
        fail(f"local_attn must be float16, bfloat16, float32 or float64, got {local_attn.dtype}")
    if global_attn is not None and global_attn.dtype != local_attn.dtype:
        fail(f"global_attn has dtype {global_attn.dtype} but local_attn has {local_attn.dtype}; they must match")
    if global_attention_mask is not None and global_attention_mask.dtype.is_floating_point:
        fail(f"global_attention_mask must be bool or integer (1 = global), got {global_attention_mask.dtype}")
    for name, tensor in (("head_weights", head_weights), ("row_weights", row_weights)):
        if tensor is not None and not tensor.dtype.is_floating_point:
            fail(f"{name} must be float16, bfloat16, float32 or float64, got {tensor.dtype}")
    _check_devices(
        local_attn,
        global_attn=global_attn,
        global_attention_mask=global_attention_mask,
        head_weights=head_weights,
        row_weights=row_weights,
    )
    return w


def _check_devices(local_attn: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, tensor in others.items():
        if tensor is not None and tensor.device != local_attn.device:
            raise RuntimeError(
                f"{name} is on {tensor.device} but local_attn is on {local_attn.device}; "
                "all arguments must be on one device"
            )


def _received_dtype(local_attn: torch.Tensor, out_dtype: torch.dtype | None) -> torch.dtype:
    if out_dtype is not None:
        if not out_dtype.is_floating_point:
            raise RuntimeError(f"out_dtype must be float16, bfloat16, float32 or float64, got {out_dtype}")
        return out_dtype
    return torch.float32 if local_attn.dtype in (torch.float16, torch.bfloat16) else local_attn.dtype


@torch.library.register_fake("pyattn::band_to_dense")
def _band_to_dense_fake(local_attn, global_attn, global_attention_mask):
    _check_inputs(local_attn, global_attn, global_attention_mask)
    B, H, N, _ = local_attn.shape
    return local_attn.new_empty((B, H, N, N))


@torch.library.register_fake("pyattn::attention_received")
def _attention_received_fake(local_attn, global_attn, global_attention_mask, head_weights, row_weights, out_dtype=None):
    _check_inputs(local_attn, global_attn, global_attention_mask, head_weights, row_weights)
    B, H, N, _ = local_attn.shape
    dtype = _received_dtype(local_attn, out_dtype)
    if head_weights is not None:
        return local_attn.new_empty((B, N), dtype=dtype)
    return local_attn.new_empty((B, H, N), dtype=dtype)


# --- Autograd: both ops are linear in the band and the global attention, so
# their backward passes are gathers, composed here from tensor ops (exact, no
# host synchronisation). ---------------------------------------------------


def global_tables(
    global_attention_mask: torch.Tensor | None, B: int, N: int, X: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global-token tables the kernels use, built as ``csrc/prepare.h``
    builds them (tensor ops only, no host synchronisation).

    Returns
    -------
    (is_global, global_pos)
        ``is_global`` ``(B, N)`` bool: position ``i`` of item ``b`` holds one
        of the ``X`` global slots; ``global_pos`` ``(B, X)`` long: the
        position of slot ``m`` of item ``b`` (ascending), -1 if unused.

    Examples
    --------
    >>> is_global, pos = global_tables(torch.tensor([[1, 0, 1, 0]]), 1, 4, 3, "cpu")
    >>> pos.tolist()
    [[0, 2, -1]]
    """
    if global_attention_mask is None:
        return torch.zeros(B, N, dtype=torch.bool, device=device), torch.full((B, X), -1, dtype=torch.long, device=device)
    is_global = global_attention_mask != 0
    slot = is_global.long().cumsum(1) - 1
    in_table = is_global & (slot < X)
    pos = torch.full((B, X + 1), -1, dtype=torch.long, device=device)
    target = torch.where(in_table, slot, torch.full_like(slot, X))
    pos.scatter_(1, target, torch.arange(N, device=device).expand(B, N))
    return in_table, pos[:, :X]


def _band_gather(values: torch.Tensor, half: int) -> torch.Tensor:
    """``values`` (..., N) -> (..., N, 2 * half + 1): entry [i, k] is
    ``values[i + k - half]``, 0 outside [0, N)."""
    padded = torch.nn.functional.pad(values, (half, half))
    return padded.unfold(-1, 2 * half + 1, 1)


def _received_setup_context(ctx, inputs, output):
    local_attn, global_attn, global_attention_mask, head_weights, row_weights = inputs[:5]
    ctx.save_for_backward(local_attn, global_attn, global_attention_mask, head_weights, row_weights)
    ctx.num_inputs = len(inputs)  # out_dtype may be left out


def _received_backward(ctx, grad):
    local_attn, global_attn, mask, head_weights, row_weights = ctx.saved_tensors
    B, H, N, D = local_attn.shape
    X = 0 if global_attn is None else global_attn.shape[3]
    w = D - X - 1
    acc = torch.float64 if local_attn.dtype == torch.float64 else torch.float32
    device = local_attn.device
    is_global, global_pos = global_tables(mask, B, N, X, device)
    valid = global_pos >= 0  # (B, X)
    fused = head_weights is not None
    # The output gradient per head: (B, H, N).
    g = grad.to(acc)
    g_heads = g[:, None, :] * head_weights.to(acc)[None, :, None] if fused else g
    r = torch.ones(B, N, dtype=acc, device=device) if row_weights is None else row_weights.to(acc)
    local_rows = (r * ~is_global)[:, None, :, None]  # (B, 1, N, 1): global rows come from global_attn
    g_band = _band_gather(g_heads, w // 2)  # (B, H, N, w + 1)
    g_slots = g_heads.gather(2, global_pos.clamp_min(0)[:, None, :].expand(B, H, X)) * valid[:, None, :]  # (B, H, X)
    need_local, need_global, _, need_heads, need_rows = ctx.needs_input_grad[:5]
    grad_local = grad_global = grad_heads = grad_rows = None
    if need_local:
        grad_local = torch.cat([g_slots[:, :, None, :].expand(B, H, N, X), g_band], -1) * local_rows
        grad_local = grad_local.to(local_attn.dtype)
    r_global = r.gather(1, global_pos.clamp_min(0)) * valid  # (B, X): weight of the row of slot m
    if need_global and global_attn is not None:
        grad_global = torch.zeros(global_attn.shape, dtype=acc, device=device)
        grad_global[:, :, :N, :] = g_heads[..., None] * r_global[:, None, None, :]
        grad_global = grad_global.to(global_attn.dtype)
    if need_heads:
        per_head = torch.ops.pyattn.attention_received.default(local_attn, global_attn, mask, None, row_weights, acc)
        grad_heads = (per_head * g[:, None, :]).sum((0, 2)).to(head_weights.dtype)
    if need_rows:
        # d/dr_i: row i of each head's dense matrix dotted with the output gradient.
        band = local_attn[..., X:].to(acc)
        rows = (band * g_band).sum(-1)  # (B, H, N)
        if X > 0:
            rows = rows + (local_attn[..., :X].to(acc) * g_slots[:, :, None, :]).sum(-1)
        rows = (rows * ~is_global[:, None, :]).sum(1)  # (B, N)
        if X > 0:
            global_rows = (global_attn[:, :, :N, :].to(acc) * g_heads[..., None]).sum((1, 2)) * valid  # (B, X)
            rows = rows.scatter_add(1, global_pos.clamp_min(0), global_rows)
        grad_rows = rows.to(row_weights.dtype)
    return (grad_local, grad_global, None, grad_heads, grad_rows, None)[: ctx.num_inputs]


def _dense_setup_context(ctx, inputs, output):
    local_attn, global_attn, global_attention_mask = inputs
    ctx.save_for_backward(global_attention_mask)
    ctx.local_shape = tuple(local_attn.shape)
    ctx.global_shape = None if global_attn is None else tuple(global_attn.shape)


def _dense_backward(ctx, grad):
    (mask,) = ctx.saved_tensors
    B, H, N, D = ctx.local_shape
    X = 0 if ctx.global_shape is None else ctx.global_shape[3]
    w = D - X - 1
    half = w // 2
    is_global, global_pos = global_tables(mask, B, N, X, grad.device)
    valid = global_pos >= 0
    local_rows = (~is_global)[:, None, :, None]
    # Band: grad_local[i, X + k] = grad[i, i + k - half], 0 outside [0, N).
    padded = torch.nn.functional.pad(grad, (half, half))  # (B, H, N, N + w)
    index = (torch.arange(N, device=grad.device)[:, None] + torch.arange(w + 1, device=grad.device)[None, :])
    band = padded.gather(3, index.expand(B, H, N, w + 1))
    columns = grad.gather(3, global_pos.clamp_min(0)[:, None, None, :].expand(B, H, N, X)) * valid[:, None, None, :]
    grad_local = torch.cat([columns, band], -1) * local_rows
    grad_global = None
    if ctx.global_shape is not None:
        grad_global = grad.new_zeros(ctx.global_shape)
        rows = grad.gather(2, global_pos.clamp_min(0)[:, None, :, None].expand(B, H, X, N)) * valid[:, None, :, None]
        grad_global[:, :, :N, :] = rows.transpose(2, 3)
    return grad_local, grad_global, None


torch.library.register_autograd("pyattn::attention_received", _received_backward, setup_context=_received_setup_context)
torch.library.register_autograd("pyattn::band_to_dense", _dense_backward, setup_context=_dense_setup_context)



# --- Attention received from queries and keys (no probabilities, no N x N). --


def attention_received_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float,
    *,
    key_mask: torch.Tensor | None = None,
    window: tuple[int, int] = (-1, -1),
    causal: bool = False,
    global_mask: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention each key receives, computed from one layer's queries and
    keys without any ``N x N`` matrix: two passes over tiles, first each
    row's log-sum-exp, then column sums of ``exp(scale * q.k - lse)``.

    The attention described is ``p[b, h, i, j] = softmax_j(scale * q[b, h, i]
    . k[b, h', j])`` over the keys row ``i`` may see (``h' = h // (H // Hkv)``):

    - ``key_mask[b, j] != 0`` (None: every key is real); a padded query row
      contributes nothing;
    - ``window = (left, right)``: ``j >= i - left`` unless ``left < 0``,
      ``j <= i + right`` unless ``right < 0`` (ModernBERT's local layers:
      ``(64, 64)``; Mistral's sliding window ``W``: ``(W - 1, -1)`` with causal);
    - ``causal``: ``j <= i``;
    - ``global_mask[b, i] != 0``: row ``i`` sees every real key and key ``i``
      is seen by every real row, whatever the window and causal say
      (Longformer / BigBird globals).

    A row that sees no key contributes nothing.

    Parameters
    ----------
    q : (B, H, N, d); k : (B, Hkv, N, d) with ``H % Hkv == 0``; float32,
        float16 or bfloat16, one dtype, any strides. Accumulated in float32.
    scale : finite float, the factor on ``q . k``.
    head_weights : (H,), optional: heads fused, ``R[b, j] = sum_h
        head_weights[h] * R[b, h, j]``.
    row_weights : (B, N) or (B, H, N), optional: weight of each query row
        (rollout's propagation; a one-hot of row 0 gives the CLS row). Values
        are not checked (negative weights are allowed; NaN propagates), so the
        check needs no host synchronisation.

    Returns
    -------
    torch.Tensor
        float32, ``(B, H, N)``, or ``(B, N)`` with ``head_weights``, on the
        device of ``q``. Not differentiable: this op reads attention, it is
        not for training (backward raises).

    Examples
    --------
    >>> import torch
    >>> q = torch.zeros(1, 1, 3, 2); k = torch.zeros(1, 1, 3, 2)  # all scores equal
    >>> attention_received_qk(q, k, 1.0, causal=True)  # rows see 1, 2, 3 keys
    tensor([[[1.8333, 0.8333, 0.3333]]])
    """
    _check_qk_inputs(q, k, scale, key_mask, window, causal, global_mask, head_weights, row_weights)
    left, right = (int(x) for x in window)
    return torch.ops.pyattn.attention_received_qk.default(
        q, k, float(scale), key_mask, left, right, bool(causal), global_mask, head_weights, row_weights
    )


_QK_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_qk_inputs(q, k, scale, key_mask, window, causal, global_mask, head_weights, row_weights) -> None:
    """The checks of ``csrc/cpu/qk_cpu.cpp`` (``check_qk_inputs``), with the
    same messages, in the same order: dims, sizes, dtypes, devices."""

    def fail(message: str):
        raise RuntimeError(message)

    if isinstance(window, (int, float)) or len(tuple(window)) != 2:
        fail(f"window must be a pair of ints (left, right), -1 for unlimited, got {window!r}")
    for name, value in zip(("window_left", "window_right"), tuple(window)):
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"{name} must be an int (-1 for unlimited), got {value!r}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(float(scale)):
        fail(f"scale must be a finite float, got {scale!r}")
    if q.dim() != 4:
        fail(f"q must be 4-D (B, H, N, d), got {q.dim()}-D tensor of shape {list(q.shape)}")
    if k.dim() != 4:
        fail(f"k must be 4-D (B, Hkv, N, d), got {k.dim()}-D tensor of shape {list(k.shape)}")
    B, H, N, d = q.shape
    for dim, what in ((0, "batch B"), (2, "sequence length N"), (3, "head size d")):
        if k.shape[dim] != q.shape[dim]:
            fail(f"k has shape {list(k.shape)} but its dimension {dim} ({what}) must be {q.shape[dim]} to match q")
    Hkv = k.shape[1]
    if Hkv == 0 or H % Hkv != 0:
        fail(f"k has {Hkv} heads but q's {H} heads must be a multiple of them (grouped-query attention), k shape {list(k.shape)}")
    for name, mask in (("key_mask", key_mask), ("global_mask", global_mask)):
        if mask is not None and tuple(mask.shape) != (B, N):
            fail(f"{name} must have shape (B, N) = ({B}, {N}) to match q, got shape {list(mask.shape)}")
    if head_weights is not None and tuple(head_weights.shape) != (H,):
        fail(f"head_weights must have shape (H,) = ({H},) to match q's heads, got shape {list(head_weights.shape)}")
    if row_weights is not None and tuple(row_weights.shape) not in ((B, N), (B, H, N)):
        fail(f"row_weights must have shape (B, N) = ({B}, {N}) or (B, H, N) = ({B}, {H}, {N}) to match q, got shape {list(row_weights.shape)}")
    if q.dtype not in _QK_DTYPES:
        fail(f"q must be float32, float16 or bfloat16, got {q.dtype}")
    if k.dtype != q.dtype:
        fail(f"k has dtype {k.dtype} but q has {q.dtype}; they must match")
    for name, mask in (("key_mask", key_mask), ("global_mask", global_mask)):
        if mask is not None and mask.dtype.is_floating_point:
            fail(f"{name} must be bool or integer (nonzero = set), got {mask.dtype}")
    for name, tensor in (("head_weights", head_weights), ("row_weights", row_weights)):
        if tensor is not None and not tensor.dtype.is_floating_point:
            fail(f"{name} must be float16, bfloat16, float32 or float64, got {tensor.dtype}")
    for name, tensor in (("k", k), ("key_mask", key_mask), ("global_mask", global_mask), ("head_weights", head_weights), ("row_weights", row_weights)):
        if tensor is not None and tensor.device != q.device:
            fail(f"{name} is on {tensor.device} but q is on {q.device}; all arguments must be on one device")


@torch.library.register_fake("pyattn::attention_received_qk")
def _attention_received_qk_fake(q, k, scale, key_mask, window_left, window_right, causal, global_mask, head_weights, row_weights):
    _check_qk_inputs(q, k, scale, key_mask, (window_left, window_right), causal, global_mask, head_weights, row_weights)
    B, H, N, _ = q.shape
    shape = (B, N) if head_weights is not None else (B, H, N)
    return q.new_empty(shape, dtype=torch.float32)


def _qk_setup_context(ctx, inputs, output):
    pass


def _qk_backward(ctx, grad):
    raise RuntimeError(
        "attention_received_qk is not differentiable: it reads attention (column sums of softmax(q.k)), "
        "it is not for training; compute what needs gradients with the model's own attention"
    )


torch.library.register_autograd("pyattn::attention_received_qk", _qk_backward, setup_context=_qk_setup_context)
