"""Argument checks shared by the modules of :mod:`pyattn.attribution`
(private; the device check is :func:`pyattn._checks.resolve_device`, the
one device validator)."""

from __future__ import annotations

import numpy as np


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

