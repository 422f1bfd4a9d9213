"""`nmf inspect --plot` and `nmf rank --plot`: figures that fit what was factorized, as PNG.

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


# Tick labels are written out up to this many rows or columns; beyond, integer ticks only.
MAX_TICK_LABELS = 30
# Components drawn as bar charts or images; a larger k shows the first ones and says so.
MAX_COMPONENTS = 24
# Top words per bar chart.
MAX_BARS = 10


def render_png(*, history=None, history_iter=None, W=None, H=None, X=None, title="", legend=None,
               row_labels=None, col_labels=None) -> bytes:
    """A PNG with the panels that have data: convergence curve, W heatmap, H heatmap (or X)."""
    plt = _pyplot()
    return _png(plt, panels_figure(history=history, history_iter=history_iter, W=W, H=H, X=X, legend=legend,
                                   row_labels=row_labels, col_labels=col_labels), title)


def panels_figure(*, history=None, history_iter=None, W=None, H=None, X=None, legend=None, row_labels=None,
                  col_labels=None):
    """The figure render_png draws (for a report, a checkpoint or a matrix, whose ``row_labels``
    and ``col_labels`` label the X panel), not yet titled."""
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
            _curve(ax, history, history_iter, legend)
        elif panel == "empty":
            ax.text(0.5, 0.5, "nothing to draw", ha="center", va="center")
            ax.set_axis_off()
        else:
            A = {"W": W, "H": H, "X": X}[panel]
            k_axis = {"W": "x", "H": "y"}.get(panel)
            labels = {"row_labels": row_labels, "col_labels": col_labels} if panel == "X" else {}
            _heatmap(fig, ax, A, f"{panel}", k_axis=k_axis, **labels)
    return fig


def render_model_png(model, *, title, image_shape=None, X=None, WH=None, top=MAX_BARS, dpi=100) -> bytes:
    """`nmf inspect MODEL --plot`: :func:`model_figure` as PNG bytes."""
    plt = _pyplot()
    fig = model_figure(model, title=title, image_shape=image_shape, X=X, WH=WH, top=top)
    return _png(plt, fig, None, dpi=dpi)


def model_figure(model, *, title, image_shape=None, X=None, WH=None, top=MAX_BARS):
    """The figure of a model (the dict io.read_model gives), drawn to fit what was factorized.

    Top: the convergence curve (solver, loss and why it stopped in its legend), the heatmap
    of W, and for a small matrix (``X`` and its reconstruction ``WH`` given) the data beside
    the reconstruction on one colour scale. Below, the components: a grid of images when
    ``image_shape`` (h, w) is given (H's rows, or W's columns, of h·w pixels), else each
    component's ``top`` features as a bar chart when the columns have labels, else the heatmap
    of H. Heatmaps have integer ticks, and the labels where they fit.
    """
    plt = _pyplot()
    H = _dense(model["H"])
    W = _dense(model["W"]) if model.get("W") is not None else None
    k = H.shape[0]
    names = list(model.get("components") or [f"c{i}" for i in range(k)])
    col_labels, row_labels = model.get("col_labels"), model.get("row_labels")
    if image_shape is not None:
        kind = "images"
    elif col_labels is not None:
        kind = "bars"
    else:
        kind = "heatmap"
    top_panels = [p for p, has in (("curve", model.get("history") is not None and len(model["history"])),
                                   ("W", W is not None), ("data", X is not None and WH is not None)) if has]
    shown = min(k, MAX_COMPONENTS)
    if kind == "images":
        cols = min(shown, 8)
        rows = -(-shown // cols)
        h, w = image_shape
        bottom_height = rows * 1.5 * max(0.6, min(1.6, h / w))
    elif kind == "bars":
        cols = min(shown, 4)
        rows = -(-shown // cols)
        bottom_height = rows * (0.5 + 0.22 * top)
    else:
        cols = rows = 1
        bottom_height = 3.6
    width = max(12.0, 4.2 * (len(top_panels) + (1 if "data" in top_panels else 0)))
    top_height = 3.6 if top_panels else 0.0
    fig = plt.figure(figsize=(width, top_height + bottom_height + 0.6), layout="constrained")
    fig.suptitle(title)
    if top_panels:
        upper, lower = fig.subfigures(2, 1, height_ratios=[top_height, bottom_height])
        count = len(top_panels) + (1 if "data" in top_panels else 0)
        ratios = [1.5 if panel == "curve" else 1.0 for panel in top_panels for _ in range(1 + (panel == "data"))]
        axes = list(upper.subplots(1, count, squeeze=False, width_ratios=ratios)[0])
        for panel in top_panels:
            if panel == "curve":
                _curve(axes.pop(0), model["history"], model.get("history_iter"), legend_text(model))
            elif panel == "W":
                _heatmap(upper, axes.pop(0), W, f"W ({W.shape[0]} x {k})", row_labels=row_labels,
                         col_labels=names, xlabel="component", ylabel="row")
            else:
                _data_panels(upper, axes.pop(0), axes.pop(0), X, WH, row_labels, col_labels)
    else:
        lower = fig
    more = f" (the first {shown} of {k})" if shown < k else ""
    if kind == "images":
        _image_grid(lower, H, W, names[:shown], image_shape, rows, cols, more)
    elif kind == "bars":
        _bar_grid(lower, H, names[:shown], col_labels, top, rows, cols, more)
    else:
        ax = lower.subplots(1, 1)
        _heatmap(lower, ax, H, f"H ({k} x {H.shape[1]})", row_labels=names, col_labels=col_labels,
                 xlabel="column", ylabel="component")
    return fig


def _dense(A):
    return A.toarray() if hasattr(A, "toarray") else np.asarray(A)


def legend_text(model) -> str:
    """'solver emu, loss kl / stopped by tol after 50 iterations / (converged)', on three lines."""
    reason = model.get("stop_reason")
    converged = "converged" if model.get("converged") else "not converged"
    return (f"solver {model.get('solver')}, loss {model.get('loss')}\nstopped by {reason} after "
            f"{model.get('n_iter')} iterations\n({converged})")


def _plain_number(value, _position=None) -> str:
    """Tick labels as numbers people read (32.6, 0.0041, 1,000,000), not 3.26×10¹ or 1e+06."""
    text = f"{value:.4g}"
    if "e" not in text:
        return text
    if abs(value) >= 1:
        return f"{value:,.0f}"
    return np.format_float_positional(value, precision=4, unique=True, fractional=False, trim="-")


def _curve(ax, history, history_iter, legend=None):
    import matplotlib.ticker as mticker

    values = np.asarray(history, dtype=float)
    its = np.asarray(history_iter if history_iter is not None and len(history_iter) == len(values)
                     else range(1, len(values) + 1))
    ax.plot(its, values, marker="." if len(values) <= 60 else None, label=legend)
    if np.all(values > 0) and values.max() / values.min() >= 10:
        ax.set_yscale("log")  # a curve over decades; within one decade the linear axis reads better
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(_plain_number))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    sparse = len(its) >= 2 and len(its) < 0.5 * (its[-1] - its[0] + 1)
    ax.set_xlabel("iteration" + ("\n(objective every 10th; fit --history all: each)" if sparse else ""))
    ax.set_ylabel("objective")
    ax.set_title("convergence")
    if legend:
        ax.legend(loc="upper right", fontsize="small", handlelength=1.2)


def _ticks(axis, labels, count, fontsize):
    """Every label where they fit (MAX_TICK_LABELS), else integer ticks at the matrix's indices."""
    import matplotlib.ticker as mticker

    if labels is not None and count <= MAX_TICK_LABELS:
        axis.set_ticks(range(count))
        axis.set_ticklabels([str(label) for label in labels], fontsize=fontsize)
    else:
        axis.set_major_locator(mticker.MaxNLocator(integer=True, min_n_ticks=1))


def _heatmap(fig, ax, A, title, row_labels=None, col_labels=None, xlabel="column", ylabel="row", k_axis=None,
             vmin=None, vmax=None):
    A = _dense(A)
    m, n = A.shape
    im = ax.imshow(A, aspect="auto", interpolation="nearest", cmap="viridis", vmin=vmin, vmax=vmax)
    if k_axis == "x" and col_labels is None:
        col_labels = [f"c{j}" for j in range(n)]
    if k_axis == "y" and row_labels is None:
        row_labels = [f"c{i}" for i in range(m)]
    _ticks(ax.xaxis, col_labels, n, "x-small" if n > 12 else "small")
    _ticks(ax.yaxis, row_labels, m, "x-small" if m > 12 else "small")
    if col_labels is not None and n <= MAX_TICK_LABELS and max(len(str(c)) for c in col_labels) > 3:
        ax.tick_params(axis="x", labelrotation=90)
    ax.set_title(title if "(" in title else f"{title} ({m} x {n})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax)
    return im


def _data_panels(fig, ax_X, ax_WH, X, WH, row_labels, col_labels):
    """The data and its reconstruction W·H side by side, one colour scale."""
    X, WH = _dense(X), _dense(WH)
    vmin, vmax = float(min(X.min(), WH.min())), float(max(X.max(), WH.max()))
    for ax, A, title in ((ax_X, X, "data X"), (ax_WH, WH, "reconstruction W·H")):
        _heatmap(fig, ax, A, f"{title} ({A.shape[0]} x {A.shape[1]})", row_labels=row_labels, col_labels=col_labels,
                 vmin=vmin, vmax=vmax)


def _bar_grid(fig, H, names, col_labels, top, rows, cols, more):
    """Each component's top features (labels, weight in H) as a horizontal bar chart."""
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_axis_off()
            continue
        row = H[i]
        order = [j for j in np.argsort(-row, kind="stable")[:top] if row[j] > 0]
        ax.barh(range(len(order)), [row[j] for j in order], color="tab:blue")
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([str(col_labels[j]) for j in order], fontsize="small")
        ax.invert_yaxis()
        ax.set_title(names[i], fontsize="medium")
        ax.tick_params(axis="x", labelsize="x-small")
    fig.suptitle(f"top {top} features of each component (weight in H){more}", fontsize="medium")


def _image_grid(fig, H, W, names, image_shape, rows, cols, more):
    """The components as images: H's rows (or W's columns) of h·w pixels, row-major."""
    h, w = image_shape
    if H.shape[1] == h * w:
        images, source = H, "H"
    else:
        images, source = W.T, "W"
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(names):
            ax.imshow(images[i].reshape(h, w), cmap="gray_r", interpolation="nearest")
            ax.set_title(names[i], fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_axis_off()
    fig.suptitle(f"components as {h} x {w} images (rows of {source}){more}", fontsize="medium")


def _png(plt, fig, title, dpi=100):
    """The figure, titled, as PNG bytes (and closed)."""
    if title:
        fig.suptitle(title)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    buf = _stdio.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
