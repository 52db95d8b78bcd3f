"""Attention received from the queries and keys a model forms, captured while
the model runs its own (fast) attention: no probabilities, no ``N x N``.

Each supported architecture has a row in :data:`QK_ARCHITECTURES`: which
modules attend, where their ``q`` and ``k`` are read, the scale and the mask
each layer applies. :class:`QKCapture` reads every layer's ``q``
``(B, H, N, d)`` and ``k`` ``(B, Hkv, N, d)`` exactly as the module hands
them to its attention (after rotary embeddings, before grouped-query heads are
repeated), reduces them at once to attention received with
:func:`pyattn.kernels.ops.attention_received_qk`, and drops them: beyond the forward
itself, a layer costs O(N) (O(N d) per layer when rollout asks to keep them).

Where ``q`` and ``k`` are read:

- ``interface``: transformers 5 models call
  ``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation)`` with
  ``(module, q, k, v, mask, scaling=...)``. Inside the ``with`` block the
  entry of the model's implementation (``sdpa``, ``eager``, ...) is wrapped:
  the wrapper calls the very function the model would have called, then
  reduces ``q`` and ``k`` for the modules of this model (any other module
  passes straight through). The entry is put back on exit, also after an
  exception; the model's ``attn_implementation`` is never changed.
- ``projections`` (BigBird ``original_full``, which computes its attention
  inline): forward hooks on the module's ``query`` and ``key`` projections
  and on the module itself, removed on exit.

Models whose attention is not ``softmax(q . k * scale)`` under a mask
(DeBERTa's relative-position terms, ALiBi biases, BigBird ``block_sparse``)
are refused with one line (:func:`qk_refusal`).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from pyattn.kernels.layers import check_head_importance
from pyattn.kernels.ops import attention_received_qk
from pyattn.errors import InputError, ModelError

__all__ = ["LayerMask", "QKArchitecture", "QK_ARCHITECTURES", "QKCapture", "qk_refusal", "qk_layer_masks", "qk_rollout", "takes_qk_route"]


@dataclass(frozen=True)
class LayerMask:
    """Which keys a query row of one layer sees, besides padding:
    ``window = (left, right)`` (row ``i`` sees ``i - left <= j <= i + right``;
    -1: unlimited) and ``causal`` (``j <= i``), as
    :func:`pyattn.kernels.ops.attention_received_qk` takes them.

    >>> LayerMask((4095, -1), True)  # Mistral's sliding window of 4,096: i - 4096 < j <= i
    LayerMask(window=(4095, -1), causal=True)
    """

    window: tuple[int, int] = (-1, -1)
    causal: bool = False


@dataclass(frozen=True)
class QKArchitecture:
    """One row of the table: how an architecture forms its attention.

    >>> row = QK_ARCHITECTURES["modernbert"]
    >>> row.attention_classes, row.source, row.scale
    (('ModernBertAttention',), 'interface', 'd^-0.5')
    """

    attention_classes: tuple[str, ...]
    source: str  # "interface" or "projections" (see the module docstring)
    queries_keys: str  # how q and k are formed
    scale: str
    mask: str
    layer_mask: Callable[[object, int], LayerMask]


def _full(config, layer: int) -> LayerMask:
    return LayerMask((-1, -1), bool(getattr(config, "is_decoder", False)))


def _modernbert(config, layer: int) -> LayerMask:
    types = getattr(config, "layer_types", None)
    if types is not None:
        sliding = types[layer] == "sliding_attention"
    else:
        sliding = bool(layer % config.global_attn_every_n_layers)
    half = config.local_attention // 2  # |i - j| <= local_attention // 2 (masking_utils' bidirectional window)
    return LayerMask((half, half) if sliding else (-1, -1), False)


def _llama(config, layer: int) -> LayerMask:
    return LayerMask((-1, -1), True)


def _causal_window(window) -> tuple[int, int]:
    # masking_utils.sliding_window_overlay: j > i - W, i.e. j >= i - (W - 1)
    return (int(window) - 1, -1)


def _qwen2(config, layer: int) -> LayerMask:
    types = getattr(config, "layer_types", None)
    sliding = types is not None and types[layer] == "sliding_attention" and config.sliding_window is not None
    return LayerMask(_causal_window(config.sliding_window) if sliding else (-1, -1), True)


def _mistral(config, layer: int) -> LayerMask:
    window = getattr(config, "sliding_window", None)  # MistralModel: a window on every layer when set
    return LayerMask(_causal_window(window) if window is not None else (-1, -1), True)


_ENCODER_QK = "query / key Linear of the hidden states, split into H heads of d = hidden / H"
_ENCODER_MASK = "padding keys masked; causal when config.is_decoder"
_DECODER_QK = "q_proj / k_proj, rotary embeddings applied; k has num_key_value_heads (grouped-query), not repeated"

QK_ARCHITECTURES: dict[str, QKArchitecture] = {
    "bert": QKArchitecture(("BertSelfAttention",), "interface", _ENCODER_QK, "d^-0.5", _ENCODER_MASK, _full),
    "roberta": QKArchitecture(("RobertaSelfAttention",), "interface", _ENCODER_QK, "d^-0.5", _ENCODER_MASK, _full),
    "xlm-roberta": QKArchitecture(("XLMRobertaSelfAttention",), "interface", _ENCODER_QK, "d^-0.5", _ENCODER_MASK, _full),
    "electra": QKArchitecture(("ElectraSelfAttention",), "interface", _ENCODER_QK, "d^-0.5", _ENCODER_MASK, _full),
    "distilbert": QKArchitecture(("DistilBertSelfAttention",), "interface", "q_lin / k_lin, split into n_heads", "d^-0.5", "padding keys masked", _full),
    "big_bird": QKArchitecture(("BigBirdSelfAttention",), "projections", "query / key Linear (attention_type original_full only)", "d^-0.5", "padding keys masked", _full),
    "modernbert": QKArchitecture(
        ("ModernBertAttention",), "interface", "Wqkv split into q, k, v; rotary embeddings (local or global theta) applied", "d^-0.5",
        "padding keys masked; layers of layer_types 'sliding_attention' (all but every global_attn_every_n_layers-th) see |i - j| <= local_attention // 2",
        _modernbert,
    ),
    "llama": QKArchitecture(("LlamaAttention",), "interface", _DECODER_QK, "d^-0.5", "causal; padding keys masked", _llama),
    "qwen2": QKArchitecture(
        ("Qwen2Attention",), "interface", _DECODER_QK, "d^-0.5",
        "causal; padding keys masked; layers of layer_types 'sliding_attention' (use_sliding_window, from max_window_layers on) see i - W < j <= i",
        _qwen2,
    ),
    "mistral": QKArchitecture(
        ("MistralAttention",), "interface", _DECODER_QK, "d^-0.5", "causal; padding keys masked; with config.sliding_window W every layer sees i - W < j <= i",
        _mistral,
    ),
}

# Architectures whose attention is not softmax(q . k * scale): why, in one line.
_NOT_QK = {
    "deberta": "its attention adds relative-position terms (content-to-position, position-to-content) to q . k",
    "deberta-v2": "its attention adds relative-position terms (content-to-position, position-to-content) to q . k",
    "bloom": "its attention adds ALiBi position biases to q . k",
    "mpt": "its attention adds ALiBi position biases to q . k",
    "longformer": "its sliding-window and global attention use separate projections; pyattn reads Longformer's band directly",
}


def qk_refusal(model) -> str | None:
    """Why the q/k route cannot explain ``model`` (one line), or None when it can.

    Parameters
    ----------
    model : transformers.PreTrainedModel

    Returns
    -------
    str or None

    Examples
    --------
    >>> from transformers import BertConfig, BertForSequenceClassification, DebertaV2Config, DebertaV2ForSequenceClassification
    >>> small = dict(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    >>> qk_refusal(BertForSequenceClassification(BertConfig(**small))) is None
    True
    >>> qk_refusal(DebertaV2ForSequenceClassification(DebertaV2Config(**small)))
    "DebertaV2ForSequenceClassification (deberta-v2): its attention adds relative-position terms (content-to-position, position-to-content) to q . k, so it is not softmax(q . k * scale); use route='eager'"
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    name = f"{type(model).__name__} ({model_type})"
    why = _NOT_QK.get(model_type)
    if model_type == "falcon" and getattr(config, "alibi", False):
        why = "its attention adds ALiBi position biases to q . k"
    if model_type == "big_bird" and getattr(config, "attention_type", None) != "original_full":
        why = (f"its attention_type {config.attention_type!r} attends over random and global blocks, not softmax(q . k * scale) over a mask "
               "(model.set_attention_type('original_full') makes it so)")
    if model_type == "longformer":
        return (f"{name}: its sliding-window and global attention use separate projections, so the q/k route cannot read it; "
                "route='auto' reads its band directly (route='eager' its probabilities)")
    if why is not None:
        return f"{name}: {why}, so it is not softmax(q . k * scale); use route='eager'"
    if model_type not in QK_ARCHITECTURES:
        return f"{name}: not in pyattn's q/k table ({', '.join(sorted(QK_ARCHITECTURES))}); use route='eager'"
    if not _attention_modules(model):
        classes = "/".join(QK_ARCHITECTURES[model_type].attention_classes)
        return f"{name}: no {classes} module found, so its queries and keys cannot be read; use route='eager'"
    return None


def takes_qk_route(model) -> bool:
    """Whether :func:`qk_refusal` accepts ``model``.

    >>> import torch
    >>> takes_qk_route(torch.nn.Linear(2, 2))
    False
    """
    return qk_refusal(model) is None


def _attention_modules(model) -> list[torch.nn.Module]:
    spec = QK_ARCHITECTURES.get(getattr(getattr(model, "config", None), "model_type", None))
    if spec is None:
        return []
    return [m for m in model.modules() if type(m).__name__ in spec.attention_classes]


def qk_layer_masks(model) -> list[LayerMask]:
    """Each attention layer's window and causality, in layer order.

    Examples
    --------
    >>> from transformers import ModernBertConfig, ModernBertForSequenceClassification
    >>> config = ModernBertConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
    ...                           local_attention=8, global_attn_every_n_layers=3, pad_token_id=0)
    >>> [m.window for m in qk_layer_masks(ModernBertForSequenceClassification(config))]  # global, local, local
    [(-1, -1), (4, 4), (4, 4)]
    """
    why = qk_refusal(model)
    if why is not None:
        raise ModelError(why)
    spec = QK_ARCHITECTURES[model.config.model_type]
    return [spec.layer_mask(model.config, index) for index in range(len(_attention_modules(model)))]


_MISSING = object()

# One wrapper per attention implementation for the whole process, however many
# captures are open: transformers' ALL_ATTENTION_FUNCTIONS is global, so
# captures that each swapped it and put back what they found would undo one
# another when two threads (two models, or one) exit out of order. The wrapper
# hands each call to the capture that the calling thread opened on that
# attention module (the innermost, when nested), or to no capture at all; the
# last capture out puts the mapping back as it was.
_LOCK = threading.Lock()
_INSTALLED: dict[str, tuple[object, int]] = {}  # implementation -> (what the mapping held before, captures using it)
_ACTIVE: dict[tuple[int, int], list] = {}  # (thread, id(attention module)) -> open captures, innermost last


def _dispatch(original):
    def attention_then_received(module, query, key, value, attention_mask, *args, **kwargs):
        function = original if original is not None else sys.modules[type(module).__module__].eager_attention_forward
        output = function(module, query, key, value, attention_mask, *args, **kwargs)
        captures = _ACTIVE.get((threading.get_ident(), id(module)))
        if captures:
            capture = captures[-1]
            layer = capture.index[id(module)]
            for extra in ("position_bias", "softcap", "s_aux"):
                if kwargs.get(extra) is not None:
                    raise ModelError(f"{type(capture.model).__name__}: layer {layer} adds {extra} to q . k, so its attention is not softmax(q . k * scale); use route='eager'")
            scaling = kwargs.get("scaling")
            capture._reduce(layer, query, key, query.shape[-1] ** -0.5 if scaling is None else float(scaling))
        return output

    return attention_then_received


def _claim(capture, implementations: list[str]) -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    thread = threading.get_ident()
    with _LOCK:
        for implementation in implementations:
            if implementation in _INSTALLED:
                previous, users = _INSTALLED[implementation]
                _INSTALLED[implementation] = (previous, users + 1)
            else:
                previous = ALL_ATTENTION_FUNCTIONS._local_mapping.get(implementation, _MISSING)
                original = ALL_ATTENTION_FUNCTIONS.get(implementation)  # None for "eager": the module file's own
                ALL_ATTENTION_FUNCTIONS[implementation] = _dispatch(original)
                _INSTALLED[implementation] = (previous, 1)
            capture._claimed.append(implementation)
        for module in capture.modules:
            _ACTIVE.setdefault((thread, id(module)), []).append(capture)
        capture._thread = thread


def _release(capture) -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    with _LOCK:
        if capture._thread is not None:
            for module in capture.modules:
                key = (capture._thread, id(module))
                captures = _ACTIVE.get(key, [])
                if capture in captures:
                    captures.remove(capture)
                if not captures:
                    _ACTIVE.pop(key, None)
            capture._thread = None
        while capture._claimed:
            implementation = capture._claimed.pop()
            previous, users = _INSTALLED[implementation]
            if users > 1:
                _INSTALLED[implementation] = (previous, users - 1)
                continue
            del _INSTALLED[implementation]
            if previous is _MISSING:
                ALL_ATTENTION_FUNCTIONS._local_mapping.pop(implementation, None)
            else:
                ALL_ATTENTION_FUNCTIONS._local_mapping[implementation] = previous


class QKCapture:
    """Inside ``with QKCapture(model, key_mask) as capture: model(...)``, every
    attention layer's ``q`` and ``k`` are reduced to attention received as the
    model computes them; after the block, ``capture.received`` holds
    ``(L, B, N)`` (``(L, B, H, N)`` with ``per_head``), float32.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        One of :data:`QK_ARCHITECTURES` (else ValueError with the reason).
    key_mask : torch.Tensor, shape (B, N), optional
        1 for real tokens (the ``attention_mask`` the model gets); None: all real.
    head_importance : torch.Tensor, shape (L, H), optional
        Each head scaled by it.
    per_head : bool
        Keep the head dimension.
    row_weights : torch.Tensor, shape (B, N), optional
        Weight of each query row (a one-hot of row 0 gives the CLS row).
    keep_qk : bool
        Also keep every layer's ``q`` and ``k`` (``capture.layers``) for
        :func:`qk_rollout`: O(L N d) more memory, still no ``N x N``.

    Notes
    -----
    The model, its ``attn_implementation``, hooks and training flag are as
    before after the block, also when the forward raises.

    Examples
    --------
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> model = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)).eval()
    >>> ids = torch.tensor([[2, 5, 7, 3]])
    >>> with torch.no_grad(), QKCapture(model, torch.ones_like(ids)) as capture:
    ...     logits = model(ids).logits
    >>> capture.received.shape, model.config._attn_implementation  # (L, B, N); sdpa ran
    (torch.Size([2, 1, 4]), 'sdpa')
    >>> torch.allclose(capture.received.sum(-1), torch.tensor([[8.0], [8.0]]))  # every row of every head gives 1 in total: L x (H x N)
    True
    """

    def __init__(self, model, key_mask: torch.Tensor | None = None, head_importance=None, per_head: bool = False,
                 row_weights: torch.Tensor | None = None, keep_qk: bool = False):
        why = qk_refusal(model)
        if why is not None:
            raise ModelError(why)
        self.model = model
        self.spec = QK_ARCHITECTURES[model.config.model_type]
        self.modules = _attention_modules(model)
        self.masks = [self.spec.layer_mask(model.config, index) for index in range(len(self.modules))]
        heads = _num_heads(model)
        self.weights = check_head_importance(head_importance, len(self.modules), heads)
        self.key_mask = key_mask
        self.per_head = per_head
        self.row_weights = row_weights
        self.keep_qk = keep_qk
        self.index = {id(module): i for i, module in enumerate(self.modules)}
        self.per_layer: list[torch.Tensor | None] = [None] * len(self.modules)
        self.layers: list[tuple[torch.Tensor, torch.Tensor, float, LayerMask] | None] = [None] * len(self.modules)
        self._claimed: list[str] = []  # attention implementations this capture holds the shared wrapper of
        self._thread: int | None = None
        self._handles: list = []
        self._pending: dict[int, dict[str, torch.Tensor]] = {}

    # -- entering and leaving: everything put back ---------------------------
    def __enter__(self) -> "QKCapture":
        try:
            if self.spec.source == "interface":
                self._wrap_interface()
            else:
                self._hook_projections()
        except BaseException:
            self._undo()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._undo()

    def _undo(self) -> None:
        _release(self)
        while self._handles:
            self._handles.pop().remove()
        self._pending.clear()

    def _wrap_interface(self) -> None:
        implementations = {getattr(m, "config", self.model.config)._attn_implementation or "eager" for m in self.modules}
        _claim(self, sorted(implementations))

    def _hook_projections(self) -> None:
        thread = threading.get_ident()  # another thread's forward through the same model is not this capture's
        for module in self.modules:
            slot = self._pending.setdefault(id(module), {})

            def keep(name, slot=slot):
                def hook(_linear, _args, output):
                    if threading.get_ident() == thread:
                        slot[name] = output

                return hook

            def reduce(attention, _args, _output, slot=slot):
                if threading.get_ident() != thread:
                    return
                layer = self.index[id(attention)]
                heads, size = attention.num_attention_heads, attention.attention_head_size
                q, k = (slot.pop(name) for name in ("query", "key"))
                if q.shape[:2] != k.shape[:2]:
                    raise ModelError(f"{type(self.model).__name__}: layer {layer} attends to other states (cross-attention); the q/k route reads self-attention only")
                split = lambda x: x.view(*x.shape[:2], heads, size).transpose(1, 2)  # noqa: E731
                self._reduce(layer, split(q), split(k), size ** -0.5)

            self._handles.append(module.query.register_forward_hook(keep("query")))
            self._handles.append(module.key.register_forward_hook(keep("key")))
            self._handles.append(module.register_forward_hook(reduce))

    # -- the reduction ---------------------------------------------------------
    def _reduce(self, layer: int, q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
        with torch.no_grad():
            q, k = q.detach(), k.detach()
            if q.dtype == torch.float64:  # the op takes float32 / float16 / bfloat16
                q, k = q.float(), k.float()
            B, H, N, _ = q.shape
            key_mask = self.key_mask
            if key_mask is not None:
                key_mask = key_mask.to(q.device)
                if tuple(key_mask.shape) != (B, N):
                    raise InputError(f"key_mask has shape {tuple(key_mask.shape)} but layer {layer} attends over (B, N) = ({B}, {N}) tokens")
            mask = self.masks[layer]
            weights = None if self.weights is None else self.weights[layer].to(device=q.device, dtype=torch.float32)
            rows = None if self.row_weights is None else self.row_weights.to(device=q.device, dtype=torch.float32)
            common = dict(key_mask=key_mask, window=mask.window, causal=mask.causal, row_weights=rows)
            if self.per_head:
                received = attention_received_qk(q, k, scale, **common)
                if weights is not None:
                    received = received * weights[None, :, None]
            else:
                fused = weights if weights is not None else torch.ones(H, device=q.device)
                received = attention_received_qk(q, k, scale, head_weights=fused, **common)
            self.per_layer[layer] = received
            if self.keep_qk:
                self.layers[layer] = (q, k, scale, mask)

    @property
    def received(self) -> torch.Tensor:
        """``(L, B, N)`` or ``(L, B, H, N)``, float32."""
        missing = [i for i, r in enumerate(self.per_layer) if r is None]
        if missing:
            raise ModelError(f"{type(self.model).__name__}: the forward pass never reached the attention of layers {missing}, so their queries and keys were not read")
        return torch.stack(self.per_layer)


def _num_heads(model) -> int:
    config = model.config
    return int(getattr(config, "num_attention_heads", None) or getattr(config, "n_heads"))


def qk_rollout(layers: Sequence[tuple[torch.Tensor, torch.Tensor, float, LayerMask]], key_mask: torch.Tensor | None = None,
               head_importance: torch.Tensor | None = None, start: int | torch.Tensor = 0, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (as :func:`pyattn.model_attention.rollout.attention_rollout`) from
    each layer's ``q``, ``k``, scale and mask (``QKCapture(keep_qk=True).layers``):
    ``v <- v Â_l`` from the last layer down, each step one call of
    :func:`pyattn.kernels.ops.attention_received_qk` with ``row_weights``; no ``N x N``.

    Parameters
    ----------
    layers : sequence of (q (B, H, N, d), k (B, Hkv, N, d), scale, LayerMask)
    key_mask : torch.Tensor, shape (B, N), optional
        1 for real tokens. A real row's attention sums to 1; a padded row has none.
    head_importance : torch.Tensor, shape (L, H), optional
        Head weights per layer (normalised to sum 1); default the mean.
    start : int or torch.Tensor of shape (B,)
        The position the rollout starts from, per item (0: CLS; a decoder
        classifier's last real token).
    residual : float
        ``Â_l = (1 - residual) Ā_l + residual I``, rows renormalised.

    Returns
    -------
    torch.Tensor, shape (B, N), float32
        Sums to 1 per item.

    Examples
    --------
    >>> import torch
    >>> q = torch.zeros(1, 1, 2, 4); k = torch.zeros(1, 1, 2, 4)  # equal scores: each row is [0.5, 0.5]
    >>> qk_rollout([(q, k, 1.0, LayerMask())])  # 0.5 * [0.5, 0.5] + 0.5 * [1, 0]
    tensor([[0.7500, 0.2500]])
    """
    q0 = layers[0][0]
    B, H, N, _ = q0.shape
    device = q0.device
    weights = check_head_importance(head_importance, len(layers), H)
    real = torch.ones(B, N, device=device) if key_mask is None else (key_mask.to(device) != 0).float()
    starts = torch.as_tensor(start, device=device).long().expand(B) if not isinstance(start, int) else torch.full((B,), start, device=device)
    if bool(((starts < 0) | (starts >= N)).any()):
        raise IndexError(f"start positions {starts.tolist()} are outside the sequence of {N} tokens")
    v = torch.zeros(B, N, device=device)
    v[torch.arange(B, device=device), starts] = 1.0
    row_totals = (1 - residual) * real + residual  # a real row's heads each sum to 1; a padded row to 0
    for index in reversed(range(len(layers))):
        q, k, scale, mask = layers[index]
        head_weights = torch.full((H,), 1.0 / H, device=device) if weights is None else weights[index].to(device).float()
        head_weights = head_weights / head_weights.sum()
        scaled = v / row_totals
        spread = attention_received_qk(q, k, scale, key_mask=None if key_mask is None else key_mask.to(device), window=mask.window,
                                       causal=mask.causal, head_weights=head_weights, row_weights=scaled)
        v = (1 - residual) * spread + residual * scaled
    return v
