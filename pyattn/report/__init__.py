"""HTML reports: one self-contained file per document (plots embedded as
PNG), written without a notebook.

Every token and text goes through Jinja2's autoescaping: a document that
contains ``<script>`` shows it as text. (Captum's ``visualize_text`` inserts
tokens unescaped, so pyattn draws its own heat map in the same colours:
green for positive attribution, red for negative.)
"""

from __future__ import annotations

import base64
import os
from typing import Mapping, Sequence

import numpy as np

from pyattn.report.plots import head_importance_png, per_head_png, per_layer_png, scatter_png
from pyattn.report._format import display_tokens, number
from pyattn.compare.similarity import display_token
from pyattn.errors import InputError

__all__ = ["document_report", "render_document", "index_report", "bertviz_head_view_data", "attribution_scale", "attention_scale",
           "similarity_grid", "GRID_METRICS"]

_TOKEN_CSS = """.pyattn-tokens .aligned { line-height: 1.2; max-height: 36em; }
.pyattn-tokens .aligned .tok { display: inline-flex; flex-direction: column; margin: 0 0.2em 0.35em 0; vertical-align: top; }
.pyattn-tokens .aligned mark.attribution { border-radius: 3px 3px 0 0; padding: 0.1em 0.2em; }
.pyattn-tokens .aligned mark.attention { height: 0.55em; border-radius: 0 0 3px 3px; padding: 0; }
.pyattn-tokens .aligned .special mark { outline: 1px dashed #888; }
.pyattn-tokens .legend { display: flex; gap: 2.5em; flex-wrap: wrap; font-size: 0.85em; margin-bottom: 0.5em; }
.pyattn-tokens .cbar { display: flex; align-items: center; gap: 0.4em; }
.pyattn-tokens .cbar .grad { display: inline-block; width: 11em; height: 0.9em; border: 1px solid #bbb; }
.pyattn-tokens .cbar small { color: #555; }
"""

# The colour bars and the aligned token map, shared by the report and the
# notebook's inline view (styles scoped to .pyattn-tokens).
_TOKENS = """<div class="pyattn-tokens">
<div class="legend">
  <div class="cbar"><b>attribution</b> <span>{{ attribution_bar[0] }}</span><span class="grad" style="background: linear-gradient(to right, hsl(0, 75%, 60%), #fff, hsl(120, 75%, 50%))"></span><span>{{ attribution_bar[1] }}</span>
    <small>red: away from, green: toward {{ target_name }}</small></div>
  <div class="cbar"><b>attention received</b> ({{ attention_name }}) <span>{{ attention_bar[0] }}</span><span class="grad" style="background: linear-gradient(to right, #fff, hsl(210, 80%, 50%))"></span><span>{{ attention_bar[1] }}</span>
    <small>{{ attention_scale_note }}</small></div>
</div>
<div class="map aligned" id="token-map"><small>each token: text on its attribution colour, the bar beneath it on its attention colour; special tokens (dashed) are left out of both scales</small><br>
{% for token, attribution_color, attention_color, title, special in token_marks %}<span class="tok{{ ' special' if special else '' }}" title="{{ title }}"><mark class="attribution" style="background-color: {{ attribution_color }}">{{ token }}</mark><mark class="attention" style="background-color: {{ attention_color }}"></mark></span>{% endfor %}</div>
</div>
"""

# A notebook's inline view: a fragment (no page styles that would restyle the notebook).
_INLINE = """<div class="pyattn-inline" style="font-family: system-ui, sans-serif; font-size: 13px; color: #222;">
<style>.pyattn-inline .map { border: 1px solid #ddd; padding: 0.6em; max-height: 16em; overflow-y: auto; }
.pyattn-inline mark { color: #000; }
""" + _TOKEN_CSS + """</style>
<div><b>{{ title }}</b>{% for key, value in facts %} &middot; {{ key }}: <b>{{ value }}</b>{% endfor %}</div>
{{ token_view }}
<div style="font-size: 0.85em; color: #555; margin-top: 0.3em">{{ note }}</div>
</div>
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.maps { display: flex; gap: 1.5em; }
.map { flex: 1; line-height: 1.9; border: 1px solid #ddd; padding: 0.8em; max-height: 32em; overflow-y: auto; }
.map mark { padding: 0.05em 0.15em; border-radius: 3px; color: #000; }
.grid td { text-align: center; min-width: 4.5em; }
details { margin: 0.6em 0; } summary { cursor: pointer; color: #245; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
""" + _TOKEN_CSS + """
.facts td { text-align: left; }
.plots img { max-width: 48%; margin: 0.5em 1% 0 0; border: 1px solid #eee; }
.tables { display: flex; gap: 2em; flex-wrap: wrap; }
.note { font-size: 0.85em; color: #444; max-width: 70em; }
</style></head><body>
<h1>{{ title }}</h1>
<table class="facts">
{% for key, value in facts %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<h2>Tokens: attribution and attention received</h2>
{{ token_view }}
{% if metrics_html %}<h2>Similarity of attribution and attention</h2>
{% if similarity_grid %}<p class="note">{{ similarity_note }}</p>{{ similarity_grid }}{% endif %}
<details><summary>the full table ({{ metrics_shape }})</summary><div style="overflow-x: auto">{{ metrics_html }}</div></details>{% endif %}
{% for name, table, note in extra_tables %}<h2>{{ name }}</h2>{% if note %}<p class="note">{{ note }}</p>{% endif %}<div style="overflow-x: auto">{{ table }}</div>{% endfor %}
<h2>Top tokens</h2>
<div class="tables">{% for name, table in top_tables %}<div><b>{{ name }}</b>{{ table }}</div>{% endfor %}</div>
{% if plots %}<h2>Plots</h2><div class="plots">{% for alt, data in plots %}<img alt="{{ alt }}" src="data:image/png;base64,{{ data }}">{% endfor %}</div>{% endif %}
</body></html>
"""


def _attribution_color(value: float) -> str:
    """Captum's visualize_text colours: value in [-1, 1]."""
    value = max(-1.0, min(1.0, value))
    if value > 0:
        return f"hsl(120, 75%, {100 - int(50 * value)}%)"
    return f"hsl(0, 75%, {100 - int(-40 * value)}%)"


def _attention_color(value: float) -> str:
    value = max(0.0, min(1.0, value))
    return f"hsl(210, 80%, {100 - int(50 * value)}%)"


def _table_html(frame, digits: int = 3, table_id: str | None = None) -> str:
    # pandas escapes cell text by default (escape=True); numbers to `digits`
    # significant digits, scientific when small (never -0.000).
    return frame.to_html(index=False, float_format=lambda v: number(v, digits), border=0, escape=True, table_id=table_id)


def attribution_scale(scores: np.ndarray, ordinary: np.ndarray) -> float:
    """The symmetric colour limit of attributions: the 98th percentile of
    ``|scores|`` over the ordinary (non-special) tokens, so that one extreme
    token does not wash out the rest (beyond it: the end colours).

    >>> float(attribution_scale(np.array([0.1, -0.2, 0.4, 50.0]), np.array([True, True, True, False])))
    0.392
    """
    values = np.abs(np.asarray(scores, dtype=np.float64)[ordinary])
    limit = float(np.percentile(values, 98)) if len(values) else 0.0
    return limit or float(values.max(initial=0.0)) or 1.0


def attention_scale(values: np.ndarray, ordinary: np.ndarray) -> tuple[float, float]:
    """The colour range of attention received: the 2nd to the 98th
    percentile over the ordinary (non-special) tokens, so the colours span
    the spread of the words (special tokens, which receive far more, are
    left out; beyond the range: the end colours).

    >>> low, high = attention_scale(np.array([40.0, 2.7, 3.5, 4.7]), np.array([False, True, True, True]))
    >>> round(low, 3), round(high, 3)
    (2.732, 4.652)
    """
    kept = np.asarray(values, dtype=np.float64)[ordinary]
    low, high = (float(np.percentile(kept, 2)), float(np.percentile(kept, 98))) if len(kept) else (0.0, 1.0)
    if high <= low:
        low, high = float(kept.min(initial=0.0)), float(kept.max(initial=1.0))
    if high <= low:
        high = low + 1.0
    return low, high


#: Metrics of the compact similarity grid, in this order (rank correlations first).
GRID_METRICS = ("spearman_rho", "kendall_tau", "pearson_r", "cosine_minmax", "rbo", "jaccard_top")


def _grid_color(value: float) -> str:
    if not np.isfinite(value):
        return "#fff"
    value = max(-1.0, min(1.0, value))
    return f"hsl({120 if value >= 0 else 0}, 60%, {100 - int(35 * abs(value))}%)"


def similarity_grid(metrics) -> tuple[str, str]:
    """The compact similarity figure: attention views down, the headline
    metrics across (Spearman and Kendall first), one mask (``no_special``
    when present), each cell coloured on [-1, 1]; as (HTML, note). Empty
    when the table has none of the metrics.

    >>> import pandas as pd
    >>> html, note = similarity_grid(pd.DataFrame({"attention": ["final", "all"], "mask": "no_special", "attribution_as": "magnitude",
    ...                                            "spearman_rho": [0.1, -0.0001], "kendall_tau": [0.05, 0.2]}))
    >>> html.count("<tr>"), "-1.00e-04" in html, note
    (3, True, 'mask no_special (special tokens left out), attributions as magnitude; 2 views x 2 metrics')
    """
    import html as html_module

    if metrics is None or len(metrics) == 0 or "attention" not in metrics.columns:
        return "", ""
    columns = [m for m in GRID_METRICS if m in metrics.columns]
    if not columns:
        return "", ""
    masks = list(dict.fromkeys(metrics["mask"])) if "mask" in metrics.columns else []
    mask = "no_special" if "no_special" in masks else (masks[0] if masks else None)
    rows = metrics if mask is None else metrics[metrics["mask"] == mask]
    cells = ["<table class=\"grid\"><tr><th>attention</th>" + "".join(f"<th>{html_module.escape(c)}</th>" for c in columns) + "</tr>"]
    for _, row in rows.iterrows():
        cells.append("<tr><th>" + html_module.escape(str(row["attention"])) + "</th>" + "".join(
            f'<td style="background-color: {_grid_color(float(row[c]))}">{html_module.escape(number(row[c]))}</td>' for c in columns) + "</tr>")
    cells.append("</table>")
    how = f", attributions as {rows['attribution_as'].iloc[0]}" if "attribution_as" in rows.columns and len(rows) else ""
    where = f"mask {mask}{' (special tokens left out)' if mask == 'no_special' else ''}" if mask else "all tokens"
    return "".join(cells), f"{where}{how}; {len(rows)} views x {len(columns)} metrics"


#: Tables longer than this many rows are shown folded (a click opens them).
LONG_TABLE = 12


def _extra_tables(entries) -> list:
    """(heading, DataFrame[, note[, table id]]) -> (heading, HTML, note)."""
    import jinja2

    shown = []
    for entry in entries:
        if not 2 <= len(entry) <= 4:
            raise InputError(f"extra_tables entries are (heading, DataFrame[, note[, table id]]), got {len(entry)} items")
        heading, frame, note, table_id = (tuple(entry) + (None, None))[:4]
        table = _table_html(frame, 4, table_id)
        if len(frame) > LONG_TABLE:  # the heading and note stay in view; the rows a click away
            table = f"<details><summary>show the table ({len(frame)} rows x {len(frame.columns)} columns)</summary>{table}</details>"
        shown.append((heading, jinja2.utils.markupsafe.Markup(table), note))
    return shown


def render_document(
    tokens: Sequence[str],
    attribution,
    attentions: Mapping[str, object],
    title: str = "pyattn report",
    facts: Mapping[str, object] | None = None,
    special_tokens: Sequence[str] = (),
    per_layer: Sequence[object] | None = None,
    per_head: np.ndarray | None = None,
    head_importance: np.ndarray | None = None,
    top_k: int = 15,
    masks: Sequence[str] | None = None,
    target_name: str = "the explained class",
    head_importance_name: str = "head importance",
    compact: bool = False,
    compact_note: str = "",
    attribution_as: str = "magnitude",
    plots: bool = True,
    metrics=None,
    extra_tables: Sequence[tuple[str, object]] = (),
) -> str:
    """One document's report as a self-contained HTML string (see
    :func:`document_report`, which writes it to a file): facts, the tokens
    coloured by attribution and by attention (Captum's colours), the tokens
    that support and oppose the prediction, the similarity table, plots.
    Every token and text is HTML-escaped. ``plots=False`` leaves out the
    matplotlib plots (faster, e.g. for a notebook cell).
    ``extra_tables``: (heading, DataFrame[, note[, HTML table id]]) shown
    after the similarity table (e.g. permutation p-values, the dataset
    statistics of a dataset report).

    Parameters
    ----------
    tokens : sequence of str, length N
    attribution : array-like, shape (N,)
        Per-token scores.
    attentions : mapping of str to array-like, shape (N,)
        Name -> attention received; the first is the one drawn as a heat map
        (e.g. ``{"final": ..., "all": ...}``).
    title : str
    facts : mapping, optional
        Lines shown at the top (prediction, label, steps, ...).
    special_tokens : sequence of str
    per_layer : sequence of array-like (N,), optional
        Attention received of each layer, to plot similarity per layer.
    per_head : numpy.ndarray, shape (H, N), optional
        One layer's attention received per head.
    head_importance : numpy.ndarray, shape (L, H), optional
    top_k : int
        Supporting and opposing tokens listed.
    masks : sequence of str, optional
        Token masks of the similarity table (default: all four when
        ``special_tokens`` are given, else ``["all"]``; the table's ``mask``
        column says which).
    attribution_as : {"magnitude", "signed"}
        Similarity on ``|attribution|`` (default) or the signed scores (the
        table says which).
    plots : bool
        ``False`` leaves out the matplotlib plots (faster, e.g. for a
        notebook cell).
    metrics : pandas.DataFrame, optional
        A similarity table already computed (else computed here).
    extra_tables : sequence of (str, pandas.DataFrame)
        (heading, table) pairs shown after the similarity table (e.g.
        permutation p-values).
    target_name : str
        The explained class, named in the attribution colour bar.
    head_importance_name : str
        The head importance plot's title (say which: "Taylor head
        importance").
    compact : bool
        An HTML fragment instead of a page, for a notebook's inline view:
        the facts on one line, the colour bars and the aligned token map
        (``compact_note`` below it); its styles are scoped to its own
        elements.
    compact_note : str

    Returns
    -------
    str
        HTML.

    Examples
    --------
    >>> html = render_document(["<s>", "Ġa", "<script>", "</s>"], [0.1, 0.5, -0.3, 0.0], {"final": [0.1, 0.2, 0.3, 0.4]},
    ...                        special_tokens=["<s>", "</s>"], plots=False)
    >>> html.startswith("<!DOCTYPE html>") or html.startswith("<html"), "&lt;script&gt;" in html, "<script>" in html
    (True, True, False)
    >>> "<details>" in html, "Top tokens" in render_document(["a", "b"], [0.1, 0.2], {"all": [1.0, 2.0]}, compact=True, plots=False)
    (True, False)
    """
    import jinja2

    from pyattn.compare.similarity import MASKS, compare, similarity
    from pyattn.compare.tokens import opposing_tokens, supporting_tokens, top_tokens

    def array(values) -> np.ndarray:
        try:
            import torch

            if isinstance(values, torch.Tensor):
                return values.detach().cpu().double().numpy().reshape(-1)
        except ImportError:  # pragma: no cover
            pass
        return np.asarray(values, dtype=np.float64).reshape(-1)

    scores = array(attribution)
    if len(scores) != len(tokens):
        raise InputError(f"got {len(tokens)} tokens but {len(scores)} attribution scores")
    if not attentions:
        raise InputError("attentions is empty: give at least one attention-received vector")
    named = {name: array(values) for name, values in attentions.items()}
    first_name, first = next(iter(named.items()))
    shown = display_tokens(tokens)
    # Colour scales leave special tokens out: <s>/[CLS], global in Longformer,
    # receives far more attention than any word and would wash out the rest.
    special_set = set(special_tokens)
    ordinary = np.array([t not in special_set for t in tokens]) if special_tokens else np.ones(len(tokens), bool)
    if not ordinary.any():
        ordinary[:] = True
    attribution_limit = attribution_scale(scores, ordinary)
    attention_low, attention_high = attention_scale(first, ordinary)
    token_marks = [
        (t, _attribution_color(a / attribution_limit),
         "#f4f4f4" if not keep else _attention_color((r - attention_low) / (attention_high - attention_low)),
         f"{raw!r} at {i}: attribution {number(a)}, attention {number(r)}", not keep)
        for i, (t, raw, a, r, keep) in enumerate(zip(shown, tokens, scores, first, ordinary))
    ]
    if masks is None:
        masks = list(MASKS) if special_tokens else ["all"]
    if metrics is None:  # else: the caller's similarity table (e.g. an Explanation's)
        metrics = compare(scores, named, tokens, special_tokens=special_tokens, masks=masks, attribution_as=attribution_as)
    columns = ["rank", "token", "position", "score"]

    def as_text(table):  # each token as the text it decodes to, as in the heat map
        table = table[columns].copy()
        table["token"] = [shown[int(p)] for p in table["position"]]
        return table

    top_tables = [
        ("supporting the prediction (largest positive attribution)", _table_html(as_text(supporting_tokens(scores, tokens, top_k)), 4)),
        ("opposing the prediction (most negative attribution)", _table_html(as_text(opposing_tokens(scores, tokens, top_k)), 4)),
    ]
    for name, values in named.items():
        top_tables.append((f"most attention received ({name})", _table_html(as_text(top_tokens(values, tokens, top_k)), 4)))

    images = []
    if plots:
        images.append(("attribution vs attention", scatter_png(scores, first, f"attention received ({first_name})", keep=ordinary)))
    if plots and per_layer is not None:
        layers = [array(v) for v in per_layer]
        series = {key: [similarity(scores, layer, attribution_as=attribution_as)[key] for layer in layers] for key in ("spearman_rho", "kendall_tau", "cosine_minmax")}
        images.append(("similarity per layer", per_layer_png(series)))
    if plots and head_importance is not None:
        images.append((head_importance_name, head_importance_png(np.asarray(head_importance), head_importance_name)))
    if plots and per_head is not None:
        images.append(("attention received per head", per_head_png(np.asarray(per_head), keep=ordinary)))

    environment = jinja2.Environment(autoescape=True)
    token_view = jinja2.utils.markupsafe.Markup(environment.from_string(_TOKENS).render(
        token_marks=token_marks,
        attribution_bar=(number(-attribution_limit), number(attribution_limit)),
        attention_bar=(number(attention_low), number(attention_high)),
        attention_scale_note="from the 2nd to the 98th percentile of the ordinary tokens; beyond: the end colours",
        target_name=target_name,
        attention_name=first_name,
    ))
    if compact:
        return environment.from_string(_INLINE).render(title=title, facts=list((facts or {}).items()), token_view=token_view, note=compact_note)
    grid, grid_note = similarity_grid(metrics)
    html = environment.from_string(_TEMPLATE).render(
        title=title,
        facts=list((facts or {}).items()),
        token_view=token_view,
        similarity_grid=jinja2.utils.markupsafe.Markup(grid) if grid else "",
        similarity_note=grid_note,
        metrics_shape=f"{len(metrics)} rows x {len(metrics.columns)} columns",
        metrics_html=jinja2.utils.markupsafe.Markup(_table_html(metrics)),
        top_tables=[(name, jinja2.utils.markupsafe.Markup(table)) for name, table in top_tables],
        extra_tables=_extra_tables(extra_tables),
        plots=[(alt, base64.b64encode(data).decode()) for alt, data in images],
    )
    return html


def document_report(path: str | os.PathLike, tokens: Sequence[str], attribution, attentions: Mapping[str, object], **options) -> str:
    """Write one document's report to ``path`` (HTML) and return the path.

    Parameters
    ----------
    path : str or os.PathLike
        The file (its folder is made if missing).
    tokens : sequence of str, length N
    attribution : array-like, shape (N,)
    attentions : mapping of str to array-like, shape (N,)
    **options
        :func:`render_document`'s keyword options (title, facts,
        special_tokens, per_layer, per_head, head_importance, top_k, masks,
        attribution_as, plots, ...).

    Returns
    -------
    str
        ``path``, the page written.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = document_report(os.path.join(folder, "doc.html"), ["<s>", "Ġa", "Ġb", "</s>"], [0.1, 0.5, -0.3, 0.0],
    ...                            {"final": [0.1, 0.2, 0.3, 0.4]}, title="document a", plots=False)
    ...     "document a" in open(path, encoding="utf-8").read()
    True
    """
    return write_html(path, render_document(tokens, attribution, attentions, **options))


def write_html(path: str | os.PathLike, html: str) -> str:
    """Write ``html`` to ``path`` (its folder made if missing); return the path."""
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.write(html)
    return path


def bertviz_head_view_data(dense_layers: Sequence[object], tokens: Sequence[str]) -> dict:
    """Dense attention in the form ``bertviz.head_view(attention, tokens)``
    takes. Build the dense layers with :func:`pyattn.layer_to_dense` (one item
    of the batch).

    Parameters
    ----------
    dense_layers : sequence of tensor-like, each (1, H, N, N)
    tokens : sequence of str, length N

    Returns
    -------
    dict
        ``{"attention": tuple of (1, H, N, N) float32 tensors, one per
        layer, "tokens": list of N strings}`` (tokens in display form,
        without the tokenizer's space marker).

    Raises
    ------
    pyattn.errors.InputError
        A ``ValueError``. If a layer is not ``(1, H, N, N)``.

    Examples
    --------
    >>> import torch
    >>> data = bertviz_head_view_data([torch.full((1, 4, 5, 5), 0.2)] * 3, ["<s>", "Ġb", "c", "Ġd", "</s>"])
    >>> len(data["attention"]), data["attention"][0].shape, data["tokens"]
    (3, torch.Size([1, 4, 5, 5]), ['<s>', 'b', 'c', 'd', '</s>'])
    """
    import torch

    layers = []
    for index, layer in enumerate(dense_layers):
        tensor = torch.as_tensor(layer)
        if tensor.dim() == 3:
            tensor = tensor[None]
        if tensor.dim() != 4 or tensor.shape[0] != 1 or tensor.shape[-1] != tensor.shape[-2] or tensor.shape[-1] != len(tokens):
            raise InputError(f"layer {index}: expected a (1, H, {len(tokens)}, {len(tokens)}) dense attention, got {tuple(tensor.shape)}")
        layers.append(tensor.float().cpu())
    return {"attention": tuple(layers), "tokens": [display_token(t) for t in tokens]}


_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
</style></head><body>
<h1>{{ title }}</h1>
{% for line in notes %}<p>{{ line }}</p>{% endfor %}
{% for name, table, note in tables %}<h2>{{ name }}</h2>{% if note %}<p style="font-size: 0.85em; color: #444; max-width: 70em">{{ note }}</p>{% endif %}{{ table }}{% endfor %}
{% if tables %}<h2>Documents</h2>{% endif %}
<table><tr>{% for column in columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for cell, link, is_text in row %}<td class="{{ 'text' if is_text else '' }}">{% if link %}<a href="{{ link }}">{{ cell }}</a>{% else %}{{ cell }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
{% for alt, data in images %}<h2>{{ alt }}</h2><img alt="{{ alt }}" style="max-width: 90%" src="data:image/png;base64,{{ data }}">{% endfor %}
</body></html>
"""


def _check_link(link, number: int, column: str, folder: str) -> None:
    """A link of the index: a relative path to a file that is in the report
    folder (a report pyattn wrote), nothing else (no scheme such as
    ``javascript:`` or ``https:``, no absolute path, no ``..``, no query)."""
    import re
    import urllib.parse

    def refuse(why: str):
        raise InputError(f"table row {number}: link {link!r} in column {column!r} {why}: "
                         "index_report links only to files written in the report folder")

    if not isinstance(link, str) or not link.strip():
        refuse("is not a file name")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", link.strip()) or link.strip().startswith(("//", "/", "\\")) or any(c in link for c in "?#\\\0") \
            or link != link.strip() or any(ord(c) < 32 for c in link):
        refuse("is not a plain relative path")
    parts = urllib.parse.unquote(link).split("/")
    if any(part in ("", ".", "..") for part in parts):
        refuse("leaves the report folder or is not a plain relative path")
    target = os.path.realpath(os.path.join(folder, *parts))
    if os.path.commonpath([target, os.path.realpath(folder)]) != os.path.realpath(folder):
        refuse("leaves the report folder")
    if not os.path.isfile(target):
        refuse("names no file in the report folder")


def index_report(path: str | os.PathLike, table, link_column: str = "report", title: str = "pyattn results", notes: Sequence[str] = (),
                 images: Sequence[tuple[str, bytes]] = (), tables: Sequence[tuple] = ()) -> str:
    """A summary page for a set of documents: one row per document of
    ``table``; ``link_column`` holds each document report's relative path and
    becomes a link on the first column.

    Parameters
    ----------
    path : str or os.PathLike
        The HTML file to write.
    table : pandas.DataFrame
        One row per document.
    link_column : str
        Each a relative path to a file already in the folder of ``path``
        (the document's report): anything else (``javascript:``, a URL, an
        absolute path, ``..``, a missing file) raises ValueError.
    title : str
    notes : sequence of str
        Lines shown above the table (e.g. which mask a column uses).
    images : sequence of (str, bytes)
        (heading, PNG bytes) pairs shown below the table (e.g. metric
        distributions across documents, the head agreement map).
    tables : sequence of tuple
        (heading, DataFrame[, note[, HTML table id]]) shown above the
        documents (e.g. every mean with its interval).

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import pandas as pd
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = write_html(os.path.join(folder, "document-0.html"), "<p>a</p>")
    ...     path = index_report(os.path.join(folder, "index.html"), pd.DataFrame({"document": ["a"], "report": ["document-0.html"], "spearman": [0.5]}))
    ...     'href="document-0.html"' in open(path, encoding="utf-8").read()
    True
    >>> index_report("index.html", pd.DataFrame({"document": ["a"], "report": ["javascript:alert(1)"]}))
    Traceback (most recent call last):
    ...
    pyattn.errors.InputError: table row 0: link 'javascript:alert(1)' in column 'report' is not a plain relative path: index_report links only to files written in the report folder
    """
    import jinja2

    path = os.fspath(path)
    columns = [c for c in table.columns if c != link_column]
    if link_column in table.columns:
        for row_number, link in enumerate(table[link_column]):
            _check_link(link, row_number, link_column, os.path.dirname(os.path.abspath(path)))
    rows = []
    for _, record in table.iterrows():
        cells = []
        for position, column in enumerate(columns):
            value = record[column]
            text = number(value) if isinstance(value, float) else str(value)  # never -0.000
            is_text = isinstance(value, str) and not value.rstrip("%").replace(".", "", 1).lstrip("-").isdigit()
            cells.append((text, record[link_column] if position == 0 and link_column in table.columns else None, is_text))
        rows.append(cells)
    html = jinja2.Environment(autoescape=True).from_string(_INDEX).render(
        title=title, notes=list(notes), columns=columns, rows=rows, tables=_extra_tables(tables),
        images=[(alt, base64.b64encode(data).decode()) for alt, data in images],
    )
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.write(html)
    return path
