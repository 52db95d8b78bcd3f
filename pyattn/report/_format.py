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


def number(value, significant: int = 3) -> str:
    """``value`` to ``significant`` digits: fixed point from 0.001 to 99,999,
    scientific outside; never ``-0`` (a value that rounds to zero is ``0``);
    ``""`` for NaN; text stays as it is."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return ""
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
