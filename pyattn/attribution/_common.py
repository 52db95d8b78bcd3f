"""Private helpers shared by the modules of :mod:`pyattn.attribution`."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def format_bytes(size: float) -> str:
    """``size`` bytes for a message: GB from 1e9 bytes, else MB."""
    return f"{size / 1e9:.2f} GB" if abs(size) >= 1e9 else f"{size / 1e6:.0f} MB"


def token_frame(tokens: Sequence[str], **columns):
    """One row per token (pandas DataFrame): ``position``, ``token``, then
    ``columns`` (each of length N) in the order given."""
    import pandas as pd

    return pd.DataFrame({"position": np.arange(len(tokens)), "token": tokens, **columns})
