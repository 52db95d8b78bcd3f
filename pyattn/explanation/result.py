"""The :class:`Explanation` of one document: every number pyattn computed
for it (attribution, attention views, similarity, faithfulness, p-values),
its token tables, and its report (HTML, inline in a notebook).

:func:`pyattn.explanation.document.explain` makes one; it is re-exported as
:class:`pyattn.Explanation`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyattn.attribution import Attribution

__all__ = ["Explanation", "NotConvergedWarning"]


class NotConvergedWarning(UserWarning):
    """An attribution's completeness error stayed above its tolerance (more
    steps, ``max_steps``, or ``method="trapezoid"`` for a steep path may
    help); the explanation is still returned."""


@dataclass
class Explanation:
    """Everything pyattn says about one document.

    Attributes
    ----------
    attribution:
        The :class:`pyattn.Attribution` (integrated gradients, completeness,
        steps); ``attribution.scores`` ``(N,)``.
    tokens:
        The ``N`` tokens of the encoded document, special tokens included.
    attention:
        Name -> attention received ``(N,)``: ``final``, ``all``, layer ranges,
        ``", scaled"`` versions (when head importance was given) and
        ``rollout`` (attention rollout from the first token).
    per_head:
        ``(L, H, N)`` attention received per layer and head (not weighted).
    similarity:
        :func:`pyattn.compare.similarity.compare`'s table (one row per attention view
        x token mask, ``attribution_as`` named).
    faithfulness:
        AOPC table (comprehensiveness and sufficiency per ranking, ``by``
        named), or None when not asked for.
    significance:
        Per attention view x metric: observed value and one-sided permutation
        p-value under a circular-shift null (:mod:`pyattn.compare.significance`), over
        the tokens of mask ``no_special`` (``all`` without special tokens),
        attributions taken as ``attribution_as`` says (a column);
        None when not asked for.

    Methods give the token tables (:meth:`supporting`, :meth:`opposing`:
    signed attribution; :meth:`top_attention`), one row per token
    (:meth:`to_frame`), the report (:meth:`save_html`, and inline in a
    notebook through ``_repr_html_``).

    Examples
    --------
    >>> import numpy as np, pyattn
    >>> model, tokenizer = pyattn.load_demo()
    >>> result = pyattn.explain(model, tokenizer, "the borrow checker rejects the program", faithfulness=False)
    >>> result  # doctest: +ELLIPSIS
    Explanation(11 tokens, predicted 'programming languages' p=0.933, completeness error ...%, views ['final', 'all', 'rollout'])
    >>> result.per_head.shape  # (L, H, N)
    (3, 4, 11)
    >>> bool(np.allclose(result.attention["all"], result.per_head.sum((0, 1))))  # "all": every layer and head summed
    True
    >>> result.supporting(2)[["token", "by"]].values.tolist(), result.opposing(1)[["token", "by"]].values.tolist()
    ([['borrow', 'supporting'], ['checker', 'supporting']], [['the', 'opposing']])
    >>> result.to_frame().columns.tolist()
    ['position', 'token', 'raw_token', 'special', 'attribution', 'attention: final', 'attention: all', 'attention: rollout']
    """

    text: str
    tokens: list[str]
    attribution: Attribution
    attention: dict[str, np.ndarray]
    per_head: np.ndarray
    similarity: Any
    faithfulness: Any | None
    head_importance: np.ndarray | None
    special_tokens: list[str]
    label_names: dict[int, str] = field(default_factory=dict)
    masks: list[str] = field(default_factory=list)
    attribution_as: str = "magnitude"
    significance: Any | None = None
    head_importance_name: str = "head importance"

    # -- the prediction -----------------------------------------------------
    @property
    def predicted_label(self) -> int:
        """The model's predicted class index."""
        return self.attribution.predicted_label

    def label_name(self, index: int) -> str:
        """The model's name for class ``index`` (``config.id2label``)."""
        return self.label_names.get(int(index), str(index))

    @property
    def probability(self) -> float:
        """The model's probability of its predicted class (softmax, or the
        label's sigmoid for a multi-label head); a regression head's raw
        output is refused (ValueError): read :attr:`output_value`."""
        return float(self.attribution.probabilities[self.predicted_label])

    @property
    def output_value(self) -> float:
        """F of the predicted class on the input, whatever the head:
        ``attribution.output`` names it (softmax, sigmoid or raw)."""
        return float(self.attribution.outputs[self.predicted_label])

    def _prediction(self) -> str:
        """``label (p = 0.912)``, ``label (sigmoid p = 0.912)`` or ``output 1.234`` (regression)."""
        kind = self.attribution.output
        if kind == "raw":
            return f"output {self.output_value:.4g} (regression head: raw output, not a probability)"
        return f"{self.label_name(self.predicted_label)} ({'sigmoid ' if kind == 'sigmoid' else ''}p = {self.output_value:.3f})"

    # -- token tables -------------------------------------------------------
    def supporting(self, k: int = 10):
        """The up to ``k`` tokens with the largest positive attribution (they
        push toward the explained class), as a DataFrame."""
        from pyattn.compare.tokens import supporting_tokens

        return supporting_tokens(self.attribution.scores, self.tokens, k)

    def opposing(self, k: int = 10):
        """The up to ``k`` tokens with the most negative attribution (they push
        away from the explained class)."""
        from pyattn.compare.tokens import opposing_tokens

        return opposing_tokens(self.attribution.scores, self.tokens, k)

    def top_attention(self, view: str = "all", k: int = 10):
        """The ``k`` tokens receiving most attention in one view."""
        from pyattn.compare.tokens import top_tokens

        if view not in self.attention:
            raise KeyError(f"no attention view {view!r}: choose from {list(self.attention)}")
        return top_tokens(self.attention[view], self.tokens, k)

    def to_frame(self):
        """One row per token: position, token, special (bool), attribution,
        and one ``attention: <view>`` column per attention view."""
        import pandas as pd

        from pyattn.compare.similarity import display_token

        special = set(self.special_tokens)
        frame = pd.DataFrame(
            {
                "position": np.arange(len(self.tokens)),
                "token": [display_token(t) for t in self.tokens],
                "raw_token": self.tokens,
                "special": [t in special for t in self.tokens],
                "attribution": self.attribution.scores,
            }
        )
        for name, values in self.attention.items():
            frame[f"attention: {name}"] = values
        return frame

    # -- rendering ----------------------------------------------------------
    def facts(self) -> dict[str, object]:
        """The facts a report shows first (prediction and its probability, explained
        class, integration steps, completeness error and whether it converged,
        similarity settings, AOPC when computed), as label -> text.
        """
        a = self.attribution
        facts = {
            "predicted": self._prediction(),
            "explained class": self.label_name(a.target),
            "explained output F": {"softmax": "softmax probability", "sigmoid": "sigmoid probability of the label", "raw": "raw output"}[a.output],
            "integration steps": f"{a.n_steps} ({a.model_evaluations} model evaluations)",
            "completeness error": f"{a.relative_error:.2%} ({'converged' if a.converged else 'NOT converged'} at tolerance)",
            "similarity": f"attributions as {self.attribution_as}; token masks: {', '.join(self.masks)}",
        }
        if self.faithfulness is not None:
            facts["comprehensiveness AOPC"] = ", ".join(
                f"{r}: {v:.3f}" for r, v in zip(self.faithfulness["ranking"], self.faithfulness["comprehensiveness_aopc"])
            )
        return facts

    def _render(self, title: str | None, plots: bool, facts: dict | None = None, tables=(), compact: bool = False) -> str:
        from pyattn.report import render_document

        return render_document(
            self.tokens,
            self.attribution.scores,
            self.attention,
            title=title or ("pyattn" if compact else f"pyattn: predicted {self.label_name(self.predicted_label)}"),
            facts=self.headline() if compact else {**(facts or {}), **self.facts()},
            special_tokens=self.special_tokens,
            per_layer=list(self.per_head.sum(1)) if plots else None,
            per_head=self.per_head[-1] if plots else None,
            head_importance=self.head_importance if plots else None,
            masks=self.masks,
            attribution_as=self.attribution_as,
            plots=plots,
            metrics=self.similarity,
            extra_tables=[*self._significance_tables(), *tables],
            target_name=repr(self.label_name(self.attribution.target)),
            head_importance_name=self.head_importance_name,
            compact=compact,
            compact_note="the full report: result.report() here, or result.save_html(path)",
        )

    def _significance_tables(self) -> list:
        if self.significance is None:
            return []
        table = self.significance.pivot(index="attention", columns="metric", values="p_value").reset_index()
        first = self.significance.iloc[0]
        draws = sorted(set(int(v) for v in self.significance["n_perm"]))
        return [(f"Permutation p-values (one-sided, agreement greater than chance; null: {first['null'].replace('_', ' ')}s of the "
                 f"attention vector, {'/'.join(map(str, draws))} draws, p = (1 + #null >= observed) / (1 + draws); mask "
                 f"{first['mask']}; attributions as {first['attribution_as']})", table)]

    def save_html(self, path: str | os.PathLike, title: str | None = None, facts: dict | None = None, tables=()) -> str:
        """Write the full report (heat maps, tables, plots) to ``path``;
        ``facts`` (e.g. the true label) are shown first; ``tables``:
        (heading, DataFrame[, note[, HTML table id]]) shown after the
        similarity table (a dataset report puts the dataset statistics
        there)."""
        from pyattn.report import write_html

        return write_html(path, self._render(title, plots=True, facts=facts, tables=tables))

    def headline(self) -> dict[str, str]:
        """The numbers a notebook shows inline: the prediction, the
        completeness error, Spearman and Kendall of |attribution| (or signed,
        as ``attribution_as`` says) against the all-layers attention with
        special tokens left out, and the attribution's comprehensiveness AOPC
        when computed."""
        from pyattn.report._format import number

        a = self.attribution
        rows = self.similarity[(self.similarity["attention"] == "all") & (self.similarity["mask"] == ("no_special" if "no_special" in set(self.similarity["mask"]) else self.similarity["mask"].iloc[0]))]
        headline = {
            "predicted": f"{self.label_name(self.predicted_label)} (p = {self.probability:.3f})",
            "completeness error": f"{a.relative_error:.2%}" + ("" if a.converged else " (NOT converged)"),
        }
        if len(rows):
            headline["Spearman / Kendall (all layers)"] = f"{number(rows['spearman_rho'].iloc[0])} / {number(rows['kendall_tau'].iloc[0])}"
        if self.faithfulness is not None:
            aopc = self.faithfulness.set_index("ranking")["comprehensiveness_aopc"]
            if "attribution" in aopc.index:
                headline["comprehensiveness AOPC"] = number(aopc["attribution"])
        return headline

    def report(self, path: str | os.PathLike | None = None, title: str | None = None):
        """The full report (heat maps, tables, plots): written to ``path``
        (returns the path), or, without one, an object a notebook shows
        inline (its ``html`` attribute holds the page)."""
        if path is not None:
            return self.save_html(path, title=title)
        return _Page(self._render(title, plots=True))

    def _repr_html_(self) -> str:
        return self._render(None, plots=False, compact=True)

    def __repr__(self) -> str:
        a = self.attribution
        return (
            f"Explanation({len(self.tokens)} tokens, "
            + (f"raw output {self.output_value:.4g}" if a.output == "raw" else
               f"predicted {self.label_name(self.predicted_label)!r} {'sigmoid ' if a.output == 'sigmoid' else ''}p={self.output_value:.3f}")
            + f", completeness error {a.relative_error:.2%}, views {list(self.attention)})"
        )


class _Page:
    """An HTML page a notebook renders (``html`` holds it)."""

    def __init__(self, html: str):
        self.html = html

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<pyattn report, {len(self.html):,} characters of HTML>"
