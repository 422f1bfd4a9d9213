"""HDF5: matrices (dense datasets and sparse groups), model and checkpoint files.

The only home of h5py. Nothing that points outside the file (external links,
external storage, virtual datasets) is ever followed.
"""

from __future__ import annotations

import json
import math

import numpy as np

from nmfcli.errors import NMFError, OutputError, ReadWriteError
from nmfcli.io._common import (
    PARSE_ERRORS,
    atomic_path,
    build_sparse,
    check_dtype,
    check_memory,
    check_shape,
    fail,
    float_dtype,
    human_bytes,
    require_file,
    shape_text,
)

_SPARSE_PARTS = ("data", "indices", "indptr")
_LIBVER = ("v108", "latest")  # new-style object headers: attributes over 64 KiB (long label lists)


def _h5py():
    import h5py

    return h5py


def open_h5(path: str, file: str):
    """Open an HDF5 file read-only; a damaged or foreign file is a DataError."""
    h5py = _h5py()
    require_file(path, file)
    try:
        return h5py.File(file, "r")
    except PARSE_ERRORS:
        raise fail(path, "not an HDF5 file, or the file is corrupt") from None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def _sparse_spec(g):
    """(format, shape) when group g holds a CSR/CSC matrix, else None."""
    a = g.attrs
    if "encoding-type" in a and _text(a["encoding-type"]) in ("csr_matrix", "csc_matrix"):
        return _text(a["encoding-type"])[:3], a.get("shape")
    if "h5sparse_format" in a:
        return _text(a["h5sparse_format"]), a.get("h5sparse_shape")
    if "shape" in a and all(k in g for k in _SPARSE_PARTS):
        return (_text(a["format"]) if "format" in a else "csr"), a["shape"]
    return None


def _inventory(f):
    """All dataset names, the candidate matrices (2-D datasets, sparse groups), external links."""
    h5py = _h5py()
    datasets, candidates, sparse = [], [], []

    def visit(name, link):
        full = "/" + name
        if not isinstance(link, h5py.HardLink):
            return None
        try:
            obj = f[name]
            if isinstance(obj, h5py.Dataset):
                datasets.append(full)
                if obj.ndim == 2:
                    candidates.append(full)
            elif isinstance(obj, h5py.Group) and _sparse_spec(obj) is not None:
                sparse.append(full)
        except PARSE_ERRORS:
            pass
        return None

    f.visititems_links(visit)
    inside = tuple(s + "/" for s in sparse)
    candidates = [c for c in candidates if not c.startswith(inside)] + sparse
    return datasets, sorted(candidates)


def _listing(names) -> str:
    names = list(names)
    if not names:
        return "(none)"
    more = f", ... ({len(names) - 20} more)" if len(names) > 20 else ""
    return ", ".join(names[:20]) + more


def _resolve(path, f, name):
    """The object at name, refusing external links on the way."""
    h5py = _h5py()
    cur = f
    full = "/" + name.strip("/")
    for part in [p for p in name.split("/") if p]:
        if not isinstance(cur, h5py.Group):
            cur = None
            break
        link = cur.get(part, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise fail(path, f"'{full}' goes through an external link to {link.filename}:{link.path}; "
                       "nmf reads only data stored inside the file")
        if link is None:
            cur = None
            break
        try:
            cur = cur[part]
        except PARSE_ERRORS:  # a dangling soft link
            cur = None
            break
    if cur is None:
        datasets, _ = _inventory(f)
        raise fail(path, f"no dataset '{full}'; datasets in this file: {_listing(datasets)}")
    return cur


def _check_inside(path, name, d):
    """Refuse a dataset whose bytes live in other files."""
    if d.is_virtual:
        raise fail(path, f"dataset '{name}' is a virtual dataset mapping other files; nmf reads only data stored inside the file")
    if d.external:
        files = ", ".join(sorted({_text(e[0]) for e in d.external}))
        raise fail(path, f"dataset '{name}' keeps its data in external files ({files}); nmf reads only data stored inside the file")


def _check_h5_dtype(path, name, dt):
    if dt.kind == "O":
        raise fail(path, f"dataset '{name}' holds text or variable-length data; nmf needs real numbers (integers or floats)")
    check_dtype(path, dt, f"dataset '{name}' ")


# A dataset of a model or checkpoint larger than this must have about its size in the file:
# nmf writes them uncompressed, so one that declares gigabytes and stores nothing is damaged.
_UNSTORED_LIMIT = 64 << 20


def _read_small(path, name, d):
    """A whole dataset that has already been bounded in size."""
    _check_inside(path, name, d)
    declared = math.prod(d.shape or ()) * d.dtype.itemsize
    if declared > _UNSTORED_LIMIT:
        stored = d.id.get_storage_size()
        if stored * 16 < declared:
            raise fail(path, f"dataset '{name}' declares {shape_text(d.shape)} {d.dtype.name} "
                             f"({human_bytes(declared)}) but the file stores {human_bytes(stored)} of it; "
                             "the file is damaged")
    check_memory(path, f"dataset '{name}' ({shape_text(d.shape or ())} {d.dtype.name})",
                 math.prod(d.shape or ()) * max(d.dtype.itemsize, 8))
    return d[()]


def _labels(path, name, holder, parent, key, count):
    """Labels from attribute `key` on holder, or a sibling dataset `key` in parent."""
    h5py = _h5py()
    value = None
    if key in holder.attrs:
        value = holder.attrs[key]
    elif parent is not None and isinstance(parent.get(key, getlink=True), h5py.HardLink) \
            and isinstance(parent[key], h5py.Dataset):
        d = parent[key]
        if d.shape != (count,):
            raise fail(path, f"'{key}' has shape {d.shape} but '{name}' needs {count} labels")
        value = _read_small(path, key, d)
    if value is None:
        return None
    value = np.asarray(value)
    if value.ndim != 1 or value.shape[0] != count:
        raise fail(path, f"'{key}' of '{name}' has {value.size} entries but the matrix needs {count}")
    return [_text(v) for v in value.tolist()]


def _anndata_labels(path, f, key, count):
    """AnnData keeps row names in /obs/<_index> and column names in /var/<_index>."""
    h5py = _h5py()
    g = f.get(key)
    if not isinstance(g, h5py.Group) or "_index" not in g.attrs:
        return None
    col = _text(g.attrs["_index"])
    d = g.get(col)
    if not isinstance(d, h5py.Dataset) or d.shape != (count,):
        return None
    return [_text(v) for v in np.asarray(_read_small(path, f"/{key}/{col}", d)).tolist()]


def read_h5_bytes(path: str, raw: bytes, dataset: str | None, *, dtype):
    """Read a matrix from HDF5 bytes held in memory (stdin): (X, row_labels, col_labels)."""
    from io import BytesIO

    h5py = _h5py()
    try:
        f = h5py.File(BytesIO(raw), "r")
    except PARSE_ERRORS:
        raise fail(path, "not an HDF5 file, or the file is corrupt") from None
    return read_h5(path, f, dataset, dtype=dtype, lazy=False)[:3]


def read_h5(path: str, file, dataset: str | None, *, dtype, lazy: bool):
    """Read a matrix from an HDF5 file (name or open File): (X, row_labels, col_labels, keep_open)."""
    f = open_h5(path, file) if isinstance(file, str) else file
    keep = False
    try:
        result = _read_h5(path, f, dataset, dtype, lazy)
        keep = result[3]
        return result
    except NMFError:
        raise
    except PARSE_ERRORS as e:
        raise fail(path, f"the HDF5 file is corrupt ({type(e).__name__}: {str(e)[:200]})") from None
    finally:
        if not keep:
            f.close()


def _is_anndata(f):
    return "encoding-type" in f.attrs and _text(f.attrs["encoding-type"]) == "anndata"


def _choose_dataset(path, f, dataset):
    """The absolute name of the matrix to read: the one named, else the file's only one
    (AnnData's /X when the file is AnnData), else an error listing the candidates."""
    if dataset is None:
        datasets, candidates = _inventory(f)
        if _is_anndata(f) and "/X" in candidates:
            candidates = ["/X"]
        if not candidates:
            raise fail(path, f"no 2-D dataset or sparse matrix group in this file; datasets in this file: {_listing(datasets)}")
        if len(candidates) > 1:
            raise fail(path, f"holds several matrices ({_listing(candidates)}); name one as {path}::{candidates[0]}")
        dataset = candidates[0]
    return "/" + dataset.strip("/")


def _read_h5(path, f, dataset, dtype, lazy):
    h5py = _h5py()
    name = _choose_dataset(path, f, dataset)
    obj = _resolve(path, f, name)
    parent = obj.parent if obj.name else None
    if isinstance(obj, h5py.Group):
        spec = _sparse_spec(obj)
        if spec is None:
            datasets, _ = _inventory(f)
            raise fail(path, f"'{name}' is a group, not a dataset or sparse matrix; datasets in this file: {_listing(datasets)}")
        X = _read_sparse_group(path, name, obj, spec, dtype)
        holder = obj
    else:
        d = obj
        _check_inside(path, name, d)
        _check_h5_dtype(path, name, d.dtype)
        if d.shape is None:
            raise fail(path, f"dataset '{name}' is empty (no dataspace)")
        check_shape(path, d.shape, f"dataset '{name}'")
        holder = d
        if lazy:
            X = d
        else:
            dt = float_dtype(d.dtype, dtype)
            check_memory(path, f"dataset '{name}' ({shape_text(d.shape)} {dt.name})",
                         math.prod(d.shape) * dt.itemsize)
            X = np.empty(d.shape, dtype=dt)
            if X.size:
                d.read_direct(X)
    m, n = X.shape
    rows = _labels(path, name, holder, parent, "row_labels", m)
    cols = _labels(path, name, holder, parent, "col_labels", n)
    if name == "/X" and _is_anndata(f):
        rows = rows or _anndata_labels(path, f, "obs", m)
        cols = cols or _anndata_labels(path, f, "var", n)
    return X, rows, cols, isinstance(X, h5py.Dataset)


def _read_sparse_group(path, name, g, spec, dtype):
    h5py = _h5py()
    fmt, shape = spec
    if fmt not in ("csr", "csc"):
        raise fail(path, f"sparse group '{name}' is in '{fmt}' format; nmf reads csr or csc")
    if shape is None:
        raise fail(path, f"sparse group '{name}' has no shape attribute")
    parts = {}
    for key in _SPARSE_PARTS:
        link = g.get(key, getlink=True)
        if not isinstance(link, (h5py.HardLink, h5py.SoftLink)):
            what = "an external link" if isinstance(link, h5py.ExternalLink) else "missing"
            raise fail(path, f"sparse group '{name}': '{key}' is {what}; nmf needs data, indices and indptr datasets inside the file")
        d = g[key]
        if not isinstance(d, h5py.Dataset) or d.shape is None or len(d.shape) != 1:
            raise fail(path, f"sparse group '{name}': '{key}' must be a 1-D dataset")
        _check_inside(path, f"{name}/{key}", d)
        if d.dtype.kind not in "iuf":
            _check_h5_dtype(path, f"{name}/{key}", d.dtype)
        parts[key] = d
    nnz = parts["data"].shape[0]
    if parts["indices"].shape[0] != nnz:
        raise fail(path, f"sparse group '{name}' has {nnz} values but {parts['indices'].shape[0]} indices")
    try:
        dims = [int(s) for s in np.asarray(shape).ravel()]
    except PARSE_ERRORS:
        dims = []
    if len(dims) != 2 or min(dims) < 0:
        raise fail(path, f"sparse group '{name}' has a shape attribute that is not two non-negative integers")
    major = dims[0] if fmt == "csr" else dims[1]
    if parts["indptr"].shape[0] != major + 1:
        raise fail(path, f"sparse group '{name}': 'indptr' has {parts['indptr'].shape[0]} entries, expected {major + 1} for shape {shape_text(dims)}")
    itemsize = np.dtype(dtype).itemsize
    check_memory(path, f"sparse group '{name}' ({shape_text(dims)}, {nnz} values)",
                 nnz * (itemsize + parts["data"].dtype.itemsize + 2 * parts["indices"].dtype.itemsize) + (major + 1) * 16)
    data, indices, indptr = (parts[k][()] for k in _SPARSE_PARTS)
    return build_sparse(path, fmt, dims, data, indices, indptr, dtype)


def write_h5_matrix(tmp: str, A, row_labels, col_labels) -> None:
    """Dense A as dataset /X, sparse A as an AnnData-style CSR group /X; labels as attributes."""
    import scipy.sparse as sp

    h5py = _h5py()
    with h5py.File(tmp, "w", libver=_LIBVER) as f:
        if sp.issparse(A):
            A = sp.csr_matrix(A)
            obj = f.create_group("X")
            obj.attrs["encoding-type"] = "csr_matrix"
            obj.attrs["encoding-version"] = "0.1.0"
            obj.attrs["shape"] = np.asarray(A.shape, dtype=np.int64)
            for key in _SPARSE_PARTS:
                obj.create_dataset(key, data=getattr(A, key))
        else:
            obj = f.create_dataset("X", data=np.asarray(A))
        for key, labels in (("row_labels", row_labels), ("col_labels", col_labels)):
            if labels is not None:
                obj.attrs[key] = np.array([str(s) for s in labels], dtype=h5py.string_dtype())


STREAMED = "nmfcli_streamed"  # the attribute naming datasets copied in from other files, row block by row block
_COPY_BYTES = 16 << 20


def write_h5_dict(path: str, content: dict, marker: str, *, force: bool, jsonable, streamed=()) -> None:
    """Arrays as datasets, everything else as JSON string attributes, plus a format marker.

    ``streamed``: keys whose values are specs of matrices in other files (``FILE.h5::/name``,
    as an engine streaming W returns them); each is copied in as a dataset of that key, a row
    block at a time, and listed in the attribute ``nmfcli_streamed``.
    """
    h5py = _h5py()
    with atomic_path(path, force=force) as tmp:
        with h5py.File(tmp, "w", libver=_LIBVER) as f:
            f.attrs[marker] = 1
            for key, value in content.items():
                if key == marker:
                    continue
                if key in streamed:
                    _copy_rows(value, f, key)
                elif isinstance(value, np.ndarray):
                    f.create_dataset(key, data=value)
                else:
                    f.attrs[key] = json.dumps(jsonable(value), allow_nan=True)
            if streamed:
                f.attrs[STREAMED] = json.dumps(list(streamed))


def permute_h5_columns(path: str, name: str, order: list) -> None:
    """io.permute_columns for an HDF5 dataset."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r+") as f:
            d = f[name]
            if sorted(order) != list(range(d.shape[1])):
                raise ValueError(f"order {order} is not a permutation of the {d.shape[1]} columns")
            for start, stop in _row_blocks(d.shape, d.dtype):
                d[start:stop] = d[start:stop][:, order]
    except PARSE_ERRORS as e:
        raise ReadWriteError(f"{path}: reordering the columns of '{name}' failed "
                             f"({type(e).__name__}: {str(e)[:200]})") from None


def _copy_rows(spec: str, f, key: str) -> None:
    """The matrix at spec into dataset ``key`` of the open file f, about 16 MiB of rows at a time."""
    from nmfcli.io._blocks import row_source

    source = row_source(spec)
    d = f.create_dataset(key, shape=source.shape, dtype=source.dtype)
    for start, stop in _row_blocks(source.shape, source.dtype):
        d[start:stop] = source.read(start, stop)


def _row_blocks(shape, dtype):
    """(start, stop) of the blocks of about _COPY_BYTES of rows that cover an m×n matrix."""
    m, n = shape
    rows = max(1, _COPY_BYTES // max(1, n * np.dtype(dtype).itemsize))
    return [(start, min(m, start + rows)) for start in range(0, m, rows)]


def _streamed_keys(path, f) -> list:
    if STREAMED not in f.attrs:
        return []
    try:
        keys = json.loads(_text(f.attrs[STREAMED]))
    except (ValueError, TypeError):
        keys = None
    dataset = _h5py().Dataset
    if not isinstance(keys, list) or not all(isinstance(k, str) and isinstance(f.get(k), dataset) and f[k].ndim == 2
                                             for k in keys):
        raise fail(path, f"attribute '{STREAMED}' does not name 2-D datasets of this file; the file is damaged")
    return keys


def read_h5_dict(path: str, marker: str, what: str, hint: str) -> dict:
    """Inverse of write_h5_dict (a streamed dataset comes back as its spec, ``path::/key``);
    refuses a file without the marker."""
    h5py = _h5py()
    f = open_h5(path, path)
    try:
        with f:
            if marker not in f.attrs:
                raise fail(path, f"not an nmfcli {what} (no '{marker}' attribute){hint}")
            version = f.attrs[marker]
            if not isinstance(version, (int, np.integer)) or int(version) > 1:
                raise fail(path, f"was written by a newer nmfcli ({what} format {version}); upgrade nmfcli to read it")
            out = {}
            streamed = _streamed_keys(path, f)
            for key in f:
                if f.get(key, getlink=True).__class__ is not h5py.HardLink:
                    raise fail(path, f"'{key}' is a link; an nmfcli {what} holds only plain datasets")
                d = f[key]
                if isinstance(d, h5py.Dataset):
                    _check_h5_dtype(path, key, d.dtype)
                    # a streamed matrix stays in the file: its spec, for reading in row blocks
                    out[key] = f"{path}::/{key}" if key in streamed else _read_small(path, key, d)
            for key, value in f.attrs.items():
                if key in (marker, STREAMED):
                    continue
                try:
                    out[key] = json.loads(_text(value))
                except (ValueError, TypeError):
                    raise fail(path, f"attribute '{key}' is not valid JSON; the file is damaged") from None
            return out
    except NMFError:
        raise
    except PARSE_ERRORS as e:
        raise fail(path, f"the HDF5 file is corrupt ({type(e).__name__}: {str(e)[:200]})") from None


def h5_declared_shape(file: str, dataset: str | None):
    """(m, n, nnz or None, stored dtype) of the one matrix (or the named one) of an HDF5 file, from metadata."""
    h5py = _h5py()
    with h5py.File(file, "r") as f:
        name = _choose_dataset(file, f, dataset)
        if f.get(name, getlink=True).__class__ is not h5py.HardLink:
            return None  # the reader refuses links out of the file
        obj = f[name]
        if isinstance(obj, h5py.Dataset):
            return (int(obj.shape[0]), int(obj.shape[1]), None, obj.dtype) \
                if obj.shape is not None and len(obj.shape) == 2 else None
        spec = _sparse_spec(obj)
        if spec is None:
            return None
        m, n = (int(v) for v in np.asarray(spec[1]).ravel())
        return (m, n, int(obj["data"].shape[0]), obj["data"].dtype)


def h5_kind(file: str) -> str | None:
    """'model' / 'checkpoint' by marker attribute, 'matrix' for other HDF5, None if unreadable."""
    h5py = _h5py()
    try:
        with h5py.File(file, "r") as f:
            if "nmfcli_model" in f.attrs:
                return "model"
            if "nmfcli_checkpoint" in f.attrs:
                return "checkpoint"
            return "matrix"
    except PARSE_ERRORS:
        return None


def h5_dataset_info(path: str, file: str, dataset: str | None):
    """(name, shape, stored dtype, chunk shape or None) of a dense 2-D dataset; reads metadata only.

    The row-block readers use this: the dataset is chosen and checked as read_h5 does,
    but a sparse group is refused (it cannot be read in row blocks without loading it).
    """
    h5py = _h5py()
    f = open_h5(path, file)
    try:
        with f:
            name = _choose_dataset(path, f, dataset)
            d = _resolve(path, f, name)
            if isinstance(d, h5py.Group):
                raise fail(path, f"'{name}' is a group (a sparse matrix?); row blocks are read from dense "
                           "datasets only: save the sparse matrix as a folder of .npz row blocks")
            _check_inside(path, name, d)
            _check_h5_dtype(path, name, d.dtype)
            if d.shape is None:
                raise fail(path, f"dataset '{name}' is empty (no dataspace)")
            check_shape(path, d.shape, f"dataset '{name}'")
            return name, tuple(int(s) for s in d.shape), np.dtype(d.dtype), d.chunks
    except NMFError:
        raise
    except PARSE_ERRORS as e:
        raise fail(path, f"the HDF5 file is corrupt ({type(e).__name__}: {str(e)[:200]})") from None


def h5_chunks(X):
    """The storage chunk shape of an open dataset (None when contiguous or not a dataset)."""
    return getattr(X, "chunks", None) if isinstance(X, _h5py().Dataset) else None


def read_h5_rows(path: str, name: str, start: int, stop: int):
    """Rows [start, stop) of a dataset, opening the file here (in the process that reads)."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            return f[name][start:stop]
    except PARSE_ERRORS as e:
        raise ReadWriteError(f"{path}: reading rows {start + 1}-{stop} of '{name}' failed "
                             f"({type(e).__name__}: {str(e)[:200]})") from None


class H5RowWriter:
    """A dataset (m×k) written block by block, in place, inside an HDF5 file (created if missing)."""

    def __init__(self, path: str, name: str, shape, dtype):
        h5py = _h5py()
        self.path, self.name = path, name
        try:
            self.f = h5py.File(path, "a")
            if name in self.f:
                del self.f[name]
            self.d = self.f.create_dataset(name, shape=tuple(shape), dtype=dtype)
        except PARSE_ERRORS as e:
            raise OutputError(f"{path}: cannot be written ({type(e).__name__}: {str(e)[:200]})") from None

    def write(self, start: int, stop: int, block) -> None:
        try:
            self.d[start:stop] = block
        except PARSE_ERRORS as e:
            raise ReadWriteError(f"{self.path}: writing rows {start + 1}-{stop} of '{self.name}' failed "
                                 f"({type(e).__name__}: {str(e)[:200]})") from None

    def close(self) -> None:
        self.f.close()
