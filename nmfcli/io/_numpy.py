"""NPY, NPZ and MatrixMarket readers: every size is checked against the bytes in
the file and the memory available before anything is allocated."""

from __future__ import annotations

import io as _stdio
import math
import re
import warnings
import zipfile

import numpy as np

from nmfcli.errors import NMFError
from numpy.lib import format as npformat

from nmfcli.io._common import (
    PARSE_ERRORS,
    build_sparse,
    check_dtype,
    check_memory,
    check_shape,
    fail,
    float_dtype,
    human_bytes,
    shape_text,
)

try:  # numpy >= 2 keeps the version-generic reader private
    from numpy.lib._format_impl import _read_array_header
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.lib.format import _read_array_header  # type: ignore[attr-defined,no-redef]

_MAX_HEADER = 100_000


def _npy_header(path: str, f, where: str = ""):
    """Read and check an NPY header from f: (shape, fortran_order, dtype)."""
    try:
        version = npformat.read_magic(f)
    except PARSE_ERRORS:
        raise fail(path, f"{where}is not an NPY file (the magic string is missing)") from None
    try:
        shape, fortran, dtype = _read_array_header(f, version, max_header_size=_MAX_HEADER)
    except PARSE_ERRORS as e:
        raise fail(path, f"{where}the NPY header is corrupt ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    return shape, fortran, dtype


def _check_claim(path, shape, dtype, data_bytes, where="", *, lazy=False, target=None, allow_text=False):
    """Compare what an NPY header claims with the bytes present and the memory free."""
    if allow_text and dtype.kind in "SU" and len(shape) <= 1:
        return
    check_dtype(path, dtype, where)
    if where == "":
        check_shape(path, shape)
    else:
        if len(shape) not in (1, 2):
            raise fail(path, f"{where}is {len(shape)}-D; nmf needs a 2-D matrix (rows x columns)")
    count = math.prod(int(s) for s in shape)
    need = count * dtype.itemsize
    if need > data_bytes:
        raise fail(
            path,
            f"{where}the header claims {shape_text(shape)} {dtype.name} ({human_bytes(need)}) but the file holds "
            f"{data_bytes} bytes of data; the file is truncated or corrupt",
        )
    if not lazy:
        converted = float_dtype(dtype, target)
        extra = count * converted.itemsize if dtype != converted else 0
        check_memory(path, f"{where or 'the array '}({shape_text(shape)} {dtype.name})", need + extra)


def read_npy(path: str, f, size: int, *, dtype, lazy: bool, real_path: str | None):
    """Read an NPY array from binary file f (size bytes long); mmap real_path when lazy."""
    shape, fortran, dt = _npy_header(path, f)
    _check_claim(path, shape, dt, size - f.tell(), lazy=lazy and real_path is not None, target=dtype)
    if lazy and real_path is not None:
        try:
            return np.load(real_path, mmap_mode="r", allow_pickle=False)
        except PARSE_ERRORS as e:
            raise fail(path, f"cannot map the array ({e})") from None
    f.seek(0)
    try:
        A = npformat.read_array(f, allow_pickle=False, max_header_size=_MAX_HEADER)
    except PARSE_ERRORS as e:
        raise fail(path, f"cannot read the array ({e})") from None
    return np.ascontiguousarray(A, dtype=float_dtype(A.dtype, dtype))


def _member(path: str, zf: zipfile.ZipFile, name: str, *, allow_text: bool = False):
    """One .npy member of an npz, its header checked before it is read."""
    info = zf.getinfo(name)
    key = name[:-4] if name.endswith(".npy") else name
    where = f"member '{key}': "
    with zf.open(info) as m:
        shape, _, dt = _npy_header(path, m, where)
        header_len = m.tell() if m.seekable() else None
    data_bytes = info.file_size - (header_len or 0)
    _check_claim(path, shape, dt, data_bytes, where, allow_text=allow_text)
    with zf.open(info) as m:
        return npformat.read_array(_stdio.BufferedReader(m), allow_pickle=False, max_header_size=_MAX_HEADER)


def read_npz(path: str, f, *, dtype):
    """A scipy.sparse.save_npz file (to CSR) or an npz holding one 2-D array."""
    try:
        zf = zipfile.ZipFile(f)
    except PARSE_ERRORS:
        raise fail(path, "not a valid npz (zip) file") from None
    with zf:
        try:
            names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
            if not names:
                raise fail(path, "the npz file holds no arrays")
            if "format" in names and "shape" in names:
                return _read_sparse_npz(path, zf, names, dtype)
            if len(names) != 1:
                listed = ", ".join(sorted(names)[:20])
                raise fail(
                    path,
                    f"holds {len(names)} arrays ({listed}) and is not a scipy.sparse file; nmf reads a sparse matrix "
                    "saved by scipy.sparse.save_npz or an npz holding one 2-D array",
                )
            (key, name), = names.items()
            A = _member(path, zf, name)
            if A.ndim != 2:
                raise fail(path, f"member '{key}': the array is {A.ndim}-D; nmf needs a 2-D matrix (rows x columns)")
            check_shape(path, A.shape)
            return np.ascontiguousarray(A, dtype=float_dtype(A.dtype, dtype))
        except NMFError:
            raise
        except PARSE_ERRORS as e:
            raise fail(path, f"the npz file is corrupt ({type(e).__name__}: {str(e)[:200]})") from None


def _read_sparse_npz(path, zf, names, dtype):
    fmt_arr = _member(path, zf, names["format"], allow_text=True)
    fmt = fmt_arr.item()
    fmt = fmt.decode("ascii", "replace") if isinstance(fmt, bytes) else str(fmt)
    if fmt not in ("csr", "csc", "coo"):
        raise fail(path, f"holds a scipy.sparse '{fmt}' matrix; nmf reads csr, csc or coo")
    need = ("data", "row", "col") if fmt == "coo" else ("data", "indices", "indptr")
    missing = [k for k in need if k not in names]
    if missing:
        raise fail(path, f"the sparse {fmt} file lacks its '{missing[0]}' array; the file is incomplete")
    shape = _member(path, zf, names["shape"])
    parts = [_member(path, zf, names[k]) for k in need]
    return build_sparse(path, fmt, shape, parts[0], parts[1], parts[2], dtype)


_MM_BANNER = re.compile(rb"%%matrixmarket\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", re.IGNORECASE)


def read_mtx(path: str, f, size: int, *, dtype):
    """A MatrixMarket file: header and size line checked, then the numbers read by _mtx_numbers."""

    first = f.readline(1024)
    mt = _MM_BANNER.match(first.strip())
    if not mt:
        raise fail(path, "not a MatrixMarket file (the first line must start with %%MatrixMarket)")
    obj, layout, field, symmetry = (g.decode("ascii", "replace").lower() for g in mt.groups())
    if obj != "matrix":
        raise fail(path, f"holds a MatrixMarket '{obj}'; nmf reads a 'matrix'")
    if layout not in ("coordinate", "array"):
        raise fail(path, f"unknown MatrixMarket layout '{layout}'; expected coordinate or array")
    if field not in ("real", "integer", "double", "pattern", "unsigned-integer"):
        what = "complex numbers" if field == "complex" else f"'{field}' values"
        raise fail(path, f"holds {what}; nmf needs real numbers (integers or floats)")
    if symmetry not in ("general", "symmetric", "skew-symmetric"):
        raise fail(path, f"unsupported MatrixMarket symmetry '{symmetry}'")
    # Headers the MatrixMarket format forbids (scipy's reader aborted or crashed the process on
    # some of them: array pattern; a symmetric array that is not square).
    if layout == "array" and field == "pattern":
        raise fail(path, "a MatrixMarket array cannot be 'pattern' (only coordinate files list bare positions)")
    if symmetry == "skew-symmetric" and field == "unsigned-integer":
        raise fail(path, "a skew-symmetric MatrixMarket matrix cannot hold unsigned integers")
    lineno = 1
    while True:
        line = f.readline(1 << 16)
        lineno += 1
        if not line:
            raise fail(path, "the size line is missing; the file is truncated")
        if line.strip() and not line.lstrip().startswith(b"%"):
            break
    fields = line.split()
    want = 3 if layout == "coordinate" else 2
    try:
        dims = [int(x) for x in fields]
    except ValueError:
        dims = []
    if len(dims) != want or min(dims) < 0:
        expect = "rows columns entries" if want == 3 else "rows columns"
        raise fail(path, f"line {lineno}: the size line must hold {want} non-negative integers ({expect})")
    m, n = dims[0], dims[1]
    check_shape(path, (m, n), "the matrix")
    if symmetry != "general" and m != n:
        raise fail(path, f"line {lineno}: a {symmetry} MatrixMarket matrix must be square; the size line says "
                         f"{m} x {n}")
    rest = size - f.tell()
    if layout == "coordinate":
        nnz = dims[2]
        per_entry = 4 if field == "pattern" else 6  # shortest lines: "1 1\n", "1 1 1\n"
        if nnz * per_entry - 1 > rest:
            raise fail(path, f"the size line claims {nnz} entries but the file holds only {rest} more bytes; "
                       "the file is truncated or corrupt")
        if nnz > m * n:
            raise fail(path, f"the size line claims {nnz} entries, more than {m} x {n} cells")
        factor = 2 if symmetry != "general" else 1
        # the entries, and CSR's int64 per declared row (twice while converting)
        check_memory(path, f"the sparse matrix ({shape_text((m, n))}, {nnz} entries)",
                     nnz * factor * 48 + 16 * (m + 1))
    else:
        # a symmetric array stores its lower triangle, a skew-symmetric one without the diagonal
        stored = {"general": m * n, "symmetric": n * (n + 1) // 2, "skew-symmetric": n * (n - 1) // 2}[symmetry]
        if stored * 2 - 1 > rest:
            raise fail(path, f"the size line claims {m} x {n} values but the file holds only {rest} more bytes; "
                       "the file is truncated or corrupt")
        check_memory(path, f"the matrix ({shape_text((m, n))} float64)", m * n * 16)
    values = _mtx_numbers(path, f.read(), integers=field in ("integer", "unsigned-integer", "pattern"))
    target = float_dtype(np.dtype(np.float64), dtype)
    if layout == "coordinate":
        return _mtx_coordinate(path, values, field, symmetry, m, n, dims[2], target)
    return _mtx_array(path, values, symmetry, m, n, target)


def _mtx_numbers(path, body: bytes, integers=False):
    """Every number after the size line, as float64 (comment lines dropped). nmfcli parses
    MatrixMarket itself: scipy's reader (fast_matrix_market) aborts, or corrupts the heap and
    crashes later, on some malformed files, which no try/except can turn into an error line.

    ``integers``: the header promises integers only (counts, a pattern), which numpy reads
    8x faster as int64 than as floats (2·10⁶ entries: 0.23 against 1.9 s); the same float64
    values, each integer rounded once. Anything else there (1.0, 1e3, a value beyond int64,
    which numpy would saturate) is read as floats, as without the promise."""
    if b"%" in body:
        body = b"\n".join(line for line in body.split(b"\n") if not line.lstrip().startswith(b"%"))
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as e:
        raise fail(path, f"the MatrixMarket data is corrupt (byte {e.start} after the size line is not ASCII)") from None
    if not text.strip():
        return np.empty(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns, and stops, at the first token that is not a number
        if integers:
            try:
                whole = np.fromstring(text, dtype=np.int64, sep=" ")
            except (DeprecationWarning, ValueError):
                whole = None
            limits = np.iinfo(np.int64)
            if whole is not None and not np.any((whole == limits.max) | (whole == limits.min)):
                return whole.astype(np.float64)
        try:
            return np.fromstring(text, dtype=np.float64, sep=" ")
        except (DeprecationWarning, ValueError):
            raise fail(path, "the MatrixMarket data is corrupt (a value that is not a number)") from None


def _mtx_coordinate(path, values, field, symmetry, m, n, nnz, dtype):
    import scipy.sparse as sp

    per = 2 if field == "pattern" else 3
    if values.size != nnz * per:
        raise fail(path, f"the data do not match the size line ({values.size} numbers after it; {nnz} entries of "
                         f"{per} numbers declared)")
    rows, cols = values[0::per], values[1::per]
    for name, index, bound in (("row", rows, m), ("column", cols, n)):
        bad = np.flatnonzero((index != np.floor(index)) | (index < 1) | (index > bound))
        if bad.size:
            raise fail(path, f"entry {bad[0] + 1}: {name} index {index[bad[0]]:g} is not an integer in 1..{bound}")
    data = np.ones(nnz) if field == "pattern" else values[2::per]
    rows, cols = rows.astype(np.int64) - 1, cols.astype(np.int64) - 1
    if symmetry != "general":  # only one triangle is stored: mirror the entries off the diagonal
        off = rows != cols
        sign = -1.0 if symmetry == "skew-symmetric" else 1.0
        rows, cols, data = (np.concatenate([rows, cols[off]]), np.concatenate([cols, rows[off]]),
                            np.concatenate([data, sign * data[off]]))
    X = sp.csr_matrix((data.astype(dtype), (rows, cols)), shape=(m, n))
    X.sum_duplicates()
    return X


def _mtx_array(path, values, symmetry, m, n, dtype):
    if symmetry == "general":
        if values.size != m * n:
            raise fail(path, f"the data do not match the size line ({values.size} values after it; {m} x {n} "
                             "declared)")
        return np.ascontiguousarray(values.reshape(n, m).T, dtype=dtype)  # stored column by column
    # the lower triangle (without the diagonal when skew-symmetric), column by column
    upper_rows, upper_cols = np.triu_indices(n, k=0 if symmetry == "symmetric" else 1)
    if values.size != upper_rows.size:
        raise fail(path, f"the data do not match the size line ({values.size} values after it; a {symmetry} "
                         f"{n} x {n} array stores {upper_rows.size})")
    A = np.zeros((n, n), dtype=np.float64)
    A[upper_cols, upper_rows] = values
    A[upper_rows, upper_cols] = values if symmetry == "symmetric" else -values
    return np.ascontiguousarray(A, dtype=dtype)


def declared_shape(fmt: str, f):
    """(m, n, nnz or None, stored dtype) from an NPY/NPZ header or a MatrixMarket size line; None if not 2-D."""
    if fmt == "npy":
        shape, _, dt = _npy_header("", f)
        return (int(shape[0]), int(shape[1]), None, dt) if len(shape) == 2 else None
    if fmt == "mtx":
        first = f.readline(1024)
        mt = _MM_BANNER.match(first.strip())
        if not mt:
            return None
        coordinate = mt.group(2).lower() == b"coordinate"
        for _ in range(10000):
            line = f.readline(1 << 16)
            if not line:
                return None
            if line.strip() and not line.lstrip().startswith(b"%"):
                dims = [int(x) for x in line.split()]
                return (dims[0], dims[1], dims[2] if coordinate else None, np.dtype(np.float64))
        return None
    if fmt == "npz":
        with zipfile.ZipFile(f) as zf:
            names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
            if "shape" in names and "data" in names:
                shape = _member("", zf, names["shape"])
                with zf.open(names["data"]) as m:
                    data_shape, _, dt = _npy_header("", m)
                m_, n_ = (int(v) for v in np.asarray(shape).ravel())
                return (m_, n_, int(data_shape[0]), dt)
            if len(names) == 1:
                with zf.open(next(iter(names.values()))) as m:
                    shape, _, dt = _npy_header("", m)
                return (int(shape[0]), int(shape[1]), None, dt) if len(shape) == 2 else None
    return None
