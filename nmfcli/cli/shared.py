"""Pieces every command uses: option types, input options, reading factors, naming files in errors."""

from __future__ import annotations

import dataclasses

import click
import numpy as np

from nmfcli import core, errors, summary
from nmfcli import io as nio
from nmfcli.engines import ENGINES
from nmfcli.init import INITS

DTYPE_CHOICE = click.Choice(core.DTYPES)
SOLVER_CHOICE = click.Choice(("auto",) + tuple(core.SOLVERS))
INIT_CHOICE = click.Choice(INITS)
ENGINE_CHOICE = click.Choice(ENGINES)
ENGINE_HELP = ("cupy: an NVIDIA GPU (pip install 'nmfcli[gpu]'); auto: cupy when a GPU is usable, "
               "else numpy.")
FORMAT_CHOICE = click.Choice(nio.FORMATS)
FACTOR_FORMATS = ("npy", "csv", "h5")
# numpy's generators take seeds in 0..2^32-1 (the legacy ones the inits share)
SEED_TYPE = click.IntRange(0, 2**32 - 1)


class LossType(click.ParamType):
    """frobenius | kl | is (or their long names, any case) | a real number beta."""

    name = "loss"

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(core.LOSSES) + "|BETA]"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        # scikit-learn's names too, in any case: 'kullback-leibler', 'itakura-saito', 'KL'
        parsed = core.parse_loss(value)
        if parsed is None:
            self.fail(f"{value!r} is not one of {', '.join(core.LOSSES)} or a number (beta)", param, ctx)
        name, beta = parsed
        try:
            float(value)
        except ValueError:  # a name: kl, KL, kullback-leibler -> kl
            return name if name in core.LOSSES else beta
        return beta  # a number stays a number, as before: 2 -> 2.0


class ImageShapeType(click.ParamType):
    """HxW (8x8, 64x64): the shape of an image, as (height, width)."""

    name = "shape"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().replace("×", "x").split("x")
        try:
            h, w = (int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not HxW (e.g. 8x8: height x width in pixels)", param, ctx)
        if h < 1 or w < 1:
            self.fail(f"{value!r} needs a height and a width of at least 1", param, ctx)
        return h, w


class AlphaHType(click.ParamType):
    """A number >= 0, or "same" (copy --alpha-W, as scikit-learn does)."""

    name = "alpha"

    def get_metavar(self, param, ctx=None):
        return "[same|FLOAT]"

    def convert(self, value, param, ctx):
        if value == "same":
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither 'same' nor a number", param, ctx)
        if not number >= 0:
            self.fail(f"{value!r} is negative; it must be >= 0 or 'same'", param, ctx)
        return number


def input_options(f, argument="INPUT"):
    """--input-format, --dataset, --header/--no-header, --index-col/--no-index-col, for the
    matrix the command calls ``argument`` (input_options_for names another)."""
    decorators = [
        click.option("--input-format", type=FORMAT_CHOICE, default=None,
                     help=f"Format of {argument} (default: from its extension, '-' is CSV)."),
        click.option("--dataset", default=None, metavar="PATH",
                     help=f"HDF5/Zarr dataset or sparse group of {argument} (same as {argument}::PATH)."),
        click.option("--header/--no-header", default=None,
                     help="CSV: the first row is (not) column labels [default: detected]."),
        click.option("--index-col/--no-index-col", default=None,
                     help="CSV: the first column is (not) row labels [default: detected]."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def input_options_for(argument):
    """input_options whose help names the matrix ``argument`` (X_FILE, FILE) instead of INPUT."""
    return lambda f: input_options(f, argument)


def labels_options(f, what="INPUT", where="they go into the outputs"):
    """--row-labels FILE, --column-labels FILE: labels for a matrix format that holds none."""
    f = click.option("--column-labels", "col_labels_path", default=None, metavar="FILE",
                     help=f"Column labels of {what}, one a line (e.g. a vocabulary saved from scikit-learn's "
                          f"get_feature_names_out()); {where}.")(f)
    return click.option("--row-labels", "row_labels_path", default=None, metavar="FILE",
                        help=f"Row labels of {what}, one a line.")(f)


def labels_options_for(what, where):
    """labels_options whose help names another matrix than INPUT."""
    return lambda f: labels_options(f, what, where)


def given_labels(path, count, axis, what) -> list:
    """The labels of --row-labels/--column-labels FILE, one for each of ``count`` rows or columns."""
    labels = nio.read_labels(path)
    if len(labels) != count:
        raise errors.DataError(f"{path}: has {len(labels)} labels but {what} has {count} {axis}s; "
                               f"give one label a {axis}")
    return labels


def with_labels(matrix, row_path, col_path, input_path):
    """INPUT with the labels of --row-labels/--column-labels (one a row/column, and the same as
    the ones INPUT holds itself, where it holds some)."""
    changes = {}
    for key, path, axis, count, own in (("row_labels", row_path, "row", matrix.shape[0], matrix.row_labels),
                                        ("col_labels", col_path, "column", matrix.shape[1], matrix.col_labels)):
        if path:
            labels = given_labels(path, count, axis, input_path)
            check_labels(own, labels, got_path=path, expected_what=f"{input_path}'s", axis=axis)
            changes[key] = labels
    return dataclasses.replace(matrix, **changes) if changes else matrix


READ_BAR_DELAY_S = 1.0


def read_input(path, opts: dict, dtype=None, quiet=False):
    """Read INPUT with the --input-format/--dataset/--header/--index-col options; on a terminal,
    text that takes over a second to parse shows a bar of rows read."""
    from nmfcli.cli.terminal import ProgressDisplay, Terminal

    with ProgressDisplay(Terminal(quiet=quiet), 0, f"reading {path}", delay_s=READ_BAR_DELAY_S, unit="rows") as bar:
        return nio.read_matrix(
            path,
            input_format=opts.get("input_format"),
            dataset=opts.get("dataset"),
            header=opts.get("header"),
            index_col=opts.get("index_col"),
            dtype=dtype,
            progress=lambda done, total: bar.solved(done, total, "rows"),
        )


class Factor:
    """A factor given on the command line: its array, labels, file and hash."""

    def __init__(self, path, X, row_labels, col_labels, sha256):
        self.path, self.X, self.row_labels, self.col_labels, self.sha256 = path, X, row_labels, col_labels, sha256

    @property
    def record(self) -> dict:
        """What a report keeps of the file: {"path": ..., "sha256": ...}."""
        return {"path": self.path, "sha256": self.sha256}


def read_factor(path, which: str, dtype=None) -> Factor:
    """A matrix file, or the W / H of a model file (`--fix-H model.h5` reuses a model's components)."""
    kind = nio.detect_kind(path)
    if kind in ("report", "checkpoint"):
        hint = "give it to --resume" if kind == "checkpoint" else "give the model.h5 beside it"
        raise errors.DataError(f"{path}: is an nmf {kind}, not a matrix or a model; {hint}")
    if kind == "model":
        model = nio.read_model(path)
        if which not in model:
            raise errors.DataError(f"{path}: the model holds no {which}")
        A = model[which]
        if dtype is not None:
            A = A.astype(dtype)
        rows = model.get("row_labels") if which == "W" else model.get("components")
        cols = model.get("components") if which == "W" else model.get("col_labels")
        return Factor(path, A, rows, cols, nio.file_sha256(path))
    m = nio.read_matrix(path, dtype=dtype)
    if m.X.__class__.__module__.startswith("scipy"):
        X = m.X.toarray()
    else:
        X = m.X
    return Factor(path, X, m.row_labels, m.col_labels, m.sha256)


def read_weights(path, matrix, input_path, dtype=None) -> Factor:
    """--weights FILE: a matrix of INPUT's shape and labels (checked here, so the message names
    both files); core checks its values."""
    weights = nio.read_weights(path, dtype=dtype)
    if tuple(weights.shape) != tuple(matrix.shape):
        raise errors.DataError(
            f"{path}: the weights are {weights.shape[0]} x {weights.shape[1]} but {input_path} is "
            f"{matrix.shape[0]} x {matrix.shape[1]}; they must have the same shape")
    check_labels(matrix.row_labels, weights.row_labels, got_path=path, expected_what=f"{input_path}'s", axis="row")
    check_labels(matrix.col_labels, weights.col_labels, got_path=path, expected_what=f"{input_path}'s",
                 axis="column")
    return Factor(path, weights.X, weights.row_labels, weights.col_labels, weights.sha256)


# The option that takes a factor of the other orientation: a basis given as --fix-H that has
# INPUT's rows is a W.
OTHER_FACTOR_OPTION = {"fix_H": "--fix-W", "fix_W": "--fix-H", "H0": "--W0", "W0": "--H0"}
FACTOR_OPTION = {"fix_H": "--fix-H", "fix_W": "--fix-W", "H0": "--H0", "W0": "--W0"}


def orientation_hint(shape, which, m, n, input_path, path, other=None) -> str:
    """What a factor of the wrong orientation was probably meant as ("" when nothing fits):
    ``which`` is "H" (expected k x n) or "W" (expected m x k); ``other`` the option or command
    that takes it as the other factor."""
    a, b = (int(s) for s in shape)
    if which == "H" and b != n:
        if a == n:
            return (f"; its transpose ({b} x {a}) fits: H has a row per component and a column per column "
                    f"of {input_path}, so transpose {path}")
        if a == m and other:
            return f"; it has {input_path}'s {m} rows, as a W (m x k) does: did you mean {other}?"
    if which == "W" and a != m:
        if b == m:
            return (f"; its transpose ({b} x {a}) fits: W has a row per row of {input_path} and a column per "
                    f"component, so transpose {path}")
        if b == n and other:
            return f"; it has {input_path}'s {n} columns, as an H (k x n) does: did you mean {other}?"
    return ""


def check_orientation(factors: dict, shape, k, input_path) -> None:
    """DataError with a hint for a --fix-H/--fix-W/--W0/--H0 file of the wrong orientation
    (a transpose, or the other factor); other shape errors are left to core's message."""
    m, n = shape
    for key, factor in factors.items():
        which = key[-1]
        hint = orientation_hint(factor.X.shape, which, m, n, input_path, factor.path,
                                f"{OTHER_FACTOR_OPTION[key]} {factor.path}")
        if hint:
            a, b = factor.X.shape
            kk = k if isinstance(k, int) else "k"
            expected = f"{kk} x {n}" if which == "H" else f"{m} x {kk}"
            name = {"fix_H": "fixed H", "fix_W": "fixed W"}.get(key, key)
            raise errors.DataError(f"{factor.path}: {name} has shape {a} x {b}; expected {expected}{hint}")


def weights_messages(path) -> dict:
    """naming_files' entries for core's messages about the weights (none without a weights file)."""
    return {"weights ": path, "the weights": path, "every weight": path} if path else {}


def check_labels(expected, got, *, got_path, expected_what, axis="column"):
    """DataError naming the first label that differs (when both sides have labels)."""
    diff = summary.first_label_mismatch(expected, got)
    if diff is not None:
        j, a, b = diff
        raise errors.DataError(
            f"{got_path}: {axis} {j} is '{b}' but {expected_what} {axis} {j} is '{a}'; "
            f"the {axis}s must match, in the same order"
        )


def name_file(exc: errors.NMFError, files: dict) -> errors.NMFError:
    """Prefix a core message about X, k, W0, ... with the file it came from.

    core knows arrays, not files: "X has 3 negative values" becomes
    "data.csv: X has 3 negative values".
    """
    message = str(exc)
    for prefix, path in files.items():
        if path and message.startswith(prefix):
            new = type(exc)(f"{path}: {message}")
            return new
    return exc


def naming_files(files: dict):
    """Decorator-free context: `with naming_files({...}):` re-raises core errors with the file named."""
    return _Naming(files)


class _Naming:
    def __init__(self, files):
        self.files = files

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, errors.NMFError):
            new = name_file(exc, self.files)
            if new is not exc:
                raise new from None
        return False


def output_format_option(f):
    return click.option("--format", "factor_format", type=click.Choice(FACTOR_FORMATS), default="npy",
                        show_default=True, help="File format of W and H.")(f)


def quiet_verbose(f):
    f = click.option("-v", "--verbose", is_flag=True, help="Log progress every few iterations (off a terminal).")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress and no summary on stderr.")(f)
    return f



def engine_options(f):
    """--scheduler, --workers, --chunk-rows, --memory-limit: where and how a row-block engine runs."""
    decorators = [
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="--engine dask: a running Dask scheduler, e.g. tcp://host:8786 "
                          "[default: a local cluster of processes for this run]. Every worker must "
                          "see INPUT at the same path."),
        click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                     help="--engine dask: worker processes of the local cluster [default: min(4, CPUs)]."),
        click.option("--chunk-rows", type=click.IntRange(min=1), default=None, metavar="R",
                     help="Rows of INPUT per block [default: about 16 MiB, whole storage chunks]. "
                          "With --engine numpy: out-of-core, one block in memory at a time "
                          "(INPUT: .h5 dataset, .zarr, memory-mapped .npy, folder of .npy/.npz blocks)."),
        click.option("--memory-limit", default=None, metavar="SIZE",
                     help="--engine dask: memory limit per local worker, e.g. 2GB [default: auto]."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


ROW_BLOCK_ENGINES = ("numpy", "dask")


def engine_settings(engine, scheduler, workers, chunk_rows, memory_limit):
    """(row_blocks, engine_options) from the engine flags; refuses flags the engine does not use.

    row_blocks is True when INPUT is to be read in row blocks by the engine (--engine dask,
    or --chunk-rows with the numpy engine) instead of into memory by the CLI.
    """
    given = [flag for flag, value in (("--scheduler", scheduler), ("--workers", workers),
                                      ("--memory-limit", memory_limit)) if value is not None]
    if engine != "dask" and given:
        raise errors.UsageError(f"{given[0]} needs --engine dask (got --engine {engine})")
    if scheduler is not None and (workers is not None or memory_limit is not None):
        flag = "--workers" if workers is not None else "--memory-limit"
        raise errors.UsageError(f"{flag} sets up the local cluster; it cannot be used with --scheduler "
                                "(size the workers of that cluster where it is started)")
    if chunk_rows is not None and engine not in ROW_BLOCK_ENGINES:
        raise errors.UsageError(f"--chunk-rows needs --engine numpy or dask (got --engine {engine})")
    if engine == "dask":
        options = {key: value for key, value in (("scheduler", scheduler), ("workers", workers),
                                                 ("chunk_rows", chunk_rows), ("memory_limit", memory_limit))
                   if value is not None}
        return True, options
    if chunk_rows is not None:
        return True, {"chunk_rows": chunk_rows}
    return False, None


def refuse_beyond_memory(input_path, need: int, needs: str, detail: str, advice: str) -> None:
    """Exit 69 before anything big is allocated when ``need`` bytes exceed the memory available:
    "INPUT: {needs} about N of memory ({detail}) but only M is available; {advice}"."""
    avail = nio.available_memory()
    if need > avail:
        raise errors.UnavailableError(
            f"{input_path}: {needs} about {summary.format_bytes(need)} of memory ({detail}) but only "
            f"{summary.format_bytes(avail)} is available; {advice}")


def refuse_declared_fit(input_path, opts: dict, k, dtype, loss, needs: str = "the fit needs") -> None:
    """Exit 69 from the shape a sparse INPUT's header declares, before INPUT is read, when the fit
    of it could not fit in memory (a 70-byte .mtx can declare 10^9 rows, whose row pointers and
    W no data bound): CSR's values, indices and a pointer per row plus core's estimate for the
    factors. Dense readers check the declared size against the file and memory themselves."""
    beta = summary.beta_of(loss)
    if not isinstance(k, int) or k <= 0 or beta is None:
        return
    declared = nio.declared_shape(input_path, input_format=opts.get("input_format"), dataset=opts.get("dataset"))
    if declared is None:
        return
    m, n, nnz, stored = declared
    if m <= 0 or n <= 0 or nnz is None or nnz < 0:
        return
    dtype = np.dtype(dtype or stored)
    x_bytes = nnz * (dtype.itemsize + 8) + (m + 1) * 8
    need = x_bytes + int(core.estimate_fit_bytes((m, n), k, dtype, nnz=nnz, beta=beta))
    refuse_beyond_memory(input_path, need, needs, f"{m} x {n} declared, k={k}",
                         "check the shape in its header, or use a machine with more memory")


def input_spec(matrix) -> str:
    """The path spec a row-block engine opens on its own: FILE::/dataset for HDF5/Zarr, else the path."""
    source = matrix.X
    return f"{source.path}::{source.name}" if source.name else source.path


def warn_column_chunks(term_say, matrix) -> None:
    """One line when INPUT's storage chunks are narrower than its rows (row blocks then read slowly)."""
    if not matrix.column_chunked:
        return
    m, n = matrix.shape
    a, b = matrix.chunks
    name = getattr(matrix.X, "name", None)
    layout = f"{name}:CHUNK={min(m, 1024)}x{n}" if name else f"CHUNK={min(m, 1024)}x{n}"
    hint = (f"rechunk by rows first, e.g. h5repack -l {layout} IN.h5 OUT.h5"
            if matrix.format == "h5" else "rechunk it by rows (whole rows per chunk) first")
    term_say(f"warning: {matrix.path}: stored in chunks of {a} x {b} (by columns); row-block engines "
             f"(--engine dask, --chunk-rows) will read it slowly; {hint}")


def uncertified_message(kkt):
    """What an exact solve that could not certify every row says (its KKT certificate, a dict)."""
    return (f"{kkt['uncertified']} of the exact solve's problems could not be certified optimal (worst KKT "
            f"violation {kkt['kkt_violation']:.3g}, tolerance {kkt['kkt_tol']:.0e})")


def uncertified_note(kkt, strict):
    return ("warning: " + uncertified_message(kkt)
            + ("" if strict else f"; --strict turns this into exit {errors.EXIT_NOT_CONVERGED}"))
