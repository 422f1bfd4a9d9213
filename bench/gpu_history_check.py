"""Diagnosis: the objective history of hals, ehals, mu and emu on CuPy against the numpy
engine (emu for KL, Itakura-Saito and β = 1.5, whose bound takes another path: two inner
products instead of a log pass).

On an H100, ehals on CuPy once recorded objectives of ~1e-31 in the iterations that
recorded its sweep graphs (bench/README.md, "The ehals anomaly"): a replay wrote into a
buffer its graph no longer owned. This prints the first iterations' objectives of each
solver on the numpy engine and on CuPy with graphs on and off, and says which differ from
the numpy engine's by more than 1e-6, so one run shows whether graphs, the extrapolated
solvers, or both are involved. Exit status 1 if any differs.
"""

import sys

import numpy as np
import scipy.sparse as sp

import nmfcli
from nmfcli.engines import cupy as cupy_engine


def cases():
    rng = np.random.RandomState(0)
    dense = np.abs(rng.randn(60, 40)) + 0.01
    sparse = sp.random(300, 200, density=0.05, random_state=0, format="csr", dtype=np.float64)
    sparse.data += 0.1
    return {"dense": (dense, 4), "sparse": (sparse, 5)}


def main():
    bad = 0
    for name, (X, k) in cases().items():
        # mu and emu record the divergence every 10th iteration: 40 give four values
        for solver, loss, iterations in (("hals", "frobenius", 12), ("ehals", "frobenius", 12),
                                         ("mu", "kl", 40), ("emu", "kl", 40), ("emu", "is", 40),
                                         ("mu", 1.5, 40), ("emu", 1.5, 40)):
            if loss == "is" and sp.issparse(X):
                continue  # Itakura-Saito refuses X's implicit zeros
            ref = nmfcli.fit(X, k, solver=solver, loss=loss, max_iter=iterations, tol=0).history
            print(f"{name} {solver} {loss} numpy      ", " ".join(f"{v:.6g}" for v in ref))
            for graph in (False, True):
                cupy_engine.GRAPH = graph
                got = nmfcli.fit(X, k, solver=solver, loss=loss, engine="cupy", max_iter=iterations,
                                 tol=0).history
                wrong = [i + 1 for i, (a, b) in enumerate(zip(got, ref)) if abs(a - b) > 1e-6 * abs(b)]
                bad += bool(wrong)
                print(f"{name} {solver} {loss} cupy graph={graph!s:5}", " ".join(f"{v:.6g}" for v in got),
                      f"  differs at iterations {wrong}" if wrong else "  same")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
