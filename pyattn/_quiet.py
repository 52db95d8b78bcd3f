"""transformers' own messages (padding to the attention window, weight
loading bars) silenced inside pyattn's calls: they are about inputs pyattn
builds, not the user's concern. The logger's level and the progress-bar
switch are set for the call and restored after it, so a user's own
transformers calls and every Python warning are untouched."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def transformers_quiet():
    """Within the block, transformers logs errors only and shows no progress
    bars; both settings are restored after it. Usable as a decorator."""
    try:
        from transformers.utils import logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
