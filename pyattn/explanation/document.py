"""One document from text to :class:`~pyattn.explanation.result.Explanation`:
:func:`explain` runs attribution and attention and hands both to
:func:`compose`, the comparison stage the dataset runner and the reports
share; :func:`compare_document` is its metric table (p-values included), and
:func:`attention_views` names the attention vectors every comparison looks at.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from pyattn.errors import InputError
from pyattn.attribution import Attribution, attribute
from pyattn.kernels.layers import parse_layer_range
from pyattn._checks import head_importance_tensor
from pyattn.models._state import preserving
from pyattn.explanation.result import Explanation, NotConvergedWarning

__all__ = ["explain", "compose", "compare_document", "attention_views", "label_names"]


def _numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().double().numpy()


def attention_views(
    per_head: torch.Tensor | np.ndarray,
    head_importance: torch.Tensor | np.ndarray | None = None,
    layer_ranges: Sequence[str | tuple[int, int]] = (),
    item: int = 0,
) -> dict[str, np.ndarray]:
    """The attention-received vectors a comparison looks at, by name.

    Parameters
    ----------
    per_head:
        ``(L, B, H, N)`` attention received per layer and head (heads not
        weighted), as ``AttentionReceived(per_head=True).per_layer``, or
        ``(L, H, N)`` for one document.
    head_importance:
        ``(L, H)``: adds the same views with each head scaled by its
        importance, named with the suffix ``", scaled"``.
    layer_ranges:
        ``"6-11"`` or ``(6, 11)``: layers numbered from 0, inclusive.

    Returns
    -------
    dict
        ``"final"`` (last layer, heads summed), ``"all"`` (all layers), each
        range, then the scaled versions; each ``(N,)`` float64 numpy.

    >>> views = attention_views(np.ones((2, 3, 5)), layer_ranges=["0-0"])
    >>> {name: float(v.sum()) for name, v in views.items()}
    {'final': 15.0, 'all': 30.0, '0-0': 15.0}
    """
    values = torch.as_tensor(per_head).double()
    if values.dim() == 3:
        values = values[:, None]
    if values.dim() != 4:
        raise InputError(f"per_head must be (L, B, H, N) or (L, H, N), got shape {tuple(values.shape)}")
    L, _, H, _ = values.shape
    values = values[:, item]  # (L, H, N)
    sources = [("", values)]
    if head_importance is not None:
        weights = head_importance_tensor(head_importance)  # numbers, finite, >= 0, outside autograd
        if tuple(weights.shape) != (L, H):
            raise InputError(f"head_importance must have shape (L, H) = ({L}, {H}), got {tuple(weights.shape)}")
        sources.append((", scaled", values * weights[:, :, None]))
    ranges = [parse_layer_range(r, L) if isinstance(r, str) else parse_layer_range(f"{r[0]}-{r[1]}", L) for r in layer_ranges]
    views: dict[str, np.ndarray] = {}
    for suffix, source in sources:
        heads_summed = source.sum(1)  # (L, N)
        views[f"final{suffix}"] = heads_summed[-1].numpy()
        views[f"all{suffix}"] = heads_summed.sum(0).numpy()
        for first, last in ranges:
            views[f"{first}-{last}{suffix}"] = heads_summed[first : last + 1].sum(0).numpy()
    return views


def label_names(model) -> dict[int, str]:
    """The model's class names by index (``config.id2label``).

    >>> import pyattn
    >>> label_names(pyattn.load_demo()[0])
    {0: 'machine learning', 1: 'programming languages'}
    """
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {int(k): str(v) for k, v in id2label.items()}


@preserving(gradients=True)
def explain(
    model: torch.nn.Module,
    tokenizer,
    text: str,
    target: int | None = None,
    *,
    head_importance: torch.Tensor | np.ndarray | None = None,
    layer_ranges: Sequence[str | tuple[int, int]] = (),
    rollout: bool = True,
    faithfulness: bool = True,
    random_rankings: int = 2,
    masks: Sequence[str] | None = None,
    attribution_as: str = "magnitude",
    special_tokens: Sequence[str] | None = None,
    significance: int = 0,
    max_length: int | None = None,
    device=None,
    attention_route: str = "auto",
    **attribute_kwargs: Any,
) -> Explanation:
    """Attribution, attention and their comparison for one document.

    Parameters
    ----------
    model, tokenizer:
        A Hugging Face sequence classifier (Longformer, a model of
        :data:`pyattn.models.qk_capture.QK_ARCHITECTURES` running its own sdpa
        attention, or any other whose eager attention returns probabilities)
        and its tokenizer.
    text:
        The document.
    target:
        Class to explain; None: the predicted class.
    head_importance:
        ``(L, H)``, optional: adds head-importance scaled attention views.
    layer_ranges:
        Extra attention views summed over layer ranges (``"0-5"``, numbered
        from 0, inclusive).
    rollout:
        Add attention rollout (``"rollout"``) from the token the classifier
        reads (the first; a causal decoder's last).
    faithfulness:
        Compute AOPC comprehensiveness/sufficiency of the attribution, the
        all-layers attention and rollout rankings (and ``random_rankings``
        random ones); ranked by signed score.
    masks:
        Token masks of the similarity table; default: all four
        (``all``, ``no_special``, ``alphabetic``, ``no_stopwords``) when the
        tokenizer has special tokens.
    attention_route:
        How attention is read (:func:`pyattn.model_attention.attention_route`):
        ``"auto"`` (queries and keys where the architecture allows, the
        model's probabilities otherwise), ``"qk"`` or ``"eager"``.
    attribution_as:
        ``"magnitude"`` (default) or ``"signed"`` attributions in the
        similarity metrics.
    special_tokens:
        Default: ``tokenizer.all_special_tokens``.
    significance:
        Number of permutations for per-document p-values of every metric
        (circular-shift null, :func:`pyattn.compare.significance.document_significance`,
        with the same ``attribution_as`` as the similarity table);
        0 (default) skips them. 999 gives p-values down to 0.001.
    attribute_kwargs:
        Passed to :func:`pyattn.attribute` (``n_steps``, ``tol``, ...).

    Returns
    -------
    Explanation

    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> result = explain(model, tokenizer, "gradient descent on a neural network", faithfulness=False)
    >>> list(result.attention), len(result.tokens) == len(result.attribution.scores)
    (['final', 'all', 'rollout'], True)
    """
    from pyattn.compare.similarity import MASKS

    if isinstance(significance, bool) or not isinstance(significance, int) or significance < 0:
        raise InputError(f"significance must be a number of permutations >= 0 (0: none), got {significance!r}")
    if attribution_as not in ("magnitude", "signed"):
        raise InputError(f'attribution_as must be "magnitude" or "signed", got {attribution_as!r}')
    if masks is not None:
        unknown = [m for m in ([masks] if isinstance(masks, str) else masks) if m not in MASKS]
        if unknown:
            raise InputError(f"unknown masks {unknown}: choose from {list(MASKS)}")
    from pyattn.model_attention.received import check_route

    check_route(attention_route, "attention_route")  # before the attribution, not after it
    import warnings

    from pyattn._quiet import transformers_quiet
    from pyattn.models.inputs import TruncationWarning

    with transformers_quiet(), warnings.catch_warnings():
        # each stage encodes the text: its truncation is said once, below
        warnings.simplefilter("ignore", TruncationWarning)
        result = _explain(model, tokenizer, text, target, head_importance, layer_ranges, rollout, faithfulness, random_rankings,
                          masks, attribution_as, special_tokens, significance, max_length, device, attribute_kwargs, attention_route)
    a = result.attribution
    if a.truncated_tokens:
        warnings.warn(f"the text was cut to fit max_length {max_length or 'of the model'}: {a.truncated_tokens} tokens dropped, "
                      f"{len(a.tokens)} kept (special tokens included); everything here describes the kept part",
                      TruncationWarning, stacklevel=3)
    if not a.converged:
        warnings.warn(f"the attribution did not converge: completeness error {a.relative_error:.2%} is above the tolerance "
                      f"{a.tol:.2%} after {a.n_steps} steps (raise max_steps, or pass n_steps)", NotConvergedWarning, stacklevel=3)
    return result


def _explain(model, tokenizer, text, target, head_importance, layer_ranges, rollout, faithfulness, random_rankings, masks,
             attribution_as, special_tokens, significance, max_length, device, attribute_kwargs, attention_route="auto") -> "Explanation":
    from pyattn.model_attention import attention as model_attention
    from pyattn.compare.similarity import MASKS, token_masks

    config = model.config
    # Check head importance and layer ranges before any work (a dry run on zeros).
    attention_views(torch.zeros(config.num_hidden_layers, config.num_attention_heads, 1), head_importance, layer_ranges)
    if special_tokens is None:
        special_tokens = list(getattr(tokenizer, "all_special_tokens", []) or [])
    if isinstance(text, str) and text.strip():  # checked before any model work (empty texts: attribute's own error)
        from pyattn.models.inputs import check_tokenizer_fits

        words = tokenizer.tokenize(text)
        unknown = getattr(tokenizer, "unk_token", None)
        check_tokenizer_fits(model, tokenizer, tokenizer.convert_tokens_to_ids(words))  # all or mostly unknown: one line, before any work
        specials = [t for t in special_tokens if t != unknown][:2] or ["[CLS]", "[SEP]"]
        kept = token_masks([specials[0], *words, specials[-1]], special_tokens)
        too_few = [m for m in (([masks] if isinstance(masks, str) else masks) or [m for m in MASKS if m in kept])
                   if m in kept and kept[m].sum() < 2]
        if too_few and masks is not None:
            raise InputError(f"masks: mask {too_few[0]!r} leaves {int(kept[too_few[0]].sum())} of the document's {len(words) + 2} "
                             "tokens; comparing needs at least 2 (choose other masks, e.g. masks=['all'])")
        if too_few:  # default masks: those with nothing to compare are left out of the table, and said so
            import warnings

            masks = [m for m in MASKS if m in kept and m not in too_few]
            warnings.warn(f"masks {too_few} leave fewer than 2 of the document's {len(words) + 2} tokens: left out of the "
                          f"similarity table (kept: {masks})", UserWarning, stacklevel=4)
    attribution = attribute(model, tokenizer, text, target=target, max_length=max_length, device=device, **attribute_kwargs)
    collected = model_attention(model, tokenizer, text, max_length=max_length, per_head=True, route=attention_route, rollout=rollout)
    per_head = collected.received.per_layer  # (L, B, H, N)
    n = len(attribution.tokens)
    if per_head.shape[-1] != n:
        raise RuntimeError(f"attention covers {per_head.shape[-1]} tokens but the attribution {n}: the encodings disagree")
    extra = {"rollout": _numpy(collected.rollout[0])} if rollout else {}
    result = compose(attribution, per_head[:, 0], text=text, head_importance=head_importance, layer_ranges=layer_ranges,
                     extra_views=extra, special_tokens=special_tokens, masks=masks, attribution_as=attribution_as,
                     label_names=label_names(model), significance=significance)
    if faithfulness:
        from pyattn.compare.faithfulness import faithfulness as run_faithfulness

        views = result.attention
        rankings = {"attribution": attribution.scores, "attention (all)": views["all"]}
        if "rollout" in views:
            rankings["rollout"] = views["rollout"]
        _, result.faithfulness = run_faithfulness(model, tokenizer, text, rankings, target=attribution.target,
                                                  random_rankings=random_rankings, max_length=max_length)
    return result


def compose(
    attribution: Attribution,
    per_head,
    *,
    text: str = "",
    head_importance=None,
    layer_ranges: Sequence[str | tuple[int, int]] = (),
    extra_views: dict[str, np.ndarray] | None = None,
    special_tokens: Sequence[str] = (),
    masks: Sequence[str] | None = None,
    attribution_as: str = "magnitude",
    label_names: dict[int, str] | None = None,
    significance: int = 0,
) -> Explanation:
    """The comparison stage of :func:`explain`, from an attribution and the
    attention already computed: the one place where attention views,
    similarity and p-values are made. :func:`explain`, the dataset runner's
    records and the dataset report all go through it.

    Parameters
    ----------
    attribution:
        A :class:`pyattn.Attribution` (from :func:`pyattn.attribute`, or
        rebuilt from a stored record).
    per_head:
        ``(L, H, N)`` attention received per layer and head.
    extra_views:
        More attention vectors ``(N,)`` by name (e.g. ``"rollout"``).

    Returns
    -------
    Explanation
        Without faithfulness (that needs the model).

    >>> import pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> text = "gradient descent on a neural network"
    >>> scores = pyattn.attribute(model, tokenizer, text)
    >>> received = pyattn.attention(model, tokenizer, text, per_head=True).received.per_layer[:, 0]
    >>> compose(scores, received, masks=["all"]).similarity["attention"].tolist()
    ['final', 'all']
    """
    special_tokens = list(special_tokens or [])
    per_head = torch.as_tensor(per_head).detach().cpu().double()
    n = len(attribution.tokens)
    if per_head.dim() != 3 or per_head.shape[-1] != n:
        raise InputError(f"per_head must be (L, H, N) with N = {n} tokens as in the attribution, got shape {tuple(per_head.shape)}")
    views, table, p_values = compare_document(attribution.scores, attribution.tokens, per_head, head_importance=head_importance,
                                              layer_ranges=layer_ranges, extra_views=extra_views, special_tokens=special_tokens,
                                              masks=masks, attribution_as=attribution_as, significance=significance)
    if masks is None:
        from pyattn.compare.similarity import MASKS

        masks = list(MASKS) if special_tokens else ["all"]
    importance = None if head_importance is None else torch.as_tensor(head_importance).double().cpu().numpy()
    return Explanation(
        text=text,
        tokens=list(attribution.tokens),
        attribution=attribution,
        attention=views,
        per_head=per_head.numpy(),
        similarity=table,
        faithfulness=None,
        head_importance=importance,
        special_tokens=special_tokens,
        label_names=dict(label_names or {}),
        masks=list(masks),
        attribution_as=attribution_as,
        significance=p_values,
    )


def compare_document(
    scores,
    tokens: Sequence[str],
    per_head,
    *,
    special_tokens: Sequence[str] = (),
    masks: Sequence[str] | None = None,
    attribution_as: str = "magnitude",
    significance: int = 0,
    p_masks: Sequence[str] | None = None,
    head_importance=None,
    layer_ranges: Sequence[str | tuple[int, int]] = (),
    extra_views: dict[str, np.ndarray] | None = None,
):
    """One document's comparison: its attention views, their similarity
    metrics to the attribution and the metrics' permutation p-values. The one
    place those numbers are computed: :func:`compose` (so :func:`explain`),
    ``pyattn compare`` (:func:`pyattn.pipeline.compare_results`) and
    ``pyattn report`` (:func:`pyattn.pipeline.report_results`) all call it.

    Parameters
    ----------
    scores : array-like, shape (N,)
        The token attributions.
    tokens : sequence of str, length N
    per_head : array-like, shape (L, H, N)
        Attention received per layer and head.
    special_tokens, masks, attribution_as
        As for :func:`pyattn.compare.similarity.compare`; ``masks`` None: all of
        :data:`pyattn.compare.similarity.MASKS` with special tokens, else ``["all"]``.
    significance : int
        Permutations per attention view and mask (circular-shift null, seed 0:
        :func:`pyattn.compare.significance.document_significance`); 0: no p-values.
    p_masks : sequence of str, optional
        The masks that get p-values (default: ``no_special`` with special
        tokens, else ``all``). A mask keeping fewer than 3 tokens gets none.
    head_importance, layer_ranges
        As for :func:`attention_views`.
    extra_views : dict of str to array (N,), optional
        More attention vectors by name (e.g. ``"rollout"``).

    Returns
    -------
    views : dict of str to ndarray (N,)
    similarity : pandas.DataFrame
        :func:`pyattn.compare.similarity.compare`'s rows (attention view x mask).
    p_values : pandas.DataFrame or None
        :func:`pyattn.compare.significance.document_significance`'s rows with
        ``mask`` second (attention view x mask x metric); None without
        ``significance``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tokens = ["[CLS]"] + [f"w{i}" for i in range(8)] + ["[SEP]"]
    >>> views, table, p = compare_document(rng.normal(size=10), tokens, rng.random((2, 3, 10)), special_tokens=["[CLS]", "[SEP]"],
    ...                                    masks=["no_special"], significance=99)
    >>> list(views), table[["attention", "mask", "tokens"]].values.tolist()
    (['final', 'all'], [['final', 'no_special', 8], ['all', 'no_special', 8]])
    >>> p.columns[:3].tolist(), int(p["n_perm"].iloc[0])  # 8 tokens: all 7 circular shifts
    (['attention', 'mask', 'metric'], 7)
    """
    import pandas as pd

    from pyattn.compare.similarity import MASKS, compare, token_masks

    special_tokens = list(special_tokens or [])
    scores = np.asarray(scores, dtype=np.float64)
    views = attention_views(per_head, head_importance, layer_ranges)
    for name, values in (extra_views or {}).items():
        views[name] = np.asarray(values, dtype=np.float64)
    if masks is None:
        masks = list(MASKS) if special_tokens else ["all"]
    table = compare(scores, views, tokens, special_tokens=special_tokens, masks=masks, attribution_as=attribution_as)
    if not significance:
        return views, table, None
    from pyattn.compare.significance import document_significance

    kept = token_masks(tokens, special_tokens)
    tables = []
    for mask in p_masks if p_masks is not None else ["no_special" if special_tokens else "all"]:
        keep = kept[mask]
        if keep.sum() < 3:
            continue
        found = document_significance(scores[keep], {k: v[keep] for k, v in views.items()}, n_perm=significance,
                                      attribution_as=attribution_as)
        found.insert(1, "mask", mask)
        tables.append(found)
    return views, table, (pd.concat(tables, ignore_index=True) if tables else None)
