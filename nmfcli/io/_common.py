"""Shared pieces of the io layer: the Matrix record, errors, memory checks,
dtype rules, sparse validation, atomic writes and the output lock."""

from __future__ import annotations

import contextvars
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat
import struct
import tokenize
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmfcli.errors import (
    DataError,
    LockedError,
    MissingInputError,
    NMFError,
    OutputError,
    ReadWriteError,
    UnavailableError,
    UsageError,
)

# Exceptions third-party parsers (numpy, zipfile, h5py, scipy, zarr) raise on damaged
# input. Readers translate these into DataError; anything else is a bug and keeps its
# traceback.
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    SyntaxError,
    EOFError,
    OSError,
    RuntimeError,
    UnicodeError,
    AssertionError,
    NotImplementedError,
    zlib.error,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    struct.error,
    tokenize.TokenError,  # numpy tokenizes NPY headers before literal_eval
)


@dataclass
class Matrix:
    """A matrix read from a file, with its labels and provenance.

    Attributes
    ----------
    X : ndarray of shape (m, n), scipy.sparse.csr_matrix, or a lazy array
        Dense float arrays are C-ordered float64 (or the requested dtype). With
        ``lazy=True`` an ``np.memmap``, ``h5py.Dataset`` or zarr array in the stored
        numeric dtype may come back instead; it reads on demand.
    row_labels, col_labels : list of str or None
    path : str
        The path as the user gave it; ``"-"`` for stdin.
    format : str
        One of :data:`FORMATS`.
    sha256 : str
        Hex digest of the input bytes (for stdin: of the bytes read; for a folder:
        of its file names and contents, see :func:`file_sha256`).
    chunks : tuple of int or None
        Storage chunk shape of a lazily read HDF5/Zarr dataset (or a row source);
        None when contiguous, not chunked, or read into memory.
    """

    X: Any
    row_labels: list[str] | None
    col_labels: list[str] | None
    path: str
    format: str
    sha256: str
    chunks: tuple | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.X.shape)  # type: ignore[return-value]

    @property
    def column_chunked(self) -> bool:
        """True when a storage chunk spans fewer than all columns, so every row block
        decompresses chunks that reach into other blocks' rows (slow for row-block engines)."""
        return column_chunked(self.shape, self.chunks)


def column_chunked(shape, chunks) -> bool:
    """Storage chunks narrower than the matrix: reading a block of rows reads many (tall) chunks."""
    return chunks is not None and len(chunks) == 2 and int(chunks[1]) < int(shape[1])


def fail(path: str, message: str) -> DataError:
    """A DataError whose message starts with the file as the user gave it."""
    return DataError(f"{path}: {message}")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units because memory is sold that way."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available_memory() -> int:
    """Bytes of memory this process can still use.

    MemAvailable from /proc/meminfo (falls back to os.sysconf), capped by a cgroup v2
    limit when the process runs in a container.
    """
    avail = None
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 62
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                used = int(f.read().strip())
            avail = min(avail, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return int(avail)


def shape_text(shape) -> str:
    return " x ".join(str(int(s)) for s in shape)


def check_memory(path: str, what: str, nbytes: int) -> None:
    """Refuse, before allocating, an input that cannot fit in memory (UnavailableError, exit 69:
    the data may be fine, the machine is too small)."""
    avail = available_memory()
    if nbytes > avail:
        raise UnavailableError(
            f"{path}: {what} needs {human_bytes(nbytes)} of memory but only {human_bytes(avail)} is available; "
            "use a smaller input or read it lazily",
        )


def target_dtype(dtype):
    """The float dtype asked for, or None: keep float32 data float32, convert the rest to float64."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UsageError(f"dtype must be float32 or float64, not {dtype!r}")
    return dt


def float_dtype(stored, target) -> np.dtype:
    """The dtype a stored array becomes: the target if one was asked for, else float32 stays
    float32 and everything else (integers, float64, float16) becomes float64."""
    if target is not None:
        return np.dtype(target)
    return np.dtype(np.float32) if np.dtype(stored) == np.float32 else np.dtype(np.float64)


# True while a mask is read (io.read_weights): booleans are then 1 and 0, not refused.
BOOLEANS_ALLOWED = contextvars.ContextVar("nmfcli_booleans_allowed", default=False)


def check_dtype(path: str, dt: np.dtype, where: str = "") -> None:
    """Refuse anything but real integers and floats (where: e.g. "dataset '/X' ")."""
    if dt.kind == "b" and BOOLEANS_ALLOWED.get():
        return
    if dt.hasobject:
        raise fail(path, f"{where}holds Python objects (a pickle); nmf never loads pickles")
    if dt.names is not None or dt.subdtype is not None:
        fields = ", ".join(dt.names or ())
        raise fail(path, f"{where}holds a structured array ({fields or dt.str}); nmf needs a plain numeric matrix")
    if dt.kind not in "iuf":
        kind = {"b": "booleans", "c": "complex numbers", "U": "text", "S": "bytes", "V": "raw bytes",
                "M": "dates", "m": "time spans"}.get(dt.kind, str(dt))
        raise fail(path, f"{where}holds {kind} ({dt.name}); nmf needs real numbers (integers or floats)")


def check_shape(path: str, shape, what: str = "the array") -> tuple[int, int]:
    """Refuse anything but a non-empty 2-D shape."""
    if len(shape) != 2:
        raise fail(path, f"{what} is {len(shape)}-D; nmf needs a 2-D matrix (rows x columns)")
    m, n = (int(s) for s in shape)
    if m == 0 or n == 0:
        raise fail(path, f"{what} is {m} x {n}; nmf needs at least one row and one column")
    return m, n


def build_sparse(path: str, fmt: str, shape, data, indices, indptr, dtype: np.dtype):
    """Validate CSR/CSC (or COO: indices=row, indptr=col) parts, then build a canonical CSR."""
    import scipy.sparse as sp

    try:
        shape = tuple(int(s) for s in np.asarray(shape).ravel())
    except PARSE_ERRORS:
        raise fail(path, f"the sparse matrix shape {shape!r} is not two integers") from None
    if len(shape) != 2 or min(shape) < 0:
        raise fail(path, f"the sparse matrix shape {shape!r} is not two non-negative integers")
    check_shape(path, shape, "the sparse matrix")
    parts = {"data": data, "indices": indices, "indptr": indptr}
    if fmt == "coo":
        parts = {"data": data, "row": indices, "col": indptr}
    for name, arr in parts.items():
        arr = np.asarray(arr)
        if arr.ndim != 1:
            raise fail(path, f"the sparse matrix part '{name}' is {arr.ndim}-D; it must be 1-D")
        if name == "data":
            check_dtype(path, arr.dtype, "the sparse matrix data ")
        elif arr.dtype.kind not in "iu":
            raise fail(path, f"the sparse matrix part '{name}' holds {arr.dtype}; it must hold integers")
    data = np.asarray(data)
    nnz = data.shape[0]
    # CSR keeps one int64 per declared row (and scipy a temporary as large while converting):
    # a few bytes of file can declare 10^11 rows.
    check_memory(path, f"the sparse matrix ({shape_text(shape)}, {nnz} values)",
                 16 * (shape[0] + 1) + (8 * shape[1] if fmt == "csc" else 0) + 40 * nnz)
    if fmt == "coo":
        row, col = np.asarray(indices), np.asarray(indptr)
        if row.shape[0] != nnz or col.shape[0] != nnz:
            raise fail(path, f"the sparse matrix has {nnz} values but {row.shape[0]} row and {col.shape[0]} column indices")
        for name, idx, bound in (("row", row, shape[0]), ("column", col, shape[1])):
            if nnz and (idx.min() < 0 or idx.max() >= bound):
                raise fail(path, f"a {name} index of the sparse matrix is outside 0..{bound - 1}")
        X = sp.coo_matrix((data.astype(float_dtype(data.dtype, dtype), copy=False), (row.astype(np.int64), col.astype(np.int64))), shape=shape)
        return sp.csr_matrix(X)
    major, minor = (shape[0], shape[1]) if fmt == "csr" else (shape[1], shape[0])
    indices, indptr = np.asarray(indices), np.asarray(indptr)
    if indptr.shape[0] != major + 1:
        raise fail(path, f"the sparse matrix 'indptr' has {indptr.shape[0]} entries, expected {major + 1} for shape {shape_text(shape)}")
    if indices.shape[0] != nnz:
        raise fail(path, f"the sparse matrix has {nnz} values but {indices.shape[0]} indices")
    if indptr[0] != 0 or indptr[-1] != nnz or (major and np.any(np.diff(indptr.astype(np.int64)) < 0)):
        raise fail(path, "the sparse matrix 'indptr' is not a non-decreasing list from 0 to the number of values")
    if nnz and (indices.min() < 0 or indices.max() >= minor):
        raise fail(path, f"an index of the sparse matrix is outside 0..{minor - 1}")
    cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
    X = cls((data.astype(float_dtype(data.dtype, dtype), copy=False), indices, indptr), shape=shape)
    X = sp.csr_matrix(X)
    X.sum_duplicates()  # canonical form: sorted indices, no repeats
    return X


def require_file(path: str, real: str | None = None) -> str:
    """Check the input exists and is readable: MissingInputError (exit 66) if not."""
    real = path if real is None else real
    if not os.path.exists(real):
        raise MissingInputError(f"{path}: no such file")
    if not os.access(real, os.R_OK):
        raise MissingInputError(f"{path}: cannot be opened (permission denied)")
    return real


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (a folder: of its files and names)."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                h.update(os.path.relpath(full, path).encode("utf-8", "surrogateescape") + b"\0")
                h.update(bytes.fromhex(file_sha256(full)))
        return h.hexdigest()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise MissingInputError(f"{path}: no such file") from None
    except OSError as e:
        raise ReadWriteError(f"{path}: reading failed ({e.strerror or e})") from None
    return h.hexdigest()


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse_existing(path, *, force: bool = False) -> None:
    """OutputError when ``path`` exists and ``force`` is false: checked before long work too, so a
    run that would be refused at the end is refused at the start."""
    if os.path.lexists(path) and not force and not _stream(path):
        raise OutputError(f"{path}: already exists; use --force to replace it")


def _stream(path) -> bool:
    """A device or a named pipe (/dev/null, /dev/stdout, a FIFO): a matrix is written into it, not
    over it, so it needs no --force (a file output that replaces its path refuses one anyway)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


@contextmanager
def atomic_path(path: str, *, force: bool = False):
    """Yield a temporary path next to ``path``; move it into place on success.

    The temporary file ``.NAME.tmp-<pid>-<random>`` lives in the same folder so the
    final ``os.replace`` is atomic: a crash at any moment leaves the old file or the
    complete new one. On success the data and the folder are fsynced; on any
    exception the temporary file is removed and the exception propagates.

    Raises
    ------
    OutputError
        ``path`` exists and ``force`` is false, is a folder, or its folder cannot be
        written.
    ReadWriteError
        Writing failed part-way (disk full, I/O error).
    """
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise OutputError(f"{path}: is a folder; give a file name")
    if os.path.lexists(path) and not os.path.islink(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        # a device or a FIFO would be replaced by a plain file, even /dev/null under root
        raise OutputError(f"{path}: is not a regular file (a device, a FIFO or a socket); nmf replaces only "
                          "files; give a file name")
    refuse_existing(path, force=force)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: the folder {os.path.dirname(path) or '.'} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb"):
            pass
    except OSError as e:
        raise OutputError(f"{path}: cannot be created ({e.strerror or e})") from None
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, (BrokenPipeError, NMFError)):
            kind = OutputError if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ReadWriteError
            raise kind(f"{path}: writing failed ({e.strerror or e})") from e
        raise
    _fsync_dir(folder)


def _remove_if_only_lock(folder: str, lock_path: str) -> None:
    """A failed run leaves no empty folder behind. Called while still holding the lock,
    so a process that opened the old lock file meanwhile gets LockedError, never a
    lock on a folder that is about to vanish."""
    try:
        if os.listdir(folder) == [".nmf.lock"]:
            os.unlink(lock_path)
            os.rmdir(folder)
    except OSError:
        pass


@contextmanager
def output_lock(folder: str):
    """Hold an exclusive OS lock on ``FOLDER/.nmf.lock`` for the duration of a run.

    ``fcntl.flock`` is released by the kernel when the process dies, so a crashed run
    never leaves a stale lock. The folder is created if missing, and removed again on
    exit if the run wrote nothing into it.

    Raises
    ------
    LockedError
        At once, if another process holds the lock.
    OutputError
        The folder or the lock file cannot be created.
    """
    folder = os.fspath(folder)
    lock_path = os.path.join(folder, ".nmf.lock")
    created = not os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot be created ({e.strerror or e})") from None
    try:
        # O_NOFOLLOW: a lock file replaced by a link must not make nmf write where it points
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"{lock_path}: is a symbolic link; nmf does not write through links in its output "
                              "folder: remove it") from None
        raise OutputError(f"{folder}: cannot create the lock file ({e.strerror or e})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{lock_path}: is not a regular file; remove it")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"{folder}: another nmf run is writing here (lock held); wait for it or use another output folder"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is a courtesy for people; the flock is the lock
        try:
            yield
        finally:
            if created:
                _remove_if_only_lock(folder, lock_path)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- all-or-nothing folders

# What nmf itself keeps in an output folder; anything else makes a folder swap unsafe.
_OWN = re.compile(r"^(?:[WH]\.(?:npy|csv|tsv|h5|npz)|model\.h5|report\.json|checkpoint\.h5|\.nmf\.lock)$")
_TEMP = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]+(?:\.h5)?$")  # .h5: a factor streamed by the CLI
_STAGING = re.compile(r"^\.(?P<base>.+)\.staging-(?P<pid>\d+)-[0-9a-f]+$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), b)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_staging(parent: str, base: str) -> None:
    """Staging folders of killed runs on the same output folder (the caller holds its lock)."""
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for name in entries:
        match = _STAGING.match(name)
        if match and match["base"] == base and not _pid_alive(int(match["pid"])):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def stream_temp_path(path: str) -> str:
    """A temporary path beside ``path`` for a file written piece by piece (an engine streaming W).

    Named as atomic_path names its temporary files, keeping the extension the
    writers go by, so replace_together treats it as a temporary file; the caller
    moves it into place (or removes it).
    """
    folder, base = os.path.split(os.fspath(path))
    ext = os.path.splitext(base)[1]
    return os.path.join(folder, f".{base}.tmp-{os.getpid()}-{secrets.token_hex(4)}{ext}")


@contextmanager
def replace_together(folder: str, names, *, force: bool = True):
    """Write several files that must appear in ``folder`` together, or not at all.

    Yields ``{name: path}`` in a staging folder next to ``folder`` (same file system).
    On success, when ``folder`` holds nothing but nmf's own files and the system
    can swap two folders in one step (Linux ≥ 3.15), the staging folder — the new
    files plus hard links to the other files already there (the lock file, a
    checkpoint) — is exchanged with ``folder`` atomically: a SIGKILL at any moment
    leaves either the whole old set or the whole new set. Otherwise (other files
    in the folder, or the folder holds the working directory) each file is moved
    into place atomically on its own. On failure nothing in ``folder`` changes.
    ``folder`` may be a symbolic link to a folder: the link is kept and its target written.
    Without ``force``, the commit refuses (OutputError, exit 73) when one of ``names`` has
    appeared in ``folder`` meanwhile (another run that holds no lock), and then changes nothing.
    """
    # A link to a folder stays a link: the new files go into the folder it points at (the
    # exchange would otherwise swap the link itself for a real folder).
    shown = os.fspath(folder)  # messages name the folder as the user gave it
    folder = os.path.realpath(shown)
    parent, base = os.path.split(folder)
    _remove_stale_staging(parent, base)
    staging = os.path.join(parent, f".{base}.staging-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.mkdir(staging)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create a staging folder next to it ({e.strerror or e})") from None
    try:
        yield {name: os.path.join(staging, name) for name in names}
        _commit(folder, staging, force, shown)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_taken(folder: str, names, shown: str) -> None:
    for name in sorted(names):
        if os.path.lexists(os.path.join(folder, name)):
            raise OutputError(f"{os.path.join(shown, name)}: appeared while this run was writing (another run "
                              "without a lock?); nothing was replaced; use --force to replace it")


def _commit(folder: str, staging: str, force: bool = True, shown: str | None = None) -> None:
    shown = folder if shown is None else shown
    new = set(os.listdir(staging))
    try:
        others = [e for e in os.scandir(folder) if e.name not in new and not _TEMP.match(e.name)]
    except OSError as e:
        raise OutputError(f"{folder}: cannot be read ({e.strerror or e})") from None
    if not force:
        _refuse_taken(folder, new, shown)
    cwd = os.getcwd()
    swappable = (
        all(_OWN.match(e.name) and e.is_file(follow_symlinks=False) for e in others)
        and cwd != folder and not cwd.startswith(folder + os.sep)
    )
    try:
        if swappable:
            for entry in others:
                os.link(entry.path, os.path.join(staging, entry.name), follow_symlinks=False)
            _fsync_dir(staging)
            if _exchange(staging, folder):
                if not force:
                    # the old folder is now the staging one: a file of ours that reached it after the
                    # check above (a run without a lock) is put back, whole, and this run refused
                    late = new & set(os.listdir(staging))
                    if late:
                        _exchange(staging, folder)
                        _refuse_taken(folder, late, shown)
                _fsync_dir(os.path.dirname(folder))
                return  # the old files are now in the staging folder, which the caller removes
        linked = []
        for name in sorted(new):
            src, dst = os.path.join(staging, name), os.path.join(folder, name)
            if force:
                os.replace(src, dst)
                continue
            try:
                os.link(src, dst)  # fails if dst exists: never replaces what another run wrote
            except FileExistsError:
                for done in linked:  # none of this run's files stays beside another run's
                    os.unlink(done)
                _refuse_taken(folder, [name], shown)
            linked.append(dst)
        _fsync_dir(folder)
    except OSError as e:
        if isinstance(e, NMFError):
            raise
        raise ReadWriteError(f"{folder}: moving the new files into place failed ({e.strerror or e})") from e
