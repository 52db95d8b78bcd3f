"""Argument checks shared by the modules of :mod:`pyattn.attribution`
(private: each refusal is one line naming the argument)."""

from __future__ import annotations

import numpy as np
import torch

from pyattn.errors import InputError


def resolve_device(device) -> torch.device:
    """A torch.device that exists on this machine, or a ValueError naming it."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        resolved = device
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise InputError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} does not exist: this machine has no CUDA GPU (use 'cpu')")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    elif resolved.type != "cpu":
        available = {"mps": getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()}
        if not available.get(resolved.type):
            raise InputError(f"device {device!r} does not exist on this machine (use 'cpu'{' or a cuda device' if torch.cuda.is_available() else ''})")
    return resolved


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

