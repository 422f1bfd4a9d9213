"""BLAS threads during a fit: one for the many small calls, all of them for the products with X.

A fit makes hundreds of small BLAS calls per iteration (Gram matrices, the rows of
a HALS sweep, the tall-skinny LU and QR of the initialisation). On several threads
each such call wakes the BLAS's worker threads, which then spin while Python does
the rest of the step; numpy and scipy each bring an OpenBLAS of their own, so two
pools of workers compete for the same cores. On the 2-core bench machine that made
a HALS fit of scikit-learn's digits 2-4× slower than on one thread.

So the numpy engine runs a fit inside ``fit_threads()`` (one thread), and the calls
big enough to gain from threads inside ``product_threads()`` (the count the process
had when the fit began: OPENBLAS_NUM_THREADS / MKL_NUM_THREADS, or every core).

The counts are process-wide, as BLAS keeps them; nested and concurrent fits share
one reference count and the outer counts come back when the last one ends. Where
no BLAS library with a thread control is found (Accelerate on macOS, a BLAS
without one), both are no-ops: only the speed depends on this, never a result.
"""

import ctypes
import os
import sys
import threading
from contextlib import contextmanager

_lock = threading.RLock()
_depth = 0
_outer = []  # [(library, thread count when the outermost fit began)] while _depth > 0
_controls_by_path = {}


class _Library:
    """The get/set thread-count functions of one loaded BLAS library."""

    def __init__(self, path, get, set_):
        self.path = path
        self._get = get
        self._set = set_

    def get(self):
        return int(self._get())

    def set(self, n):
        self._set(int(n))


def _openblas(path, lib):
    # OpenBLAS's symbols carry the build's prefix and suffix: plain, or scipy-openblas's
    # scipy_…64_ (numpy's 64-bit-integer build) and scipy_… (scipy's).
    for prefix in ("scipy_", ""):
        for suffix in ("64_", "_64", ""):
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                return get, set_
    return None


def _mkl(path, lib):
    get = getattr(lib, "MKL_Get_Max_Threads", None)
    set_ = getattr(lib, "MKL_Set_Num_Threads", None)
    return (get, set_) if get is not None and set_ is not None else None


_KINDS = (("openblas", _openblas), ("mkl_rt", _mkl))


def _controls(path):
    """The thread control of the library at ``path`` (None if it has none), looked up once."""
    if path not in _controls_by_path:
        control = None
        name = os.path.basename(path).lower()
        for kind, find in _KINDS:
            if kind not in name:
                continue
            try:
                lib = ctypes.CDLL(path)  # already loaded by numpy/scipy: the same handle
            except OSError:
                break
            functions = find(path, lib)
            if functions is not None:
                get, set_ = functions
                get.restype = ctypes.c_int
                get.argtypes = []
                set_.restype = None
                set_.argtypes = [ctypes.c_int]
                control = _Library(path, get, set_)
            break
        _controls_by_path[path] = control
    return _controls_by_path[path]


def _loaded_paths():
    """Paths of the shared libraries this process has loaded that may be a BLAS."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps") as maps:
                lines = maps.read().splitlines()
        except OSError:
            return []
        fields = (line.split(None, 5) for line in lines)
        paths = (f[5].strip() for f in fields if len(f) == 6)
        return list(dict.fromkeys(p for p in paths if _maybe_blas(p)))
    # Elsewhere: the libraries numpy's and scipy's wheels ship (loading one again is a no-op).
    found = []
    for package in ("numpy", "scipy"):
        module = sys.modules.get(package)
        if module is None:
            continue
        root = os.path.dirname(module.__file__)
        for folder in (root + ".libs", os.path.join(root, ".dylibs")):  # Linux/Windows, macOS wheels
            if os.path.isdir(folder):
                found.extend(os.path.realpath(os.path.join(folder, f))
                             for f in sorted(os.listdir(folder)) if _maybe_blas(f))
    return list(dict.fromkeys(found))


def _maybe_blas(path):
    name = os.path.basename(path.strip()).lower()
    return any(kind in name for kind, _ in _KINDS)


_scanned = (None, [])  # (len(sys.modules) at the scan, the libraries found)


def libraries():
    """The loaded BLAS libraries whose thread count can be set.

    Scanning the loaded libraries costs ~2 ms (a fit on small data takes 30 ms), so
    the result is kept until more modules are imported, which is how another BLAS
    would arrive.
    """
    global _scanned
    modules = len(sys.modules)
    if _scanned[0] != modules:
        _scanned = (modules, [c for c in (_controls(p) for p in _loaded_paths()) if c is not None])
    return list(_scanned[1])


@contextmanager
def fit_threads():
    """Run the enclosed fit's BLAS calls on one thread; restore the counts when the last fit ends."""
    global _depth, _outer
    with _lock:
        if _depth == 0:
            _outer = [(lib, lib.get()) for lib in libraries()]
            for lib, count in _outer:
                if count > 1:
                    lib.set(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, count in _outer:
                    lib.set(count)
                _outer = []


@contextmanager
def product_threads():
    """Within a fit, give the enclosed product the outer thread count (a no-op outside a fit)."""
    with _lock:
        raised = [(lib, count) for lib, count in _outer if count > 1] if _depth else []
        for lib, count in raised:
            lib.set(count)
    try:
        yield
    finally:
        if raised:
            with _lock:
                if _depth:
                    for lib, _ in raised:
                        lib.set(1)


def outer_thread_count():
    """The BLAS thread count the process had when the current fit began (outside a fit: now).

    Every core when no BLAS thread control is found.
    """
    with _lock:
        counts = [count for _, count in _outer] if _depth else [lib.get() for lib in libraries()]
    return max(counts) if counts else (os.cpu_count() or 1)
