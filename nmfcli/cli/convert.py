"""`nmf convert IN OUT`: a matrix from any format nmf reads to any it writes, labels included."""

from __future__ import annotations

import os
import sys

import click
import scipy.sparse as sp

from nmfcli import errors, summary
from nmfcli import io as nio
from nmfcli.cli import shared
from nmfcli.cli.terminal import Terminal

CONVERT_HELP = """Convert the matrix IN to the file OUT (format from OUT's extension or --format).

IN is anything nmf reads: CSV/TSV (labels detected), .csv.gz, .npy, .npz,
.mtx, .h5 (FILE.h5::/dataset; AnnData too), .zarr, or - for CSV on stdin.
OUT is .csv, .tsv, .npy, .npz or .h5, or - for CSV on stdout. OUT is written
atomically: it appears complete or not at all.

Labels (IN's own, or those of --row-labels/--column-labels FILE) go into
OUT where its format holds them (CSV, TSV, HDF5). NPY and NPZ hold none:
they are written beside OUT as OUT_STEM.row_labels.txt and
OUT_STEM.col_labels.txt, one label a line, for --row-labels/--column-labels.

Sparse IN stays sparse in .npz and .h5 (an AnnData-style group) unless
--dense; --engine dask and --chunk-rows read dense .h5 datasets and .npy
files, so convert sparse data for them with --dense (it must fit in memory).

\b
Examples:
  nmf convert docs.mtx docs.npz --column-labels vocab.txt
  nmf convert big.npz big.h5 --dense        # then: nmf fit big.h5 -k 50 --engine dask
  nmf convert counts.h5ad counts.csv
  nmf convert data.csv.gz - | head
"""

LABEL_FILES = {"row_labels": "row_labels.txt", "col_labels": "col_labels.txt"}


def label_paths(output: str) -> dict:
    """Where the labels of an NPY/NPZ OUT go: OUT_STEM.row_labels.txt, OUT_STEM.col_labels.txt."""
    stem = os.path.splitext(output)[0]
    return {key: f"{stem}.{name}" for key, name in LABEL_FILES.items()}


@click.argument("input_path", metavar="IN")
@click.argument("output", metavar="OUT")
@click.option("--format", "output_format", type=click.Choice(nio.WRITE_FORMATS), default=None,
              help="Format of OUT [default: from its extension; - is CSV].")
@click.option("--dense", is_flag=True, help="Write sparse IN as a dense matrix (it must fit in memory).")
@click.option("--dtype", type=shared.DTYPE_CHOICE, default=None,
              help="[default: float32 stays float32, anything else becomes float64]")
@click.option("--force", is_flag=True, help="Replace OUT (and its label files) if they exist.")
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr but errors.")
@shared.input_options_for("IN")
@shared.labels_options_for("IN", "they go into OUT")
def convert_command(input_path, output, output_format, dense, dtype, force, quiet, input_format, dataset, header,
                    index_col, row_labels_path=None, col_labels_path=None):
    fmt = "csv" if output == "-" and output_format is None else output_format or nio.write_format(output)
    if fmt is None and not nio.is_stream(output):
        raise errors.UsageError(f"{output}: cannot tell the output format from its name; use a .csv, .tsv, .npy, "
                                ".npz or .h5 file name, or --format")
    if output != "-" and not nio.is_stream(output) and os.path.abspath(output) == os.path.abspath(
            input_path.split("::", 1)[0] if not os.path.exists(input_path) else input_path):
        raise errors.UsageError(f"{output}: is IN itself; write to another file")
    side = label_paths(output) if fmt in ("npy", "npz") and output != "-" else {}
    if not force and output != "-" and not nio.is_stream(output):
        nio.refuse_existing(output)  # before reading: a refused run reads nothing
    matrix = shared.read_input(input_path, dict(input_format=input_format, dataset=dataset, header=header,
                                                index_col=index_col), dtype=dtype)
    matrix = shared.with_labels(matrix, row_labels_path, col_labels_path, input_path)
    X = matrix.X
    if sp.issparse(X) and (dense or fmt in ("csv", "tsv", "npy")):
        m, n = matrix.shape
        shared.refuse_beyond_memory(input_path, m * n * X.dtype.itemsize, "a dense copy needs",
                                    f"{m} x {n} {X.dtype}", "write .npz or .h5 without --dense to keep it sparse")
        X = X.toarray()
    labels = {"row_labels": matrix.row_labels, "col_labels": matrix.col_labels}
    side = {key: path for key, path in side.items() if labels[key] is not None}
    if not force:
        for path in side.values():
            nio.refuse_existing(path)
    for key, path in side.items():
        nio.write_labels(path, labels[key], force=force)
    nio.write_matrix(output, X, format=fmt if output != "-" else ("tsv" if fmt == "tsv" else "csv"),
                     row_labels=None if side else matrix.row_labels, col_labels=None if side else matrix.col_labels,
                     force=force, stdout=sys.stdout)
    if not quiet and output != "-":
        kind = "sparse" if sp.issparse(X) else "dense"
        where = "".join(f"; {'row' if key == 'row_labels' else 'column'} labels in {path}"
                        for key, path in side.items())
        Terminal().say(f"wrote {output}: {matrix.shape[0]} x {matrix.shape[1]} {X.dtype} {kind}"
                       f"{f', {summary.format_bytes(os.path.getsize(output))}' if os.path.isfile(output) else ''}"
                       f"{where}")
