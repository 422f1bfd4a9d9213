"""The numpy engine's out-of-core mode (engine_options chunk_rows): row blocks of an HDF5
dataset or a memory-mapped NPY file read one at a time in this process, no Dask.

It runs the Dask engine's blockwise loop on a serial in-process client, so it must equal
the in-memory numpy fit to rounding (sums over blocks are associated differently).
"""

from __future__ import annotations

import numpy as np
import pytest

from nmfcli import core
from nmfcli import io as nio
from nmfcli.engines import chunked
from nmfcli.errors import UsageError
from conftest import low_rank
from conftest import assert_same_fit

h5py = pytest.importorskip("h5py")

TOL = 1e-6


@pytest.fixture(scope="module")
def X():
    return low_rank(300, 80, 5, seed=1)


@pytest.fixture(scope="module")
def h5_path(X, tmp_path_factory):
    path = tmp_path_factory.mktemp("ooc") / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/X", data=X, chunks=(25, 80))
    return f"{path}::/data/X"


def assert_same(a, b):
    assert_same_fit(a, b, TOL)  # engine "numpy" in both


@pytest.mark.parametrize("kwargs", [
    dict(solver="hals"),
    dict(solver="cd", tol=1e-3),
    dict(solver="mu", loss="kl"),
    dict(solver="hals", alpha_W=0.01, l1_ratio=0.5, init="random"),
    dict(loss="kl", max_iter=40), dict(loss=1.5, max_iter=40), dict(loss="is", max_iter=40),
    dict(loss=0.5, alpha_W=0.01, l1_ratio=1.0, max_iter=40),
    dict(max_iter=40), dict(solver="ehals", alpha_W=0.01, l1_ratio=0.5, init="random", max_iter=40),
], ids=["hals", "cd", "mu-kl", "hals-penalties-random", "emu-kl", "emu-beta1.5", "emu-is", "emu-beta0.5-l1",
        "ehals", "ehals-penalties-random"])
def test_hdf5_in_row_blocks_equals_in_memory_fit(X, h5_path, kwargs):
    kwargs = {"max_iter": 8, **kwargs}
    a = core.fit(X, 5, **kwargs)
    b = core.fit(h5_path, 5, engine_options={"chunk_rows": 70}, **kwargs)
    assert_same(a, b)
    assert "solver" in kwargs or b.options["solver"] == ("ehals" if "loss" not in kwargs else "emu"), \
        "auto runs the extrapolated solvers out of core"


@pytest.mark.parametrize("loss", ["kl", 1.5])
def test_emu_in_row_blocks_with_a_fixed_factor_equals_in_memory(X, h5_path, loss):
    """transform's flow out of core: emu (asked for KL, auto for other β) on W blocks against a fixed H."""
    H = np.random.RandomState(3).rand(5, X.shape[1])
    a = core.fit(X, 5, loss=loss, solver="emu", fix_H=H, max_iter=40)
    b = core.fit(h5_path, 5, loss=loss, solver="emu", fix_H=H, max_iter=40, engine_options={"chunk_rows": 70})
    assert_same(a, b)
    assert np.array_equal(b.H, H)
    auto = core.fit(h5_path, 5, loss=loss, fix_H=H, max_iter=40, engine_options={"chunk_rows": 70})
    assert auto.options["solver"] == ("mu" if loss == "kl" else "emu")


def test_emu_in_row_blocks_rejects_a_step_that_raises_the_bound(tmp_path, monkeypatch):
    """As in memory (test_core, the same data): extrapolating every block to a constant (from
    which mu stays rank one) is rejected every time, the blocks kept, and the next step plain,
    so 20 emu iterations are 10 of mu, bit for bit."""
    from nmfcli.solvers import mu

    def far_off(A, before, beta):
        before[...] = float(A.mean())
        return before

    X = np.abs(np.random.RandomState(4).randn(60, 50)) ** 2 + 0.01
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("X", data=X)
    monkeypatch.setattr(mu, "extrapolate", far_off)
    spec, options = f"{tmp_path / 'x.h5'}::/X", {"chunk_rows": 25}
    r = core.fit(spec, 5, loss="kl", solver="emu", tol=0, max_iter=20, engine_options=options)
    plain = core.fit(spec, 5, loss="kl", solver="mu", tol=0, max_iter=10, engine_options=options)
    assert np.array_equal(r.W, plain.W) and np.array_equal(r.H, plain.H)


def test_ehals_in_row_blocks_rejects_a_step_that_raises_the_objective(X, h5_path, monkeypatch):
    """As in memory (test_core): extrapolating every block to zero is rejected every time, so
    only the plain iterations (1, 2, 10, 20) move: 25 ehals iterations are 4 of hals, bit for bit."""
    from nmfcli.solvers import cd

    def to_zero(A, before, beta):
        before[...] = 0.0
        return before

    monkeypatch.setattr(cd, "extrapolate", to_zero)
    options = {"chunk_rows": 70}
    r = core.fit(h5_path, 5, solver="ehals", tol=0, max_iter=25, engine_options=options)
    plain = core.fit(h5_path, 5, solver="hals", tol=0, max_iter=4, engine_options=options)
    assert np.array_equal(r.W, plain.W) and np.array_equal(r.H, plain.H)
    assert r.history[-1] == plain.history[-1]


@pytest.mark.parametrize("loss", ["frobenius", 1.5])
def test_extrapolated_solvers_in_row_blocks_resume_from_a_callback_checkpoint(X, h5_path, loss, tmp_path):
    """ehals's and emu's checkpoints keep W_before and H_before (gathered as W is): the resumed
    fit goes on exactly."""
    options = {"chunk_rows": 70}
    full = core.fit(h5_path, 5, loss=loss, tol=0, max_iter=30, engine_options=options)
    saved = {}

    def stop_at_13(info):
        if info.iteration == 13:
            saved.update(info.checkpoint())
            return "interrupted"

    core.fit(h5_path, 5, loss=loss, tol=0, max_iter=30, callback=stop_at_13, engine_options=options)
    assert saved["W_before"].shape == (300, 5) and saved["solver_state"]["beta"] > 0
    rest = core.fit(h5_path, 5, loss=loss, tol=0, max_iter=30, resume=saved, engine_options=options)
    assert rest.options["solver"] == ("ehals" if loss == "frobenius" else "emu")
    np.testing.assert_allclose(rest.W, full.W, rtol=1e-12, atol=1e-12)
    assert rest.history == pytest.approx(full.history, rel=1e-12)
    # and bit for bit from the checkpoint as a file gives it back (its H C-ordered, as the
    # loops keep theirs whatever order the start had)
    nio.write_checkpoint(tmp_path / "c.h5", saved)
    rest = core.fit(h5_path, 5, loss=loss, tol=0, max_iter=30, resume=nio.read_checkpoint(tmp_path / "c.h5"),
                    engine_options=options)
    assert np.array_equal(rest.W, full.W) and np.array_equal(rest.H, full.H) and rest.history == full.history


@pytest.mark.parametrize("loss", ["frobenius", 1.5])
def test_a_streamed_w_is_never_gathered_for_a_callback_checkpoint(X, h5_path, loss, tmp_path, monkeypatch):
    """With ``output`` (and ``output_before``), a callback's checkpoint writes W and W_before
    there block by block, as the final checkpoint does, instead of gathering them on the
    client: its W and W_before are specs, which io.write_checkpoint copies in, and resuming
    from that file gives back the uninterrupted fit bit for bit."""
    from nmfcli.engines import dask as dask_engine

    def streamed(name):
        return {"chunk_rows": 70, "output": f"{tmp_path / name}.h5::/X",
                "output_before": f"{tmp_path / name}-before.h5::/X"}

    full = core.fit(h5_path, 5, loss=loss, tol=0, max_iter=30, engine_options=streamed("full"))
    specs = []

    def at_13(info):
        if info.iteration == 13:
            state = info.checkpoint()
            assert isinstance(state["W"], str) and isinstance(state["W_before"], str)
            nio.write_checkpoint(tmp_path / "c.h5", state)
            return "interrupted"

    monkeypatch.setattr(dask_engine._Run, "store", _recording(dask_engine._Run.store, specs))
    core.fit(h5_path, 5, loss=loss, tol=0, max_iter=30, callback=at_13, engine_options=streamed("stopped"))
    assert len(specs) >= 3 and None not in specs, "W and W_before went to files (twice), none to the client"
    rest = core.fit(h5_path, 5, loss=loss, tol=0, max_iter=30, resume=nio.read_checkpoint(tmp_path / "c.h5"),
                    engine_options=streamed("rest"))
    assert rest.history == full.history
    with h5py.File(tmp_path / "full.h5") as a, h5py.File(tmp_path / "rest.h5") as b:
        assert np.array_equal(a["X"][...], b["X"][...])
    assert np.array_equal(rest.H, full.H)


def _recording(store, specs):
    def recorded(self, W, transposed, spec):
        specs.append(spec)
        return store(self, W, transposed, spec)
    return recorded


def test_only_one_block_is_read_at_a_time(X, h5_path, monkeypatch):
    """Every read of X is one block of at most chunk_rows rows, and no block is kept (not persisted)."""
    reads = []
    original = chunked.RowBlock.read

    def spy(self):
        reads.append(self.stop - self.start)
        return original(self)

    monkeypatch.setattr(chunked.RowBlock, "read", spy)
    result = core.fit(h5_path, 5, max_iter=3, engine_options={"chunk_rows": 70})
    assert result.n_iter == 3
    # chunk_rows 70 on storage chunks of 25 rows: the caller's size is kept exactly.
    assert max(reads) == 70 and len(reads) > 3 * 5


def test_memory_mapped_npy_and_W_written_in_blocks(X, tmp_path):
    np.save(tmp_path / "x.npy", X)
    a = core.fit(X, 5, solver="mu", max_iter=10)
    out = f"{tmp_path / 'w.h5'}::/W"
    b = core.fit(str(tmp_path / "x.npy"), 5, solver="mu", max_iter=10,
                 engine_options={"chunk_rows": 64, "output": out})
    assert b.W == out
    with h5py.File(tmp_path / "w.h5", "r") as f:
        np.testing.assert_allclose(f["W"][...], a.W, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(b.H, a.H, rtol=TOL, atol=TOL)


def test_transform_block_by_block(X, h5_path):
    H = core.fit(X, 5, max_iter=20).H
    np.testing.assert_allclose(core.transform(h5_path, H, engine_options={"chunk_rows": 50}),
                               core.transform(X, H), rtol=TOL, atol=TOL)


def test_block_by_block_exact_solve_reports_each_block_in_order(X, h5_path):
    H = core.fit(X, 5, max_iter=20).H
    seen = []
    W = core.transform(h5_path, H, engine_options={"chunk_rows": 70},
                       progress=lambda done, total: seen.append((done, total)))
    m = X.shape[0]
    assert [d for d, _ in seen] == [*range(70, m, 70), m] and {t for _, t in seen} == {m}
    assert np.array_equal(W, core.transform(h5_path, H, engine_options={"chunk_rows": 70}))
    seen.clear()  # W fixed: H's columns are one solve, reported when done
    core.fit(h5_path, 5, fix_W=W, engine_options={"chunk_rows": 70}, progress=lambda *p: seen.append(p))
    assert seen == [(X.shape[1], X.shape[1])]


def test_cluster_options_are_refused(X):
    with pytest.raises(UsageError, match=r"^engine option 'scheduler' needs engine 'dask'"):
        core.fit(X, 3, engine_options={"chunk_rows": 50, "scheduler": "tcp://x:1"})


def test_needs_no_dask(tmp_path):
    """In a fresh interpreter: the out-of-core numpy fit never imports dask or distributed."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from nmfcli import core\n"
        "X = np.random.default_rng(0).random((60, 8))\n"
        "core.fit(X, 2, max_iter=3, engine_options={'chunk_rows': 16})\n"
        "loaded = sorted(m for m in ('dask', 'distributed') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
