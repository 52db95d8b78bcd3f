"""Argument checks shared by the ops and the model-level calls: each refusal
is one line naming the argument, what came and what is expected."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pyattn.errors import InputError


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def require_tensor(name: str, value: Any, shape: str) -> None:
    """Refuse anything but a torch.Tensor for ``name`` (TypeError); ``shape``
    says what is expected, e.g. ``"(B, H, N, X + w + 1)"``.

    >>> require_tensor("local_attn", np.zeros(3), "(B, H, N, X + w + 1)")
    Traceback (most recent call last):
    ...
    TypeError: local_attn must be a torch.Tensor (B, H, N, X + w + 1), got numpy.ndarray: convert it with torch.as_tensor
    """
    if not isinstance(value, torch.Tensor):
        hint = ": convert it with torch.as_tensor" if isinstance(value, (np.ndarray, list, tuple, int, float)) else ""
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {_kind(value)}{hint}")


def require_tensor_sequence(name: str, values: Any, shape: str, allow_none: bool = False) -> None:
    """Refuse a sequence of per-layer values unless each is a torch.Tensor
    (or None where ``allow_none``), naming the first that is not."""
    if isinstance(values, (str, bytes, np.ndarray)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of torch.Tensor {shape}, one per layer, got {_kind(values)}")
    for index, value in enumerate(values):
        if value is None and allow_none:
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}[{index}] must be a torch.Tensor {shape}, got {_kind(value)}: pass the model output's tensors")


def require_token_ids(name: str, value: Any, vocab_size: int | None = None) -> None:
    """Token ids: an integer torch.Tensor ``(B, N)`` or ``(N,)`` with real
    values, each in ``0..vocab_size - 1``."""
    require_tensor(name, value, "of integer token ids (B, N)")
    if value.is_meta:
        raise InputError(f"{name} is a meta tensor (shape only, no values): token ids need real values")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {value.dtype}")
    if value.dim() not in (1, 2) or value.numel() == 0:
        raise InputError(f"{name} must be (B, N) or (N,) with N >= 1, got shape {tuple(value.shape)}")
    if vocab_size:
        low, high = int(value.min()), int(value.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise InputError(f"{name} holds id {bad}, outside the model's vocabulary 0..{vocab_size - 1}: the ids do not come from this model's tokenizer")


def require_mask(name: str, value: Any, shape: tuple[int, ...]) -> None:
    """An optional 0/1 mask tensor of the ids' shape."""
    if value is None:
        return
    require_tensor(name, value, "(B, N) of 0 and 1")
    if value.is_meta:
        raise InputError(f"{name} is a meta tensor (shape only, no values)")
    if value.dtype.is_floating_point or value.dtype.is_complex:
        raise TypeError(f"{name} must be an integer or bool tensor (1 = attend / global), got dtype {value.dtype}")
    if tuple(value.shape) != tuple(shape) and not (value.dim() == 1 and (1,) + tuple(value.shape) == tuple(shape)):
        raise InputError(f"{name} must have the shape of input_ids {tuple(shape)}, got {tuple(value.shape)}")
    if value.numel() and not bool(((value == 0) | (value == 1)).all()):
        others = sorted({int(v) for v in value[(value != 0) & (value != 1)].flatten()[:1000].tolist()})[:5]
        raise InputError(f"{name} must hold only 0 and 1, got {', '.join(map(str, others))}: a model reads other values differently "
                         "(some as 1, some as a weight)")


def head_importance_tensor(value: Any, name: str = "head_importance") -> torch.Tensor:
    """A head-importance table as a float64 CPU tensor: a torch.Tensor,
    numpy array or nested list of finite, non-negative numbers, with values
    (not meta) and outside autograd (not requiring grad). Shape is checked by
    the caller.

    >>> head_importance_tensor([[0.5, 1.0]])
    tensor([[0.5000, 1.0000]], dtype=torch.float64)
    >>> head_importance_tensor([[0.5, float("nan")]])
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: head_importance holds 1 non-finite value(s) (NaN or inf); it must be finite and non-negative (it scales attention)
    """
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            raise InputError(f"{name} is a meta tensor (shape only, no values): pass the real (L, H) importance")
        if value.requires_grad:
            raise InputError(f"{name} requires grad: pass importance.detach() (an (L, H) table of numbers, outside autograd)")
        if value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers (L, H), got dtype {value.dtype}")
        tensor = value.detach().to("cpu", torch.float64)
    else:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an (L, H) torch.Tensor (or numpy array) of numbers, got {_kind(value)}") from None
        tensor = torch.from_numpy(array.copy())
    finite = torch.isfinite(tensor)
    if not finite.all():
        raise InputError(f"{name} holds {int((~finite).sum())} non-finite value(s) (NaN or inf); it must be finite and non-negative (it scales attention)")
    if tensor.numel() and float(tensor.min()) < 0:
        raise InputError(f"{name} holds negative value(s) (min {float(tensor.min()):g}); it must be finite and non-negative (it scales attention)")
    if tensor.numel() and not bool((tensor != 0).any()):
        raise InputError(f"{name} is 0 for every head: attention scaled by it would be 0 everywhere, with nothing to rank or "
                         "compare; pass the importance the heads have (or none)")
    return tensor


def whole_label(value: Any, index: int, num_classes: int | None, name: str = "labels") -> int:
    """One class label: a whole number (an int, or a float / 0-d tensor
    holding one) in ``0..num_classes - 1``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise InputError(f"{name}[{index}] is {value!r}: a label must be a whole class index")
    label = int(value)
    if label < 0 or (num_classes is not None and label >= num_classes):
        allowed = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        raise InputError(f"{name}[{index}] is {label}, out of range: the model has classes {allowed}")
    return label


#: How attribution scores are ranked: by magnitude (``|attribution|``) or signed.
ATTRIBUTION_AS = ("magnitude", "signed")


def check_attribution_as(attribution_as: str) -> None:
    if attribution_as not in ATTRIBUTION_AS:
        raise InputError(f'attribution_as must be "magnitude" (|attribution|) or "signed", got {attribution_as!r}')


def first_line(error: BaseException, limit: int = 200) -> str:
    """``error``'s message in one line of at most ``limit`` characters (its type's name if it has none)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_device(device):
    """``device`` if it names a device this machine has, else an
    :class:`pyattn.errors.InputError` naming the parameter ``device``. None
    (the default device) passes. The one device validator: the pipeline, the
    CLI (which names its flag itself) and attribution use it.

    Parameters
    ----------
    device : str, torch.device or None
        ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns
    -------
    str, torch.device or None
        ``device`` unchanged.

    Raises
    ------
    InputError
        If it is not a device, or not one this machine has.

    Examples
    --------
    >>> check_device("cpu"), check_device(None)
    ('cpu', None)
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: device='gpu' is not a device: use cpu, cuda, cuda:N or mps
    """
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device={device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device={device!r} does not exist: no CUDA GPU is visible on this machine (use cpu)")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"device={device!r} does not exist: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return device
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"device={device!r} does not exist: MPS is not available on this machine (use cpu)")
        return device
    raise InputError(f"device={device!r}: pyattn runs on cpu, cuda, cuda:N or mps")


def resolve_device(device) -> torch.device:
    """The ``torch.device`` to run on: ``device`` checked by
    :func:`check_device`, or, for None, ``cuda`` when a GPU is visible and
    ``cpu`` otherwise.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    return device if isinstance(device, torch.device) else torch.device(device)
