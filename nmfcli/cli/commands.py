"""The subcommands: fit (in fit.py), transform, reconstruct, inspect, rank (in rank.py)."""

from __future__ import annotations

import sys

import click
import numpy as np
import scipy.sparse as sp

from nmfcli import core, errors, summary
from nmfcli import io as nio
from nmfcli.cli import fit as fit_mod
from nmfcli.cli import shared
from nmfcli.cli.terminal import ProgressDisplay, Terminal

TRANSFORM_BAR_DELAY_S = 1.0

TRANSFORM_HELP = """Activations W (m x k) of new rows INPUT (m x n) for fixed components H.

This solves min ||X - W·H|| subject to W >= 0 exactly for every row (a
non-negative least-squares problem), which is not a pseudo-inverse projection
X·pinv(H) because that projection ignores the constraint and goes negative.
INPUT's columns must match the model's (same count; same labels, in order,
when both have labels). Writes CSV on stdout unless -o names a file.

\b
Examples:
  nmf transform new.csv --model docs.nmf/model.h5 > mix.csv
  nmf transform new.csv --model m.h5 | sort -t, -k2 -gr | head
  nmf transform frames.npy --components basis.npy -o activations.npy
  nmf transform big.h5::/X --model m.h5 --engine dask --workers 8 -o W.h5
  nmf transform partial.csv --model m.h5 --missing nan > mix.csv
  nmf transform new.npy --model m.h5 --weights conf.npy -o W.npy

With --missing nan, NaN entries are missing: each row is solved exactly over
its observed entries, against the components at those entries. With
--weights FILE (a matrix of INPUT's shape, >= 0), each row's solve weighs
each entry's loss by its weight (0 leaves it out).

With --engine dask, or --chunk-rows R on the numpy engine, INPUT (.h5
dataset, .zarr, .npy, or a folder of .npy/.npz row blocks) is read in
blocks of rows and never loaded whole; an -o ending in .h5 then receives W
block by block.
"""

RECONSTRUCT_HELP = """W·H from W_FILE and H_FILE (or the H of --model).

Writes CSV on stdout unless -o names a file. With --against X_FILE it also
prints the error of the reconstruction (beta-divergence, scikit-learn's
reconstruction_error, relative error) on stderr (or as JSON on stdout with
--json) and writes it to --report; with --missing nan, over the entries of
X_FILE that are not NaN; with --weights FILE (X_FILE's shape, >= 0), each
entry's error weighted as `nmf fit --weights` weighs it.

\b
Examples:
  nmf reconstruct docs.nmf/W.npy docs.nmf/H.npy -o approx.npy
  nmf reconstruct docs.nmf/W.npy --model docs.nmf/model.h5 --against docs.csv --json
"""

INSPECT_HELP = """Describe a matrix, a model, a report or a checkpoint.

A matrix: shape, dtype, density, min/max/mean, counts of negative, NaN and Inf
values, all-zero rows and columns. A model (model.h5): k, loss, solver,
iterations, convergence, errors and the top-N features of every component with
their column labels (the topics of a document-term matrix). A report: its
summary. A checkpoint (checkpoint.h5): the iteration it was written after, the
objective there, the input and options it resumes under.

--plot PNG draws a model as what was factorized (needs matplotlib: pip install
'nmfcli[plot]'): the convergence curve (solver, loss and stop reason in its
legend), W, the data beside W·H when the input is small (at most 40,000
entries, unchanged since the fit), and the components: each one's top words as
bars when the columns have labels, images with --image-shape HxW, else a
heatmap. A report or checkpoint: its convergence curve.

\b
Examples:
  nmf inspect docs.csv
  nmf inspect docs.nmf/model.h5 --top 8
  nmf inspect docs.nmf/report.json --json | jq .relative_error
  nmf inspect docs.nmf --plot topics.png
  nmf inspect faces.nmf --plot faces.png --image-shape 64x64
  nmf inspect plain.nmf --column-labels vocab.txt --top 8
  nmf inspect docs.nmf/checkpoint.h5
"""


def register(cli):
    """Add the subcommands to the `nmf` group (the one-line helps are the group's: nmfcli.cli.SHORT_HELP)."""
    from nmfcli.cli import SHORT_HELP
    from nmfcli.cli import convert as convert_mod
    from nmfcli.cli import rank as rank_mod

    for name, help_text, command in (
        ("fit", fit_mod.FIT_HELP, fit_mod.fit_options(fit_mod.fit_command)),
        ("transform", TRANSFORM_HELP, transform_command),
        ("reconstruct", RECONSTRUCT_HELP, reconstruct_command),
        ("inspect", INSPECT_HELP, inspect_command),
        ("rank", rank_mod.RANK_HELP, rank_mod.rank_command),
        ("convert", convert_mod.CONVERT_HELP, convert_mod.convert_command),
    ):
        cli.command(name, help=help_text, short_help=SHORT_HELP[name])(command)


# --------------------------------------------------------------------------- transform


def _components(model_path, components_path, dtype):
    """(H, column labels, component names, loss, alpha_W, l1_ratio, source path) from --model or --components."""
    if bool(model_path) == bool(components_path):
        raise errors.UsageError("give exactly one of --model MODEL.h5 and --components H_FILE")
    if model_path:
        model = nio.read_model(model_path)
        options = model.get("options") or {}
        H = model["H"]
        names = model.get("components") or summary.component_names(H.shape[0])
        return (H, model.get("col_labels"), names, model.get("loss", "frobenius"),
                float(options.get("alpha_W", 0.0)), float(options.get("l1_ratio", 0.0)), model_path)
    factor = shared.read_factor(components_path, "H", dtype=dtype)
    names = factor.row_labels or summary.component_names(factor.X.shape[0])
    return factor.X, factor.col_labels, names, "frobenius", 0.0, 0.0, components_path


@click.argument("input_path", metavar="INPUT")
@click.option("--model", "model_path", default=None, metavar="MODEL.h5", help="A model written by `nmf fit`.")
@click.option("--components", "components_path", default=None, metavar="H_FILE",
              help="Components H (k x n) as a matrix file.")
@click.option("-o", "--output", default="-", show_default=True, help="Output file; - is CSV on stdout.")
@click.option("--loss", type=shared.LossType(), default=None, help="[default: the model's, else frobenius]")
@click.option("--dtype", type=shared.DTYPE_CHOICE, default=None)
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--missing", type=click.Choice(["nan"]), default=None,
              help="nan: NaN entries (nan in CSV) are missing values: each row is fitted over the others.")
@click.option("--weights", "weights_path", default=None, metavar="FILE",
              help="Weight of each entry of INPUT (a matrix of INPUT's shape, >= 0): each row is fitted with "
                   "each entry's loss times its weight; 0 leaves an entry out. Dense INPUT, numpy engine.")
@click.option("--engine", type=shared.ENGINE_CHOICE, default="numpy", show_default=True, help=shared.ENGINE_HELP)
@click.option("--report", "report_path", default=None, metavar="PATH",
              help="Write a JSON report here: the errors, and for the Frobenius loss the exact solve's KKT "
                   "certificate (its worst violation, and how many rows could not be certified).")
@click.option("--strict", is_flag=True,
              help=f"Exit {errors.EXIT_NOT_CONVERGED} (after writing W) when a row's solve could not be certified "
                   "optimal, or the iterations for other losses did not converge.")
@shared.engine_options
@shared.input_options
@shared.labels_options
def transform_command(input_path, model_path, components_path, output, loss, dtype, force, input_format,
                      dataset, header, index_col, missing=None, engine="numpy", scheduler=None, workers=None,
                      chunk_rows=None, memory_limit=None, weights_path=None, row_labels_path=None,
                      col_labels_path=None, report_path=None, strict=False):
    row_blocks, engine_options = shared.engine_settings(engine, scheduler, workers, chunk_rows, memory_limit)
    H, col_labels, names, model_loss, alpha_W, l1_ratio, source = _components(model_path, components_path, dtype)
    if row_blocks:
        # The engine reads INPUT in row blocks itself; io only checks and describes it.
        matrix = nio.read_row_source(input_path, dataset=dataset)
        shared.warn_column_chunks(Terminal().say, matrix)
        X = shared.input_spec(matrix)
        x_dtype = np.dtype(dtype or nio.float_dtype(matrix.X.dtype, None))
        if output != "-" and nio.write_format(output) == "h5":
            nio.refuse_existing(output, force=force)
            engine_options["output"] = f"{output}::/X"
    else:
        opts = dict(input_format=input_format, dataset=dataset, header=header, index_col=index_col)
        shared.refuse_declared_fit(input_path, opts, int(H.shape[0]), dtype, loss or model_loss,
                                   needs="the transform needs")
        matrix = shared.read_input(input_path, opts, dtype=dtype)
        X, x_dtype = matrix.X, matrix.X.dtype
    matrix = shared.with_labels(matrix, row_labels_path, col_labels_path, input_path)
    n_model = H.shape[1]
    if matrix.shape[1] != n_model:
        raise errors.DataError(
            f"{input_path}: has {matrix.shape[1]} columns but the components in {source} have {n_model}; "
            "the new data must have the model's columns"
            + shared.orientation_hint(H.shape, "H", *matrix.shape, input_path, source,
                                      f"nmf fit {input_path} --fix-W {source} (the activations of its columns)")
        )
    shared.check_labels(col_labels, matrix.col_labels, got_path=input_path, expected_what=f"{source}'s")
    weights = shared.read_weights(weights_path, matrix, input_path, dtype=x_dtype) if weights_path else None
    loss = loss or model_loss
    # A bar on a terminal once the solve has run a second: rows solved (Frobenius), else iterations.
    unit = "rows" if summary.beta_of(loss) == 2 else "iter"
    with shared.naming_files({"X ": input_path, "fixed H": source, **shared.weights_messages(weights_path)}), \
            ProgressDisplay(Terminal(), 0, "nmf transform", delay_s=TRANSFORM_BAR_DELAY_S) as bar:
        result = core.transform(X, np.asarray(H, dtype=x_dtype), loss=loss,
                                alpha_W=alpha_W, l1_ratio=l1_ratio, dtype=x_dtype, engine=engine,
                                engine_options=engine_options,
                                progress=lambda done, total: bar.solved(done, total, unit),
                                missing=missing, weights=weights.X if weights is not None else None, details=True)
    W = result.W
    if not isinstance(W, str):  # (else the engine wrote W to the output file block by block)
        nio.write_matrix(output, W, row_labels=matrix.row_labels, col_labels=names,
                         format=None if output != "-" else "csv", force=force, stdout=sys.stdout)
    if report_path is not None:
        nio.write_report(report_path, _transform_report(result, input_path, source, output), force=force,
                         stdout=sys.stdout)
    kkt = result.metrics.get("kkt")
    if result.stop_reason == "uncertified":
        Terminal().say(shared.uncertified_note(kkt, strict))
        if strict:
            raise errors.NotConvergedError(f"{input_path}: {shared.uncertified_message(kkt)}")
    if strict and not result.converged:
        raise errors.NotConvergedError(f"{input_path}: the transform did not converge (stopped by "
                                       f"{result.stop_reason} after {result.n_iter} iterations)")


def _transform_report(result, input_path, source, output):
    """The JSON report of a transform: what was solved, its errors, and its certificate."""
    return {
        "input": input_path, "components": source, "output": output,
        "k": int(result.options["k"]), "loss": result.options["loss"], "beta": result.options["beta"],
        "solver": result.options["solver"], "n_iter": result.n_iter, "converged": result.converged,
        "stop_reason": result.stop_reason,
        **{key: result.metrics[key] for key in ("objective", "beta_divergence", "reconstruction_error",
                                                "relative_error", "kkt", "missing_entries")
           if key in result.metrics},
    }


# --------------------------------------------------------------------------- reconstruct


@click.argument("W_path", metavar="W_FILE")
@click.argument("H_path", metavar="[H_FILE]", required=False)
@click.option("--model", "model_path", default=None, metavar="MODEL.h5", help="Take H from a model.")
@click.option("-o", "--output", default=None, help="Output file; - is CSV on stdout [default: -, or none with --json].")
@click.option("--against", "against_path", default=None, metavar="X_FILE", help="Report the error against X.")
@click.option("--report", "report_path", default=None, metavar="PATH", help="Write the --against error report here.")
@click.option("--loss", type=shared.LossType(), default=None, help="Loss of the error report [default: the model's, else frobenius].")
@click.option("--json", "as_json", is_flag=True, help="Print the error report as JSON on stdout.")
@click.option("--missing", type=click.Choice(["nan"]), default=None,
              help="nan: the NaN entries of X_FILE are missing; the errors are over the others.")
@click.option("--weights", "weights_path", default=None, metavar="FILE",
              help="Weight of each entry of X_FILE (its shape, >= 0): the errors weigh each entry's by it.")
@click.option("--force", is_flag=True, help="Replace existing output files.")
@shared.input_options_for("X_FILE")
def reconstruct_command(w_path, h_path, model_path, output, against_path, report_path, loss, as_json, force,
                        input_format, dataset, header, index_col, missing=None, weights_path=None):
    if bool(h_path) == bool(model_path):
        raise errors.UsageError("give exactly one of H_FILE and --model MODEL.h5")
    if (as_json or report_path or missing or weights_path) and not against_path:
        raise errors.UsageError("--json, --report, --missing and --weights need --against X_FILE (the data to "
                                "compare with)")
    W = shared.read_factor(w_path, "W")
    model_loss = "frobenius"
    if model_path:
        model = nio.read_model(model_path)
        H, h_cols, h_source = model["H"], model.get("col_labels"), model_path
        model_loss = model.get("loss", "frobenius")
    else:
        factor = shared.read_factor(h_path, "H")
        H, h_cols, h_source = factor.X, factor.col_labels, h_path
    if W.X.shape[1] != H.shape[0]:
        raise errors.DataError(
            f"{w_path}: W has {W.X.shape[1]} columns but H in {h_source} has {H.shape[0]} rows; they must match (k)"
        )
    approx = core.reconstruct(W.X, H)
    if output is None:
        output = None if as_json else "-"
    if output not in (None, "-"):
        nio.refuse_existing(output, force=force)  # before any work, as the writer would at the end
    if report_path and report_path != "-":
        nio.refuse_existing(report_path, force=force)
    report = None
    if against_path:
        # every check on X_FILE comes before anything is written: a refused run changes nothing
        matrix = shared.read_input(against_path, dict(input_format=input_format, dataset=dataset, header=header,
                                                      index_col=index_col))
        if tuple(matrix.shape) != tuple(approx.shape):
            raise errors.DataError(
                f"{against_path}: is {matrix.shape[0]} x {matrix.shape[1]} but W·H is "
                f"{approx.shape[0]} x {approx.shape[1]}; they must match"
            )
        shared.check_labels(h_cols, matrix.col_labels, got_path=against_path, expected_what=f"{h_source}'s")
        weights = shared.read_weights(weights_path, matrix, against_path) if weights_path else None
        with shared.naming_files({"X ": against_path, **shared.weights_messages(weights_path)}):
            metrics = core.metrics(matrix.X, W.X, H, loss=loss or model_loss, missing=missing,
                                   weights=weights.X if weights is not None else None)
        report = {
            "k": int(H.shape[0]),
            "shape": [int(s) for s in approx.shape],
            "loss": loss or model_loss,
            **metrics,
            "W": w_path,
            "H": h_source,
            "against": {"path": matrix.path, "sha256": matrix.sha256},
            **({"weights": weights.record} if weights is not None else {}),
            "versions": core.versions(),
        }
    if output is not None:
        nio.write_matrix(output, approx, row_labels=W.row_labels, col_labels=h_cols,
                         format=None if output != "-" else "csv", force=force, stdout=sys.stdout)
    if report is not None:
        if report_path:
            nio.write_report(report_path, report, force=force)
        if as_json:
            nio.write_report("-", report, stdout=sys.stdout)
        else:
            Terminal().table(
                f"W·H against {against_path}",
                [(key, f"{metrics[key]:.6g}") for key in ("beta", "beta_divergence", "reconstruction_error",
                                                         "relative_error", "missing_entries") if key in metrics],
            )


# --------------------------------------------------------------------------- inspect


@click.argument("path", metavar="FILE")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Features (and rows) listed per component.")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON on stdout.")
@click.option("--plot", "plot_path", default=None, metavar="PNG",
              help="Draw the figure of FILE into PNG: for a model, the convergence curve, W, the data beside "
                   "W·H (small matrices), and the components (top words with column labels, images with "
                   "--image-shape, else a heatmap).")
@click.option("--image-shape", type=shared.ImageShapeType(), default=None, metavar="HxW",
              help="--plot: draw each component as an H x W image (H's rows, or W's columns, of H·W pixels).")
@click.option("--force", is_flag=True, help="Replace an existing PNG.")
@shared.input_options_for("FILE")
@shared.labels_options_for("FILE (a matrix, or a model's H and W)", "for a model fitted without labels")
def inspect_command(path, top, as_json, plot_path, force, input_format, dataset, header, index_col,
                    image_shape=None, row_labels_path=None, col_labels_path=None):
    kind = "matrix" if input_format or dataset else nio.detect_kind(path)
    png = None
    if image_shape is not None and not (plot_path and kind == "model"):
        raise errors.UsageError("--image-shape draws a model's components; it needs a model and --plot PNG")
    if kind == "model":
        model = _labelled_model(nio.read_model(path), path, row_labels_path, col_labels_path)
        info = _model_info(path, model, top)
        if plot_path:
            from nmfcli import plot

            plot.require_matplotlib()
            _check_image_shape(image_shape, model, path)
            X, WH = _small_data(model)
            png = plot.render_model_png(model, title=_model_title(path, model), image_shape=image_shape, X=X,
                                        WH=WH, top=min(top, plot.MAX_BARS))
    elif kind in ("report", "checkpoint"):
        state = nio.read_report(path) if kind == "report" else nio.read_checkpoint(path)
        info = {"kind": "report", "path": path, **state} if kind == "report" else _checkpoint_info(path, state)
        if plot_path:
            from nmfcli import plot

            about = state if kind == "report" else state.get("options") or {}
            legend = plot.legend_text(about) if kind == "report" else (
                f"solver {about.get('solver')}, loss {about.get('loss')}\ncheckpoint after iteration "
                f"{state.get('iteration')}")
            png = plot.render_png(history=state.get("history"), history_iter=state.get("history_iter"),
                                  title=f"NMF of {(state.get('input') or {}).get('path', '?')}: k={state.get('k')}, "
                                        f"loss {about.get('loss')} ({kind} {path})",
                                  legend=legend)
    else:
        matrix = nio.read_matrix(path, input_format=input_format, dataset=dataset, header=header,
                                 index_col=index_col, lazy=True)
        matrix = shared.with_labels(matrix, row_labels_path, col_labels_path, path)
        X = matrix.X
        stored = X.dtype
        shared.warn_column_chunks(Terminal().say, matrix)
        if not (isinstance(X, np.ndarray) or sp.issparse(X)):
            X = np.asarray(X[...])
        info = {"kind": "matrix", "path": path, "format": matrix.format,
                **summary.matrix_stats(X, dtype=stored),
                "row_labels": matrix.row_labels is not None, "col_labels": matrix.col_labels is not None}
        if plot_path:
            from nmfcli import plot

            png = plot.render_png(X=X, title=f"{path} ({X.shape[0]} x {X.shape[1]})", row_labels=matrix.row_labels,
                                  col_labels=matrix.col_labels)
    if png is not None:
        nio.write_bytes(plot_path, png, force=force)
    if as_json:
        nio.write_report("-", info, stdout=sys.stdout)
        return
    _print_info(info)


# The data is drawn beside W·H when the model's input is at most this many entries (and still there).
SMALL_DATA_ENTRIES = 40_000


def _labelled_model(model, path, row_labels_path, col_labels_path):
    """The model with the labels of --row-labels/--column-labels (for a fit that had none)."""
    H, W = model["H"], model.get("W")
    if col_labels_path:
        model["col_labels"] = shared.given_labels(col_labels_path, H.shape[1], "column", f"{path}'s H")
    if row_labels_path:
        if W is None:
            raise errors.UsageError(f"{path}: the model holds no W, so it has no rows to label")
        model["row_labels"] = shared.given_labels(row_labels_path, W.shape[0], "row", f"{path}'s W")
    return model


def _check_image_shape(image_shape, model, path):
    if image_shape is None:
        return
    h, w = image_shape
    n = model["H"].shape[1]
    m = model["W"].shape[0] if model.get("W") is not None else None
    if h * w not in (n, m):
        rows = f" and W has {m} rows" if m is not None else ""
        raise errors.UsageError(f"--image-shape {h}x{w} is {h * w} pixels, but {path}'s H has {n} columns{rows}; "
                                "each image needs one pixel a column (or a row of W)")


def _small_data(model):
    """(X, W·H) when the model's input is small, still where the fit read it, and unchanged; else (None, None)."""
    source, shape = model.get("input") or {}, model.get("shape")
    W = model.get("W")
    if W is None or not shape or shape[0] * shape[1] > SMALL_DATA_ENTRIES or not source.get("path") \
            or source["path"] == "-":
        return None, None
    try:
        matrix = nio.read_matrix(source["path"])
    except errors.NMFError:
        return None, None
    if matrix.sha256 != source.get("sha256") or tuple(matrix.shape) != tuple(shape):
        return None, None
    X = matrix.X.toarray() if sp.issparse(matrix.X) else np.asarray(matrix.X)
    return X, core.reconstruct(W, model["H"])


def _model_title(path, model):
    """What was fitted: 'NMF of docs.csv (79 x 1006): k=8, loss frobenius, relative error 0.76 (model docs.nmf)'."""
    source = (model.get("input") or {}).get("path") or path
    shape = model.get("shape")
    size = f" ({shape[0]} x {shape[1]})" if shape else ""
    error = (model.get("metrics") or {}).get("relative_error")
    error_text = f", relative error {error:.3g}" if isinstance(error, float) else ""
    return f"NMF of {source}{size}: k={model['H'].shape[0]}, loss {model.get('loss')}{error_text} (model {path})"


def _model_info(path, model, top):
    H = model["H"]
    W = model.get("W")
    names = model.get("components") or summary.component_names(H.shape[0])
    features = summary.top_features(H, model.get("col_labels"), top)
    rows = summary.top_features(W.T, model.get("row_labels"), top) if W is not None else None
    metrics = model.get("metrics") or {}
    return {
        "kind": "model",
        "path": path,
        "k": int(H.shape[0]),
        "shape": model.get("shape"),
        "loss": model.get("loss"),
        "beta": model.get("beta"),
        "solver": model.get("solver"),
        "n_iter": model.get("n_iter"),
        "converged": model.get("converged"),
        "stop_reason": model.get("stop_reason"),
        "objective": metrics.get("objective"),
        "reconstruction_error": metrics.get("reconstruction_error"),
        "relative_error": metrics.get("relative_error"),
        # the errors above leave these out, or weigh them
        "missing_entries": metrics.get("missing_entries"),
        "weights": (model.get("weights") or {}).get("path"),
        "kkt": metrics.get("kkt"),
        "col_labels": model.get("col_labels") is not None,
        "components": [
            {"name": names[i],
             "top_features": [{"label": lab, "weight": w} for lab, w in features[i]],
             **({"top_rows": [{"label": lab, "weight": w} for lab, w in rows[i]]} if rows is not None else {})}
            for i in range(H.shape[0])
        ],
    }


def _checkpoint_info(path, state):
    """What a checkpoint says about the fit it continues (its factors are left out)."""
    history = state.get("history") if isinstance(state.get("history"), list) else []
    history_iter = state.get("history_iter") if isinstance(state.get("history_iter"), list) else []
    options = _record(state.get("options"))
    return {
        "kind": "checkpoint",
        "path": path,
        "iteration": state.get("iteration"),
        "k": state.get("k"),
        "solver": options.get("solver"),
        "loss": options.get("loss"),
        "seed": options.get("seed"),
        "objective": history[-1] if history else None,  # the last one recorded, at:
        "objective_iteration": history_iter[-1] if history and history_iter else None,
        "input": state.get("input"),
        "options": options,
        "solver_state": state.get("solver_state"),
        "history": history,
        "history_iter": state.get("history_iter"),
    }


def _kkt_rows(kkt):
    """The exact solve's certificate, for a fit with a fixed factor (none otherwise)."""
    if not isinstance(kkt, dict):
        return []
    verdict = "certified" if kkt.get("certified") else f"{kkt.get('uncertified')} rows NOT certified"
    return [("kkt", f"{verdict}: worst violation {kkt.get('kkt_violation', 0.0):.2g} (tolerance "
                    f"{kkt.get('kkt_tol', 0.0):.0e}), {kkt.get('refined')} re-solved")]


def _record(value) -> dict:
    """A report's or checkpoint's record (a JSON object), or {} when the file holds something else
    there: inspect describes what it can of a damaged file."""
    return value if isinstance(value, dict) else {}


def _weighing_rows(missing_entries, weights_path):
    """The rows that say a fit's errors leave missing entries out, or weigh the entries."""
    return ([("missing_entries", f"{missing_entries} (left out of the errors)")] if missing_entries else []) + \
        ([("weights", f"{weights_path} (the errors are weighted)")] if weights_path else [])


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return " x ".join(str(v) for v in value)
    return str(value)


def _print_info(info):
    term = Terminal()
    kind = info["kind"]
    if kind == "matrix":
        keys = ("format", "shape", "dtype", "sparse", "nnz", "density", "min", "max", "mean", "negative", "nan",
                "inf", "zero_rows", "zero_cols", "row_labels", "col_labels")
        term.table(f"{info['path']} (matrix)", [(k, _fmt(info[k])) for k in keys], stderr=False)
        return
    if kind in ("report", "checkpoint"):
        keys = ("iteration", "k", "shape", "solver", "loss", "init", "seed", "n_iter", "converged", "stop_reason",
                "objective", "objective_iteration", "reconstruction_error", "relative_error", "time_s")
        rows = [(k, _fmt(info[k])) for k in keys if k in info]
        rows += _weighing_rows(info.get("missing_entries"), _record(info.get("weights")).get("path"))
        rows += _kkt_rows(info.get("kkt"))
        if isinstance(info.get("input"), dict):
            rows.append(("input", info["input"].get("path")))
        if kind == "checkpoint":  # a resumed fit must be given these again
            rows.append(("options", ", ".join(f"{k} {v}" for k, v in info["options"].items() if v is not None)))
        term.table(f"{info['path']} ({kind})", rows, stderr=False)
        return
    keys = ("k", "shape", "loss", "solver", "n_iter", "converged", "stop_reason", "objective",
            "reconstruction_error", "relative_error")
    term.table(f"{info['path']} (model)", [(k, _fmt(info[k])) for k in keys]
               + _weighing_rows(info.get("missing_entries"), info.get("weights")) + _kkt_rows(info.get("kkt")),
               stderr=False)
    out = sys.stdout
    print("top features per component (weight in H):", file=out)
    for comp in info["components"]:
        words = ", ".join(f"{f['label']} ({f['weight']:.3g})" for f in comp["top_features"])
        print(f"  {comp['name']}: {words}", file=out)
    if info["components"] and "top_rows" in info["components"][0]:
        print("top rows per component (weight in W):", file=out)
        for comp in info["components"]:
            words = ", ".join(f"{f['label']} ({f['weight']:.3g})" for f in comp["top_rows"])
            print(f"  {comp['name']}: {words}", file=out)
    out.flush()
