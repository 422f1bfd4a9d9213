"""Shared test helpers: run the installed `nmf` as a real process, and build small data files."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hypothesis import settings as _hypothesis_settings

# Property tests draw the same examples on every run of `make test` (a failure there is the
# code's, not the draw's); `make test-slow` draws new ones (NMF_HYPOTHESIS_RANDOM=1).
_hypothesis_settings.register_profile("seeded", derandomize=True, database=None)
_hypothesis_settings.register_profile("random", derandomize=False)
_hypothesis_settings.load_profile("random" if os.environ.get("NMF_HYPOTHESIS_RANDOM") else "seeded")

NMF = Path(sys.executable).parent / "nmf"
REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "sample_data"


def nmf_env(**extra):
    """The environment a cron job would give: no terminal, no colour settings inherited."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS")}
    env.update(extra)
    return env


def run_nmf(*args, cwd=None, input=None, timeout=120, env=None, check=None):
    """Run `nmf ARGS...`; returns CompletedProcess with text stdout/stderr (bytes input allowed)."""
    proc = subprocess.run(
        [str(NMF), *map(str, args)],
        cwd=cwd,
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env or nmf_env(),
    )
    proc.stdout_bytes = proc.stdout
    proc.stdout = proc.stdout.decode("utf-8", "replace")
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}, stderr:\n{proc.stderr}"
    return proc


def start_nmf(*args, cwd=None, env=None, **kwargs):
    """Start `nmf ARGS...` in the background (for signals and locks)."""
    return subprocess.Popen([str(NMF), *map(str, args)], cwd=cwd, env=env or nmf_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for(path, proc, timeout=60):
    """Wait until the running `nmf` proc has written path (a checkpoint, say); fail if it exits first."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def checkpoint_at(iteration):
    """(saved, callback): the callback stops a fit after ``iteration``, keeping its checkpoint in saved."""
    saved = {}

    def callback(info):
        if info.iteration == iteration:
            saved.update(info.checkpoint())
            return "interrupted"
    return saved, callback


def low_rank(m=24, n=10, k=3, seed=0, noise=0.01):
    """A non-negative m x n matrix of rank about k, with every row and column non-zero."""
    rng = np.random.default_rng(seed)
    return rng.random((m, k)) @ rng.random((k, n)) + noise * rng.random((m, n))


def labels(prefix, count):
    return [f"{prefix}{i}" for i in range(count)]


def write_csv(path, X, row_labels=None, col_labels=None, delimiter=",", compress=False):
    lines = []
    if col_labels is not None:
        lines.append(delimiter.join(([""] if row_labels is not None else []) + list(col_labels)))
    for i, row in enumerate(np.asarray(X)):
        cells = [repr(float(v)) for v in row]
        if row_labels is not None:
            cells = [row_labels[i]] + cells
        lines.append(delimiter.join(cells))
    data = ("\n".join(lines) + "\n").encode()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return Path(path)


def one_error_line(proc):
    """stderr is exactly one line starting with 'Error: ', and no traceback anywhere."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


@pytest.fixture
def X_small():
    return low_rank()


def assert_same_fit(a, b, tol=1e-6, engine=None):
    """Two FitResults of the same fit by different engines: same iterates to tol, same bookkeeping.

    ``engine`` is the engine name b's options must record (None: the same options as a).
    """
    import numpy as np
    import pytest

    assert (a.n_iter, a.stop_reason, a.converged, a.history_iter) == (b.n_iter, b.stop_reason, b.converged,
                                                                       b.history_iter)
    np.testing.assert_allclose(b.W, a.W, rtol=tol, atol=tol)
    np.testing.assert_allclose(b.H, a.H, rtol=tol, atol=tol)
    np.testing.assert_allclose(b.history, a.history, rtol=tol)
    for key in a.metrics:
        assert b.metrics[key] == pytest.approx(a.metrics[key], rel=tol, abs=1e-12), key
    assert b.options == ({**a.options, "engine": engine} if engine else a.options)


def emu_slack(X, beta):
    """emu's slack (core._emu_rounding), from its description: 8 roundings of float32 logs
    weighted by X (KL) or 1 (Itakura-Saito), or of ΣX^β's terms in X's dtype (other β)."""
    import scipy.sparse as sp

    from nmfcli import core

    Xd = X.toarray() if sp.issparse(X) else X
    if beta in (0, 1):
        return core.SLACK_ROUNDINGS * np.finfo(np.float32).eps * np.sqrt((Xd * Xd).sum() if beta == 1 else Xd.size)
    weight = (1 + abs(beta) + abs(beta - 1)) / abs(beta * (beta - 1))
    return core.SLACK_ROUNDINGS * np.finfo(Xd.dtype).eps * weight * np.sum(Xd[Xd > 0] ** beta)


def weighted_mu(X, M, W, H, beta, iterations):
    """Lee & Seung's multiplicative updates weighted by M (a 0/1 mask for missing values, or any
    weights), with scikit-learn's clamps, written out: the oracle of the weighted fits (β = 2 or 1)."""
    from nmfcli.solvers.losses import EPSILON

    W, H = W.copy(), H.copy()
    for _ in range(iterations):
        WH = np.maximum(W @ H, EPSILON)
        if beta == 2:
            W *= ((M * X) @ H.T) / ((M * (W @ H)) @ H.T)
        else:  # KL
            W *= ((M * X / WH) @ H.T) / (M @ H.T)
        WH = np.maximum(W @ H, EPSILON)
        if beta == 2:
            H *= (W.T @ (M * X)) / (W.T @ (M * (W @ H)))
        else:
            H *= (W.T @ (M * X / WH)) / (W.T @ M)
            H[H < np.finfo(np.float64).eps] = 0.0
    return W, H


@pytest.fixture(scope="session", autouse=True)
def _blas_kernel_as_asked():
    """Under `make test`'s second pass (NMF_EXPECT_BLAS_KERNEL), fail unless numpy's OpenBLAS
    really runs the kernel asked for: a pass that silently kept the first kernel proves nothing."""
    expected = os.environ.get("NMF_EXPECT_BLAS_KERNEL")
    if expected:
        import threadpoolctl

        found = [i.get("architecture") for i in threadpoolctl.threadpool_info() if i.get("internal_api") == "openblas"]
        assert found and all(str(a).lower() == expected.lower() for a in found), (expected, found)
    yield


def snapshot(root, folders=False) -> dict:
    """Every path under root (links as links) and its bytes or link target; with ``folders``,
    the folders too (as "folder"): what a command must leave as it was."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                if folders:
                    out[rel] = "folder"
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:  # a FIFO, a socket: never read (a FIFO would block)
                out[rel] = "special"
    return out


def nmf_in_process(capsys, *args):
    """(exit code, stdout, stderr) of `nmf ARGS` run in this process, through the CLI's error boundary."""
    from nmfcli.cli import run

    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err
