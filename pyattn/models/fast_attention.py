"""An exact, faster Longformer self-attention for attribution.

transformers' ``LongformerSelfAttention`` computes the banded scores by
chunking queries and keys into overlapping ``2w`` blocks, padding, shifting
("diagonalising") and masking copies of them; on a CPU that bookkeeping
(``fill_`` and ``copy_``) costs as much as the matmuls. The same attention,
written as blocks of ``w`` queries attending to their ``3w``
neighbouring keys and the global keys through
``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask,
computes the same function with far fewer copies, and its backward comes from
SDPA's own kernels. The few global queries attend through projections
applied to themselves rather than to every key and value (the same
function; see ``_global_rows``), which saves two of the layer's eight
N x E x E matmuls.

What Longformer computes (and what is reproduced here, per layer):

- a local query ``i`` (not global, not padding) attends to the keys ``j``
  with ``|i - j| <= w`` (``w`` = half the layer's window) that are neither
  padding nor global, plus every global key, with the layer's ``query`` /
  ``key`` / ``value`` projections;
- a global query attends to every non-padding key with the ``*_global``
  projections;
- padding queries output zeros.

:func:`fast_longformer_attention` swaps the forward of every Longformer
self-attention module of a model for this one inside a ``with`` block (the
weights and the model's class are untouched; the original forward is used
whenever attention probabilities are asked for or the module is training).
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from pyattn.errors import InputError, ModelError

__all__ = ["banded_self_attention", "fast_longformer_attention", "fast_attention_context", "longformer_self_attentions"]


def longformer_self_attentions(model: torch.nn.Module) -> list:
    """The ``LongformerSelfAttention`` modules of a model (empty for others).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    list of LongformerSelfAttention
        One per layer, in order.

    Examples
    --------
    >>> import torch
    >>> from pyattn import load_demo
    >>> [layer.one_sided_attn_window_size for layer in longformer_self_attentions(load_demo()[0])]
    [16, 32, 64]
    >>> longformer_self_attentions(torch.nn.Linear(2, 2))
    []
    """
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    return [m for m in model.modules() if isinstance(m, LongformerSelfAttention)]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    B, N, E = x.shape
    return x.view(B, N, heads, E // heads)


def banded_self_attention(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    is_index_masked: torch.Tensor,
    is_index_global_attn: torch.Tensor,
    is_global_attn: bool,
) -> torch.Tensor:
    """Longformer self-attention of one layer, as blocked banded SDPA.

    Parameters
    ----------
    module : LongformerSelfAttention
        The layer's self-attention (its projections are used).
    hidden_states : torch.Tensor, shape (B, N, E)
        ``N`` a multiple of the layer's one-sided window (the model pads).
    attention_mask : torch.Tensor, shape (B, N), float
        As the encoder passes it: 0 local, < 0 padding, > 0 global.
    is_index_masked, is_index_global_attn : torch.Tensor, shape (B, N), bool
        Padding and global positions.
    is_global_attn : bool
        Whether any position is global.

    Returns
    -------
    torch.Tensor, shape (B, N, E)
        The attention output before ``attention.output``, equal to
        transformers' first output.

    Raises
    ------
    ValueError
        If ``N`` is not a multiple of the one-sided window.

    Examples
    --------
    >>> import torch
    >>> from pyattn import load_demo
    >>> model, tokenizer = load_demo()
    >>> layer = longformer_self_attentions(model)[0]  # window 32: one-sided 16
    >>> hidden = torch.randn(1, 64, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 64)
    >>> mask[0, 0], mask[0, 60:] = 1.0, -10000.0  # token 0 global, the last 4 padding
    >>> with torch.no_grad():
    ...     fast = banded_self_attention(layer, hidden, mask, mask < 0, mask > 0, True)
    ...     plain = layer(hidden, attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=mask > 0, is_global_attn=True)[0]
    >>> fast.shape, torch.allclose(fast, plain, atol=1e-6)  # transformers' own layer agrees
    (torch.Size([1, 64, 64]), True)
    """
    B, N, E = hidden_states.shape
    H = module.num_heads
    d = module.head_dim
    w = module.one_sided_attn_window_size
    if N % w:
        raise InputError(f"sequence length {N} is not a multiple of the half window {w}: Longformer pads inputs first")
    c = _query_block(w)  # queries per block; c divides 2w, and N is a multiple of 2w
    nb = N // c
    device = hidden_states.device

    q = _heads(module.query(hidden_states) / math.sqrt(d), H)  # (B, N, H, d)
    k = _heads(module.key(hidden_states), H)
    v = _heads(module.value(hidden_states), H)

    # queries in blocks of c: (B * nb, H, c, d)
    q_blocks = q.view(B, nb, c, H, d).permute(0, 1, 3, 2, 4).reshape(B * nb, H, c, d)

    # keys and values of block b: positions b*c - w .. b*c + c + w - 1, as strided views of a padded copy
    span = c + 2 * w

    def neighbours(x):
        padded = F.pad(x, (0, 0, 0, 0, w, w))  # (B, N + 2w, H, d)
        return padded.unfold(1, span, c).permute(0, 1, 2, 4, 3)  # (B, nb, H, span, d)

    k_local, v_local = neighbours(k), neighbours(v)

    # which keys a local query may use: in its band, inside [0, N), neither padding nor global
    r = torch.arange(c, device=device)[:, None]
    p = torch.arange(span, device=device)[None, :]
    in_band = (p >= r) & (p <= r + 2 * w)  # (c, span): |i - j| <= w
    key_pos = torch.arange(nb, device=device)[:, None] * c - w + torch.arange(span, device=device)[None, :]  # (nb, span)
    in_range = (key_pos >= 0) & (key_pos < N)
    local_key = attention_mask == 0  # (B, N): neither padding nor global
    key_ok = F.pad(local_key, (w, w), value=False).unfold(1, span, c)  # (B, nb, span)
    # padding queries: any in-range band key (their output is zeroed), so no row is empty
    query_pad = is_index_masked.view(B, nb, c)[..., None]  # (B, nb, c, 1)
    mask = in_band[None, None] & in_range[None, :, None, :] & (key_ok[:, :, None, :] | query_pad)  # (B, nb, c, span)

    if is_global_attn:
        counts = is_index_global_attn.sum(1)
        G = int(counts.max())
        # global positions per item, in order; missing slots point at 0 and are masked
        order = torch.argsort((~is_index_global_attn).to(torch.int8), dim=1, stable=True)[:, :G]  # (B, G)
        slot_ok = torch.arange(G, device=device)[None, :] < counts[:, None]  # (B, G)
        gather = order[:, :, None, None].expand(B, G, H, d)
        k_global = torch.gather(k, 1, gather).permute(0, 2, 1, 3)  # (B, H, G, d)
        v_global = torch.gather(v, 1, gather).permute(0, 2, 1, 3)
        k_blocks = torch.cat([k_global[:, None].expand(B, nb, H, G, d), k_local], dim=3)
        v_blocks = torch.cat([v_global[:, None].expand(B, nb, H, G, d), v_local], dim=3)
        mask = torch.cat([slot_ok[:, None, None, :].expand(B, nb, c, G), mask], dim=3)
    else:
        G = 0
        k_blocks, v_blocks = k_local, v_local
    S = G + span
    out = F.scaled_dot_product_attention(
        q_blocks,
        k_blocks.reshape(B * nb, H, S, d),
        v_blocks.reshape(B * nb, H, S, d),
        attn_mask=mask.reshape(B * nb, 1, c, S),
        scale=1.0,
    )  # (B * nb, H, c, d)
    out = out.view(B, nb, H, c, d).permute(0, 1, 3, 2, 4).reshape(B, N, E)
    out = out.masked_fill(is_index_masked[:, :, None], 0.0)

    if is_global_attn:
        hidden_global = torch.gather(hidden_states, 1, order[:, :, None].expand(B, G, E))  # (B, G, E)
        qg = _heads(module.query_global(hidden_global) / math.sqrt(d), H).transpose(1, 2)  # (B, H, G, d)
        global_out = _global_rows(module, qg, hidden_states, is_index_masked)  # (B, G, E)
        rows = (order + torch.arange(B, device=device)[:, None] * N)[slot_ok]  # flat (B*N) rows of the global tokens
        out = out.reshape(B * N, E).index_copy(0, rows, global_out[slot_ok].to(out.dtype)).view(B, N, E)
    return out


# Queries per block of the local attention: w / QUERY_BLOCK_FRACTION. Each
# block of c queries reads c + 2w keys where each query needs 2w + 1, so
# smaller blocks waste fewer scores (c = w: 1.5x, c = w/2: 1.25x) but copy
# more key/value rows ((1 + 2w/c) N of them, kept for the backward).
# Measured on the base-shaped Longformer, one IG step at 4,096 tokens on
# 2 CPU cores: c = w 11.6-12.4 s and 4.34 GB above the process's level,
# c = w/2 11.3-12.0 s and 4.82 GB, c = w/4 14.2 s. c = w: memory decides.
QUERY_BLOCK_FRACTION = 1


def _query_block(w: int) -> int:
    c = max(1, w // QUERY_BLOCK_FRACTION)
    while (2 * w) % c:  # c must divide 2w (N is a multiple of the window 2w)
        c -= 1
    return c


def _global_rows(module, qg: torch.Tensor, hidden_states: torch.Tensor, is_index_masked: torch.Tensor) -> torch.Tensor:
    """The outputs of the global queries ``qg`` ((B, H, G, d), scaled),
    attending to every non-padding key with the ``key_global`` /
    ``value_global`` projections: (B, G, E).

    With few global tokens (H * G < E) the projections are applied to the
    queries and to the attention-weighted hidden states instead of to every
    key and value: ``q . (W_k h_j + b_k) = (W_k^T q) . h_j + q . b_k`` and
    ``sum_j p_j (W_v h_j + b_v) = W_v (sum_j p_j h_j) + b_v`` (the weights sum
    to 1). The same function, in O(N E H G) instead of O(N E^2).
    """
    B, H, G, d = qg.shape
    E = hidden_states.shape[-1]
    padding = is_index_masked[:, None, None, :]  # (B, 1, 1, N)
    if H * G >= E:  # many global tokens: project every key and value
        kg = _heads(module.key_global(hidden_states), H).transpose(1, 2)  # (B, H, N, d)
        vg = _heads(module.value_global(hidden_states), H).transpose(1, 2)
        out = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=~padding, scale=1.0)
        return out.transpose(1, 2).reshape(B, G, E)
    key, value = module.key_global, module.value_global
    u = torch.einsum("bhgd,hde->bhge", qg, key.weight.view(H, d, E))  # W_k^T q per head
    scores = torch.einsum("bhge,bne->bhgn", u, hidden_states)
    if key.bias is not None:
        scores = scores + torch.einsum("bhgd,hd->bhg", qg, key.bias.view(H, d))[..., None]
    scores = scores.masked_fill(padding, float("-inf"))
    p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(hidden_states.dtype)
    context = torch.einsum("bhgn,bne->bhge", p, hidden_states)  # (B, H, G, E)
    out = torch.einsum("bhge,hde->bghd", context, value.weight.view(H, d, E))
    if value.bias is not None:
        out = out + value.bias.view(H, d)
    return out.reshape(B, G, E)


def _fast_forward(module):
    original = type(module).forward

    def forward(hidden_states, attention_mask=None, is_index_masked=None, is_index_global_attn=None, is_global_attn=None, output_attentions=False):
        if output_attentions or (module.training and module.dropout > 0) or attention_mask is None:
            return original(
                module,
                hidden_states,
                attention_mask=attention_mask,
                is_index_masked=is_index_masked,
                is_index_global_attn=is_index_global_attn,
                is_global_attn=is_global_attn,
                output_attentions=output_attentions,
            )
        return (banded_self_attention(module, hidden_states, attention_mask, is_index_masked, is_index_global_attn, bool(is_global_attn)),)

    return forward


@contextmanager
def fast_longformer_attention(model: torch.nn.Module):
    """Inside the block, the model's Longformer self-attention runs as
    :func:`banded_self_attention`; outside, as before. Models without
    Longformer attention are left alone. Calls that ask for attention
    probabilities (``output_attentions=True``) or train with dropout run
    transformers' own code.

    Parameters
    ----------
    model : torch.nn.Module

    Yields
    ------
    torch.nn.Module
        The same model.

    Examples
    --------
    >>> import torch
    >>> from pyattn import load_demo
    >>> from pyattn.models.inputs import encode
    >>> model, tokenizer = load_demo()
    >>> document = encode(model, tokenizer, "the borrow checker rejects the program")
    >>> with torch.no_grad():
    ...     plain = model(**document.forward_kwargs()).logits
    ...     with fast_longformer_attention(model):
    ...         fast = model(**document.forward_kwargs()).logits
    >>> fast.shape, torch.allclose(fast, plain, atol=1e-5)
    (torch.Size([1, 2]), True)
    """
    modules = longformer_self_attentions(model)
    replaced = []
    try:
        for module in modules:
            if "forward" in module.__dict__:
                continue  # already replaced (nested use)
            module.forward = _fast_forward(module)
            replaced.append(module)
        yield model
    finally:
        for module in replaced:
            module.__dict__.pop("forward", None)  # (already put back if the model was restored first)


def fast_attention_context(model: torch.nn.Module, enabled: bool | None):
    """``fast_longformer_attention(model)`` when ``enabled`` (None: when the
    model has Longformer self-attention), else a no-op context.

    Parameters
    ----------
    model : torch.nn.Module
    enabled : bool or None

    Returns
    -------
    context manager

    Raises
    ------
    ValueError
        If ``enabled`` is True for a model without Longformer self-attention.

    Examples
    --------
    >>> import torch
    >>> from pyattn import load_demo
    >>> type(fast_attention_context(load_demo()[0], None)).__name__, type(fast_attention_context(torch.nn.Linear(2, 2), None)).__name__
    ('_GeneratorContextManager', 'nullcontext')
    >>> fast_attention_context(torch.nn.Linear(2, 2), True)
    Traceback (most recent call last):
    ...
    pyattn.errors.ModelError: fast_attention=True needs a Longformer model; Linear has no LongformerSelfAttention
    """
    if enabled is None:
        enabled = bool(longformer_self_attentions(model))
    if enabled and not longformer_self_attentions(model):
        raise ModelError(f"fast_attention=True needs a Longformer model; {type(model).__name__} has no LongformerSelfAttention")
    return fast_longformer_attention(model) if enabled else nullcontext()
