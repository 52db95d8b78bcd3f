"""Matplotlib figures for reports, returned as PNG bytes (Agg backend, no
screen needed)."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np

__all__ = ["scatter_png", "per_layer_png", "head_importance_png", "per_head_png", "metric_distributions_png"]


def _figure(width: float = 5.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=110)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def scatter_png(attribution: np.ndarray, attention: np.ndarray, attention_name: str = "attention received") -> bytes:
    r"""Attribution (x) against attention received (y), one point per token.

    Parameters
    ----------
    attribution : numpy.ndarray, shape (N,)
    attention : numpy.ndarray, shape (N,)
    attention_name : str
        The y axis label.

    Returns
    -------
    bytes
        A PNG image.

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> from PIL import Image
    >>> png = scatter_png(np.array([0.5, -1.0, 2.0]), np.array([0.2, 0.3, 0.5]))
    >>> png[:8], Image.open(io.BytesIO(png)).format
    (b'\x89PNG\r\n\x1a\n', 'PNG')
    """
    fig, ax = _figure()
    ax.scatter(attribution, attention, s=8, alpha=0.6, color="#3b6ea8")
    ax.axvline(0, color="#999", linewidth=0.8)
    ax.set_xlabel("attribution")
    ax.set_ylabel(attention_name)
    ax.set_title("attribution vs attention, per token")
    return _png(fig)


def per_layer_png(values: Mapping[str, Sequence[float]], ylabel: str = "similarity") -> bytes:
    """One line per metric over layers 0..L-1 (layers are numbered from 0).

    Parameters
    ----------
    values : mapping of str to sequence of float
        Metric name -> its value at each layer (length L).
    ylabel : str

    Returns
    -------
    bytes
        A PNG image.

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
    return _png(fig)


def head_importance_png(importance: np.ndarray) -> bytes:
    """Head importance as a heat map (layers down, heads across, both from 0).

    Parameters
    ----------
    importance : numpy.ndarray, shape (L, H)

    Returns
    -------
    bytes
        A PNG image.

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> from PIL import Image
    >>> Image.open(io.BytesIO(head_importance_png(np.arange(12.0).reshape(3, 4)))).format
    'PNG'
    """
    fig, ax = _figure()
    image = ax.imshow(np.asarray(importance), aspect="auto", cmap="viridis")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_yticks(range(importance.shape[0]), [str(i) for i in range(importance.shape[0])])
    ax.set_title("head importance")
    fig.colorbar(image, ax=ax)
    return _png(fig)


def per_head_png(per_head: np.ndarray, layer_name: str = "final layer") -> bytes:
    """Attention received per head as a heat map over positions.

    Parameters
    ----------
    per_head : numpy.ndarray, shape (H, N)
        One layer's attention received per head.
    layer_name : str
        Shown in the title.

    Returns
    -------
    bytes
        A PNG image.

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> from PIL import Image
    >>> Image.open(io.BytesIO(per_head_png(np.ones((4, 11))))).format
    'PNG'
    """
    fig, ax = _figure(7.0, 3.0)
    image = ax.imshow(np.asarray(per_head), aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_xlabel("token position")
    ax.set_ylabel("head")
    ax.set_title(f"attention received per head, {layer_name}")
    fig.colorbar(image, ax=ax)
    return _png(fig)


def metric_distributions_png(per_document, metrics: Sequence[str] | None = None, mask: str | None = None, columns: int = 5) -> bytes:
    """Box plots of each metric across documents (default: every metric of
    :data:`pyattn.similarity.METRICS` in the table), one box per attention
    choice (the triangle marks the mean), from
    :func:`pyattn.similarity.dataset_similarity`'s per-document table
    (restricted to one ``mask`` when given); ``columns`` panels per row.

    Parameters
    ----------
    per_document : pandas.DataFrame
        With ``attention``, ``mask`` and the metric columns.
    metrics : sequence of str
        One panel each.
    mask : str, optional
    columns : int

    Returns
    -------
    bytes
        A PNG image.

    Examples
    --------
    >>> import io
    >>> import pandas as pd
    >>> from PIL import Image
    >>> rows = pd.DataFrame({"attention": ["final", "all"] * 2, "mask": ["all"] * 4, "spearman_rho": [0.1, 0.2, 0.3, 0.4]})
    >>> Image.open(io.BytesIO(metric_distributions_png(rows, metrics=["spearman_rho"]))).format
    'PNG'
    """
    from pyattn.similarity import METRICS

    frame = per_document if mask is None else per_document[per_document["mask"] == mask]
    metrics = [m for m in (METRICS if metrics is None else metrics) if m in frame.columns]
    views = list(dict.fromkeys(frame["attention"]))
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = max(1, len(metrics))
    across = min(columns, panels)
    down = -(-panels // across)
    fig, axes = plt.subplots(down, across, figsize=(3.0 * across, 3.0 * down), dpi=110, squeeze=False)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.ravel(), metrics):
        data = [frame[frame["attention"] == view][metric].dropna().to_numpy() for view in views]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(views) + 1), views, rotation=45, ha="right", fontsize=7)
        ax.axhline(0, color="#999", linewidth=0.8)
        ax.set_title(metric, fontsize=9)
    documents = frame["document"].nunique() if "document" in frame.columns else None
    fig.suptitle(f"each metric across {documents if documents is not None else 'the'} documents{'' if mask is None else f' (mask {mask})'}; "
                 "box: quartiles, triangle: mean", fontsize=9)
    return _png(fig)
