"""`nmf inspect --plot`: the convergence curve and heatmaps of W and H as one PNG.

matplotlib is an optional extra, imported only here and only when a plot is asked
for. The figure is rendered to bytes; the CLI writes them through io (atomically).
"""

from __future__ import annotations

import io as _stdio

import numpy as np

from nmfcli.errors import UnavailableError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # never a window: plots are files
        import matplotlib.pyplot as plt
    except ImportError:
        raise UnavailableError(
            "--plot needs matplotlib, which is not installed; install it with: pip install 'nmfcli[plot]'"
        ) from None
    return plt


def require_matplotlib() -> None:
    """UnavailableError now, before long work, where a plot asked for could not be drawn."""
    _pyplot()


def render_ranks_png(ranks, title="") -> bytes:
    """`nmf rank --plot`: the relative error (best run, and the range over the runs) and the
    stability (mean matched cosine, and the lowest) against k."""
    plt = _pyplot()
    ks = [r["k"] for r in ranks]
    fig, (ax_error, ax_stability) = plt.subplots(1, 2, figsize=(10, 4))
    ax_error.plot(ks, [r["relative_error"] for r in ranks], marker="o", label="best run")
    ax_error.fill_between(ks, [min(r["relative_errors"]) for r in ranks], [max(r["relative_errors"]) for r in ranks],
                          alpha=0.3, label="all runs")
    ax_error.set_xlabel("k")
    ax_error.set_ylabel("relative error")
    ax_error.set_title("error")
    ax_error.legend()
    if any(r["stability"] is not None for r in ranks):
        measured = [r for r in ranks if r["stability"] is not None]
        ax_stability.plot([r["k"] for r in measured], [r["stability"] for r in measured], marker="o", label="mean")
        ax_stability.plot([r["k"] for r in measured], [r["lowest_similarity"] for r in measured], marker=".",
                          linestyle="--", label="lowest")
        ax_stability.set_ylim(min(0.0, min(r["lowest_similarity"] for r in measured)), 1.02)
        ax_stability.legend()
    else:
        ax_stability.text(0.5, 0.5, "one run per k: no stability", ha="center", va="center")
    ax_stability.set_xlabel("k")
    ax_stability.set_ylabel("cosine of matched components")
    ax_stability.set_title("stability")
    return _png(plt, fig, title)


def render_png(*, history=None, history_iter=None, W=None, H=None, X=None, title="") -> bytes:
    """A PNG with the panels that have data: convergence curve, W heatmap, H heatmap (or X)."""
    plt = _pyplot()
    panels = []
    if history is not None and len(history):
        panels.append("curve")
    if W is not None:
        panels.append("W")
    if H is not None:
        panels.append("H")
    if X is not None:
        panels.append("X")
    if not panels:
        panels.append("empty")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "curve":
            its = history_iter if history_iter is not None and len(history_iter) == len(history) else range(1, len(history) + 1)
            values = np.asarray(history, dtype=float)
            ax.plot(list(its), values, marker="." if len(values) < 50 else None)
            if np.all(values > 0):
                ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel("objective")
            ax.set_title("convergence")
        elif panel == "empty":
            ax.text(0.5, 0.5, "nothing to draw", ha="center", va="center")
            ax.set_axis_off()
        else:
            A = {"W": W, "H": H, "X": X}[panel]
            A = A.toarray() if hasattr(A, "toarray") else np.asarray(A)
            im = ax.imshow(A, aspect="auto", interpolation="nearest", cmap="viridis")
            ax.set_title(f"{panel} ({A.shape[0]} x {A.shape[1]})")
            ax.set_xlabel("component" if panel == "W" else "column")
            ax.set_ylabel("component" if panel == "H" else "row")
            fig.colorbar(im, ax=ax)
    return _png(plt, fig, title)


def _png(plt, fig, title):
    """The figure, titled, as PNG bytes (and closed)."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = _stdio.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
