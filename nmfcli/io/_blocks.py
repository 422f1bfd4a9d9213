"""Row blocks of a matrix kept in a file: what the out-of-core engines read and write.

:func:`row_source` reads metadata only and returns a :class:`RowSource`, a small
picklable description (format, path, dataset, shape, stored dtype, storage chunks).
Its ``read(start, stop)`` opens the file in the process that calls it, so a Dask
worker or a serial loop reads one block at a time and h5py objects never cross a
process boundary (HDF5 is read from processes, not threads: h5py serialises
threads). :func:`row_writer` is the other direction: W written block by block.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from nmfcli.errors import NMFError, UsageError
from nmfcli.io._common import PARSE_ERRORS, check_dtype, check_shape, column_chunked, fail, require_file

KINDS = ("h5", "zarr", "npy", "folder")


@dataclass(frozen=True)
class RowSource:
    """A 2-D matrix stored in a file (or a folder of row-block files), read rows at a time.

    Attributes
    ----------
    kind : {"h5", "zarr", "npy", "folder"}
    path : str
        The file, store or folder.
    name : str or None
        The dataset inside an HDF5 file or Zarr store.
    shape : tuple of int
        (m, n).
    dtype : numpy.dtype
        The stored element type (a folder: the common type of its blocks).
    chunks : tuple of int or None
        The storage chunk shape of an HDF5/Zarr dataset; None when contiguous.
    parts : tuple of (file, start, stop)
        A folder's row-block files, in row order (sorted by name).
    """

    kind: str
    path: str
    name: str | None
    shape: tuple
    dtype: np.dtype
    chunks: tuple | None = None
    parts: tuple = ()

    @property
    def column_chunked(self) -> bool:
        """True when a storage chunk spans fewer than all columns: a row block then reads many chunks."""
        return column_chunked(self.shape, self.chunks)

    def read(self, start: int, stop: int):
        """Rows [start, stop) as an ndarray (or CSR for a folder of sparse .npz blocks)."""
        if self.kind == "h5":
            from nmfcli.io._hdf5 import read_h5_rows

            return read_h5_rows(self.path, self.name, start, stop)
        if self.kind == "zarr":
            from nmfcli.io._zarr import read_zarr_rows

            return read_zarr_rows(self.path, self.name, start, stop)
        if self.kind == "npy":
            try:
                return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[start:stop])
            except PARSE_ERRORS as e:
                raise fail(self.path, f"cannot map the array ({e})") from None
        pieces = []
        for file, a, b in self.parts:
            if a < stop and b > start:
                block = _read_block_file(file)
                piece = block[max(start, a) - a:min(stop, b) - a]
                pieces.append(piece if hasattr(piece, "tocsr") else np.array(piece))
        if len(pieces) == 1:
            return pieces[0]
        import scipy.sparse as sp

        if any(sp.issparse(p) for p in pieces):
            return sp.vstack([sp.csr_matrix(p) for p in pieces], format="csr")
        return np.concatenate(pieces, axis=0)

    def blocks(self, rows: int, *, align: bool = True) -> list[RowBlock]:
        """The matrix cut into blocks of ``rows`` rows (a folder: one block per file).

        With ``align`` a block holds whole storage chunks, so no chunk is decompressed twice.
        """
        if self.kind == "folder":
            return [RowBlock(self, a, b) for _, a, b in self.parts]
        m = self.shape[0]
        rows = max(1, int(rows))
        if align and self.chunks and self.chunks[0] < rows:
            rows = rows // self.chunks[0] * self.chunks[0]
        return [RowBlock(self, s, min(s + rows, m)) for s in range(0, m, rows)]


@dataclass(frozen=True)
class RowBlock:
    """Rows [start, stop) of a :class:`RowSource`; ``read()`` reads them where it is called."""

    source: RowSource
    start: int
    stop: int

    def read(self):
        return self.source.read(self.start, self.stop)


def _read_block_file(path):
    import scipy.sparse as sp

    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                if "format" in z.files and "indptr" in z.files:
                    return sp.load_npz(path).tocsr()
                if len(z.files) != 1:
                    raise fail(path, f"a row block must hold one array; found {', '.join(z.files)}")
                return z[z.files[0]]
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except NMFError:
        raise
    except PARSE_ERRORS as e:
        raise fail(path, f"cannot read the row block ({type(e).__name__}: {str(e)[:200]})") from None


def _is_zarr(path):
    return any(os.path.exists(os.path.join(path, f)) for f in (".zarray", ".zgroup", "zarr.json"))


def split_spec(spec: str):
    """'m.h5::/X' -> ('m.h5', '/X'), unless a file is literally named so."""
    if "::" in spec and not os.path.exists(spec):
        file, inner = spec.rsplit("::", 1)
        return file, inner or None
    return spec, None


def row_source(spec, *, dataset: str | None = None) -> RowSource:
    """Describe the matrix at ``spec`` for reading in row blocks; reads metadata only.

    Parameters
    ----------
    spec : str or PathLike
        ``FILE.h5[::/dataset]``, a Zarr store (``S.zarr[::name]``), an ``.npy`` file
        (memory-mapped) or a folder of ``.npy``/``.npz`` row blocks (sorted by name,
        all with the same number of columns).
    dataset : str, optional
        The HDF5/Zarr dataset (same as ``::/dataset``).

    Raises
    ------
    MissingInputError
        No such file or folder (exit 66).
    DataError
        Not a dense 2-D real matrix in one of those formats (exit 65).
    """
    from nmfcli.io import _sniff_format

    spec = os.fspath(spec)
    path, inner = split_spec(spec)
    if inner is not None and dataset is not None and inner.strip("/") != dataset.strip("/"):
        raise UsageError(f"{spec}: the dataset is named twice ('{inner}' in the path and '{dataset}')")
    inner = inner or dataset
    require_file(path)
    if os.path.isdir(path) and not (path.lower().rstrip("/").endswith(".zarr") or _is_zarr(path)):
        if inner is not None:
            raise UsageError(f"{path}: a dataset can only be chosen in HDF5 or Zarr files, not in a folder")
        return _open_folder(path)
    fmt = _sniff_format(spec, path)
    if fmt == "h5":
        from nmfcli.io._hdf5 import h5_dataset_info

        name, shape, dtype, chunks = h5_dataset_info(path, path, inner)
        return RowSource("h5", path, name, shape, dtype, chunks)
    if fmt == "zarr":
        from nmfcli.io._zarr import zarr_array_info

        name, shape, dtype, chunks = zarr_array_info(path, path, inner)
        return RowSource("zarr", path, name, shape, dtype, chunks)
    if inner is not None:
        raise UsageError(f"{spec}: a dataset can only be chosen in HDF5 or Zarr files, not {fmt}")
    if fmt == "npy":
        from nmfcli.io._numpy import read_npy

        with open(path, "rb") as f:
            X = read_npy(path, f, os.fstat(f.fileno()).st_size, dtype=None, lazy=True, real_path=path)
        check_dtype(path, X.dtype)
        shape = check_shape(path, X.shape)
        return RowSource("npy", path, None, shape, np.dtype(X.dtype))
    raise fail(path, f"row blocks are read from HDF5, Zarr, NPY or a folder of NPY/NPZ row blocks, not {fmt}; "
               f"convert it first, e.g. nmf convert {path} {os.path.splitext(path)[0]}.h5 --dense")


def _open_folder(path):
    files = sorted(glob.glob(os.path.join(glob.escape(path), "*.npy"))
                   + glob.glob(os.path.join(glob.escape(path), "*.npz")))
    if not files:
        raise fail(path, "the folder holds no .npy or .npz row blocks")
    parts, n, dtype, start = [], None, None, 0
    for file in files:
        block = _read_block_file(file)
        if block.ndim != 2 or (n is not None and block.shape[1] != n):
            raise fail(file, f"every row block must be 2-D with {n or 'the same number of'} columns; "
                       f"this one is {' x '.join(map(str, block.shape))}")
        check_dtype(file, np.dtype(block.dtype))
        n = block.shape[1]
        dtype = block.dtype if dtype is None else np.result_type(dtype, block.dtype)
        parts.append((file, start, start + block.shape[0]))
        start += block.shape[0]
    check_shape(path, (start, n))
    return RowSource("folder", path, None, (start, n), np.dtype(dtype), None, tuple(parts))


def row_writer(spec, shape, dtype, rows: int):
    """A writer for a matrix (m×k) written block by block: ``write(start, stop, block)``, ``close()``, ``spec``.

    ``spec`` is ``FILE.h5[::/name]`` (default name W; the file is created or the
    dataset replaced) or ``STORE.zarr`` (replaced; chunks of ``rows`` rows).
    """
    spec = os.fspath(spec)
    path, inner = split_spec(spec)
    low = path.lower().rstrip("/")
    if low.endswith((".h5", ".hdf5", ".hdf")):
        from nmfcli.io._hdf5 import H5RowWriter

        inner = inner or "W"
        writer = H5RowWriter(path, inner, shape, dtype)
        writer.spec = f"{path}::{inner}"
        return writer
    if low.endswith(".zarr"):
        from nmfcli.io._zarr import ZarrRowWriter

        writer = ZarrRowWriter(path, shape, dtype, rows)
        writer.spec = path
        return writer
    raise UsageError(f"output must be an HDF5 file (.h5) or a zarr store (.zarr); got {spec!r}")


def permute_columns(spec, order) -> None:
    """Reorder the columns of the matrix at ``spec`` (``FILE.h5::/name``, as row_writer wrote
    it) in place, a block of about 16 MiB of rows at a time: column j becomes the old column
    ``order[j]``."""
    spec = os.fspath(spec)
    path, inner = split_spec(spec)
    if not path.lower().rstrip("/").endswith((".h5", ".hdf5", ".hdf")):
        raise UsageError(f"{spec}: only an HDF5 dataset can be reordered in place")
    from nmfcli.io._hdf5 import permute_h5_columns

    permute_h5_columns(path, inner or "W", list(order))

