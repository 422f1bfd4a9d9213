"""`nmf fit/transform --engine dask` and `--chunk-rows` as real processes, against the Python API.

The Dask runs start one LocalCluster of 2 processes each (about 5 s); they are kept to two.
"""

from __future__ import annotations

import json
import os
import signal

import h5py
import numpy as np
import pytest

from conftest import low_rank, one_error_line, run_nmf, start_nmf, wait_for
from nmfcli import core
from nmfcli import io as nio

TOL = 1e-6
K = 4


def _read_X(path):
    """The matrix an h5 output holds (dataset /X, as nmf writes it)."""
    with h5py.File(path, "r") as f:
        return f["X"][...]


@pytest.fixture(scope="module")
def X():
    return low_rank(200, 30, K, seed=3)


@pytest.fixture(scope="module")
def h5_file(X, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_dask") / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, chunks=(50, 30))
    return path


@pytest.mark.dask
def test_fit_then_transform_on_a_dask_cluster_equal_the_numpy_engine(X, h5_file, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "fit.nmf"
    run_nmf("fit", h5_file, "-k", K, "--max-iter", 12, "--engine", "dask", "--workers", 2, "--chunk-rows", 50,
            "--format", "h5", "-o", out, "-q", check=0)
    expected = core.fit(X, K, max_iter=12)  # ehals, the default on Dask and out of core too
    np.testing.assert_allclose(_read_X(out / "W.h5"), expected.W, rtol=TOL, atol=TOL)  # streamed by the engine
    model = nio.read_model(out / "model.h5")
    np.testing.assert_allclose(model["H"], expected.H, rtol=TOL, atol=TOL)
    assert "W" not in model  # W may be larger than memory: it lives in W.h5 only
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["path"] == str(h5_file)
    assert report["input"]["sha256"] == nio.file_sha256(str(h5_file))
    assert report["engine_options"] == {"workers": 2, "chunk_rows": 50}
    assert report["options"]["engine"] == "dask" and report["n_iter"] == 12
    assert report["relative_error"] == pytest.approx(expected.metrics["relative_error"], rel=TOL)

    run_nmf("transform", h5_file, "--model", out / "model.h5", "--engine", "dask", "--workers", 2,
            "--chunk-rows", 50, "-o", tmp_path / "mix.h5", check=0)
    np.testing.assert_allclose(_read_X(tmp_path / "mix.h5"), core.transform(X, model["H"]), rtol=TOL, atol=TOL)


def test_chunk_rows_on_the_numpy_engine_reads_row_blocks_without_dask(X, h5_file, tmp_path):
    out = tmp_path / "ooc.nmf"
    run_nmf("fit", h5_file, "-k", K, "--max-iter", 12, "--chunk-rows", 64, "-o", out, "-q", check=0)
    expected = core.fit(X, K, max_iter=12)  # ehals, the default on Dask and out of core too
    np.testing.assert_allclose(np.load(out / "W.npy"), expected.W, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(np.load(out / "H.npy"), expected.H, rtol=TOL, atol=TOL)
    report = json.loads((out / "report.json").read_text())
    assert report["options"]["engine"] == "numpy" and report["engine_options"] == {"chunk_rows": 64}
    r = run_nmf("transform", h5_file, "--model", out / "model.h5", "--chunk-rows", 64, check=0)
    W = np.loadtxt(r.stdout.splitlines()[1:], delimiter=",")  # header of component names, no row labels
    np.testing.assert_allclose(W, core.transform(X, expected.H), rtol=1e-5, atol=1e-9)


def _write_h5_input(path):
    """300 x 200, about rank 10, in storage chunks of 100 rows: long enough a fit to interrupt."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=rng.random((300, 10)) @ rng.random((10, 200)) + 0.1 * rng.random((300, 200)),
                         chunks=(100, 200))


def test_interrupted_streamed_fit_leaves_the_old_outputs_whole(tmp_path):
    """--chunk-rows streams W.h5 block by block; under --force an interrupted run must not leave a new W
    beside the old H, model and report (it streams into a temporary file that joins the others at the end)."""
    _write_h5_input(tmp_path / "x.h5")
    common = ["fit", "x.h5", "-k", "10", "--chunk-rows", "100", "--format", "h5", "-o", "out", "-q"]
    run_nmf(*common, "--max-iter", "3", cwd=tmp_path, check=0)
    out = tmp_path / "out"
    names = ("W.h5", "H.h5", "model.h5", "report.json")
    before = {name: (out / name).read_bytes() for name in names}

    p = start_nmf(*common, "--force", "--tol", "0", "--max-iter", "5000", "--checkpoint-every", "5", cwd=tmp_path)
    wait_for(out / "checkpoint.h5", p)
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr.decode()
    assert {name: (out / name).read_bytes() for name in names} == before
    assert sorted(os.listdir(out)) == sorted([*names, "checkpoint.h5", ".nmf.lock"])

    r = run_nmf(*common, "--force", "--max-iter", "4", cwd=tmp_path, check=0)  # and a finished run replaces them all
    assert "Traceback" not in r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["n_iter"] == 4 and (out / "W.h5").read_bytes() != before["W.h5"]
    assert not [name for name in os.listdir(out) if ".tmp-" in name]


@pytest.mark.parametrize("loss, max_iter, stop", [("frobenius", 200, "SIGINT"), ("kl", 600, "--max-time")])
def test_streamed_fit_stopped_early_resumes_bit_identically(tmp_path, loss, max_iter, stop):
    """--chunk-rows with --format h5 streams W, and ehals's or emu's W_before, to files block by
    block; the checkpoint written when the fit stops copies them in (the streamed files are
    removed), and the resumed fit ends bit for bit where an uninterrupted one does. The same
    checkpoint also resumes a fit in memory."""
    _write_h5_input(tmp_path / "x.h5")
    common = ["fit", "x.h5", "-k", "10", "--chunk-rows", "100", "--format", "h5", "--loss", loss, "--tol", "0",
              "--max-iter", str(max_iter), "-q"]
    run_nmf(*common, "-o", "ref", cwd=tmp_path, check=0)
    out = tmp_path / "out"
    if stop == "SIGINT":
        p = start_nmf(*common, "-o", "out", "--checkpoint-every", "5", cwd=tmp_path)
        wait_for(out / "checkpoint.h5", p)
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=60)
        assert p.returncode == 130, stderr.decode()
        left = [".nmf.lock", "checkpoint.h5"]
    else:
        run_nmf(*common, "-o", "out", "--max-time", "1", cwd=tmp_path, check=0)
        left = [".nmf.lock", "H.h5", "W.h5", "checkpoint.h5", "model.h5", "report.json"]
    assert sorted(os.listdir(out)) == left  # no streamed file is left behind
    ckpt = nio.read_checkpoint(out / "checkpoint.h5")
    assert ckpt["iteration"] < max_iter
    assert (ckpt["W"], ckpt["W_before"]) == (f"{out / 'checkpoint.h5'}::/W", f"{out / 'checkpoint.h5'}::/W_before")
    (tmp_path / "again.h5").write_bytes((out / "checkpoint.h5").read_bytes())

    r = run_nmf(*common, "-o", "out", "--resume", "out/checkpoint.h5", "--force", cwd=tmp_path, check=0)
    assert "Traceback" not in r.stderr
    for name in ("W.h5", "H.h5"):
        assert np.array_equal(_read_X(out / name), _read_X(tmp_path / "ref" / name)), name
    report, ref = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("out", "ref"))
    assert report["n_iter"] == ref["n_iter"] == max_iter and report["history"] == ref["history"]

    in_memory = [a for a in common if a not in ("--chunk-rows", "100")]
    run_nmf(*in_memory, "-o", "mem", "--resume", "again.h5", cwd=tmp_path, check=0)
    np.testing.assert_allclose(_read_X(tmp_path / "mem" / "W.h5"), _read_X(tmp_path / "ref" / "W.h5"),
                               rtol=1e-9, atol=1e-12)


def test_periodic_checkpoints_of_a_streamed_fit_copy_w_in_and_resume_bit_identically(tmp_path):
    """--checkpoint-every with W streamed (--chunk-rows, --format h5): each checkpoint copies W
    and W_before into itself from the streamed files, as a stopped fit's does, and resuming the
    one written at iteration 10 ends where an uninterrupted run does, bit for bit."""
    _write_h5_input(tmp_path / "x.h5")
    common = ["fit", "x.h5", "-k", "10", "--chunk-rows", "100", "--format", "h5", "--tol", "0", "--max-iter", "12",
              "-q"]
    run_nmf(*common, "-o", "ref", cwd=tmp_path, check=0)
    run_nmf(*common, "-o", "out", "--checkpoint-every", "5", cwd=tmp_path, check=0)
    out = tmp_path / "out"
    ckpt = nio.read_checkpoint(out / "checkpoint.h5")
    assert ckpt["iteration"] == 10
    assert (ckpt["W"], ckpt["W_before"]) == (f"{out / 'checkpoint.h5'}::/W", f"{out / 'checkpoint.h5'}::/W_before")
    assert not [name for name in os.listdir(out) if ".tmp-" in name]
    run_nmf(*common, "-o", "out", "--resume", "out/checkpoint.h5", "--force", cwd=tmp_path, check=0)
    for name in ("W.h5", "H.h5"):
        assert np.array_equal(_read_X(out / name), _read_X(tmp_path / "ref" / name)), name


def test_align_to_reorders_a_streamed_W_in_its_file(X, h5_file, tmp_path):
    """With W streamed to W.h5 block by block, --align-to reorders its columns in the file."""
    common = ["fit", h5_file, "-k", K, "--max-iter", 12, "--chunk-rows", 50, "--format", "h5", "--init", "random",
              "-q"]
    run_nmf("fit", h5_file, "-k", K, "--max-iter", 12, "-o", tmp_path / "last", "-q", check=0)
    run_nmf(*common, "-o", tmp_path / "plain", check=0)
    run_nmf(*common, "-o", tmp_path / "aligned", "--align-to", tmp_path / "last", check=0)
    order = json.loads((tmp_path / "aligned" / "report.json").read_text())["alignment"]["order"]
    assert np.array_equal(_read_X(tmp_path / "aligned" / "W.h5"), _read_X(tmp_path / "plain" / "W.h5")[:, order])
    assert np.array_equal(_read_X(tmp_path / "aligned" / "H.h5"), _read_X(tmp_path / "plain" / "H.h5")[order])
    assert order == core.match_components(nio.read_model(tmp_path / "plain" / "model.h5")["H"],
                                          nio.read_model(tmp_path / "last" / "model.h5")["H"]).order


@pytest.mark.parametrize("args,message,code", [
    (["--scheduler", "tcp://localhost:8786"], "Error: --scheduler needs --engine dask (got --engine numpy)", 2),
    (["--engine", "dask", "--scheduler", "tcp://localhost:8786", "--workers", "2"],
     "Error: --workers sets up the local cluster; it cannot be used with --scheduler "
     "(size the workers of that cluster where it is started)", 2),
    (["--engine", "cupy", "--chunk-rows", "10"], "Error: --chunk-rows needs --engine numpy or dask (got --engine cupy)", 2),
], ids=["scheduler-without-dask", "workers-with-scheduler", "chunk-rows-cupy"])
def test_engine_flags_that_do_not_go_together(h5_file, tmp_path, args, message, code):
    r = run_nmf("fit", h5_file, "-k", 2, "-o", tmp_path / "o", *args)
    assert r.returncode == code and one_error_line(r) == message
    assert not (tmp_path / "o").exists()


def test_row_block_input_errors(tmp_path):
    r = run_nmf("fit", tmp_path / "missing.h5", "-k", 2, "--chunk-rows", 10)
    assert r.returncode == 66 and one_error_line(r) == f"Error: {tmp_path / 'missing.h5'}: no such file"
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    r = run_nmf("fit", tmp_path / "x.csv", "-k", 1, "--chunk-rows", 10)
    assert r.returncode == 65 and one_error_line(r).startswith(
        f"Error: {tmp_path / 'x.csv'}: row blocks are read from HDF5, Zarr, NPY or a folder of NPY/NPZ row blocks, "
        "not csv")


def test_inspect_warns_about_column_chunked_hdf5(X, tmp_path):
    path = tmp_path / "cols.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, chunks=(200, 1))
    r = run_nmf("inspect", path, check=0)
    assert r.stderr.splitlines() == [
        f"warning: {path}: stored in chunks of 200 x 1 (by columns); row-block engines (--engine dask, "
        "--chunk-rows) will read it slowly; rechunk by rows first, e.g. h5repack -l /X:CHUNK=200x30 IN.h5 OUT.h5"]
    r = run_nmf("inspect", tmp_path / "cols.h5", "--json", check=0)
    assert json.loads(r.stdout)["kind"] == "matrix"
