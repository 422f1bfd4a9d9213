"""Data sets for the nmfcli benchmarks.

Every loader is offline and deterministic (same Python, NumPy, SciPy, scikit-learn and
scikit-image versions -> same matrix), caches nothing on disk, and returns
``(name, X)`` where ``X`` is a non-negative float64 ``numpy.ndarray`` or a
``scipy.sparse.csr_matrix``. ``CASES`` maps each case name to a zero-argument callable.

Dependencies: numpy and scipy always; scikit-learn for ``digits`` and ``pydoc_tfidf``;
scikit-image (an optional, bench-only dependency: ``pip install scikit-image`` or
``pip install -e '.[bench]'``) for ``image_patches`` and ``faces``. A loader whose data
cannot be had raises ``DatasetUnavailable`` with the reason; a runner should report
that case as skipped.

Run ``python bench/datasets.py`` to build every case and print its shape, density and
build time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp

__all__ = [
    "CASES",
    "DatasetUnavailable",
    "digits",
    "faces",
    "image_patches",
    "lowrank_dense",
    "pydoc_tfidf",
    "zipf_sparse",
]


class DatasetUnavailable(RuntimeError):
    """The data for a case cannot be had here (a missing optional package); skip it."""


def _require(module: str, case: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        pip_name = {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(module, module)
        raise DatasetUnavailable(
            f"bench case {case!r} needs {pip_name} (bench-only dependency): "
            f"pip install {pip_name}   or   pip install -e '.[bench]'") from e


# --------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------

def digits():
    """scikit-learn's handwritten digits: 1797 images of 8x8 pixels, values 0..16.

    ``sklearn.datasets.load_digits().data`` as float64, shape (1797, 64), dense. The data
    ship inside scikit-learn (no download). Small and dense: measures per-call overhead
    more than throughput.
    """
    datasets = _require("sklearn.datasets", "digits")
    X = np.ascontiguousarray(datasets.load_digits().data, dtype=np.float64)
    return "digits", X


# Photographs shipped inside scikit-image (no download), all converted to greyscale.
_PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket")


def image_patches(n=20000, size=8):
    """Greyscale patches of real photographs: dense float64, shape (n, size*size).

    The photographs ship with scikit-image (``skimage.data.camera``, ``astronaut``,
    ``coffee``, ``chelsea``, ``rocket``; colour ones converted with
    ``skimage.color.rgb2gray``), values in [0, 1]. From each image,
    ``sklearn.feature_extraction.image.extract_patches_2d(..., max_patches=n_i,
    random_state=0)`` draws n_i = n/5 patches (the first n % 5 images one more); each
    patch is flattened row-major into one row. Rows are grouped by image in the order
    above. The classic "parts of images" NMF workload (Hoyer; Lee & Seung).
    """
    _require("skimage", "image_patches")
    image = _require("sklearn.feature_extraction.image", "image_patches")
    import skimage.color
    import skimage.data

    n, size = int(n), int(size)
    base, extra = divmod(n, len(_PHOTOS))
    blocks = []
    for i, name in enumerate(_PHOTOS):
        img = getattr(skimage.data, name)()
        img = skimage.color.rgb2gray(img) if img.ndim == 3 else img / 255.0
        k = base + (1 if i < extra else 0)
        if k == 0:
            continue
        P = image.extract_patches_2d(np.asarray(img, dtype=np.float64), (size, size),
                                     max_patches=k, random_state=0)
        blocks.append(P.reshape(k, size * size))
    X = np.ascontiguousarray(np.vstack(blocks), dtype=np.float64)
    return f"image_patches_{size}x{size}", X


def faces():
    """Faces: the 100 face images of scikit-image's LFW subset, dense float64 (100, 625).

    scikit-learn's Olivetti faces need a download, so this uses
    ``skimage.data.lfw_subset()``, which ships with scikit-image: 200 greyscale 25x25
    crops from Labeled Faces in the Wild, of which the first 100 are faces and the last
    100 background crops (not faces; left out here). Values in [0, 1], each image
    flattened row-major into one row. Raises ``DatasetUnavailable`` where scikit-image is
    missing or too old to have ``lfw_subset`` (added in 0.15): skip the case there.
    """
    _require("skimage", "faces")
    import skimage.data

    if not hasattr(skimage.data, "lfw_subset"):
        raise DatasetUnavailable("bench case 'faces' needs skimage.data.lfw_subset "
                                 "(scikit-image >= 0.15)")
    imgs = np.asarray(skimage.data.lfw_subset(), dtype=np.float64)[:100]
    if imgs.max() > 1.0:          # some versions return uint8
        imgs = imgs / 255.0
    return "faces_lfw", np.ascontiguousarray(imgs.reshape(len(imgs), -1))


# Top-level standard-library modules not imported: they open a browser (antigravity),
# print on import (this, __phello__), start a GUI or need a display (idlelib, tkinter,
# turtle, turtledemo), are the regression tests (test), or are only meaningful to the
# interpreter itself.
_STDLIB_SKIP = frozenset({
    "__main__", "__phello__", "_pyrepl", "antigravity", "ensurepip", "idlelib", "lib2to3",
    "pydoc_data", "site", "test", "this", "tkinter", "turtle", "turtledemo",
})

# Runs in a fresh, isolated interpreter (python -I), so that importing ~2000 modules
# neither pollutes nor slows down the benchmark process, and anything a module prints
# on import cannot reach us: stdout goes to /dev/null while importing, and the result
# is written as JSON to the original stdout file descriptor at the end.
_COLLECT_DOCSTRINGS = r"""
import importlib, inspect, json, os, pkgutil, sys, warnings
skip = set(json.loads(sys.argv[1]))
min_words = int(sys.argv[2])
out_fd = os.dup(1)
devnull = open(os.devnull, "w")
os.dup2(devnull.fileno(), 1)
sys.stdout = devnull
warnings.simplefilter("ignore")

def bad(name):
    parts = name.split(".")
    return (parts[0] in skip or any(p in ("__main__", "test", "tests") for p in parts)
            or any(p.startswith("test_") for p in parts))

def load(name):
    try:
        return importlib.import_module(name)
    except BaseException:                 # ImportError, SyntaxError, SystemExit, ...
        return None

names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and not bad(n))
modules, todo = {}, list(names)
while todo:
    name = todo.pop(0)
    if name in modules or bad(name):
        continue
    mod = load(name)
    if mod is None:
        continue
    modules[name] = mod
    path = getattr(mod, "__path__", None)
    if path is not None:                  # a package: its submodules, sorted
        try:
            subs = sorted(m.name for m in pkgutil.iter_modules(list(path)))
        except Exception:
            subs = []
        todo.extend(f"{name}.{s}" for s in subs if not s.startswith("_"))

docs = []
def add(qualname, obj):
    try:
        d = inspect.getdoc(obj) if not isinstance(obj, str) else obj
    except Exception:
        d = None
    if isinstance(d, str) and len(d.split()) >= min_words:
        docs.append((qualname, d))

for name in sorted(modules):
    mod = modules[name]
    add(name, mod.__doc__ or "")
    try:
        members = sorted(vars(mod).items())
    except Exception:
        continue
    for attr, obj in members:
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj):
            add(f"{name}.{attr}", obj.__doc__ or "")
            for mattr, meth in sorted(vars(obj).items()):
                if mattr.startswith("_") and mattr != "__init__":
                    continue
                if inspect.isroutine(meth) or isinstance(meth, property):
                    add(f"{name}.{attr}.{mattr}", getattr(meth, "__doc__", None) or "")
        elif inspect.isroutine(obj):
            add(f"{name}.{attr}", obj.__doc__ or "")

from pydoc_data.topics import topics
for t in sorted(topics):
    add(f"pydoc_data.topics[{t!r}]", topics[t])

os.write(out_fd, json.dumps(docs).encode())
"""


def _stdlib_docstrings(min_words=20, timeout=300):
    """[(qualified name, docstring)] of the standard library, deduplicated, sorted."""
    r = subprocess.run(
        [sys.executable, "-I", "-c", _COLLECT_DOCSTRINGS,
         json.dumps(sorted(_STDLIB_SKIP)), str(min_words)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    if r.returncode != 0 or not r.stdout:
        raise DatasetUnavailable(
            "bench case 'pydoc_tfidf': collecting docstrings failed "
            f"(exit {r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")
    seen, docs = set(), []
    for name, text in sorted(json.loads(r.stdout)):
        if text not in seen:               # inherited / re-exported duplicates
            seen.add(text)
            docs.append((name, text))
    return docs


def pydoc_tfidf():
    """TF-IDF document-term matrix of the standard library's documentation: sparse CSR.

    Documents: the docstrings (``inspect.getdoc``) of every importable public
    standard-library module (``sys.stdlib_module_names`` and, for packages, their
    submodules via ``pkgutil.iter_modules``), of the public classes and functions each
    defines, and of those classes' public methods and ``__init__``; plus the 79 texts of
    ``pydoc_data.topics``. Skipped: test packages, modules with side effects on import
    or needing a GUI (see ``_STDLIB_SKIP``), modules that fail to import, docstrings of
    fewer than 20 words, and exact duplicate texts. The imports run in a separate
    isolated interpreter (``sys.executable -I``). Everything is sorted by qualified
    name, so the matrix is deterministic for a given Python build; its size depends on
    the Python version (2535 documents x 3677 terms on CPython 3.11.7).

    Terms: ``TfidfVectorizer(min_df=3, max_df=0.5, stop_words="english",
    sublinear_tf=True, dtype=float64)``; rows are L2-normalised. The topic-modelling
    workload (k = 5-50 on a sparse TF-IDF matrix).
    """
    text = _require("sklearn.feature_extraction.text", "pydoc_tfidf")
    docs = _stdlib_docstrings()
    vec = text.TfidfVectorizer(min_df=3, max_df=0.5, stop_words="english",
                               sublinear_tf=True, dtype=np.float64)
    X = vec.fit_transform([d for _, d in docs]).tocsr()
    X.sort_indices()
    return "pydoc_tfidf", X


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------

def zipf_sparse(m=20000, n=10000, density=0.01, seed=0):
    """Synthetic document-term counts with Zipf word frequencies: sparse CSR float64.

    Word j (column j) is drawn with probability proportional to 1/(j+1)**1.07. Document
    lengths (tokens per row) are log-normal (sigma 0.5) times a scale chosen so that the
    expected number of distinct (document, word) pairs, i.e. nnz, is density*m*n. Tokens
    are drawn with replacement and summed, so entries are counts >= 1. Rows with no
    tokens are possible but rare. Fully vectorised (about a second at the defaults);
    deterministic for a given ``seed``.
    """
    m, n, density = int(m), int(n), float(density)
    if not 0.0 < density < 1.0:
        raise ValueError("density must be in (0, 1)")
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n + 1) ** 1.07
    p /= p.sum()
    rel = np.exp(rng.normal(0.0, 0.5, size=m))         # relative document lengths

    # Expected distinct words in a document of L tokens: f(L) = sum_j 1 - (1 - p_j)^L,
    # tabulated on a log grid and interpolated; find the length scale by bisection.
    grid = np.geomspace(1.0, 1e8, 400)
    log1mp = np.log1p(-p)
    f = np.array([np.sum(-np.expm1(L * log1mp)) for L in grid])
    target = density * m * n

    def expected_nnz(scale):
        return np.interp(np.log(rel * scale), np.log(grid), f).sum()

    if expected_nnz(1e8 / rel.max()) < target:
        raise ValueError(f"density {density} is too high for Zipf documents of this size")
    lo, hi = 1e-3, 1e8 / rel.max()
    for _ in range(100):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if expected_nnz(mid) < target else (lo, mid)
    lengths = rng.poisson(rel * np.sqrt(lo * hi))

    rows = np.repeat(np.arange(m, dtype=np.int64), lengths)
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    cols = np.searchsorted(cdf, rng.random(rows.size), side="right")
    X = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(m, n)).tocsr()
    X.sum_duplicates()
    X.sort_indices()
    return f"zipf_sparse_{m}x{n}", X.astype(np.float64)


def lowrank_dense(m=5000, n=2000, rank=20, noise=0.01, seed=0):
    """Non-negative rank-``rank`` matrix plus small non-negative noise: dense float64.

    X = W @ H + noise * mean(W @ H) * E, with W (m x rank) and H (rank x n) uniform on
    [0, 1) and E exponential with mean 1, all from ``numpy.random.default_rng(seed)``.
    The planted factors fit X with a relative Frobenius error of about
    sqrt(2) * ``noise`` (0.0137 at the defaults); a solver at k = rank should get there. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    W = rng.random((int(m), int(rank)))
    H = rng.random((int(rank), int(n)))
    L = W @ H
    X = L + float(noise) * L.mean() * rng.exponential(1.0, size=L.shape)
    return f"lowrank_dense_{m}x{n}_r{rank}", X


CASES = {
    "digits": digits,
    "image_patches": image_patches,
    "faces": faces,
    "pydoc_tfidf": pydoc_tfidf,
    "zipf_sparse": zipf_sparse,
    "lowrank_dense": lowrank_dense,
}


def _describe(X):
    if sp.issparse(X):
        nnz = X.nnz
        kind = "csr"
    else:
        nnz = int(np.count_nonzero(X))
        kind = "dense"
    return kind, nnz / (X.shape[0] * X.shape[1])


if __name__ == "__main__":
    print(f"{'case':<15} {'name':<28} {'shape':>14} {'kind':>6} {'density':>9} "
          f"{'min':>6} {'build s':>8}")
    for case, load in CASES.items():
        t0 = time.perf_counter()
        try:
            name, X = load()
        except DatasetUnavailable as e:
            print(f"{case:<15} skipped: {e}")
            continue
        dt = time.perf_counter() - t0
        kind, dens = _describe(X)
        assert X.dtype == np.float64, X.dtype
        xmin = X.min()
        print(f"{case:<15} {name:<28} {str(X.shape):>14} {kind:>6} {dens:>9.4f} "
              f"{xmin:>6.2g} {dt:>8.2f}")
