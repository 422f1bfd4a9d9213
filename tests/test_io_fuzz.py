"""Fuzz the readers: whatever the bytes, only NMFError subclasses come out (or a valid Matrix).

A reader that lets a raw numpy/zipfile/h5py exception escape prints a traceback at
the user; one that allocates what a header claims dies of MemoryError. Both are bugs.
"""

import io as stdio
import os
import subprocess
import sys
import textwrap
import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nmfcli import io
from nmfcli.errors import NMFError

# NMF_FUZZ_EXAMPLES=2000 for a long hunt; the default keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("NMF_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def put(folder, name, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def read_or_refuse(path, float32_source=False, **kwargs):
    """read_matrix must return a valid 2-D Matrix or raise an NMFError; anything else fails.
    Dense data come back float64, or float32 where the file stores float32 (float32_source)."""
    try:
        m = io.read_matrix(path, **kwargs)
    except NMFError as e:
        assert str(e).startswith(f"{path.split('::')[0]}: ") or str(e).startswith("dtype"), str(e)
        return None
    assert m.X.ndim == 2 and min(m.X.shape) >= 1
    assert isinstance(m.X, np.ndarray) or sp.isspmatrix_csr(m.X) or kwargs.get("lazy")
    if isinstance(m.X, np.ndarray) and not kwargs.get("lazy"):
        assert m.X.flags.c_contiguous
        assert m.X.dtype == np.float64 or (float32_source and m.X.dtype == np.float32), m.X.dtype
    for labels, count in ((m.row_labels, m.X.shape[0]), (m.col_labels, m.X.shape[1])):
        assert labels is None or (len(labels) == count and all(isinstance(s, str) for s in labels))
    return m


# ---------------------------------------------------------------- arbitrary bytes


@FUZZ
@given(data=st.binary(max_size=600), ext=st.sampled_from(["npy", "npz", "mtx", "h5", "csv", "csv.gz", "tsv", "dat"]))
def test_arbitrary_bytes(workdir, data, ext):
    read_or_refuse(put(workdir, f"x.{ext}", data))


@FUZZ
@given(data=st.binary(max_size=400), fmt=st.sampled_from(["npy", "npz", "mtx", "h5", "csv"]))
def test_arbitrary_bytes_on_stdin(data, fmt):
    try:
        m = io.read_matrix("-", input_format=fmt, stdin=stdio.BytesIO(data))
    except NMFError as e:
        assert str(e).startswith("-: ")
        return
    assert m.X.ndim == 2


@FUZZ
@given(data=st.binary(max_size=400))
def test_model_report_checkpoint_readers(workdir, data):
    for name, reader in (("m.h5", io.read_model), ("r.json", io.read_report), ("c.h5", io.read_checkpoint)):
        try:
            reader(put(workdir, name, data))
        except NMFError:
            pass
        assert io.detect_kind(os.path.join(workdir, name)) in ("model", "checkpoint", "report", "matrix")


# ---------------------------------------------------------------- CSV text

CELLS = st.one_of(
    st.floats(allow_nan=True).map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-", "1e", "abc", '"1"', '"a,b"', "1,5", "#", "\ufeff", "é", '"']),
)


@FUZZ
@given(
    rows=st.lists(st.lists(CELLS, min_size=1, max_size=5), min_size=0, max_size=6),
    delim=st.sampled_from([",", ";", "\t", " ", "  "]),
    newline=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    header=st.sampled_from([None, True, False]),
    index_col=st.sampled_from([None, True, False]),
)
def test_csv_text(workdir, rows, delim, newline, bom, header, index_col):
    text = ("\ufeff" if bom else "") + newline.join(delim.join(r) for r in rows)
    read_or_refuse(put(workdir, "t.csv", text.encode("utf-8")), header=header, index_col=index_col)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.,;\t \n\r#\"'-+eEnaif\ufeffx\x00é")), max_size=200))
def test_csv_character_soup(workdir, text):
    read_or_refuse(put(workdir, "s.csv", text.encode("utf-8")))


@FUZZ
@given(m=st.integers(1, 6), n=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_csv_written_numbers_read_back_exactly(workdir, m, n, seed):
    X = np.random.default_rng(seed).standard_normal((m, n)) * 10.0 ** np.random.default_rng(seed).integers(-300, 300)
    path = os.path.join(workdir, "rt.csv")
    io.write_matrix(path, X, force=True)
    np.testing.assert_array_equal(io.read_matrix(path).X, X)


# ---------------------------------------------------------------- NPY headers

DESCRS = st.sampled_from(["<f8", "<f4", "<i4", "|u1", "|b1", "<c16", "|O", "<U3", "|V8", "<M8[s]", "<f2", ">f8",
                          "<f16", "zzz", [("a", "<f8")], 3])
SHAPES = st.one_of(
    st.lists(st.integers(-2, 5), max_size=3).map(tuple),
    st.lists(st.integers(0, 10**12), min_size=2, max_size=2).map(tuple),
    st.sampled_from([(10**7, 10**6), (2**62, 2), "abc", None, (1.5, 2)]),
)


@FUZZ
@given(descr=DESCRS, shape=SHAPES, fortran=st.sampled_from([True, False, 0, "yes"]), tail=st.binary(max_size=200))
def test_npy_headers(workdir, descr, shape, fortran, tail):
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    header = header.encode("latin1", "replace")
    pad = 64 - (10 + len(header) + 1) % 64
    blob = b"\x93NUMPY\x01\x00" + (len(header) + pad + 1).to_bytes(2, "little") + header + b" " * pad + b"\n" + tail
    for lazy in (False, True):
        read_or_refuse(put(workdir, "h.npy", blob), float32_source=descr == "<f4", lazy=lazy)


@FUZZ
@given(
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
    fmt=st.sampled_from(["npy", "npz-sparse", "npz-dense", "mtx", "h5"]),
)
@example(cut=0, flips=[(25, 123)], fmt="npy")  # an unclosed '{' in the header: tokenize.TokenError once escaped
def test_mutated_valid_files(workdir, cut, flips, fmt):
    buf = stdio.BytesIO()
    X = np.arange(12, dtype=np.float64).reshape(3, 4)
    if fmt == "npy":
        np.save(buf, X)
    elif fmt == "npz-sparse":
        sp.save_npz(buf, sp.csr_matrix(X), compressed=False)
    elif fmt == "npz-dense":
        np.savez(buf, X=X)
    elif fmt == "mtx":
        import scipy.io

        scipy.io.mmwrite(buf, sp.coo_matrix(X))
    else:
        with h5py.File(buf, "w") as f:
            f["X"] = X
    raw = bytearray(buf.getvalue())
    for pos, value in flips:
        if pos < len(raw):
            raw[pos] = value
    ext = fmt.split("-")[0]
    if fmt == "h5":
        raw = raw[: len(raw) - cut]  # truncation only: HDF5 byte flips can crash libhdf5 itself
    else:
        raw = raw[: max(len(raw) - cut, 0)] if cut % 2 else raw
    read_or_refuse(put(workdir, f"m.{ext}", bytes(raw)), float32_source=b"f4" in raw)  # a flip can make <f8 <f4


@FUZZ
@given(
    fmt=st.sampled_from([b"csr", b"csc", b"coo", b"bsr", b"x", "csr"]),
    shape=st.lists(st.integers(-1, 5), min_size=0, max_size=3),
    data=st.lists(st.floats(0, 10), max_size=6),
    idx=st.lists(st.integers(-2, 6), max_size=7),
    ptr=st.lists(st.integers(-1, 7), max_size=7),
    drop=st.sampled_from([None, "data", "indices", "indptr", "row", "col", "shape"]),
)
def test_sparse_npz_parts(workdir, fmt, shape, data, idx, ptr, drop):
    members = {"format": np.array(fmt), "shape": np.array(shape, dtype=np.int64), "data": np.array(data),
               "indices": np.array(idx, dtype=np.int32), "indptr": np.array(ptr, dtype=np.int32),
               "row": np.array(idx, dtype=np.int32), "col": np.array(ptr, dtype=np.int32)}
    members.pop(drop, None)
    buf = stdio.BytesIO()
    np.savez(buf, **members)
    read_or_refuse(put(workdir, "p.npz", buf.getvalue()))


@FUZZ
@given(
    layout=st.sampled_from(["coordinate", "array", "vector"]),
    field=st.sampled_from(["real", "integer", "pattern", "complex", "double", "weird"]),
    sym=st.sampled_from(["general", "symmetric", "skew-symmetric", "hermitian"]),
    size=st.lists(st.integers(-1, 10**9), min_size=1, max_size=4),
    body=st.lists(st.lists(st.integers(-1, 5), min_size=1, max_size=4), max_size=5),
)
def test_mtx_headers(workdir, layout, field, sym, size, body):
    text = f"%%MatrixMarket matrix {layout} {field} {sym}\n% c\n" + " ".join(map(str, size)) + "\n"
    text += "\n".join(" ".join(map(str, r)) for r in body) + "\n"
    read_or_refuse(put(workdir, "h.mtx", text.encode()))


# ---------------------------------------------------------------- HDF5 layouts

H5_DTYPES = st.sampled_from(["f8", "f4", "i4", "u1", "bool", "c16", "str"])


def _h5_array(shape, dtype):
    if dtype == "str":
        return np.full(shape, "a", dtype=h5py.string_dtype())
    return np.ones(shape, dtype=dtype)


@FUZZ
@given(
    datasets=st.lists(
        st.tuples(st.sampled_from(["X", "g/Y", "g/h/Z", "row_labels", "col_labels", "data"]),
                  st.lists(st.integers(0, 4), max_size=3).map(tuple), H5_DTYPES),
        max_size=4, unique_by=lambda t: t[0].split("/")[0],
    ),
    sparse=st.one_of(st.none(), st.fixed_dictionaries({
        "style": st.sampled_from(["anndata-csr", "anndata-csc", "h5sparse", "plain", "bogus"]),
        "shape": st.lists(st.integers(-1, 4), max_size=3),
        "data": st.lists(st.floats(0, 5), max_size=6),
        "indices": st.lists(st.integers(-1, 5), max_size=6),
        "indptr": st.lists(st.integers(-1, 6), max_size=6),
    })),
    labels=st.lists(st.sampled_from(["row_labels", "col_labels"]), max_size=2),
    nlabels=st.integers(0, 5),
    link=st.sampled_from([None, "soft", "soft-dangling", "external"]),
    dataset=st.sampled_from([None, "/X", "/sp", "/g", "/nope", "/lnk", "/g/Y"]),
)
def test_hdf5_layouts(workdir, datasets, sparse, labels, nlabels, link, dataset):
    path = os.path.join(workdir, "l.h5")
    with h5py.File(path, "w") as f:
        for name, shape, dtype in datasets:
            d = f.create_dataset(name, data=_h5_array(shape, dtype))
            for key in labels:
                d.attrs[key] = np.array([f"l{i}" for i in range(nlabels)], dtype=h5py.string_dtype())
        if sparse is not None:
            g = f.create_group("sp")
            style = sparse["style"]
            if style.startswith("anndata"):
                g.attrs["encoding-type"] = style.split("-")[1] + "_matrix"
                g.attrs["shape"] = np.array(sparse["shape"])
            elif style == "h5sparse":
                g.attrs["h5sparse_format"] = "csr"
                g.attrs["h5sparse_shape"] = np.array(sparse["shape"])
            elif style == "plain":
                g.attrs["shape"] = np.array(sparse["shape"])
            else:
                g.attrs["encoding-type"] = "dataframe"
            for key in ("data", "indices", "indptr"):
                g[key] = np.array(sparse[key], dtype=np.float64 if key == "data" else np.int64)
        if link == "soft":
            f["lnk"] = h5py.SoftLink("/X")
        elif link == "soft-dangling":
            f["lnk"] = h5py.SoftLink("/missing")
        elif link == "external":
            f["lnk"] = h5py.ExternalLink("elsewhere.h5", "/X")
    for lazy in (False, True):
        m = read_or_refuse(path, float32_source=any(dt == "f4" for _, _, dt in datasets), dataset=dataset, lazy=lazy)
        if m is not None and isinstance(m.X, h5py.Dataset):
            m.X.file.close()


# ---------------------------------------------------------------- refusals that must not allocate


def huge_npy_bytes():
    f = stdio.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**6)})
    return f.getvalue() + b"\0" * 63


def test_191_byte_npy_claiming_huge_array_refused_cheaply(workdir):
    path = put(workdir, "huge.npy", huge_npy_bytes())
    assert os.path.getsize(path) == 191
    tracemalloc.start()
    try:
        with pytest.raises(NMFError, match="the file is truncated or corrupt"):
            io.read_matrix(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_hdf5_huge_unwritten_dataset_refused_cheaply(workdir):
    path = os.path.join(workdir, "huge.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("X", shape=(10**7, 10**6), dtype="f8", chunks=(1000, 1000))
    tracemalloc.start()
    try:
        with pytest.raises(NMFError, match="of memory but only"):
            io.read_matrix(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


MAXRSS = textwrap.dedent(
    """
    import resource, sys
    from nmfcli import io
    from nmfcli.errors import NMFError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for path in sys.argv[1:]:
        try:
            io.read_matrix(path)
        except NMFError:  # DataError (damaged), or UnavailableError (beyond memory)
            pass
        else:
            raise SystemExit(path + " was read")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
)


def test_refusals_keep_process_memory_flat(workdir):
    """The same two refusals in a fresh interpreter: resident memory (KiB) barely moves, C allocations included."""
    npy = put(workdir, "huge2.npy", huge_npy_bytes())
    h5 = os.path.join(workdir, "huge2.h5")
    with h5py.File(h5, "w") as f:
        f.create_dataset("X", shape=(10**7, 10**6), dtype="f8", chunks=(1000, 1000))
    out = subprocess.run([sys.executable, "-c", MAXRSS, npy, h5], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) < 32 * 1024, out.stdout
