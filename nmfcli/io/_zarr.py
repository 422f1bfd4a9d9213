"""Zarr stores (a folder): zarr is optional and imported only here, lazily."""

from __future__ import annotations

import math

import numpy as np

from nmfcli.errors import NMFError, OutputError, ReadWriteError, UnavailableError
from nmfcli.io._common import (
    build_sparse,
    check_dtype,
    check_memory,
    check_shape,
    fail,
    float_dtype,
    shape_text,
)


def _zarr(path):
    try:
        import zarr
    except ImportError:
        raise UnavailableError(f"{path}: reading Zarr needs the zarr package; install it with: pip install 'nmfcli[zarr]'") from None
    return zarr


def _walk(group, prefix=""):
    """(name, node, is_array) for every node below group."""
    for name, arr in group.arrays():
        yield f"{prefix}/{name}", arr, True
    for name, sub in group.groups():
        yield f"{prefix}/{name}", sub, False
        yield from _walk(sub, f"{prefix}/{name}")


def _attr(node, key):
    value = node.attrs.get(key)
    return None if value is None else str(value)


def _sparse_spec(node):
    enc = _attr(node, "encoding-type")
    if enc in ("csr_matrix", "csc_matrix"):
        return enc[:3], node.attrs.get("shape")
    if _attr(node, "h5sparse_format"):
        return _attr(node, "h5sparse_format"), node.attrs.get("h5sparse_shape")
    return None


def read_zarr(path: str, store: str, dataset: str | None, *, dtype, lazy: bool):
    """(X, row_labels, col_labels) from a Zarr folder; lazy gives the zarr array itself."""
    zarr = _zarr(path)
    try:
        return _read(zarr, path, store, dataset, dtype, lazy)
    except NMFError:
        raise
    except Exception as e:  # zarr's exception classes differ between versions; all mean a bad store
        raise fail(path, f"not a readable Zarr store ({type(e).__name__}: {str(e)[:200]})") from None


def _node(zarr, path, store, dataset):
    """The array or sparse group chosen by dataset (or the only matrix in the store), and its name."""
    root = zarr.open(store, mode="r")
    if dataset is not None:
        node = root
        for part in [p for p in dataset.split("/") if p]:
            if not hasattr(node, "arrays") or part not in node:
                names = [n for n, _, a in _walk(root) if a] if hasattr(root, "arrays") else []
                raise fail(path, f"no dataset '/{dataset.strip('/')}'; datasets in this file: {', '.join(names) or '(none)'}")
            node = node[part]
    elif hasattr(root, "arrays"):
        nodes = list(_walk(root))
        sparse = [n for n, g, a in nodes if not a and _sparse_spec(g)]
        inside = tuple(s + "/" for s in sparse)
        cands = sorted([n for n, x, a in nodes if a and x.ndim == 2 and not n.startswith(inside)] + sparse)
        if not cands:
            names = [n for n, _, a in nodes if a]
            raise fail(path, f"no 2-D dataset or sparse matrix group in this store; datasets in this store: {', '.join(names) or '(none)'}")
        if len(cands) > 1:
            raise fail(path, f"holds several matrices ({', '.join(cands)}); name one as {path}::{cands[0]}")
        node = root[cands[0].lstrip("/")]
        dataset = cands[0]
    else:
        node = root
    return node, dataset


def _read(zarr, path, store, dataset, dtype, lazy):
    node, dataset = _node(zarr, path, store, dataset)
    name = "/" + (dataset or "").strip("/")
    if hasattr(node, "arrays"):
        spec = _sparse_spec(node)
        if spec is None or spec[0] not in ("csr", "csc"):
            raise fail(path, f"'{name}' is a group, not a dataset or csr/csc sparse matrix")
        for key in ("data", "indices", "indptr"):
            if key not in node:
                raise fail(path, f"sparse group '{name}' lacks '{key}'")
        nnz = node["data"].shape[0] if node["data"].ndim == 1 else -1
        check_memory(path, f"sparse group '{name}' ({nnz} values)", max(nnz, 0) * 32)
        X = build_sparse(path, spec[0], spec[1], node["data"][...], node["indices"][...], node["indptr"][...], dtype)
    else:
        check_dtype(path, np.dtype(node.dtype), f"dataset '{name}' ")
        check_shape(path, node.shape, f"dataset '{name}'")
        if lazy:
            X = node
        else:
            dt = float_dtype(node.dtype, dtype)
            check_memory(path, f"dataset '{name}' ({shape_text(node.shape)} {dt.name})",
                         math.prod(node.shape) * dt.itemsize)
            X = np.ascontiguousarray(node[...], dtype=dt)
    labels = []
    for key, count in (("row_labels", X.shape[0]), ("col_labels", X.shape[1])):
        value = node.attrs.get(key)
        if value is not None:
            if not isinstance(value, list) or len(value) != count:
                raise fail(path, f"'{key}' of '{name}' must be a list of {count} labels")
            value = [str(v) for v in value]
        labels.append(value)
    return X, labels[0], labels[1]


def zarr_array_info(path: str, store: str, dataset: str | None):
    """(name, shape, stored dtype, chunk shape) of a dense 2-D Zarr array; reads metadata only."""
    zarr = _zarr(path)
    try:
        node, dataset = _node(zarr, path, store, dataset)
        name = "/" + (dataset or "").strip("/")
        if hasattr(node, "arrays"):
            raise fail(path, f"'{name}' is a group (a sparse matrix?); row blocks are read from dense "
                       "arrays only: save the sparse matrix as a folder of .npz row blocks")
        check_dtype(path, np.dtype(node.dtype), f"dataset '{name}' ")
        check_shape(path, node.shape, f"dataset '{name}'")
        return (dataset or None), tuple(int(s) for s in node.shape), np.dtype(node.dtype), tuple(node.chunks)
    except NMFError:
        raise
    except Exception as e:  # zarr's exception classes differ between versions; all mean a bad store
        raise fail(path, f"not a readable Zarr store ({type(e).__name__}: {str(e)[:200]})") from None


def read_zarr_rows(path: str, name: str | None, start: int, stop: int):
    """Rows [start, stop) of a Zarr array, opened here (in the process that reads)."""
    zarr = _zarr(path)
    try:
        node = zarr.open(path, mode="r")
        node = node[name.strip("/")] if name and name.strip("/") else node
        return node[start:stop]
    except Exception as e:  # noqa: BLE001 - zarr's exception classes differ between versions
        raise ReadWriteError(f"{path}: reading rows {start + 1}-{stop} failed "
                             f"({type(e).__name__}: {str(e)[:200]})") from None


class ZarrRowWriter:
    """A Zarr array (m×k) replaced by a new one and written block by block."""

    def __init__(self, path: str, shape, dtype, rows: int):
        zarr = _zarr(path)
        self.path = path
        try:
            self.z = zarr.open_array(path, mode="w", shape=tuple(shape), chunks=(max(1, int(rows)), shape[1]),
                                     dtype=dtype)
        except Exception as e:  # noqa: BLE001
            raise OutputError(f"{path}: cannot be written ({type(e).__name__}: {str(e)[:200]})") from None

    def write(self, start: int, stop: int, block) -> None:
        try:
            self.z[start:stop] = block
        except Exception as e:  # noqa: BLE001
            raise ReadWriteError(f"{self.path}: writing rows {start + 1}-{stop} failed "
                                 f"({type(e).__name__}: {str(e)[:200]})") from None

    def close(self) -> None:
        pass
