"""The figures of `nmf inspect --plot`: what they show, read from the matplotlib objects
(text, images, axes), and `--history all`, which gives the convergence curve its points."""

from __future__ import annotations

import numpy as np
import pytest

import nmfcli
from conftest import low_rank, nmf_in_process
from nmfcli import errors

pytest.importorskip("matplotlib")

from nmfcli import plot  # noqa: E402  (after the skip: plot needs matplotlib)


def _texts(fig):
    """Every piece of text in a figure, titles, labels, tick labels and legends included."""
    import matplotlib.text

    fig.canvas.draw()
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def _images(fig):
    import matplotlib.image

    return fig.findobj(matplotlib.image.AxesImage)


def _model(k=3, n=12, m=20, col_labels=None, row_labels=None, **extra):
    rng = np.random.default_rng(0)
    H = rng.random((k, n))
    H[0, 5] = 10.0  # component c0's top feature is column 5
    return {"H": H, "W": rng.random((m, k)), "history": [9.0, 5.0, 4.0, 3.9], "history_iter": [0, 10, 20, 30],
            "solver": "emu", "loss": "kl", "stop_reason": "tol", "converged": True, "n_iter": 30,
            "components": [f"c{i}" for i in range(k)], "col_labels": col_labels, "row_labels": row_labels,
            "shape": [m, n], **extra}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_topics_are_bar_charts_of_top_words():
    words = [f"word{j}" for j in range(12)]
    model = _model(col_labels=words)
    fig = plot.model_figure(model, title="NMF of docs.csv (20 x 12): k=3, loss kl", top=4)
    bar_axes = [ax for ax in fig.get_axes() if ax.patches and ax.get_title() in ("c0", "c1", "c2")]
    assert [ax.get_title() for ax in bar_axes] == ["c0", "c1", "c2"]
    for ax, row in zip(bar_axes, model["H"]):
        shown = [t.get_text() for t in ax.get_yticklabels()]
        assert shown == [words[j] for j in np.argsort(-row, kind="stable")[:4]]
        assert len(ax.patches) == 4
        np.testing.assert_allclose(sorted((p.get_width() for p in ax.patches), reverse=True),
                                   np.sort(row)[::-1][:4])
    assert bar_axes[0].get_yticklabels()[0].get_text() == "word5"
    assert "NMF of docs.csv (20 x 12): k=3, loss kl" in _texts(fig)
    assert len(_images(fig)) == 1  # W's heatmap; H is drawn as bars, not as a barcode


def test_image_shape_draws_one_image_per_component():
    k = 5
    model = _model(k=k, n=12)
    fig = plot.model_figure(model, title="t", image_shape=(3, 4))
    images = [im for im in _images(fig) if im.axes.get_title() in model["components"]]
    assert len(images) == k
    for im, row in zip(images, model["H"]):
        np.testing.assert_array_equal(im.get_array(), row.reshape(3, 4))
    assert "components as 3 x 4 images (rows of H)" in _texts(fig)


def test_image_shape_of_W_columns_when_rows_are_pixels():
    model = _model(k=2, n=7, m=16)
    fig = plot.model_figure(model, title="t", image_shape=(4, 4))
    images = [im for im in _images(fig) if im.axes.get_title() in ("c0", "c1")]
    np.testing.assert_array_equal(images[1].get_array(), model["W"][:, 1].reshape(4, 4))


def test_many_components_show_the_first_ones_and_say_so():
    model = _model(k=plot.MAX_COMPONENTS + 6, n=16)
    fig = plot.model_figure(model, title="t", image_shape=(4, 4))
    assert len([im for im in _images(fig) if im.axes.get_title().startswith("c")]) == plot.MAX_COMPONENTS
    assert any(f"(the first {plot.MAX_COMPONENTS} of {plot.MAX_COMPONENTS + 6})" in t for t in _texts(fig))


def test_convergence_legend_names_solver_loss_and_stop():
    fig = plot.model_figure(_model(), title="t")
    curve = next(ax for ax in fig.get_axes() if ax.get_title() == "convergence")
    legend = [t.get_text() for t in curve.get_legend().get_texts()]
    assert legend == ["solver emu, loss kl\nstopped by tol after 30 iterations\n(converged)"]
    x, y = curve.get_lines()[0].get_data()
    assert list(x) == [0, 10, 20, 30] and list(y) == [9.0, 5.0, 4.0, 3.9]
    assert "every 10th" in curve.get_xlabel()  # says why the points are sparse, and what gives more


def test_curve_ticks_are_plain_numbers():
    """Within one decade the axis is linear and reads 32.6, not 3.26×10¹; over decades, 1,000 not 1e+03."""
    fig = plot.model_figure(_model(history=[32.9, 32.7, 32.6, 32.55], history_iter=[1, 2, 3, 4]), title="t")
    curve = next(ax for ax in fig.get_axes() if ax.get_title() == "convergence")
    fig.canvas.draw()
    assert curve.get_yscale() == "linear"
    labels = [t.get_text() for t in curve.get_yticklabels() if t.get_text()]
    assert labels and all("×" not in t and "e" not in t and "$" not in t for t in labels)
    assert all(float(t).is_integer() for t in (t.get_text() for t in curve.get_xticklabels() if t.get_text()))
    assert [plot._plain_number(v) for v in (1e7, 32.6, 1e-5)] == ["10,000,000", "32.6", "0.00001"]


def test_heatmap_ticks_are_integers_or_labels():
    fig = plot.model_figure(_model(k=2, n=40, m=50), title="t")
    fig.canvas.draw()
    H_ax = next(ax for ax in fig.get_axes() if ax.get_title().startswith("H ("))
    assert [t.get_text() for t in H_ax.get_yticklabels()] == ["c0", "c1"]  # not -0.5 ... 1.5
    columns = [t.get_text() for t in H_ax.get_xticklabels() if t.get_text()]
    assert columns and all(float(c.replace("−", "-")).is_integer() for c in columns)
    W_ax = next(ax for ax in fig.get_axes() if ax.get_title().startswith("W ("))
    rows = [t.get_text() for t in W_ax.get_yticklabels() if t.get_text()]
    assert all(float(r.replace("−", "-")).is_integer() for r in rows)
    assert [t.get_text() for t in W_ax.get_xticklabels()] == ["c0", "c1"]

    labelled = plot.model_figure(_model(k=2, n=12, m=6, row_labels=[f"doc{i}" for i in range(6)]), title="t")
    W_ax = next(ax for ax in labelled.get_axes() if ax.get_title().startswith("W ("))
    assert [t.get_text() for t in W_ax.get_yticklabels()] == [f"doc{i}" for i in range(6)]


def test_small_matrix_data_beside_reconstruction_on_one_scale():
    model = _model(k=2, n=6, m=5)
    X = np.arange(30.0).reshape(5, 6)
    WH = model["W"] @ model["H"]
    fig = plot.model_figure(model, title="t", X=X, WH=WH)
    data = next(im for im in _images(fig) if im.axes.get_title().startswith("data X"))
    approx = next(im for im in _images(fig) if im.axes.get_title().startswith("reconstruction W·H"))
    np.testing.assert_array_equal(data.get_array(), X)
    np.testing.assert_allclose(approx.get_array(), WH)
    assert data.get_clim() == approx.get_clim() == (min(X.min(), WH.min()), max(X.max(), WH.max()))
    without = plot.model_figure(model, title="t")
    assert not [im for im in _images(without) if im.axes.get_title().startswith("data X")]


def test_render_png_is_a_png():
    assert plot.render_model_png(_model(), title="t").startswith(b"\x89PNG\r\n\x1a\n")


# --------------------------------------------------------------------------- --history all


@pytest.mark.parametrize("solver,loss", [("mu", "kl"), ("emu", "kl"), ("emu", "is"), ("anls", "frobenius")])
def test_history_all_records_every_iteration_with_the_same_iterates(solver, loss):
    X = low_rank(30, 12, seed=4)
    a = nmfcli.fit(X, 3, solver=solver, loss=loss, max_iter=25, tol=0)
    b = nmfcli.fit(X, 3, solver=solver, loss=loss, max_iter=25, tol=0, history="all")
    assert a.history_iter == [0, 10, 20]
    assert b.history_iter == list(range(26))
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.H, b.H)
    assert [b.history[i] for i in a.history_iter] == a.history
    assert b.options["history"] == "all" and "history" not in a.options


def test_history_all_stops_where_checks_does():
    X = low_rank(30, 12, seed=4)
    a = nmfcli.fit(X, 3, loss="kl", solver="mu", max_iter=500, tol=1e-3)
    b = nmfcli.fit(X, 3, loss="kl", solver="mu", max_iter=500, tol=1e-3, history="all")
    assert a.stop_reason == b.stop_reason == "tol"
    assert a.n_iter == b.n_iter and b.history_iter[-1] == b.n_iter


def test_history_refused_where_not_recorded():
    X = low_rank(30, 12, seed=4)
    with pytest.raises(errors.UsageError, match="history must be 'checks' or 'all'; got 'some'"):
        nmfcli.fit(X, 3, history="some")
    with pytest.raises(errors.UsageError, match="history='all' is recorded on the numpy and cupy engines in memory"):
        nmfcli.fit(X, 3, history="all", engine_options={"chunk_rows": 10})


# --------------------------------------------------------------------------- the command


_nmf = nmf_in_process


@pytest.fixture
def captured(monkeypatch):
    """The figures `nmf inspect --plot` draws in this process."""
    figures = []
    original = plot.model_figure

    def keep(*args, **kwargs):
        fig = original(*args, **kwargs)
        figures.append(fig)
        return fig

    monkeypatch.setattr(plot, "model_figure", keep)
    return figures


def test_inspect_plot_of_a_small_fit(capsys, tmp_path, captured):
    X = low_rank(12, 8, k=2, seed=5)
    np.save(tmp_path / "small.npy", X)
    (tmp_path / "words.txt").write_text("".join(f"w{j}\n" for j in range(8)))
    code, _, err = _nmf(capsys, "fit", tmp_path / "small.npy", "-k", 2, "--loss", "KL", "--solver", "mu",
                        "--history", "all", "--max-iter", 40, "--column-labels", tmp_path / "words.txt",
                        "-o", tmp_path / "m", "-q")
    assert code == 0, err
    code, _, err = _nmf(capsys, "inspect", tmp_path / "m", "--plot", tmp_path / "fit.png")
    assert code == 0, err
    assert (tmp_path / "fit.png").read_bytes().startswith(b"\x89PNG")
    fig, = captured
    texts = _texts(fig)
    assert any(t.startswith(f"NMF of {tmp_path / 'small.npy'} (12 x 8): k=2, loss kl, relative error ")
               for t in texts)
    titles = [ax.get_title() for ax in fig.get_axes()]
    assert "data X (12 x 8)" in titles and "reconstruction W·H (12 x 8)" in titles
    assert "c0" in titles and "c1" in titles  # the topics, as bars over the words
    curve = next(ax for ax in fig.get_axes() if ax.get_title() == "convergence")
    assert len(curve.get_lines()[0].get_xdata()) == 41  # --history all: iterations 0 .. 40
    assert curve.get_xlabel() == "iteration"


def test_inspect_plot_image_shape(capsys, tmp_path, captured):
    rng = np.random.default_rng(6)
    np.save(tmp_path / "faces.npy", rng.random((40, 3)) @ rng.random((3, 20)))
    assert _nmf(capsys, "fit", tmp_path / "faces.npy", "-k", 3, "-o", tmp_path / "m", "-q")[0] == 0
    code, _, err = _nmf(capsys, "inspect", tmp_path / "m", "--plot", tmp_path / "p.png", "--image-shape", "4x5")
    assert code == 0, err
    images = [im for im in _images(captured[0]) if im.axes.get_title() in ("c0", "c1", "c2")]
    assert [im.get_array().shape for im in images] == [(4, 5)] * 3
    code, _, err = _nmf(capsys, "inspect", tmp_path / "m", "--plot", tmp_path / "q.png", "--image-shape", "3x3")
    assert code == errors.EXIT_USAGE
    assert err == (f"Error: --image-shape 3x3 is 9 pixels, but {tmp_path / 'm'}'s H has 20 columns and W has 40 "
                   "rows; each image needs one pixel a column (or a row of W)\n")
    assert not (tmp_path / "q.png").exists()
    code, _, err = _nmf(capsys, "inspect", tmp_path / "m", "--plot", tmp_path / "q.png", "--image-shape", "4by5")
    assert code == errors.EXIT_USAGE and "'4by5' is not HxW" in err
    code, _, err = _nmf(capsys, "inspect", tmp_path / "m", "--image-shape", "4x5")
    assert code == errors.EXIT_USAGE
    assert err == "Error: --image-shape draws a model's components; it needs a model and --plot PNG\n"


def test_inspect_plot_of_a_report_and_a_checkpoint(capsys, tmp_path, monkeypatch):
    figures = []
    original = plot.panels_figure
    monkeypatch.setattr(plot, "panels_figure", lambda **kw: figures.append(original(**kw)) or figures[-1])
    np.save(tmp_path / "x.npy", low_rank(20, 8, seed=9))
    code, _, err = _nmf(capsys, "fit", tmp_path / "x.npy", "-k", 2, "--loss", "kl", "--tol", 0, "--max-iter", 20,
                        "--checkpoint-every", 10, "-o", tmp_path / "m", "-q")
    assert code == 0, err
    for name in ("report.json", "checkpoint.h5"):
        code, _, err = _nmf(capsys, "inspect", tmp_path / "m" / name, "--plot", tmp_path / f"{name}.png")
        assert code == 0, err
    report, checkpoint = figures
    kind = {"report.json": "report", "checkpoint.h5": "checkpoint"}
    for fig, name in ((report, "report.json"), (checkpoint, "checkpoint.h5")):
        assert fig._suptitle.get_text() == (f"NMF of {tmp_path / 'x.npy'}: k=2, loss kl "
                                            f"({kind[name]} {tmp_path / 'm' / name})")
    legend = lambda fig: [t.get_text() for t in fig.get_axes()[0].get_legend().get_texts()]  # noqa: E731
    assert legend(report) == ["solver emu, loss kl\nstopped by max_iter after 20 iterations\n(not converged)"]
    assert legend(checkpoint) == ["solver auto, loss kl\ncheckpoint after iteration 20"]


def test_inspect_plot_of_a_labelled_matrix(capsys, tmp_path, monkeypatch):
    from conftest import labels, write_csv

    figures = []
    original = plot.panels_figure
    monkeypatch.setattr(plot, "panels_figure", lambda **kw: figures.append(original(**kw)) or figures[-1])
    write_csv(tmp_path / "x.csv", low_rank(6, 4, seed=2), labels("r", 6), labels("w", 4))
    code, _, err = _nmf(capsys, "inspect", tmp_path / "x.csv", "--plot", tmp_path / "x.png")
    assert code == 0, err
    ax, = [ax for ax in figures[0].get_axes() if ax.get_title() == "X (6 x 4)"]
    assert [t.get_text() for t in ax.get_yticklabels()] == labels("r", 6)
    assert [t.get_text() for t in ax.get_xticklabels()] == labels("w", 4)
