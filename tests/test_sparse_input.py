"""Sparse input is never densified: every fit, transform and metric works on the stored entries.

Each densification scipy.sparse can do (toarray, todense, and the coo/csr conversions to
dense arrays they go through) is watched while the whole computation runs; only row blocks of
bounded size may be made dense (the final error of a near-exact fit, block by block).
"""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse._base as sparse_base
import scipy.sparse._compressed as sparse_compressed

import nmfcli
from nmfcli.solvers.losses import BLOCK_ENTRIES

M, N = 3000, 400


@pytest.fixture
def densified(monkeypatch):
    """The sizes (entries) of every dense array made from a sparse matrix while the test runs."""
    sizes = []
    for cls in (sparse_base._spbase, sparse_compressed._cs_matrix):
        for name in ("toarray", "todense"):
            if name in cls.__dict__:
                real = cls.__dict__[name]

                def watched(self, *args, _real=real, **kwargs):
                    sizes.append(int(np.prod(self.shape)))
                    return _real(self, *args, **kwargs)

                monkeypatch.setattr(cls, name, watched)
    return sizes


def sparse_X(dtype=np.float64):
    return sp.random(M, N, density=0.01, random_state=0, format="csr", dtype=dtype)


@pytest.mark.parametrize("solver,loss", [("ehals", "frobenius"), ("hals", "frobenius"), ("cd", "frobenius"),
                                         ("mu", "frobenius"), ("mu", "kl"), ("emu", "kl"), ("emu", 1.5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fits_never_densify_sparse_X(densified, solver, loss, dtype):
    X = sparse_X(dtype)
    result = nmfcli.fit(X, 5, solver=solver, loss=loss, max_iter=15)
    assert np.all(np.isfinite(result.W))
    assert all(size < M * N / 4 for size in densified), densified


def test_transform_fixed_W_and_metrics_never_densify(densified):
    X = sparse_X()
    H = nmfcli.fit(X, 5, max_iter=10).H
    W = nmfcli.transform(X, H)
    nmfcli.fit(X, 5, fix_W=W)
    nmfcli.metrics(X, W, H)
    nmfcli.metrics(X, W, H, loss="kl")
    assert all(size < M * N / 4 for size in densified), densified


def test_a_near_exact_sparse_fit_densifies_only_row_blocks(densified):
    rng = np.random.default_rng(1)
    W0 = rng.random((M, 3)) * (rng.random((M, 3)) < 0.05)
    H0 = rng.random((3, N)) * (rng.random((3, N)) < 0.3)
    X = sp.csr_matrix(W0 @ H0)
    nmfcli.metrics(X, W0, H0)  # exact: the trace formula cancels, so the error is summed block by block
    assert densified and all(size <= BLOCK_ENTRIES + N for size in densified), densified
