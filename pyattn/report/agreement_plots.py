"""Heat map of the head agreement map (:func:`pyattn.compare.agreement.head_agreement`),
optionally beside head importance: do the important heads agree with the
attributions?"""

from __future__ import annotations

import io

import numpy as np

from pyattn.errors import InputError

__all__ = ["head_agreement_grid", "head_agreement_figure", "head_agreement_png"]


def head_agreement_grid(table, value: str = "mean") -> np.ndarray:
    """A column of a :func:`pyattn.compare.agreement.head_agreement` table as an
    (L, H) array (layer and head from 0; NaN where a cell is missing).

    Parameters
    ----------
    table : pandas.DataFrame
        With ``layer``, ``head`` and ``value`` columns.
    value : str

    Returns
    -------
    numpy.ndarray, shape (L, H), float64

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 1], "mean": [0.9, 0.1, 0.3]})
    >>> head_agreement_grid(table, "mean").tolist()
    [[0.9, 0.1], [nan, 0.3]]
    """
    for column in ("layer", "head", value):
        if column not in table.columns:
            raise InputError(f"table has no {column!r} column (expected a head_agreement table); columns: {list(table.columns)}")
    layers, heads = int(table["layer"].max()) + 1, int(table["head"].max()) + 1
    grid = np.full((layers, heads), np.nan)
    grid[table["layer"].to_numpy(int), table["head"].to_numpy(int)] = table[value].to_numpy(dtype=np.float64)
    return grid


def head_agreement_figure(table, *, head_importance=None, value: str = "mean", alpha: float = 0.05, title: str | None = None):
    """Agreement per layer x head as a heat map, cells whose Holm-adjusted
    p-value is ``<= alpha`` marked with a dot; with ``head_importance``
    (L, H), a second panel beside it, and the Spearman correlation across
    heads between importance and agreement in the title.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`pyattn.compare.agreement.head_agreement`.
    head_importance : array-like, shape (L, H), optional
    value : str
        The column shown (default ``mean``).
    alpha : float
        Marks cells with ``p_holm <= alpha``.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "mean": [0.9, 0.1, 0.2, 0.3], "p_holm": [0.01, 0.5, 0.5, 0.5]})
    >>> fig = head_agreement_figure(table, head_importance=np.array([[2.0, 0.1], [0.3, 0.5]]))
    >>> [axis.get_title() for axis in fig.axes[:2]]  # two panels (and their colour bars)
    ['mean (mean), per head', 'head importance']
    >>> fig._suptitle.get_text()  # importance and agreement rank the 4 heads alike
    'do the important heads agree? Spearman(importance, mean) across heads = 1.00'
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy import stats

    grid = head_agreement_grid(table, value)
    L, H = grid.shape
    importance = None
    if head_importance is not None:
        from pyattn.compare.similarity import as_array

        importance = as_array(head_importance)
        if importance.shape != grid.shape:
            raise InputError(f"head_importance must have shape {grid.shape} (layers, heads) like the agreement table, got {importance.shape}")
    panels = 2 if importance is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1.0, 0.32 * L + 1.8), dpi=110, squeeze=False)
    ax = axes[0, 0]
    limit = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    metric = str(table["metric"].iloc[0]) if "metric" in table.columns and len(table) else value
    if "p_holm" in table.columns:
        p = head_agreement_grid(table, "p_holm")
        rows, cols = np.nonzero(p <= alpha)
        ax.scatter(cols, rows, s=10, color="black", marker="o", label=f"Holm p <= {alpha:g}")
        if len(rows):
            ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.set_title(f"{metric} ({value}), per head", fontsize=9)
    fig.colorbar(image, ax=ax)
    if importance is not None:
        ax2 = axes[0, 1]
        image2 = ax2.imshow(importance, aspect="auto", cmap="viridis", interpolation="nearest")
        ax2.set_title("head importance", fontsize=9)
        fig.colorbar(image2, ax=ax2)
        both = np.isfinite(grid) & np.isfinite(importance)
        if both.sum() >= 3:
            with np.errstate(all="ignore"):
                rho = stats.spearmanr(importance[both], grid[both]).statistic
            fig.suptitle(f"do the important heads agree? Spearman(importance, {value}) across heads = {rho:.2f}", fontsize=9)
    for a in axes[0]:
        a.set_xlabel("head")
        a.set_ylabel("layer")
        a.set_xticks(range(H))
        a.set_yticks(range(L))
        a.tick_params(labelsize=7)
    if title:
        axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def head_agreement_png(table, *, head_importance=None, value: str = "mean", alpha: float = 0.05) -> bytes:
    r""":func:`head_agreement_figure` as PNG bytes (for the HTML report).

    Parameters
    ----------
    table, head_importance, value, alpha
        As for :func:`head_agreement_figure`.

    Returns
    -------
    bytes
        A PNG image.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "mean": [0.9, 0.1], "p_holm": [0.01, 0.5]})
    >>> head_agreement_png(table)[:4]
    b'\x89PNG'
    """
    import matplotlib.pyplot as plt

    fig = head_agreement_figure(table, head_importance=head_importance, value=value, alpha=alpha)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
