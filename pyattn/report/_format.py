"""Private helpers of the reports: numbers that scale, tokens as text."""

from __future__ import annotations

import codecs
import math
from typing import Sequence

# GPT-2 / RoBERTa byte-level BPE writes each byte as one printable character;
# this is that table, inverted (the same construction as the tokenizers use).
_PRINTABLE = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))


def _byte_decoder() -> dict[str, int]:
    codes = _PRINTABLE[:]
    chars = _PRINTABLE[:]
    extra = 0
    for byte in range(256):
        if byte not in codes:
            codes.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(codes, chars)}


_BYTES = _byte_decoder()


def _as_float(value) -> float | str:
    """``value`` as a float, or the text shown instead of a number: ``""``
    for NaN, ``str(value)`` for what is not a number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if math.isnan(value) else value


def number(value, significant: int = 3) -> str:
    """``value`` to ``significant`` digits: fixed point from 0.001 to 99,999,
    scientific outside; never ``-0`` (a value that rounds to zero is ``0``);
    ``""`` for NaN; text stays as it is."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    value = _as_float(value)
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude < 1e-3 or magnitude >= 1e5:
        return f"{value:.{significant - 1}e}"
    decimals = max(0, significant - 1 - math.floor(math.log10(magnitude)))
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def decimals(value, digits: int = 4) -> str:
    """``value`` to ``digits`` decimals (the statistics tables); scientific
    where that would hide the value (small attributions read as 1.234e-05,
    never as 0.0000 or -0.0000); ``""`` for NaN; text stays as it is."""
    value = _as_float(value)
    if isinstance(value, str):
        return value
    if value != 0 and digits >= 1 and abs(value) < 0.5 * 10.0 ** -digits:  # would print as 0.0000
        return f"{value:.{max(digits - 1, 1)}e}"
    text = f"{value:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text


def display_tokens(tokens: Sequence[str]) -> list[str]:
    """Tokens as the text they stand for: byte-level BPE characters (``Ġ``
    for a space, ``Ã¯`` for the bytes of "ï") decoded to UTF-8, WordPiece's
    ``##`` and SentencePiece's ``▁`` dropped. A character split over several
    tokens is shown on the token that completes it; the tokens before show
    ``·``."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    shown = []
    for token in tokens:
        if token and all(c in _BYTES for c in token) and not (token.startswith("<") and token.endswith(">")):
            text = decoder.decode(bytes(_BYTES[c] for c in token))
            shown.append(text.strip() or ("·" if text == "" else text.strip() or "␣"))
        else:
            decoder.reset()
            shown.append(token.replace("▁", "").removeprefix("##"))
    return shown
