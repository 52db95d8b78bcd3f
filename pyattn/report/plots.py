"""Matplotlib figures for reports, returned as image bytes (Agg backend, no
screen needed): PNG by default, ``format="svg"`` or ``"pdf"`` for a paper.
One look for all: the same font sizes, a light grid behind line and point
plots, integer ticks for layers and heads."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np

from pyattn.errors import InputError

__all__ = ["scatter_png", "per_layer_png", "head_importance_png", "per_head_png", "metric_distributions_png", "FORMATS"]


def _figure(width: float = 5.0, height: float = 3.6, **grid):
    """A figure and its axes (``plt.subplots``; ``grid``: ``nrows``,
    ``ncols``, ``squeeze``) on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=110, **grid)


FORMATS = ("png", "svg", "pdf")


def _style(ax, grid: bool = True, integer_x: bool = False, integer_y: bool = False) -> None:
    """The reports' one look: font sizes, a light grid, integer ticks where
    the axis counts layers or heads."""
    from matplotlib.ticker import MaxNLocator

    ax.title.set_fontsize(10)
    ax.xaxis.label.set_fontsize(9)
    ax.yaxis.label.set_fontsize(9)
    ax.tick_params(labelsize=8)
    if grid:
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
        ax.set_axisbelow(True)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if integer_y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig, format: str = "png") -> bytes:
    import matplotlib.pyplot as plt

    if format not in FORMATS:
        plt.close(fig)
        raise InputError(f"format must be one of {list(FORMATS)}, got {format!r}")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format=format)
    plt.close(fig)
    return buffer.getvalue()


def scatter_png(attribution: np.ndarray, attention: np.ndarray, attention_name: str = "attention received",
                keep: np.ndarray | None = None, format: str = "png") -> bytes:
    r"""Attribution (x) against attention received (y), one point per token.

    Parameters
    ----------
    attribution : numpy.ndarray, shape (N,)
    attention : numpy.ndarray, shape (N,)
    attention_name : str
        The y axis label.
    keep : numpy.ndarray of bool, shape (N,), optional
        The tokens to plot (e.g. without the special tokens, whose attention
        would squash the rest); the title says how many were left out.
    format : {"png", "svg", "pdf"}

    Returns
    -------
    bytes
        The scatter plot, as ``format`` says.

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> from PIL import Image
    >>> png = scatter_png(np.array([0.5, -1.0, 2.0]), np.array([0.2, 0.3, 0.5]))
    >>> png[:8], Image.open(io.BytesIO(png)).format
    (b'\x89PNG\r\n\x1a\n', 'PNG')
    """
    attribution, attention = np.asarray(attribution), np.asarray(attention)
    keep = np.ones(len(attribution), bool) if keep is None else np.asarray(keep, bool)
    fig, ax = _figure()
    ax.scatter(attribution[keep], attention[keep], s=8, alpha=0.6, color="#3b6ea8")
    ax.axvline(0, color="#999", linewidth=0.8)
    ax.set_xlabel("attribution")
    ax.set_ylabel(attention_name)
    left_out = int((~keep).sum())
    ax.set_title("attribution vs attention received, per token" + (f" ({left_out} special tokens left out)" if left_out else ""))
    _style(ax)
    return _png(fig, format)


def per_layer_png(values: Mapping[str, Sequence[float]], ylabel: str = "similarity", format: str = "png") -> bytes:
    """One line per metric over layers 0..L-1 (layers are numbered from 0).

    Parameters
    ----------
    values : mapping of str to sequence of float
        Metric name -> its value at each layer (length L).
    ylabel : str
    format : {"png", "svg", "pdf"}

    Returns
    -------
    bytes
        One line per metric across the layers.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> Image.open(io.BytesIO(per_layer_png({"spearman_rho": [0.1, 0.3, 0.2]}))).size  # (width, height) in pixels
    (550, 396)
    """
    fig, ax = _figure()
    for name, series in values.items():
        ax.plot(np.arange(len(series)), series, marker="o", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title("attribution vs attention received, per layer")
    ax.axhline(0, color="#999", linewidth=0.8)
    ax.legend(fontsize=8)
    _style(ax, integer_x=True)
    return _png(fig, format)


def head_importance_png(importance: np.ndarray, name: str = "head importance", format: str = "png") -> bytes:
    """Head importance as a heat map (layers down, heads across, both from 0).

    Parameters
    ----------
    importance : numpy.ndarray, shape (L, H)
    name : str
        The title: say which importance (e.g. "Taylor head importance").
    format : {"png", "svg", "pdf"}
        PNG (default); SVG or PDF for a paper, as the second example shows.

    Returns
    -------
    bytes
        The heat map (layers down, heads across).

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> Image.open(io.BytesIO(head_importance_png(np.arange(12.0).reshape(3, 4), "Taylor head importance"))).format
    'PNG'
    >>> head_importance_png(np.arange(12.0).reshape(3, 4), format="svg")[:5], head_importance_png(np.ones((3, 4)), format="pdf")[:5]
    (b'<?xml', b'%PDF-')
    """
    fig, ax = _figure()
    image = ax.imshow(np.asarray(importance), aspect="auto", cmap="viridis")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(name)
    _style(ax, grid=False, integer_x=True, integer_y=True)
    fig.colorbar(image, ax=ax)
    return _png(fig, format)


def per_head_png(per_head: np.ndarray, layer_name: str = "final layer", keep: np.ndarray | None = None, format: str = "png") -> bytes:
    r"""Attention received per head as a heat map over positions.

    Parameters
    ----------
    per_head : numpy.ndarray, shape (H, N)
        One layer's attention received per head.
    layer_name : str
        Shown in the title.
    keep : numpy.ndarray of bool, shape (N,), optional
        Positions on the colour scale; the others (special tokens) are drawn
        grey and left off the scale.
    format : {"png", "svg", "pdf"}

    Returns
    -------
    bytes
        Heads down, token positions across; special tokens grey.

    Examples
    --------
    Four heads over 11 positions, the first and last (special tokens) in grey:

    >>> keep = np.array([False] + [True] * 9 + [False])
    >>> per_head_png(np.ones((4, 11)), keep=keep)[:8]
    b'\x89PNG\r\n\x1a\n'
    """
    import matplotlib

    values = np.asarray(per_head, dtype=np.float64)
    keep = np.ones(values.shape[-1], bool) if keep is None else np.asarray(keep, bool)
    shown = np.ma.masked_array(values, mask=np.broadcast_to(~keep, values.shape))
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="#cccccc")
    fig, ax = _figure(7.0, 3.0)
    image = ax.imshow(shown, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xlabel("token position")
    ax.set_ylabel("head")
    left_out = int((~keep).sum())
    ax.set_title(f"attention received per head, {layer_name}" + (f" (grey: {left_out} special tokens, off the scale)" if left_out else ""))
    _style(ax, grid=False, integer_x=True, integer_y=True)
    fig.colorbar(image, ax=ax)
    return _png(fig, format)


def metric_distributions_png(per_document, metrics: Sequence[str] | None = None, mask: str | None = None, columns: int = 5,
                             format: str = "png") -> bytes:
    """Box plots of each metric across documents (default: every metric of
    :data:`pyattn.compare.similarity.METRICS` in the table), one box per attention
    choice (the triangle marks the mean), from
    :func:`pyattn.compare.similarity.dataset_similarity`'s per-document table
    (restricted to one ``mask`` when given); ``columns`` panels per row.

    Parameters
    ----------
    per_document : pandas.DataFrame
        With ``attention``, ``mask`` and the metric columns.
    metrics : sequence of str
        One panel each.
    mask : str, optional
    columns : int
    format : {"png", "svg", "pdf"}

    Returns
    -------
    bytes
        A grid of box plots, one panel per metric.

    Examples
    --------
    >>> import io
    >>> import pandas as pd
    >>> from PIL import Image
    >>> rows = pd.DataFrame({"attention": ["final", "all"] * 2, "mask": ["all"] * 4, "spearman_rho": [0.1, 0.2, 0.3, 0.4]})
    >>> Image.open(io.BytesIO(metric_distributions_png(rows, metrics=["spearman_rho"]))).format
    'PNG'
    """
    from pyattn.compare.similarity import METRICS

    frame = per_document if mask is None else per_document[per_document["mask"] == mask]
    metrics = [m for m in (METRICS if metrics is None else metrics) if m in frame.columns]
    views = list(dict.fromkeys(frame["attention"]))
    panels = max(1, len(metrics))
    across = min(columns, panels)
    down = -(-panels // across)
    fig, axes = _figure(3.0 * across, 3.0 * down, nrows=down, ncols=across, squeeze=False)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.ravel(), metrics):
        data = [frame[frame["attention"] == view][metric].dropna().to_numpy() for view in views]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(views) + 1), views, rotation=45, ha="right", fontsize=7)
        ax.axhline(0, color="#999", linewidth=0.8)
        ax.set_title(metric, fontsize=9)
        _style(ax)
        ax.title.set_fontsize(9)
    documents = frame["document"].nunique() if "document" in frame.columns else None
    fig.suptitle(f"each metric across {documents if documents is not None else 'the'} documents{'' if mask is None else f' (mask {mask})'}; "
                 "box: quartiles, triangle: mean", fontsize=9)
    return _png(fig, format)
