"""The io layer: every path and file nmfcli touches.

Readers for CSV/TSV, NPY, NPZ, MatrixMarket, HDF5 and Zarr; writers for matrices,
model files, JSON reports and checkpoints; atomic writes and the output lock.

Readers validate structure only (2-D, real numbers, sizes that fit the file and
memory) and raise :class:`~nmfcli.errors.NMFError` subclasses whose message starts
with the path as the user gave it. No reader lets a numpy/zipfile/h5py exception
escape, and none allocates what a header claims before checking the claim. io never
computes a factorization and never imports click or rich.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from io import BytesIO

import numpy as np

from nmfcli.errors import MissingInputError, NMFError, ReadWriteError, UnavailableError, UsageError
from nmfcli.io._labels import read_labels, write_labels
from nmfcli.io._blocks import RowBlock, RowSource, permute_columns, row_source, row_writer
from nmfcli.io._common import (
    Matrix,
    atomic_path,
    available_memory,
    fail,
    file_sha256,
    float_dtype,
    human_bytes,
    output_lock,
    refuse_existing,
    replace_together,
    require_file,
    stream_temp_path,
    target_dtype,
)

__all__ = [
    "FORMATS",
    "Matrix",
    "RowBlock",
    "RowSource",
    "atomic_path",
    "available_memory",
    "declared_shape",
    "detect_kind",
    "file_sha256",
    "float_dtype",
    "output_lock",
    "permute_columns",
    "read_checkpoint",
    "read_labels",
    "read_matrix",
    "read_model",
    "read_report",
    "read_row_source",
    "read_weights",
    "refuse_existing",
    "replace_together",
    "row_source",
    "row_writer",
    "stream_temp_path",
    "write_checkpoint",
    "write_format",
    "write_labels",
    "is_stream",
    "write_bytes",
    "write_matrix",
    "write_model",
    "write_report",
]

FORMATS = ("csv", "npy", "npz", "mtx", "h5", "zarr")
WRITE_FORMATS = ("csv", "tsv", "npy", "npz", "h5")
MODEL_VERSION = 1

_EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".csv.gz": "csv", ".tsv.gz": "csv", ".txt.gz": "csv",
    ".npy": "npy", ".npz": "npz", ".mtx": "mtx", ".mtx.gz": "mtx",
    ".h5": "h5", ".hdf5": "h5", ".hdf": "h5", ".h5ad": "h5", ".zarr": "zarr",
}
_MAGIC = ((b"\x93NUMPY", "npy"), (b"PK\x03\x04", "npz"), (b"\x89HDF\r\n\x1a\n", "h5"), (b"%%MatrixMarket", "mtx"))


def _ext(path: str) -> str:
    low = path.lower().rstrip("/")
    for ext in sorted(_EXTENSIONS, key=len, reverse=True):
        if low.endswith(ext):
            return ext
    return os.path.splitext(low)[1]


def _split_inner(path: str) -> tuple[str, str | None]:
    """'m.h5::/group/X' -> ('m.h5', '/group/X'), unless a file is literally named so."""
    if "::" in path and not os.path.exists(path):
        file, inner = path.rsplit("::", 1)
        return file, inner or None
    return path, None


def _sniff_format(path: str, file: str) -> str:
    """Format by extension, else by magic bytes, else delimited text."""
    fmt = _EXTENSIONS.get(_ext(file))
    if fmt:
        return fmt
    if os.path.isdir(file):
        return "zarr"
    try:
        with open(file, "rb") as f:
            head = f.read(16)
    except OSError:
        return "csv"
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return "csv"


def _check_head(path: str, fmt: str, head: bytes) -> None:
    """Refuse a stream from its first bytes when they cannot start a file of fmt, before reading
    the rest (stdin or /dev/zero can be endless)."""
    if fmt == "csv":
        if not head.startswith(b"\x1f\x8b"):  # gzip: checked once inflated
            from nmfcli.io._text import refuse_binary

            refuse_binary(path, head)
        return
    expected = {"npy": b"\x93NUMPY", "npz": b"PK", "h5": b"\x89HDF\r\n\x1a\n"}.get(fmt)
    if expected is not None and head and not head.startswith(expected[:len(head)]):
        what = {"npy": "an NPY file", "npz": "an npz (zip) file", "h5": "an HDF5 file"}[fmt]
        raise fail(path, f"is not {what} (its first bytes are not the {fmt} magic number)")
    banner = head.lstrip()[:14].lower()
    if fmt == "mtx" and banner and not b"%%matrixmarket".startswith(banner) and not head.startswith(b"\x1f\x8b"):
        raise fail(path, "not a MatrixMarket file (the first line must start with %%MatrixMarket)")


def _read_all(path: str, f, limit: int, fmt: str | None = None) -> bytes:
    """Read a whole stream, refusing more than limit bytes (stdin can be endless), and with fmt,
    a first block that cannot start such a file (before reading on)."""
    chunks, total = [], 0
    try:
        for block in iter(lambda: f.read(1 << 20), b""):
            if not chunks and fmt is not None:
                _check_head(path, fmt, block)
            total += len(block)
            if total > limit:
                raise UnavailableError(f"{path}: the input is larger than {human_bytes(limit)}; too large to read "
                                       "into memory")
            chunks.append(block)
    except OSError as e:
        raise ReadWriteError(f"{path}: reading failed ({e.strerror or e})") from None
    return b"".join(chunks)


def read_matrix(path, *, input_format=None, dataset=None, header=None, index_col=None, dtype=None,
                lazy=False, stdin=None, progress=None) -> Matrix:
    """Read a matrix from a file or stdin.

    Parameters
    ----------
    path : str
        The file; ``"-"`` reads stdin. HDF5 and Zarr accept ``FILE::/path/to/dataset``.
    input_format : {"csv", "npy", "npz", "mtx", "h5", "zarr"}, optional
        Overrides detection by extension (and magic bytes). stdin defaults to "csv".
    dataset : str, optional
        HDF5/Zarr dataset or sparse group; by default the single matrix in the file.
    header, index_col : bool, optional
        CSV only: force a header row of column labels / a first column of row labels
        on or off; by default each is detected from the data.
    dtype : {"float64", "float32"}, optional
        Element type of the result. By default float32 data stays float32 and
        everything else (integers, float64) becomes float64.
    lazy : bool, default False
        NPY, HDF5 and Zarr dense data come back as a memory map / dataset that reads
        on demand, in the stored dtype, and are not checked against memory.
    stdin : binary stream, optional
        Read instead of ``sys.stdin.buffer`` when path is "-".
    progress : callable, optional
        Text (CSV/TSV) only: ``progress(rows_done, rows_total)`` after each block of rows parsed.

    Returns
    -------
    Matrix
        X is a C-ordered ndarray of shape (m, n), a scipy.sparse.csr_matrix (NPZ,
        coordinate MTX, sparse HDF5/Zarr groups), or a lazy array.

    Raises
    ------
    MissingInputError
        The file does not exist or cannot be opened (exit 66).
    DataError
        The content is not a readable 2-D real matrix, or is too large for memory (exit 65).
    UsageError
        Unknown input_format or dtype, or a dataset named twice.
    UnavailableError
        Zarr input without the zarr package.
    """
    target = target_dtype(dtype)
    if input_format is not None and input_format not in FORMATS:
        raise UsageError(f"unknown input format {input_format!r}; choose one of {', '.join(FORMATS)}")
    path = os.fspath(path)
    if path == "-":
        return _read_stdin(input_format or "csv", dataset, header, index_col, target, stdin, progress)
    file, inner = _split_inner(path)
    if inner is not None and dataset is not None and inner.strip("/") != dataset.strip("/"):
        raise UsageError(f"{path}: the dataset is named twice ('{inner}' in the path and '{dataset}')")
    dataset = dataset or inner
    fmt = input_format or _sniff_format(path, file)
    label = file
    require_file(label, file)
    if fmt != "zarr" and os.path.isdir(file):
        raise MissingInputError(f"{label}: is a folder, not a file")
    if fmt == "h5":
        from nmfcli.io._hdf5 import read_h5

        X, rows, cols, _ = read_h5(label, file, dataset, dtype=target, lazy=lazy)
        return Matrix(X, rows, cols, path, fmt, file_sha256(file), _lazy_chunks(X))
    if fmt == "zarr":
        from nmfcli.io._zarr import read_zarr

        X, rows, cols = read_zarr(label, file, dataset, dtype=target, lazy=lazy)
        return Matrix(X, rows, cols, path, fmt, file_sha256(file), _lazy_chunks(X))
    if dataset is not None:
        raise UsageError(f"{path}: a dataset can only be chosen in HDF5 or Zarr files, not {fmt}")
    try:
        f = open(file, "rb")
    except OSError as e:
        raise MissingInputError(f"{label}: cannot be opened ({e.strerror or e})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if fmt == "csv":
            raw = _read_all(label, f, available_memory() // 2, fmt)
            X, rows, cols = _parse_csv(label, file, raw, header, index_col, target, progress)
            return Matrix(X, rows, cols, path, fmt, hashlib.sha256(raw).hexdigest())
        if fmt == "mtx" and file.lower().endswith(".gz"):
            from nmfcli.io._text import decompress

            raw = decompress(label, _read_all(label, f, available_memory() // 2))
            f, size = BytesIO(raw), len(raw)
        X = _read_binary(label, fmt, f, size, target, lazy, file)
    return Matrix(X, None, None, path, fmt, file_sha256(file))


def read_weights(path, *, dtype=None) -> Matrix:
    """A weights file, read as :func:`read_matrix` reads it, except that a boolean array (a
    mask of the entries that count) is accepted and read as 1 and 0."""
    from nmfcli.io._common import BOOLEANS_ALLOWED

    token = BOOLEANS_ALLOWED.set(True)
    try:
        return read_matrix(path, dtype=dtype)
    finally:
        BOOLEANS_ALLOWED.reset(token)


def declared_shape(path, *, input_format=None, dataset=None):
    """(rows, columns, stored values or None for dense, the dtype the data are read as), as the
    file's header declares them, without reading the data: NPY and NPZ headers, a MatrixMarket
    size line, an HDF5 dataset's shape. None when the format has no header (CSV, stdin, Zarr)
    or the header cannot be read (read_matrix then says what is wrong). Lets a caller refuse
    what the data would need before anything as large is allocated."""
    path = os.fspath(path)
    if path == "-":
        return None
    file, inner = _split_inner(path)
    try:
        fmt = input_format or _sniff_format(path, file)
        if fmt in ("csv", "zarr") or not os.path.isfile(file):
            return None
        if fmt == "h5":
            from nmfcli.io._hdf5 import h5_declared_shape

            declared = h5_declared_shape(file, dataset or inner)
            return None if declared is None else (*declared[:3], float_dtype(declared[3], None))
        from nmfcli.io import _numpy

        with open(file, "rb") as f:
            declared = _numpy.declared_shape(fmt, f)
        return None if declared is None else (*declared[:3], float_dtype(declared[3], None))
    except NMFError:
        return None
    except Exception:  # noqa: BLE001 - a header this cannot read is read_matrix's to report
        return None


def _lazy_chunks(X):
    """The storage chunk shape of a lazy HDF5/Zarr array; None for arrays in memory."""
    import scipy.sparse as sp

    if isinstance(X, np.ndarray) or sp.issparse(X):
        return None
    chunks = getattr(X, "chunks", None)
    return tuple(int(c) for c in chunks) if chunks else None


def read_row_source(path, *, dataset=None) -> Matrix:
    """The input of a row-block engine: X is a :class:`RowSource` (nothing is read but metadata).

    Same provenance as :func:`read_matrix` (path, format, sha256 of the file, or for a
    folder of row blocks of every file's name and bytes), and the storage chunks.
    The labels an HDF5 or Zarr file holds are read (not the data); NPY files and
    folders of blocks hold none. Raises MissingInputError (exit 66) or DataError (exit 65).
    """
    path = os.fspath(path)
    if path == "-":
        raise UsageError("-: row blocks cannot be read from stdin; give a file (.h5, .zarr, .npy) or a folder")
    source = row_source(path, dataset=dataset)
    fmt = {"folder": "npy-blocks"}.get(source.kind, source.kind)
    rows, cols = _stored_labels(source)
    return Matrix(source, rows, cols, path, fmt, file_sha256(source.path), source.chunks)


def _stored_labels(source):
    """(row labels, column labels) an HDF5 or Zarr row source holds (AnnData's names too); the
    data itself is not read."""
    if source.kind == "h5":
        from nmfcli.io._hdf5 import read_h5

        X, rows, cols, keep_open = read_h5(source.path, source.path, source.name, dtype=None, lazy=True)
        if keep_open:
            X.file.close()
        return rows, cols
    if source.kind == "zarr":
        from nmfcli.io._zarr import read_zarr

        _, rows, cols = read_zarr(source.path, source.path, source.name, dtype=None, lazy=True)
        return rows, cols
    return None, None


def _parse_csv(label, file, raw, header, index_col, target, progress=None):
    from nmfcli.io._text import decompress, parse_text

    low = file.lower()
    if low.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        raw = decompress(label, raw)
    hint = "\t" if ".tsv" in low else ","
    return parse_text(label, raw, header=header, index_col=index_col, dtype=target, ext_hint=hint, progress=progress)


def _read_binary(label, fmt, f, size, target, lazy, real_path):
    from nmfcli.io import _numpy

    if fmt == "npy":
        return _numpy.read_npy(label, f, size, dtype=target, lazy=lazy, real_path=real_path)
    if fmt == "npz":
        return _numpy.read_npz(label, f, dtype=target)
    if fmt == "mtx":
        return _numpy.read_mtx(label, f, size, dtype=target)
    raise AssertionError(fmt)


def _read_stdin(fmt, dataset, header, index_col, target, stdin, progress=None) -> Matrix:
    label = "-"
    if fmt == "zarr":
        raise UsageError("-: a Zarr store is a folder and cannot be read from stdin; give its path")
    if stdin is None and (sys.stdin is None or getattr(sys.stdin, "buffer", None) is None):
        raise MissingInputError("-: stdin is closed; give INPUT as a file, or pipe the data in")
    stream = stdin if stdin is not None else sys.stdin.buffer
    raw = _read_all(label, stream, available_memory() // 2, fmt)
    digest = hashlib.sha256(raw).hexdigest()
    if fmt == "csv":
        X, rows, cols = _parse_csv(label, "-", raw, header, index_col, target, progress)
        return Matrix(X, rows, cols, "-", fmt, digest)
    if not raw:
        raise fail(label, "the input is empty")
    if fmt == "h5":
        from nmfcli.io._hdf5 import read_h5_bytes

        X, rows, cols = read_h5_bytes(label, raw, dataset, dtype=target)
        return Matrix(X, rows, cols, "-", fmt, digest)
    X = _read_binary(label, fmt, BytesIO(raw), len(raw), target, False, None)
    return Matrix(X, None, None, "-", fmt, digest)


def _dense(A):
    import scipy.sparse as sp

    return A.toarray() if sp.issparse(A) else np.asarray(A)


def write_matrix(path, A, *, format=None, row_labels=None, col_labels=None, force=False, stdout=None) -> None:
    """Write a matrix as CSV/TSV, NPY, NPZ or HDF5, atomically; "-" writes CSV to stdout.

    Parameters
    ----------
    path : str
        Destination; the format comes from its extension unless ``format`` is given.
    A : array_like of shape (m, n) or scipy.sparse matrix
    format : {"csv", "tsv", "npy", "npz", "h5"}, optional
    row_labels, col_labels : sequence of str, optional
        Written as the first CSV column / header row, or HDF5 attributes; NPY/NPZ
        cannot hold them.
    force : bool, default False
        Replace an existing file.
    stdout : text stream, optional
        Used for "-" instead of sys.stdout. BrokenPipeError propagates.

    Raises
    ------
    OutputError
        The file exists (without force) or cannot be created (exit 73).
    ReadWriteError
        Writing failed part-way (exit 74).
    """
    from nmfcli.io._text import write_text

    path = os.fspath(path)
    if format is not None and format not in WRITE_FORMATS:
        raise UsageError(f"unknown output format {format!r}; choose one of {', '.join(WRITE_FORMATS)}")
    shape = tuple(A.shape)
    for what, labels, count in (("row", row_labels, shape[0]), ("column", col_labels, shape[-1])):
        if labels is not None and len(labels) != count:
            raise ValueError(f"{len(labels)} {what} labels for {count} {what}s")
    if path == "-":
        stream = stdout if stdout is not None else sys.stdout
        write_text(stream, _dense(A), row_labels, col_labels, "\t" if format == "tsv" else ",")
        stream.flush()
        return
    ext = _ext(path)
    fmt = format or write_format(path)
    if is_stream(path):
        _write_stream(path, A, fmt or "csv", row_labels, col_labels)
        return
    if fmt is None:
        raise UsageError(f"{path}: cannot tell the output format from '{ext or path}'; "
                         "use a .csv, .tsv, .npy, .npz or .h5 file name")
    with atomic_path(path, force=force) as tmp:
        if fmt in ("csv", "tsv"):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                write_text(f, _dense(A), row_labels, col_labels, "\t" if fmt == "tsv" else ",")
        elif fmt == "npy":
            with open(tmp, "wb") as f:
                np.save(f, _dense(A), allow_pickle=False)
        elif fmt == "npz":
            import scipy.sparse as sp

            with open(tmp, "wb") as f:
                if sp.issparse(A):
                    sp.save_npz(f, sp.csr_matrix(A))
                else:
                    np.savez(f, X=np.asarray(A))
        else:
            from nmfcli.io._hdf5 import write_h5_matrix

            write_h5_matrix(tmp, A, row_labels, col_labels)


def is_stream(path) -> bool:
    """True for an existing device or named pipe (/dev/null, /dev/stdout, a FIFO): written in
    place, as a stream, since there is no file to replace atomically."""
    import stat

    try:
        mode = os.stat(os.fspath(path)).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _write_stream(path, A, fmt, row_labels, col_labels) -> None:
    """write_matrix into a device or pipe: CSV/TSV (the default, it has no extension) or NPY."""
    from nmfcli.io._text import write_text

    if fmt not in ("csv", "tsv", "npy"):
        raise UsageError(f"{path}: is a device or pipe; it can receive CSV, TSV or NPY, not {fmt}")
    try:
        if fmt == "npy":
            with open(path, "wb") as f:
                np.save(f, _dense(A), allow_pickle=False)
        else:
            with open(path, "w", newline="", encoding="utf-8") as f:
                write_text(f, _dense(A), row_labels, col_labels, "\t" if fmt == "tsv" else ",")
    except BrokenPipeError:
        raise
    except OSError as e:
        raise ReadWriteError(f"{path}: writing failed ({e.strerror or e})") from None


def write_format(path) -> str | None:
    """The format write_matrix gives a file by its extension (one of WRITE_FORMATS), or None."""
    return {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".npy": "npy", ".npz": "npz",
            ".h5": "h5", ".hdf5": "h5"}.get(_ext(os.fspath(path)))


def _jsonable(value, nan_to_null: bool):
    """Plain JSON types from numpy scalars/arrays, tuples and paths; NaN/Inf -> None if asked."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, nan_to_null) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, nan_to_null) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), nan_to_null)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and nan_to_null and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as JSON")


def write_model(path, model: dict, *, force: bool = False) -> None:
    """Write a model as one self-describing HDF5 file (atomically).

    Arrays ("H" of shape (k, n), required; "W" (m, k), "history", "history_iter", ...)
    become datasets with their dtypes; every other entry ("options", "metrics",
    "versions", "row_labels", "k", "loss", ...) a JSON string attribute. The root
    attribute ``nmfcli_model`` = 1 marks the file format version.
    """
    if not isinstance(model.get("H"), np.ndarray):
        raise ValueError("a model needs an 'H' array")
    from nmfcli.io._hdf5 import write_h5_dict

    write_h5_dict(os.fspath(path), model, "nmfcli_model", force=force, jsonable=lambda v: _jsonable(v, False))


def _in_fit_folder(path: str) -> str:
    """The model.h5 inside a fit's output folder, for a path naming the folder; else the path."""
    inside = os.path.join(path, "model.h5")
    return inside if os.path.isdir(path) and os.path.isfile(inside) else path


def read_model(path) -> dict:
    """Read a model written by :func:`write_model` (or the model.h5 of a fit's output folder): the same dict back.

    Raises
    ------
    MissingInputError
        No such file (exit 66).
    DataError
        Not an nmfcli model, or damaged (exit 65).
    """
    from nmfcli.io._hdf5 import read_h5_dict

    given = os.fspath(path)
    path = _in_fit_folder(given)
    if os.path.isdir(path):
        raise MissingInputError(f"{given}: is a folder without a model.h5; give a model file or the folder of a fit")
    model = read_h5_dict(path, "nmfcli_model", "model", "; make one with `nmf fit`")
    H = model.get("H")
    if not isinstance(H, np.ndarray) or H.ndim != 2:
        raise fail(path, "the model has no 2-D 'H' array; the file is damaged or incomplete")
    _check_model_parts(path, model)
    _check_factor_values(path, model, "model")
    return model


_MODEL_DICTS = ("options", "metrics", "weights", "input", "versions", "engine_options", "factors", "alignment")


def _check_model_parts(path: str, model: dict) -> None:
    """The parts of a model agree with its H (k x n) and have the types nmf writes (k, component
    names, labels, W, the option and metric records); else it is damaged."""
    for key in _MODEL_DICTS:
        if model.get(key) is not None and not isinstance(model[key], dict):
            raise fail(path, f"the model's '{key}' is not a record (a JSON object); the file is damaged")
    options = model.get("options") or {}
    for key in ("alpha_W", "l1_ratio"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise fail(path, f"the model's option '{key}' is {value!r}, not a number; the file is damaged")
    loss = model.get("loss")
    if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (str, int, float))):
        raise fail(path, f"the model's loss is {loss!r}; the file is damaged")
    k, n = model["H"].shape
    declared = model.get("k")
    if declared is not None and (not isinstance(declared, int) or isinstance(declared, bool) or declared != k):
        raise fail(path, f"the model's H has {k} rows but the model says k={declared!r}; the file is damaged")
    W = model.get("W")
    if W is not None and (not isinstance(W, np.ndarray) or W.ndim != 2 or W.shape[1] != k):
        shape = " x ".join(map(str, W.shape)) if isinstance(W, np.ndarray) else type(W).__name__
        raise fail(path, f"the model's W is {shape} but its H has {k} rows; the file is damaged")
    for key, count, what in (("components", k, "rows of H"), ("col_labels", n, "columns of H"),
                             ("row_labels", W.shape[0] if isinstance(W, np.ndarray) else None, "rows of W")):
        value = model.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(path, f"the model's '{key}' is not a list of names; the file is damaged")
        if count is not None and len(value) != count:
            raise fail(path, f"the model has {len(value)} {key.replace('_', ' ')} for {count} {what}; "
                             "the file is damaged")



def _check_factor_values(path, state, what):
    """Refuse a model's or checkpoint's factors that hold NaN, infinite or negative values: a
    fit never writes them, so the file is damaged (or was edited), and going on from it
    would give all-NaN outputs or silently clipped ones."""
    for key in ("W", "H", "W_before", "H_before"):
        A = state.get(key)
        if not isinstance(A, np.ndarray) or A.dtype.kind != "f":
            continue
        for bad, word in ((~np.isfinite(A), "NaN or infinite"), (A < 0, "negative")):
            count = int(np.count_nonzero(bad))
            if count:
                i, j = (int(v) for v in np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), A.shape)) \
                    if A.ndim == 2 else (int(np.flatnonzero(bad.ravel())[0]), 0)
                raise fail(path, f"the {what}'s {key} has {count} {word} value{'s' if count > 1 else ''} (the first "
                                 f"at row {i + 1}, column {j + 1}); a fit never writes them: the file is damaged")


def write_checkpoint(path, state: dict, *, force: bool = True) -> None:
    """Save a run's state like a model file (attribute ``nmfcli_checkpoint`` = 1), atomically.

    W or W_before given as a spec (the string an engine returns for a factor it wrote to a
    file block by block) is copied into the checkpoint a row block at a time, so the
    checkpoint stands on its own once that file is gone.
    """
    from nmfcli.io._hdf5 import write_h5_dict

    streamed = tuple(key for key in ("W", "W_before") if isinstance(state.get(key), str))
    write_h5_dict(os.fspath(path), state, "nmfcli_checkpoint", force=force, jsonable=lambda v: _jsonable(v, False),
                  streamed=streamed)


def read_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`write_checkpoint`. A factor it copied in from a
    spec comes back as a spec into the checkpoint (``CKPT.h5::/W``), for the engines to
    read a block of rows at a time (:func:`row_source`)."""
    from nmfcli.io._hdf5 import read_h5_dict

    state = read_h5_dict(os.fspath(path), "nmfcli_checkpoint", "checkpoint", "")
    _check_factor_values(os.fspath(path), state, "checkpoint")
    return state


def write_bytes(path, data: bytes, *, force: bool = False) -> None:
    """Write bytes (a rendered PNG) to a file, atomically."""
    with atomic_path(os.fspath(path), force=force) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_report(path, report: dict, *, force: bool = False, stdout=None) -> None:
    """Write a JSON report (indent 2; NaN/Inf as null), atomically; "-" writes to stdout."""
    text = json.dumps(_jsonable(report, True), indent=2, allow_nan=False) + "\n"
    path = os.fspath(path)
    if path == "-":
        stream = stdout if stdout is not None else sys.stdout
        stream.write(text)
        stream.flush()
        return
    with atomic_path(path, force=force) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def read_report(path) -> dict:
    """Read a JSON report; it must be an object with "k" and "shape"."""
    path = os.fspath(path)
    require_file(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(available_memory() // 2 + 1)
    except OSError as e:
        raise MissingInputError(f"{path}: cannot be opened ({e.strerror or e})") from None
    try:
        report = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise fail(path, "not valid JSON (it is not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise fail(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise fail(path, "not valid JSON (nested too deeply)") from None
    if not isinstance(report, dict) or "k" not in report or "shape" not in report:
        raise fail(path, "not an nmfcli report (a JSON object with 'k' and 'shape' keys is expected)")
    return report


def detect_kind(path) -> str:
    """"model", "checkpoint", "report" or "matrix": by content where cheap, else by extension."""
    path = os.fspath(path)
    if path == "-" or "::" in path and not os.path.exists(path):
        return "matrix"
    if _in_fit_folder(path) != path:
        return "model"
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return "report" if path.lower().endswith(".json") else "matrix"
    if head.startswith(b"\x89HDF\r\n\x1a\n") or _EXTENSIONS.get(_ext(path)) == "h5":
        from nmfcli.io._hdf5 import h5_kind

        kind = h5_kind(path)
        return kind if kind in ("model", "checkpoint") else "matrix"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") or path.lower().endswith(".json"):
        return "report"
    return "matrix"
