"""Reading speed of nmfcli's parsers against numpy's and scipy's, side by side in one run.

CSV: ``nmfcli.io.read_matrix`` against ``numpy.loadtxt`` on a 2000 × 2000 dense CSV of
17-digit numbers. MatrixMarket: nmfcli's own parser (scipy's reader aborts or corrupts the
heap on some malformed files, which no error handling can catch) against ``scipy.io.mmread``
on a 20000 × 10000 coordinate file of 1M entries. Medians of ``--repeats`` runs, interleaved;
prints seconds and the ratio nmfcli / reference. Nothing here asserts a speed.

Usage: python bench/io_bench.py [--repeats N] [--dir DIR]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nmfcli import io  # noqa: E402


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write the files [default: a temporary folder]")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        folder = Path(folder)
        rng = np.random.default_rng(0)
        X = rng.random((2000, 2000))
        np.savetxt(folder / "dense.csv", X, delimiter=",", fmt="%.17g")
        S = sp.random(20000, 10000, density=0.005, format="coo", random_state=0)
        scipy.io.mmwrite(folder / "sparse.mtx", S)
        counts = S.copy()
        counts.data = rng.integers(1, 100, counts.nnz)  # a count matrix, as single-cell data ship
        scipy.io.mmwrite(folder / "counts.mtx", counts, field="integer")
        cases = {
            "csv 2000x2000": (lambda: io.read_matrix(folder / "dense.csv"),
                              lambda: np.loadtxt(folder / "dense.csv", delimiter=","), "numpy.loadtxt"),
            "mtx 20000x10000, 1M entries": (lambda: io.read_matrix(folder / "sparse.mtx"),
                                            lambda: scipy.io.mmread(folder / "sparse.mtx"), "scipy.io.mmread"),
            "mtx integer, 1M entries": (lambda: io.read_matrix(folder / "counts.mtx"),
                                        lambda: scipy.io.mmread(folder / "counts.mtx"), "scipy.io.mmread"),
        }
        print(f"{'case':30} {'nmfcli s':>9} {'reference s':>12} {'ratio':>6}  reference")
        for name, (ours, theirs, label) in cases.items():
            times = {"ours": [], "theirs": []}
            for _ in range(args.repeats):  # interleaved, so that drift hits both
                times["ours"].append(timed(ours))
                times["theirs"].append(timed(theirs))
            a, b = statistics.median(times["ours"]), statistics.median(times["theirs"])
            print(f"{name:30} {a:9.2f} {b:12.2f} {a / b:5.1f}×  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
