"""Pieces every command uses: option types, input options, reading factors, naming files in errors."""

from __future__ import annotations

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
    """frobenius | kl | is | a real number beta."""

    name = "loss"

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(core.LOSSES) + "|BETA]"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        if value in core.LOSSES:
            return value
        beta = summary.beta_of(value)
        if beta is None or beta != beta or beta in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not one of {', '.join(core.LOSSES)} or a number (beta)", param, ctx)
        return beta


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


def input_options(f):
    """--input-format, --dataset, --header/--no-header, --index-col/--no-index-col."""
    decorators = [
        click.option("--input-format", type=FORMAT_CHOICE, default=None,
                     help="Format of INPUT (default: from its extension, '-' is CSV)."),
        click.option("--dataset", default=None, metavar="PATH",
                     help="HDF5/Zarr dataset or sparse group (same as INPUT::PATH)."),
        click.option("--header/--no-header", default=None,
                     help="CSV: the first row is (not) column labels [default: detected]."),
        click.option("--index-col/--no-index-col", default=None,
                     help="CSV: the first column is (not) row labels [default: detected]."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


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
    weights = nio.read_matrix(path, dtype=dtype)
    if tuple(weights.shape) != tuple(matrix.shape):
        raise errors.DataError(
            f"{path}: the weights are {weights.shape[0]} x {weights.shape[1]} but {input_path} is "
            f"{matrix.shape[0]} x {matrix.shape[1]}; they must have the same shape")
    check_labels(matrix.row_labels, weights.row_labels, got_path=path, expected_what=f"{input_path}'s", axis="row")
    check_labels(matrix.col_labels, weights.col_labels, got_path=path, expected_what=f"{input_path}'s",
                 axis="column")
    return Factor(path, weights.X, weights.row_labels, weights.col_labels, weights.sha256)


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
