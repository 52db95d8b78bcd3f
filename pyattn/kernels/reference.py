"""Readable pure-PyTorch versions of the compiled ops.

``band_to_dense`` and ``attention_received`` here follow
``../shared/LONGFORMER_LAYOUT.md`` line by line and compute in float64; they
build the ``N x N`` matrix and are meant for tests and small inputs.

``attention_received_banded`` is the fastest pure-PyTorch way we know to get
the same column sums without the ``N x N`` matrix (the band skewed into dense
tiles by a strided view): the honest competitor in ``benchmarks/``.

Nothing in the package falls back to these functions: pyattn needs its
compiled extension (``pyattn._C``), and importing it fails with the
extension's own error where it is missing or was built for another torch.

Shapes are those of :mod:`pyattn.kernels.ops`.
"""

from __future__ import annotations

import torch

from pyattn.errors import InputError

__all__ = ["band_to_dense", "attention_received", "attention_received_banded", "global_positions", "attention_received_qk", "qk_visible"]


def _layout(local_attn: torch.Tensor, global_attn: torch.Tensor | None) -> tuple[int, int]:
    """(X, w): the number of global slots and the window."""
    X = 0 if global_attn is None else global_attn.shape[-1]
    w = local_attn.shape[-1] - X - 1
    if w < 2 or w % 2:
        raise InputError(f"local_attn's last dimension {local_attn.shape[-1]} is not X + w + 1 with X = {X} and an even w >= 2")
    return X, w


def global_positions(global_attention_mask: torch.Tensor | None, batch: int, n: int) -> list[torch.Tensor]:
    """Per item, the global positions in ascending order: slot m of the band's
    first X entries is the m-th of them.

    Parameters
    ----------
    global_attention_mask : torch.Tensor, shape (B, N), or None
        Nonzero where a token attends globally; None for no global tokens.
    batch, n : int
        B and N (used when the mask is None).

    Returns
    -------
    list of torch.Tensor
        B int64 tensors (on CPU) of each item's global positions.

    Examples
    --------
    >>> import torch
    >>> [p.tolist() for p in global_positions(torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]]), 2, 4)]
    [[0, 2], [3]]
    """
    if global_attention_mask is None:
        return [torch.zeros(0, dtype=torch.long) for _ in range(batch)]
    return [torch.nonzero(global_attention_mask[b] != 0).flatten().cpu() for b in range(batch)]


def band_to_dense(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense attention ``A[b, h, i, j]``, built entry by entry from the layout
    rules (computed in float64, returned in the input dtype).

    Parameters
    ----------
    local_attn : torch.Tensor, shape (B, H, N, X + w + 1)
        One layer's ``attentions`` output: X global slots, then the window
        band (entry k of row i is column ``i + k - w/2``).
    global_attn : torch.Tensor, shape (B, H, N', X), N' >= N, or None
        The layer's ``global_attentions`` output (None when X = 0).
    global_attention_mask : torch.Tensor, shape (B, N), or None

    Returns
    -------
    torch.Tensor, shape (B, H, N, N), dtype of ``local_attn``

    Raises
    ------
    pyattn.errors.InputError
        A ``ValueError``. If the last dimension is not ``X + w + 1`` with an even ``w >= 2``, or
        an item has more global tokens than X.

    Examples
    --------
    >>> import torch
    >>> band = torch.full((1, 1, 4, 3), 1 / 3)  # B=1, H=1, N=4, no globals (X=0), window w=2
    >>> band_to_dense(band)[0, 0]
    tensor([[0.3333, 0.3333, 0.0000, 0.0000],
            [0.3333, 0.3333, 0.3333, 0.0000],
            [0.0000, 0.3333, 0.3333, 0.3333],
            [0.0000, 0.0000, 0.3333, 0.3333]])

    With token 0 global (X=1): its row comes from ``global_attn``, and slot 0
    of every other row is that row's attention to token 0.

    >>> local = torch.tensor([[[[0.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]]])
    >>> band_to_dense(local, torch.full((1, 1, 4, 1), 0.25), torch.tensor([[1, 0, 0, 0]]))[0, 0]
    tensor([[0.2500, 0.2500, 0.2500, 0.2500],
            [0.5000, 0.2500, 0.2500, 0.0000],
            [0.2500, 0.2500, 0.2500, 0.2500],
            [0.2500, 0.0000, 0.2500, 0.2500]])
    """
    B, H, N, _ = local_attn.shape
    X, w = _layout(local_attn, global_attn)
    half = w // 2
    dense = torch.zeros(B, H, N, N, dtype=torch.float64, device=local_attn.device)
    rows = torch.arange(N, device=local_attn.device)
    for b, positions in enumerate(global_positions(global_attention_mask, B, N)):
        if len(positions) > X:
            raise InputError(f"item {b} has {len(positions)} global tokens but X = {X}")
        band = local_attn[b, :, :, X:].double()  # (H, N, w + 1)
        # Window: A[i, i + k - half] = band[i, k], for columns inside [0, N).
        for k in range(w + 1):
            cols = rows + k - half
            inside = (cols >= 0) & (cols < N)
            dense[b, :, rows[inside], cols[inside]] += band[:, inside, k]
        # Global columns: A[i, g_m] += local[i, m].
        for m, g in enumerate(positions.tolist()):
            dense[b, :, :, g] += local_attn[b, :, :, m].double()
        # Global rows replace whatever the local rows held (zeros).
        for m, g in enumerate(positions.tolist()):
            dense[b, :, g, :] = global_attn[b, :, :N, m].double()
    return dense.to(local_attn.dtype)


def attention_received(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention received per token: the column sums of :func:`band_to_dense`
    (computed in float64, returned in the input dtype).

    Parameters
    ----------
    local_attn, global_attn, global_attention_mask
        As for :func:`band_to_dense`.
    head_weights : torch.Tensor, shape (H,), optional
        Weights to combine the heads.
    row_weights : torch.Tensor, shape (B, N), optional
        Weight of each query row in the sum.

    Returns
    -------
    torch.Tensor, shape (B, H, N), or (B, N) with ``head_weights``

    Examples
    --------
    >>> import torch
    >>> band = torch.full((1, 1, 4, 3), 1 / 3)
    >>> attention_received(band)  # rows 0 and 3 reach past the ends
    tensor([[[0.6667, 1.0000, 1.0000, 0.6667]]])
    >>> local = torch.tensor([[[[0.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]]])
    >>> attention_received(local, torch.full((1, 1, 4, 1), 0.25), torch.tensor([[1, 0, 0, 0]]))
    tensor([[[1.2500, 0.7500, 1.0000, 0.7500]]])
    """
    B, H, N, _ = local_attn.shape
    dense = band_to_dense(local_attn.double(), None if global_attn is None else global_attn.double(), global_attention_mask)
    weights = torch.ones(B, N, dtype=torch.float64, device=dense.device) if row_weights is None else row_weights.double()
    received = torch.einsum("bhij,bi->bhj", dense, weights)
    if head_weights is not None:
        received = torch.einsum("bhj,h->bj", received, head_weights.double())
    return received.to(local_attn.dtype)


def _band_column_sums(band: torch.Tensor, row_weights: torch.Tensor) -> torch.Tensor:
    """Column sums of the window part: band ``(B, H, N, w + 1)`` (row ``i``,
    entry ``k`` is column ``i + k - w/2``), each row scaled by
    ``row_weights`` ``(B, 1, N, 1)``; returns ``(B, H, N)``.

    Rows are taken in blocks of ``T``; each block is skewed into a dense
    ``(T, T + w)`` tile without a copy (pad every row with ``T`` zeros, then
    read the flat buffer with row length ``T + w``: row ``i`` moves ``i``
    places right), the tiles are summed over their rows, and the per-block
    sums, which overlap by ``w``, are added at their offsets.
    """
    B, H, N, K = band.shape
    w = K - 1
    T = max(d for d in range(1, min(w, 32) + 1) if w % d == 0)  # T divides w
    blocks = -(-N // T)
    L = K + T
    padded = band.new_zeros((B, H, blocks * T, L))
    torch.mul(band, row_weights, out=padded[:, :, :N, :K])
    tiles = padded.view(B, H, blocks, T * L)[..., : T * (L - 1)].view(B, H, blocks, T, L - 1)
    sums = tiles.sum(3).view(B, H, blocks, (T + w) // T, T)  # block n, column c: n*T + c - w/2
    out = band.new_zeros((B, H, (blocks + (T + w) // T) * T))
    for s in range((T + w) // T):
        out[..., s * T : (s + blocks) * T] += sums[:, :, :, s, :].reshape(B, H, blocks * T)
    return out[..., w // 2 : w // 2 + N]


def attention_received_banded(
    local_attn: torch.Tensor,
    global_attn: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    head_weights: torch.Tensor | None = None,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Column sums from the band in a few vectorised passes, no ``N x N``: the
    same result as :func:`attention_received`, computed in float32 (float64 for
    float64 input). See ``_band_column_sums`` for the trick.

    Parameters
    ----------
    local_attn, global_attn, global_attention_mask, head_weights, row_weights
        As for :func:`attention_received`.

    Returns
    -------
    torch.Tensor, shape (B, H, N), or (B, N) with ``head_weights``; dtype of
    ``local_attn``.

    Examples
    --------
    >>> import torch
    >>> local = torch.rand(2, 3, 40, 1 + 8 + 1, generator=torch.Generator().manual_seed(0))
    >>> glob = torch.rand(2, 3, 40, 1, generator=torch.Generator().manual_seed(1))
    >>> mask = torch.zeros(2, 40, dtype=torch.long)
    >>> mask[:, 0] = 1
    >>> fast = attention_received_banded(local, glob, mask)
    >>> fast.shape, torch.allclose(fast, attention_received(local, glob, mask), atol=1e-5)
    (torch.Size([2, 3, 40]), True)
    """
    B, H, N, _ = local_attn.shape
    X, w = _layout(local_attn, global_attn)
    acc = torch.float64 if local_attn.dtype == torch.float64 else torch.float32
    is_global = torch.zeros(B, N, dtype=torch.bool, device=local_attn.device)
    if global_attention_mask is not None:
        is_global = global_attention_mask != 0
    weights = torch.ones(B, N, dtype=acc, device=local_attn.device) if row_weights is None else row_weights.to(acc)
    keep = (weights * ~is_global)[:, None, :, None]  # global rows come from global_attn
    received = _band_column_sums(local_attn[..., X:].to(acc), keep)
    if X > 0:
        slots = is_global.long().cumsum(1) - 1
        column_sums = (local_attn[..., :X].to(acc) * keep).sum(2)  # (B, H, X)
        global_rows = global_attn[:, :, :N, :].to(acc)  # (B, H, N, X)
        for b in range(B):
            positions = torch.nonzero(is_global[b]).flatten()
            m = slots[b, positions]
            received[b, :, positions] += column_sums[b][:, m]
            received[b] += (global_rows[b][:, :, m] * weights[b, positions]).sum(-1)
    if head_weights is not None:
        received = torch.einsum("bhj,h->bj", received, head_weights.to(acc))
    return received.to(local_attn.dtype)


def qk_visible(
    N: int,
    key_mask: torch.Tensor | None = None,
    window: tuple[int, int] = (-1, -1),
    causal: bool = False,
    global_mask: torch.Tensor | None = None,
    batch: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Which keys each query row sees, written out as the rules of
    :func:`attention_received_qk` say, as a dense ``(B, N, N)`` bool matrix
    (row ``i``, column ``j``).

    Examples
    --------
    >>> qk_visible(4, window=(1, 1)).int()[0]
    tensor([[1, 1, 0, 0],
            [1, 1, 1, 0],
            [0, 1, 1, 1],
            [0, 0, 1, 1]], dtype=torch.int32)
    >>> qk_visible(3, causal=True, global_mask=torch.tensor([[1, 0, 0]])).int()[0]  # row 0 global: sees all
    tensor([[1, 1, 1],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    B = batch if key_mask is None else key_mask.shape[0]
    i = torch.arange(N, device=device)[:, None]
    j = torch.arange(N, device=device)[None, :]
    local = torch.ones(N, N, dtype=torch.bool, device=device)
    left, right = window
    if left >= 0:
        local &= j >= i - left
    if right >= 0:
        local &= j <= i + right
    if causal:
        local &= j <= i
    real = torch.ones(B, N, dtype=torch.bool, device=device) if key_mask is None else (key_mask != 0).to(device)
    visible = local[None].expand(B, N, N).clone()
    if global_mask is not None:
        is_global = (global_mask != 0).to(device)
        visible |= is_global[:, :, None]  # a global row sees every key
        visible |= is_global[:, None, :]  # a global key is seen by every row
    # Padded keys are never seen; padded query rows see nothing.
    return visible & real[:, None, :] & real[:, :, None]


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
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Attention received per key from queries and keys, the readable way:
    the dense masked softmax ``(B, H, N, N)`` in float64, then weighted column
    sums. For tests and small ``N``; :func:`pyattn.kernels.ops.attention_received_qk`
    computes the same without the ``N x N`` matrix.

    Parameters
    ----------
    q : (B, H, N, d); k : (B, Hkv, N, d), ``H % Hkv == 0``: query head ``h``
        uses key head ``h // (H // Hkv)``.
    scale : the factor on ``q . k`` (usually ``d ** -0.5``).
    key_mask : (B, N), nonzero for real tokens; None = all real.
    window : (left, right): row ``i`` sees ``j >= i - left`` (unless left < 0)
        and ``j <= i + right`` (unless right < 0).
    causal : row ``i`` sees ``j <= i``.
    global_mask : (B, N), nonzero for global tokens: a global row sees every
        real key and a global key is seen by every real row, whatever the
        window and ``causal`` say.
    head_weights : (H,), optional: returns ``sum_h head_weights[h] * R[:, h]``.
    row_weights : (B, N) or (B, H, N), optional: weight of each query row.
    out_dtype : dtype of the result (float32, like the op; float64 to keep
        the reference's precision).

    Returns
    -------
    torch.Tensor, (B, H, N), or (B, N) with ``head_weights``. Padded query rows
    and rows that see no key contribute nothing.

    Examples
    --------
    >>> import torch
    >>> q = torch.zeros(1, 1, 3, 2); k = torch.zeros(1, 1, 3, 2)  # all scores equal
    >>> attention_received_qk(q, k, 1.0)  # every row spreads 1 evenly over 3 keys
    tensor([[[1., 1., 1.]]])
    >>> attention_received_qk(q, k, 1.0, causal=True)  # rows see 1, 2, 3 keys
    tensor([[[1.8333, 0.8333, 0.3333]]])
    """
    B, H, N, _ = q.shape
    Hkv = k.shape[1]
    group = H // Hkv
    kk = k.double().repeat_interleave(group, dim=1)  # (B, H, N, d)
    scores = torch.einsum("bhid,bhjd->bhij", q.double(), kk) * float(scale)
    visible = qk_visible(N, key_mask, tuple(window), causal, global_mask, batch=B, device=q.device)[:, None]  # (B, 1, N, N)
    scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.where(visible.any(-1, keepdim=True), probs, torch.zeros_like(probs))  # rows that see nothing: 0, not NaN
    if row_weights is None:
        weights = torch.ones(B, H, N, dtype=torch.float64, device=q.device)
    else:
        weights = row_weights.double()
        if weights.dim() == 2:
            weights = weights[:, None, :].expand(B, H, N)
    received = torch.einsum("bhij,bhi->bhj", probs, weights)
    if head_weights is not None:
        received = torch.einsum("bhj,h->bj", received, head_weights.double())
    return received.to(out_dtype)
