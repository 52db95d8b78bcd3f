"""Single-pass explanations: one forward and one backward pass per batch,
beside integrated gradients (which needs tens to hundreds of passes).

The target is the softmax probability ``p`` of the target class, as
:func:`pyattn.attribute` integrates it (``output="logit"`` explains the logit
instead, as Chefer et al.'s reference code does; below, read ``p`` as it). With ``A^l_h`` the attention
probabilities of layer ``l``, head ``h`` (row ``i`` = query, column ``j`` =
key) and ``G^l_h = dp / dA^l_h``:

``gradient_x_input`` ``(N,)``
    ``sum_e x[j, e] * dp/dx[j, e]`` over the output ``x`` of the embedding
    layer :func:`pyattn.attribute` attributes to
    (:func:`pyattn.models.inputs.embedding_layer`): gradient x input (Shrikumar et
    al. 2016; Denil et al. 2014), signed.
``attention_gradient`` ``(L, N)``
    per layer, the attention a token receives weighted by its gradient, heads
    averaged: ``(1/H) sum_h sum_i A^l_h[i, j] G^l_h[i, j]``. Signed. It is the
    first-order change of ``p`` when every attention weight paid to token
    ``j`` in layer ``l`` is scaled by ``(1 + eps)`` (without renormalising),
    divided by ``eps`` and by ``H``.
``attention_gradient_positive`` ``(L, N)``
    the same with the positive part taken per head before the head mean,
    ``(1/H) sum_h sum_i (A^l_h ⊙ G^l_h)^+[i, j]``: the column sums of the
    ``Ā^l`` of Chefer et al. (2021, eq. 5 below).
``gradient_rollout`` ``(N,)``
    Chefer, Gur & Wolf (2021), "Generic Attention-model Explainability for
    Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV, for a
    self-attention encoder: ``Ā^l = E_h[(G^l_h ⊙ A^l_h)^+]`` (eq. 5),
    ``R^0 = I``, ``R^l = R^{l-1} + Ā^l R^{l-1}`` (eq. 6); the explanation of
    the [CLS] token is row 0 of ``R^L``. As a row vector that is
    ``r = e_0 (I + Ā^L)(I + Ā^{L-1}) ... (I + Ā^1)``, propagated from the last
    layer down: ``r <- r + r Ā^l``. Position 0 ([CLS]) carries the identity's
    1 as well; the authors' code reads ``R[0, 1:]``.

Longformer: ``dp/dA`` is not read from the attention tensors the model
returns (HF's ``LongformerSelfAttention`` zeroes the global rows of its local
probabilities in place *after* using them, so the returned tensor is not the
one in the autograd graph). It is computed from the gradient of the
self-attention output instead, which is exact: a non-global row's output is
``sum_j A[i, j] v_j`` (``v`` the ``value`` projection), a global row's
``sum_j A[g, j] v'_j`` (``v'`` the ``value_global`` projection), so
``dp/dA[i, j] = (dp/d out_i) · v_j`` (resp. ``v'_j``), evaluated on the band
and the global slots only. Each layer's gradient is reduced inside the
backward pass, as the layer is reached (last layer first, which is the order
the rollout needs), by the compiled column-sum op with row weights: no ``N x
N`` matrix is built. Full-attention models (BERT, RoBERTa; load them with
``attn_implementation="eager"``) use their dense attention directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyattn.attribution._common import token_frame
from pyattn.errors import InputError, ModelError
from pyattn.models.inputs import embedding_layer, encode, is_longformer
from pyattn.kernels.ops import attention_received
from pyattn.models._state import preserving

__all__ = ["SinglePass", "SinglePassBatch", "single_pass", "single_pass_from_inputs"]


@dataclass
class SinglePassBatch:
    """Batched single-pass explanations (torch, float32 on the model's device),
    returned by :func:`single_pass_from_inputs`; see the module docstring for
    the definitions.

    Attributes
    ----------
    gradient_x_input : torch.Tensor, shape (B, N)
    attention_gradient, attention_gradient_positive : torch.Tensor, shape (L, B, N)
    gradient_rollout : torch.Tensor, shape (B, N)
    logits : torch.Tensor, shape (B, C)
    targets : torch.Tensor, shape (B,)

    Examples
    --------
    A batch of two rows, the same document explained for each of the two
    classes (softmax: the two probabilities move in opposite directions):

    >>> import pyattn, torch
    >>> from pyattn.models.inputs import encode
    >>> model, tokenizer = pyattn.load_demo()
    >>> inputs = encode(model, tokenizer, "the borrow checker rejects the program").forward_kwargs()
    >>> batch = single_pass_from_inputs(model, **{k: v.repeat(2, 1) for k, v in inputs.items()}, target=torch.tensor([0, 1]))
    >>> batch.gradient_x_input.shape, batch.attention_gradient.shape, batch.targets.tolist()  # (B, N), (L, B, N)
    (torch.Size([2, 11]), torch.Size([3, 2, 11]), [0, 1])
    >>> torch.allclose(batch.gradient_x_input[0], -batch.gradient_x_input[1], atol=1e-6)
    True
    """

    gradient_x_input: torch.Tensor
    attention_gradient: torch.Tensor
    attention_gradient_positive: torch.Tensor
    gradient_rollout: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor


@dataclass
class SinglePass:
    """Single-pass explanations of one document (numpy float64), returned by
    :func:`single_pass`; the definitions are in the module docstring.

    Positions include [CLS] and [SEP], as in :class:`pyattn.Attribution`. All
    vectors are signed scores where larger means "more for the target".

    Attributes
    ----------
    tokens : list of str, length N
    input_ids : list of int, length N
    target, predicted_label : int
    probabilities : numpy.ndarray, shape (C,)
    gradient_x_input : numpy.ndarray, shape (N,)
    attention_gradient, attention_gradient_positive : numpy.ndarray, shape (L, N)
        Layers numbered from 0; ``*_total`` properties sum them, ``(N,)``.
    gradient_rollout : numpy.ndarray, shape (N,)
    truncated_tokens : int

    Examples
    --------
    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> sp = pyattn.single_pass(model, tokenizer, "the borrow checker rejects the program")
    >>> len(sp.tokens), sp.attention_gradient.shape, sp.predicted_label
    (11, (3, 11), 1)
    >>> bool((sp.attention_gradient_positive >= sp.attention_gradient).all())  # positive part per head >= signed
    True
    >>> sp.to_frame().columns.tolist()
    ['position', 'token', 'gradient_x_input', 'attention_gradient', 'attention_gradient_positive', 'gradient_rollout']
    """

    tokens: list[str]
    input_ids: list[int]
    target: int
    predicted_label: int
    probabilities: np.ndarray  # (C,)
    gradient_x_input: np.ndarray  # (N,)
    attention_gradient: np.ndarray  # (L, N), layers numbered from 0
    attention_gradient_positive: np.ndarray  # (L, N)
    gradient_rollout: np.ndarray  # (N,)
    truncated_tokens: int

    @property
    def attention_gradient_total(self) -> np.ndarray:
        """``attention_gradient`` summed over layers, ``(N,)``."""
        return self.attention_gradient.sum(0)

    @property
    def attention_gradient_positive_total(self) -> np.ndarray:
        """``attention_gradient_positive`` summed over layers, ``(N,)``."""
        return self.attention_gradient_positive.sum(0)

    def to_frame(self):
        """One row per token (pandas DataFrame): position, token, and each
        method's score (attention x gradient summed over layers)."""
        return token_frame(self.tokens, gradient_x_input=self.gradient_x_input, attention_gradient=self.attention_gradient_total,
                           attention_gradient_positive=self.attention_gradient_positive_total, gradient_rollout=self.gradient_rollout)


def band_gradient(grad_out: torch.Tensor, values: torch.Tensor, half: int, block: int | None = None) -> torch.Tensor:
    """``out[b, h, i, k] = grad_out[b, h, i] · values[b, h, i + k - half]``
    for ``k = 0 .. 2 * half`` (0 where ``i + k - half`` is outside the
    sequence): the gradient of a banded ``A V`` with respect to the band.

    ``grad_out``, ``values``: ``(B, H, N, d)``. Returns ``(B, H, N, 2 half + 1)``.
    Rows go in blocks of ``block``; each block is one matrix product against
    the ``block + 2 half`` keys it can see, read back along its diagonals by a
    strided view, so memory stays at one ``(block, block + 2 half)`` tile per
    head.
    """
    B, H, N, d = grad_out.shape
    w = 2 * half
    block = block or max(64, w)
    padded = torch.nn.functional.pad(values, (0, 0, half, half))  # key i + k - half is padded row i + k
    out = grad_out.new_empty((B, H, N, w + 1))
    for start in range(0, N, block):
        stop = min(start + block, N)
        t = stop - start
        tile = torch.matmul(grad_out[:, :, start:stop], padded[:, :, start : stop + w].transpose(-1, -2)).contiguous()  # (B, H, t, t + w)
        # Row r, diagonal k is tile[r, r + k]: flat offset r * (t + w + 1) + k.
        s = tile.stride()
        out[:, :, start:stop] = tile.as_strided((B, H, t, w + 1), (s[0], s[1], t + w + 1, 1), tile.storage_offset())
    return out


class _LongformerHooks:
    """Forward hooks on each Longformer self-attention module keep its input,
    band and global probabilities; a tensor hook on its output computes, when
    the backward pass reaches the layer, ``A ⊙ dp/dA`` on the band and reduces
    it with the column-sum op (and advances the rollout row vector)."""

    def __init__(self, model, n_tokens: int, global_attention_mask: torch.Tensor):
        self.layers = list(model.base_model.encoder.layer)
        self.n = n_tokens
        self.mask = global_attention_mask
        self.is_global = global_attention_mask != 0
        L = len(self.layers)
        self.saved: list[Any] = [None] * L
        self.signed: list[torch.Tensor | None] = [None] * L
        self.positive: list[torch.Tensor | None] = [None] * L
        self.rollout: torch.Tensor | None = None
        self.next_layer = L - 1
        self.handles: list = []

    def __enter__(self):
        for index, layer in enumerate(self.layers):
            self.handles.append(layer.attention.self.register_forward_hook(self._forward(index), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.saved = [None] * len(self.layers)

    def _forward(self, index: int):
        def hook(module, args, kwargs, output):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            if len(output) < 2:
                raise RuntimeError("the Longformer self-attention returned no attention probabilities: it must run with output_attentions=True")
            band = output[1].detach()  # (B, N_pad, H, X + w + 1)
            global_attn = output[2].detach() if len(output) > 2 else None  # (B, H, X, N_pad)
            self.saved[index] = (hidden.detach(), band, global_attn)
            if output[0].requires_grad:
                output[0].register_hook(self._backward(index, module))
            # Zero-memory stand-ins for the model to collect: only these hooks hold the band.
            return (output[0],) + tuple(t.new_zeros(()).expand(t.shape) for t in output[1:])

        return hook

    def _backward(self, index: int, module):
        def hook(grad: torch.Tensor):
            if index != self.next_layer:
                raise RuntimeError(f"the backward pass reached layer {index} before layer {self.next_layer}: the rollout needs the layers last to first")
            self.next_layer -= 1
            with torch.no_grad():
                self._reduce(index, module, grad)
            self.saved[index] = None
            return None

        return hook

    def _reduce(self, index: int, module, grad: torch.Tensor) -> None:
        hidden, band, global_attn = self.saved[index]
        B, Np, H, K = band.shape
        d = module.head_dim
        N = self.n
        X = 0 if global_attn is None else global_attn.shape[2]
        half = (K - X - 1) // 2
        acc = torch.float64 if band.dtype == torch.float64 else torch.float32
        g = grad.to(acc).reshape(B, Np, H, d).transpose(1, 2)  # (B, H, N_pad, d): dp / d(output of each head)
        v = module.value(hidden).to(acc).reshape(B, Np, H, d).transpose(1, 2)
        local = band.to(acc).transpose(1, 2)[:, :, :N]  # (B, H, N, X + w + 1)
        window = local[..., X:] * band_gradient(g, v, half)[:, :, :N]
        product_global = None
        if X > 0:
            counts = self.is_global.sum(1)
            slot_valid = torch.arange(X, device=band.device)[None, :] < counts[:, None]  # (B, X)
            positions = torch.zeros(B, X, dtype=torch.long, device=band.device)
            for b in range(B):
                found = torch.nonzero(self.is_global[b]).flatten()
                positions[b, : len(found)] = found
            take = positions[:, None, :, None].expand(B, H, X, d)
            v_slots = torch.gather(v, 2, take)  # (B, H, X, d): the value of each global key
            slots = local[..., :X] * torch.matmul(g[:, :, :N], v_slots.transpose(-1, -2)) * slot_valid[:, None, None, :]
            product_local = torch.cat([slots, window], -1)
            v_global = module.value_global(hidden).to(acc).reshape(B, Np, H, d).transpose(1, 2)
            g_rows = torch.gather(g, 2, take)  # (B, H, X, d): dp / d(output) of each global row
            rows = global_attn.to(acc) * torch.matmul(g_rows, v_global.transpose(-1, -2))  # (B, H, X, N_pad)
            product_global = (rows * slot_valid[:, None, :, None]).transpose(2, 3)  # (B, H, N_pad, X), the model's layout
        else:
            product_local = window
        mask = self.mask if X > 0 else None
        heads = torch.full((H,), 1.0 / H, dtype=acc, device=band.device)
        self.signed[index] = attention_received(product_local, product_global, mask, heads)
        positive_local = product_local.clamp(min=0)
        positive_global = None if product_global is None else product_global.clamp(min=0)
        self.positive[index] = attention_received(positive_local, positive_global, mask, heads)
        if self.rollout is None:
            self.rollout = torch.zeros(B, N, dtype=acc, device=band.device)
            self.rollout[:, 0] = 1.0
        self.rollout = self.rollout + attention_received(positive_local, positive_global, mask, heads, self.rollout)


class _FullAttention:
    """Dense attention of BERT-style models: the returned probabilities are
    the tensors the model multiplies by its values, so their gradients are
    read directly."""

    @staticmethod
    def reduce(attentions, grads, N: int):
        signed, positive = [], []
        products = [attention.detach().double() * grad.double() for attention, grad in zip(attentions, grads)]  # (B, H, N, N)
        for product in products:
            signed.append(product.mean(1).sum(1))
            positive.append(product.clamp(min=0).mean(1).sum(1))
        B = products[0].shape[0]
        rollout = torch.zeros(B, N, dtype=torch.float64, device=products[0].device)
        rollout[:, 0] = 1.0
        for product in reversed(products):
            rollout = rollout + torch.einsum("bi,bij->bj", rollout, product.clamp(min=0).mean(1))
        return signed, positive, rollout


def _check_targets(target, logits: torch.Tensor) -> torch.Tensor:
    B, C = logits.shape
    if target is None:
        return logits.argmax(-1)
    if isinstance(target, bool) or (isinstance(target, torch.Tensor) and target.dtype == torch.bool):
        raise InputError(f"target must be a class index in 0..{C - 1}, got {target!r}")
    targets = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if targets.numel() == 1:
        targets = targets.expand(B)
    if targets.numel() != B or (targets < 0).any() or (targets >= C).any():
        raise InputError(f"target must be a class index in 0..{C - 1} (or one per item, or None for the predicted class), got {target!r}")
    return targets


def _explained(logits: torch.Tensor, targets: torch.Tensor, output: str, kind: str = "softmax") -> torch.Tensor:
    """Sum over the batch of each item's explained quantity (items are
    independent, so each gets its own gradient): the model's probability
    (``kind``: softmax, or sigmoid for a multi-label head) or the logit."""
    from pyattn.models.inputs import model_output

    values = model_output(logits, kind) if output == "probability" else logits
    return values.gather(1, targets[:, None]).sum()


@preserving(gradients=True)
def single_pass_from_inputs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    global_attention_mask: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    output: str = "probability",
    **model_kwargs: Any,
) -> SinglePassBatch:
    """All single-pass explanations of a batch from one forward and one
    backward pass.

    Parameters
    ----------
    input_ids:
        ``(B, N)`` (or ``(N,)``).
    global_attention_mask:
        Longformer: ``(B, N)``; None takes the model's own default (CLS for
        sequence classification).
    target:
        Class index, one per item ``(B,)``, or None for each item's predicted
        class.
    output:
        What is explained: ``"probability"`` (the target class's softmax
        probability, or its sigmoid for a multi-label head, as
        :func:`pyattn.attribute` integrates it; regression heads are
        refused) or
        ``"logit"`` (its logit, as Chefer et al.'s reference code
        differentiates it).
    model_kwargs:
        Passed to the model (e.g. ``position_ids``).

    Returns
    -------
    SinglePassBatch

    Examples
    --------
    >>> import pyattn
    >>> from pyattn.models.inputs import encode
    >>> model, tokenizer = pyattn.load_demo()
    >>> doc = encode(model, tokenizer, "the borrow checker rejects the program")
    >>> out = single_pass_from_inputs(model, **doc.forward_kwargs())
    >>> out.gradient_rollout.shape, out.logits.shape  # (B, N), (B, C)
    (torch.Size([1, 11]), torch.Size([1, 2]))
    >>> out.targets.tolist() == out.logits.argmax(-1).tolist()  # target None: the predicted class
    True
    """
    from pyattn.model_attention import default_global_attention_mask

    from pyattn.model_attention import use_eager_attention
    from pyattn.models._checks import check_model_inputs
    from pyattn.models.inputs import output_kind

    if output not in ("probability", "logit"):
        raise InputError(f'output must be "probability" or "logit", got {output!r}')
    check_model_inputs(model, input_ids, attention_mask, global_attention_mask)
    kind = output_kind(model)
    if kind == "raw":
        raise ModelError(f"{type(model).__name__} has a regression head (a raw output, not class probabilities): single_pass explains a class; use pyattn.attribute")
    model.eval()
    if not is_longformer(model):
        use_eager_attention(model)  # sdpa returns no attention probabilities (put back on the way out)
    device = next(model.parameters()).device
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    input_ids = input_ids.to(device)
    B, N = input_ids.shape
    kwargs = dict(model_kwargs, input_ids=input_ids, output_attentions=True)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device)
    # Tensors made under torch.inference_mode() cannot be saved for backward: plain copies.
    kwargs = {key: (value.clone() if value.is_inference() else value).to(device) if isinstance(value, torch.Tensor) else value
              for key, value in kwargs.items()}
    longformer = is_longformer(model)
    if not longformer and global_attention_mask is not None:
        raise InputError(f"global_attention_mask is for Longformer models; {type(model).__name__} has full attention")
    if longformer:
        if global_attention_mask is None:
            global_attention_mask = default_global_attention_mask(model, input_ids)
        global_attention_mask = (global_attention_mask.clone() if global_attention_mask.is_inference() else global_attention_mask).to(device)
        if tuple(global_attention_mask.shape) != (B, N):
            raise InputError(f"global_attention_mask must have shape (B, N) = {(B, N)}, got {tuple(global_attention_mask.shape)}")
        kwargs["global_attention_mask"] = global_attention_mask

    embedded: dict[str, torch.Tensor] = {}

    def embedding_leaf(module, args, produced):
        # The embedding output as a leaf that requires grad: the backward pass
        # goes from p to it and no further, so no parameter gradient is
        # computed (or accumulated into the model's .grad), and frozen models
        # work too.
        if isinstance(produced, tuple):
            raise TypeError(f"the embedding layer of {type(model).__name__} returns a tuple; pyattn expects one tensor")
        leaf = produced.detach().requires_grad_(True)
        embedded["value"] = leaf
        return leaf

    embedding_handle = embedding_layer(model).register_forward_hook(embedding_leaf)
    try:
        with torch.enable_grad():
            if longformer:
                with _LongformerHooks(model, N, global_attention_mask) as hooks:
                    result = model(**kwargs)
                    targets = _check_targets(target, result.logits.detach())
                    explained = _explained(result.logits, targets, output, kind)
                    (embedded["grad"],) = torch.autograd.grad(explained, [embedded["value"]])
                missing = [index for index, value in enumerate(hooks.signed) if value is None]
                if missing:
                    raise RuntimeError(f"no gradient reached the attention of layers {missing}")
                signed, positive, rollout = hooks.signed, hooks.positive, hooks.rollout
            else:
                result = model(**kwargs)
                if result.attentions is None or any(a is None for a in result.attentions):
                    raise ModelError(f"{type(model).__name__} returned no attention probabilities: load it with attn_implementation=\"eager\"")
                targets = _check_targets(target, result.logits.detach())
                explained = _explained(result.logits, targets, output, kind)
                *grads, embedded["grad"] = torch.autograd.grad(explained, [*result.attentions, embedded["value"]])
                signed, positive, rollout = _FullAttention.reduce(result.attentions, grads, N)
    finally:
        embedding_handle.remove()
    gradient_x_input = (embedded["value"].detach().double() * embedded["grad"].double()).sum(-1)[:, :N]
    return SinglePassBatch(
        gradient_x_input=gradient_x_input.float(),
        attention_gradient=torch.stack([s.float() for s in signed]),
        attention_gradient_positive=torch.stack([p.float() for p in positive]),
        gradient_rollout=rollout.float(),
        logits=result.logits.detach(),
        targets=targets,
    )


@preserving(gradients=True)
def single_pass(model: torch.nn.Module, tokenizer, text: str, target: int | None = None, max_length: int | None = None, device=None,
                output: str = "probability") -> SinglePass:
    """Single-pass explanations of one text, encoded as :func:`pyattn.attribute`
    encodes it (same positions, same embedding layer, same target
    probability).

    Parameters
    ----------
    target:
        Class index to explain; None explains the predicted class.
    output:
        ``"probability"`` (default) or ``"logit"``: see
        :func:`single_pass_from_inputs`.
    max_length:
        Longest input in tokens, [CLS] and [SEP] included; None takes the
        model's limit.
    device:
        None keeps the model where it is.

    Returns
    -------
    SinglePass

    Examples
    --------
    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> sp = single_pass(model, tokenizer, "gradient descent on a neural network")
    >>> sp.gradient_rollout.shape == (len(sp.tokens),), sp.target == sp.predicted_label
    (True, True)
    >>> bool(sp.gradient_rollout[0] >= 1.0)  # [CLS] carries the identity's 1 of R^0
    True
    """
    if device is not None:
        model = model.to(device)
    document = encode(model, tokenizer, text, max_length).to(next(model.parameters()).device)
    kwargs = document.forward_kwargs()
    global_mask = kwargs.pop("global_attention_mask", None)
    out = single_pass_from_inputs(model, global_attention_mask=global_mask, target=target, output=output, **kwargs)
    from pyattn.models.inputs import model_output, output_kind

    probabilities = model_output(out.logits[:1], output_kind(model))[0].cpu().double().numpy()  # softmax, or sigmoid per label
    as_numpy = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    return SinglePass(
        tokens=document.tokens,
        input_ids=document.input_ids[0].tolist(),
        target=int(out.targets[0]),
        predicted_label=int(probabilities.argmax()),
        probabilities=probabilities,
        gradient_x_input=as_numpy(out.gradient_x_input[0]),
        attention_gradient=as_numpy(out.attention_gradient[:, 0]),
        attention_gradient_positive=as_numpy(out.attention_gradient_positive[:, 0]),
        gradient_rollout=as_numpy(out.gradient_rollout[0]),
        truncated_tokens=document.truncated_tokens,
    )
