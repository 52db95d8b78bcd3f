"""Faithfulness: does the model depend on the tokens a ranking puts first?

For a ranking of a document's tokens (by attribution, by attention received,
at random) and a share ``k`` of the text tokens, with ``p(y | x)`` the
model's probability of the target class (ERASER, DeYoung et al. 2020; ferret,
Attanasio et al. 2023):

- comprehensiveness(k) = ``p(y | x) - p(y | x without its top-k% tokens)``:
  high when removing what the ranking calls important hurts;
- sufficiency(k) = ``p(y | x) - p(y | only the top-k% tokens)``: low when
  what the ranking calls important is enough on its own.

AOPC is the mean over the ``k`` values. Removal deletes tokens from the
sequence by default (``mode="delete"``, as ERASER and ferret do); ``mode="mask"``
replaces them by the mask (or pad) token instead (for a decoder classifier
that reads its last non-pad token, a special token that is not the pad, so
that the position it reads does not move). [CLS] and [SEP] are never
removed or ranked. All variants of a document run in batches.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from pyattn.models.inputs import EncodedDocument, encode, model_output, output_kind, pooling_fill, pools_last_non_pad, position_ids_for
from pyattn.compare.metrics import top_k_count
from pyattn.models._state import preserving
from pyattn.errors import InputError

__all__ = ["faithfulness", "DEFAULT_PERCENTS"]

DEFAULT_PERCENTS = (1, 5, 10, 20, 50)


def _variant(document: EncodedDocument, keep: np.ndarray, mode: str, mask_id: int) -> list[int]:
    """Input ids keeping the text positions where keep is True."""
    ids = document.input_ids[0].tolist()
    inner = ids[1:-1]
    if mode == "delete":
        body = [t for t, k in zip(inner, keep) if k]
    else:
        body = [t if k else mask_id for t, k in zip(inner, keep)]
    return [ids[0], *body, ids[-1]]


@torch.no_grad()
def _probabilities(model, document: EncodedDocument, variants: list[list[int]], target: int, batch_size: int, pad_id: int) -> np.ndarray:
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(variants), batch_size):
        chunk = variants[start : start + batch_size]
        length = max(len(v) for v in chunk)
        ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(ids)
        for row, variant in enumerate(chunk):
            ids[row, : len(variant)] = torch.tensor(variant)
            attention_mask[row, : len(variant)] = 1
        kwargs = dict(input_ids=ids.to(device), attention_mask=attention_mask.to(device), position_ids=position_ids_for(model, ids).to(device))
        if document.global_attention_mask is not None:
            global_mask = torch.zeros_like(ids)
            global_mask[:, 0] = 1
            kwargs["global_attention_mask"] = global_mask.to(device)
        out.append(model_output(model(**kwargs).logits, output_kind(model))[:, target].cpu().numpy())  # F as attribute integrates it
    return np.concatenate(out)


@preserving()
def faithfulness(
    model,
    tokenizer,
    text: str,
    rankings: Mapping[str, object],
    target: int | None = None,
    percents: Sequence[float] = DEFAULT_PERCENTS,
    mode: str = "delete",
    random_rankings: int = 3,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int | None = None,
    by: str = "signed",
):
    """Comprehensiveness and sufficiency of each ranking, per k and as AOPC.

    Parameters
    ----------
    model, tokenizer
        A Hugging Face sequence classifier and its tokenizer.
    text : str
        The document (encoded as :func:`pyattn.models.inputs.encode` does).
    rankings : mapping of str to array-like, shape (N,)
        Name -> per-token scores over the encoded document ([CLS] and [SEP]
        included, as :func:`pyattn.attribute` and :func:`pyattn.attention`
        return them; their scores are ignored).
    target : int, optional
        Class whose probability is tracked; None: the predicted class.
    percents : sequence of float
        The k values, each in (0, 100]: ``ceil(k % of the text tokens)`` are
        removed (or kept).
    mode : {"delete", "mask"}
        Remove tokens from the sequence, or replace them by the mask (or pad)
        token.
    random_rankings : int
        How many random rankings (seeded by ``seed``) to average as the
        ``"random"`` baseline (0: none).
    seed : int
    batch_size : int
        Variants per forward pass.
    max_length : int, optional
        As for :func:`pyattn.models.inputs.encode`.
    by : {"signed", "magnitude"}
        How scores rank tokens: ``"signed"`` (default, ERASER's convention:
        largest first, so for attributions the tokens that most *support* the
        target class are removed first) or ``"magnitude"`` (largest ``|score|``
        first, support and opposition alike). The tables carry a ``by`` column.

    Returns
    -------
    per_k : pandas.DataFrame
        One row per ranking x k: ``ranking``, ``percent``, ``removed``
        (tokens), ``comprehensiveness``, ``sufficiency``, ``by``.
    aopc : pandas.DataFrame
        One row per ranking: ``ranking``, ``comprehensiveness_aopc``,
        ``sufficiency_aopc`` (means over k), the full input's F of
        ``target`` as ``output`` (the head's own: softmax, sigmoid or raw, named
        in ``output_kind``) and, where it is a probability, also as
        ``probability``; ``target``, ``by``.

    Raises
    ------
    ValueError
        For an unknown ``by`` or ``mode``, a percent outside (0, 100], a
        ranking whose length is not N or that holds NaN or infinite scores,
    or a document without text tokens.

    Examples
    --------
    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> text = "the compiler and the borrow checker reject the program"
    >>> attribution = pyattn.attribute(model, tokenizer, text).scores  # (N,), N = 14 with [CLS] and [SEP]
    >>> per_k, aopc = faithfulness(model, tokenizer, text, {"attribution": attribution}, percents=(10, 50), random_rankings=1)
    >>> per_k[["ranking", "percent", "removed"]].values.tolist()  # ceil(10% and 50% of 12 text tokens)
    [['attribution', 10, 2], ['attribution', 50, 6], ['random', 10, 2], ['random', 50, 6]]
    >>> scores = aopc.set_index("ranking")
    >>> bool(scores.comprehensiveness_aopc["attribution"] > scores.comprehensiveness_aopc["random"])
    True
    >>> round(float(scores.probability["attribution"]), 4)  # the model's probability of its prediction
    0.953
    """
    import pandas as pd

    if by not in ("signed", "magnitude"):
        raise InputError(f'by must be "signed" or "magnitude", got {by!r}')
    if mode not in ("delete", "mask"):
        raise InputError(f'mode must be "delete" or "mask", got {mode!r}')
    document = encode(model, tokenizer, text, max_length)
    n = document.input_ids.shape[1]
    inner = n - 2
    if inner < 1:
        raise InputError("the document has no text tokens to remove")
    bad = [p for p in percents if not 0 < p <= 100]
    if bad:
        raise InputError(f"percents must be in (0, 100], got {bad}")
    pad_id = tokenizer.pad_token_id
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else pad_id
    if pools_last_non_pad(model) and (mask_id is None or mask_id == getattr(model.config, "pad_token_id", None)):
        # a decoder classifier reads the last token that is not its pad: a
        # pad put in a token's place would move where it reads (pad = eos)
        mask_id = pooling_fill(model, tokenizer)

    orders: dict[str, list[np.ndarray]] = {}
    for name, scores in rankings.items():
        values = np.asarray(scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
        if values.shape != (n,):
            raise InputError(f"ranking {name!r} has shape {values.shape} but the document has {n} tokens ([CLS] and [SEP] included)")
        if not np.all(np.isfinite(values)):
            raise InputError(f"ranking {name!r} contains NaN or infinite scores: cannot rank tokens by it")
        text_values = values[1:-1] if by == "signed" else np.abs(values[1:-1])
        orders[name] = [np.lexsort((np.arange(inner), -text_values))]
    rng = np.random.default_rng(seed)
    if random_rankings > 0:
        orders["random"] = [rng.permutation(inner) for _ in range(random_rankings)]

    variants, index = [], []
    for name, name_orders in orders.items():
        for draw, order in enumerate(name_orders):
            for percent in percents:
                k = top_k_count(percent, inner)
                top = np.zeros(inner, bool)
                top[order[:k]] = True
                variants.append(_variant(document, ~top, mode, mask_id))  # without the top k
                variants.append(_variant(document, top, mode, mask_id))  # only the top k
                index.append((name, draw, percent, k))
    device = next(model.parameters()).device
    model.eval()  # no dropout: the model's own probabilities (its training flag is put back on the way out)
    with torch.no_grad():
        full = model_output(model(**{key: value.to(device) for key, value in document.forward_kwargs().items()}).logits, output_kind(model))[0]
    if target is None:
        target = int(full.argmax())
    if not 0 <= int(target) < full.shape[0]:
        raise InputError(f"target must be a class index in 0..{full.shape[0] - 1}, got {target}")
    p_full = float(full[target])
    probabilities = _probabilities(model, document, variants, target, batch_size, pad_id)

    rows = []
    for position, (name, draw, percent, k) in enumerate(index):
        rows.append(
            {
                "ranking": name,
                "draw": draw,
                "percent": percent,
                "removed": k,
                "comprehensiveness": p_full - float(probabilities[2 * position]),
                "sufficiency": p_full - float(probabilities[2 * position + 1]),
            }
        )
    per_draw = pd.DataFrame(rows)
    per_k = per_draw.groupby(["ranking", "percent", "removed"], sort=False)[["comprehensiveness", "sufficiency"]].mean().reset_index()
    aopc = (
        per_k.groupby("ranking", sort=False)[["comprehensiveness", "sufficiency"]]
        .mean()
        .rename(columns={"comprehensiveness": "comprehensiveness_aopc", "sufficiency": "sufficiency_aopc"})
        .reset_index()
    )
    kind = output_kind(model)
    aopc["output"] = p_full  # F of the full input, as the model's head outputs it (output_kind names it)
    aopc["output_kind"] = kind
    if kind != "raw":  # a regression head's output is not a probability
        aopc["probability"] = p_full
    aopc["target"] = target
    per_k["by"] = by
    aopc["by"] = by
    return per_k, aopc
