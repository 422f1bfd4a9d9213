"""The `nmf` command end to end, as a real process, checking file contents.

Every input format goes through fit -> transform -> inspect (and reconstruct), and the
numbers must equal nmfcli's own Python API called in-process on the same file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from conftest import NMF, SAMPLE_DATA, labels, low_rank, nmf_env, one_error_line, run_nmf, start_nmf, write_csv
from nmfcli import core, summary
from nmfcli import io as nio

K = 3
M, N = 24, 10
REPORT_KEYS = {
    "k", "shape", "solver", "loss", "beta", "init", "seed", "n_iter", "converged", "stop_reason", "objective",
    "reconstruction_error", "relative_error", "time_s", "history", "history_iter", "input", "versions",
    "options", "row_labels_present", "col_labels_present", "row_labels", "col_labels",
}


def _sparse_X():
    X = low_rank(M, N, seed=1)
    X[np.random.default_rng(2).random((M, N)) < 0.5] = 0
    X[:, 0] += 0.5  # no all-zero row
    return X


def _make_inputs(d):
    """{name: (argument given to nmf, file read in-process)} for every input format."""
    X = low_rank(M, N)
    Xs = _sparse_X()
    rows, cols = labels("r", M), labels("w", N)
    write_csv(d / "labelled.csv", X, rows, cols)
    write_csv(d / "plain.tsv", X, delimiter="\t")
    write_csv(d / "packed.csv.gz", X, rows, cols, compress=True)
    np.save(d / "dense.npy", X)
    sp.save_npz(d / "sparse.npz", sp.csr_matrix(Xs))
    scipy.io.mmwrite(str(d / "sparse.mtx"), sp.coo_matrix(Xs))
    with h5py.File(d / "dense.h5", "w") as f:
        ds = f.create_dataset("X", data=X)
        ds.attrs["row_labels"] = np.array(rows, dtype=h5py.string_dtype())
        ds.attrs["col_labels"] = np.array(cols, dtype=h5py.string_dtype())
    with h5py.File(d / "anndata.h5", "w") as f:
        A = sp.csr_matrix(Xs)
        g = f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["shape"] = np.array(A.shape)
        for key in ("data", "indices", "indptr"):
            g.create_dataset(key, data=getattr(A, key))
    with h5py.File(d / "two.h5", "w") as f:
        f.create_dataset("a/X", data=X)
        f.create_dataset("b/Y", data=X[:5])
    import zarr

    zarr.save_array(str(d / "dense.zarr"), X)
    return {
        "csv-labels": "labelled.csv",
        "tsv": "plain.tsv",
        "csv.gz": "packed.csv.gz",
        "npy": "dense.npy",
        "npz-sparse": "sparse.npz",
        "mtx": "sparse.mtx",
        "h5-dense": "dense.h5",
        "h5-sparse-group": "anndata.h5",
        "h5-path": "two.h5::/a/X",
        "zarr": "dense.zarr",
        "stdin": "-",
    }


FORMATS = ["csv-labels", "tsv", "csv.gz", "npy", "npz-sparse", "mtx", "h5-dense", "h5-sparse-group", "h5-path",
           "zarr", "stdin"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Every format fitted once, all processes started together (the suite runs on 2 cores)."""
    d = tmp_path_factory.mktemp("formats")
    inputs = _make_inputs(d)
    procs = {}
    for name, arg in inputs.items():
        out = d / f"out-{name}"
        if arg == "-":
            p = subprocess.Popen([str(NMF), "fit", "-", "-k", str(K), "-o", str(out), "--json"], cwd=d, env=nmf_env(),
                                 stdin=open(d / "labelled.csv", "rb"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs[name] = p
        else:
            procs[name] = start_nmf("fit", arg, "-k", K, "-o", out, cwd=d)
    results = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        results[name] = (p.returncode, stdout.decode(), stderr.decode())
    return d, inputs, results


def _in_process(d, arg):
    source = str(d / "labelled.csv") if arg == "-" else str(d / arg)
    return nio.read_matrix(source)


@pytest.mark.parametrize("name", FORMATS)
def test_fit_every_format_matches_the_python_api(fitted, name):
    d, inputs, results = fitted
    rc, stdout, stderr = results[name]
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    matrix = _in_process(d, inputs[name])
    expected = core.fit(matrix.X, K)
    out = d / f"out-{name}"
    W, H = np.load(out / "W.npy"), np.load(out / "H.npy")
    assert np.array_equal(W, expected.W) and np.array_equal(H, expected.H)
    model = nio.read_model(out / "model.h5")
    assert np.array_equal(model["H"], expected.H) and np.array_equal(model["W"], expected.W)
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["k"] == K and report["shape"] == [M, N]
    assert report["n_iter"] == expected.n_iter and report["converged"] == expected.converged
    assert report["stop_reason"] == expected.stop_reason
    assert report["solver"] == "ehals" and report["loss"] == "frobenius" and report["beta"] == 2.0
    assert report["init"] == "nndsvda" and report["seed"] == 0
    assert report["relative_error"] == pytest.approx(expected.metrics["relative_error"], rel=1e-12)
    assert report["reconstruction_error"] == pytest.approx(expected.metrics["reconstruction_error"], rel=1e-12)
    assert report["history"] == pytest.approx(expected.history, rel=1e-12)
    assert report["input"]["sha256"] == matrix.sha256
    assert report["input"]["path"] == inputs[name]
    assert report["input"]["sparse"] == sp.issparse(matrix.X)
    assert report["versions"]["nmfcli"] and report["versions"]["numpy"]
    if name == "stdin":
        assert json.loads(stdout) == report  # --json: the report and nothing else on stdout
    else:
        assert stdout == ""


@pytest.mark.parametrize("name", ["csv-labels", "npz-sparse", "h5-path", "mtx"])
def test_transform_and_inspect_every_format(fitted, name):
    d, inputs, results = fitted
    arg = inputs[name]
    out = d / f"out-{name}"
    matrix = _in_process(d, arg)
    t = run_nmf("transform", arg, "--model", out / "model.h5", "-o", out / "T.npy", cwd=d, check=0)
    assert t.stderr == ""
    model = nio.read_model(out / "model.h5")
    assert np.array_equal(np.load(out / "T.npy"), core.transform(matrix.X, model["H"]))
    i = run_nmf("inspect", arg, "--json", cwd=d, check=0)
    info = json.loads(i.stdout)
    stats = summary.matrix_stats(matrix.X)
    assert info["kind"] == "matrix" and info["shape"] == [M, N]
    for key in ("nnz", "density", "negative", "nan", "inf", "zero_rows", "zero_cols", "sparse"):
        assert info[key] == stats[key], key
    assert info["min"] == pytest.approx(stats["min"]) and info["max"] == pytest.approx(stats["max"])


def test_labels_travel_into_model_report_and_csv_factors(tmp_path):
    X = low_rank(M, N)
    rows, cols = labels("doc", M), labels("term", N)
    write_csv(tmp_path / "d.csv", X, rows, cols)
    run_nmf("fit", "d.csv", "-k", K, "--format", "csv", cwd=tmp_path, check=0)
    out = tmp_path / "d.nmf"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "H.csv", "W.csv", "model.h5", "report.json"]
    W_lines = (out / "W.csv").read_text().splitlines()
    assert W_lines[0] == ",c0,c1,c2"
    assert [line.split(",")[0] for line in W_lines[1:]] == rows
    H_lines = (out / "H.csv").read_text().splitlines()
    assert H_lines[0] == "," + ",".join(cols)
    assert [line.split(",")[0] for line in H_lines[1:]] == ["c0", "c1", "c2"]
    expected = core.fit(X, K)
    W = nio.read_matrix(out / "W.csv")
    assert W.row_labels == rows and W.col_labels == ["c0", "c1", "c2"]
    assert np.array_equal(W.X, expected.W)  # CSV holds the shortest round-trip repr
    model = nio.read_model(out / "model.h5")
    assert model["row_labels"] == rows and model["col_labels"] == cols and model["components"] == ["c0", "c1", "c2"]
    report = json.loads((out / "report.json").read_text())
    assert report["row_labels"] == rows and report["col_labels"] == cols
    assert report["row_labels_present"] and report["col_labels_present"]


def test_stdin_to_json_on_stdout_and_nothing_else(tmp_path):
    X = low_rank(M, N)
    write_csv(tmp_path / "d.csv", X)
    p = subprocess.run(f"cat d.csv | '{NMF}' fit - -k 3 --json -q", shell=True, cwd=tmp_path, env=nmf_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    report = json.loads(p.stdout)
    assert report["input"]["path"] == "-" and report["shape"] == [M, N]
    assert (tmp_path / "stdin.nmf" / "model.h5").exists()


def test_transform_to_stdout_in_a_pipe(tmp_path):
    X = low_rank(M, N)
    cols = labels("w", N)
    write_csv(tmp_path / "d.csv", X, labels("r", M), cols)
    write_csv(tmp_path / "new.csv", X[:5] * 2, labels("n", 5), cols)
    run_nmf("fit", "d.csv", "-k", K, "-o", "m", cwd=tmp_path, check=0)
    p = subprocess.run(f"'{NMF}' transform new.csv --model m/model.h5 | head -1; echo \"rc=${{PIPESTATUS[0]}}\"",
                       shell=True, executable="/bin/bash", cwd=tmp_path, env=nmf_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.stdout.splitlines() == [",c0,c1,c2", "rc=0"]
    assert "Traceback" not in p.stderr
    full = run_nmf("transform", "new.csv", "--model", "m/model.h5", cwd=tmp_path, check=0)
    got = nio.read_matrix("-", stdin=__import__("io").BytesIO(full.stdout_bytes))
    assert got.row_labels == labels("n", 5) and got.col_labels == ["c0", "c1", "c2"]
    model = nio.read_model(tmp_path / "m" / "model.h5")
    assert np.array_equal(got.X, core.transform(X[:5] * 2, model["H"]))


def test_fix_H_returns_H_bit_identical_and_transform_agrees(tmp_path):
    X = low_rank(M, N)
    H = np.random.default_rng(5).random((K, N))
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "basis.npy", H)
    p = run_nmf("fit", "x.npy", "--fix-H", "basis.npy", "-o", "o", cwd=tmp_path, check=0)
    assert "Traceback" not in p.stderr
    H_out = np.load(tmp_path / "o" / "H.npy")
    assert H_out.tobytes() == H.tobytes()
    assert np.array_equal(np.load(tmp_path / "o" / "W.npy"), core.fit(X, K, fix_H=H).W)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["stop_reason"] == "exact" and report["options"]["fixed"] == "H"
    assert report["solver"] == report["options"]["solver"] == "nnls", "no HALS ran: the exact solve did"
    t = run_nmf("transform", "x.npy", "--components", "basis.npy", "-o", "t.npy", cwd=tmp_path, check=0)
    assert t.returncode == 0
    assert np.array_equal(np.load(tmp_path / "t.npy"), core.transform(X, H))


def test_reconstruct_and_error_report(tmp_path):
    X = low_rank(M, N)
    np.save(tmp_path / "x.npy", X)
    run_nmf("fit", "x.npy", "-k", K, "-o", "o", cwd=tmp_path, check=0)
    W, H = np.load(tmp_path / "o" / "W.npy"), np.load(tmp_path / "o" / "H.npy")
    run_nmf("reconstruct", "o/W.npy", "o/H.npy", "-o", "r.npy", cwd=tmp_path, check=0)
    assert np.array_equal(np.load(tmp_path / "r.npy"), W @ H)
    p = run_nmf("reconstruct", "o/W.npy", "--model", "o/model.h5", "--against", "x.npy", "--json",
                "--report", "err.json", cwd=tmp_path, check=0)
    got = json.loads(p.stdout)
    expected = core.metrics(X, W, H)
    for key in ("beta_divergence", "reconstruction_error", "relative_error"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12)
    assert json.loads((tmp_path / "err.json").read_text()) == got
    p = run_nmf("reconstruct", "o/W.npy", "o/H.npy", "--against", "x.npy", "-o", "r2.npy", cwd=tmp_path, check=0)
    assert "relative_error" in p.stderr and p.stdout == ""


def test_align_to_orders_a_refit_like_the_last_model(tmp_path):
    """--align-to: the refit's components take the places of the last model's that they
    resemble most; W and H are the unaligned fit's, columns and rows reordered, bit for bit."""
    X = low_rank(60, 40, 5, seed=4)
    write_csv(tmp_path / "d.csv", X, labels("r", 60), labels("w", 40))
    fit = ["fit", "d.csv", "-k", "5", "--init", "random", "--seed", "3", "--format", "csv"]
    run_nmf("fit", "d.csv", "-k", "5", "-o", "last", "-q", cwd=tmp_path, check=0)
    run_nmf(*fit, "-o", "plain", "-q", cwd=tmp_path, check=0)
    r = run_nmf(*fit, "-o", "aligned", "--align-to", "last", cwd=tmp_path, check=0)
    report = json.loads((tmp_path / "aligned" / "report.json").read_text())["alignment"]
    order = report["order"]
    assert order != list(range(5)), "the seeds were meant to find the components in another order"
    assert report["matched"] == list(range(5)) and report["model"] == "last"
    assert report["sha256"] == nio.file_sha256(str(tmp_path / "last"))
    read = lambda d, name: np.loadtxt(tmp_path / d / name, delimiter=",", skiprows=1,  # noqa: E731
                                      usecols=range(1, 41 if name == "H.csv" else 6))
    assert np.array_equal(read("aligned", "H.csv"), read("plain", "H.csv")[order])
    assert np.array_equal(read("aligned", "W.csv"), read("plain", "W.csv")[:, order])
    last_H = nio.read_model(tmp_path / "last" / "model.h5")["H"]
    assert report["similarity"] == pytest.approx(core.match_components(read("plain", "H.csv"), last_H).similarity)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    unaligned = np.sum(unit(read("plain", "H.csv")) * unit(last_H), axis=1)
    assert sum(report["similarity"]) > unaligned.sum() + 0.1  # the order found fits the last model better
    moved = sum(i != j for i, j in enumerate(order))
    assert f"components ordered like last's ({moved} moved), lowest similarity {min(report['similarity']):.3f}" \
        in r.stderr
    assert nio.read_model(tmp_path / "aligned" / "model.h5")["alignment"]["order"] == order


def test_align_to_errors(tmp_path):
    X = low_rank(M, N)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "wide.npy", np.hstack([X, X]))
    run_nmf("fit", "x.npy", "-k", K, "-o", "last", "-q", cwd=tmp_path, check=0)
    r = run_nmf("fit", "x.npy", "-k", K, "--fix-H", "last", "--align-to", "last", "-o", "o", cwd=tmp_path)
    assert r.returncode == 2 and one_error_line(r) == (
        "Error: --align-to reorders the fitted components; with --fix-H they keep the fixed factor's order")
    r = run_nmf("fit", "wide.npy", "-k", K, "--align-to", "last", "-o", "o", cwd=tmp_path)
    assert r.returncode == 65 and one_error_line(r) == (
        f"Error: last: its components have {N} columns but wide.npy has {2 * N}; --align-to needs a fit of the "
        "same columns")
    r = run_nmf("fit", "x.npy", "-k", K, "--align-to", "nope.h5", "-o", "o", cwd=tmp_path)
    assert r.returncode == 66 and one_error_line(r) == "Error: nope.h5: no such file"
    assert not (tmp_path / "o").exists()


def test_inspect_checkpoint(tmp_path):
    """A checkpoint is described, not refused as a file of several matrices: where the fit
    stopped, its last recorded objective, and the input and options a resume must repeat."""
    np.save(tmp_path / "x.npy", low_rank(M, N))
    run_nmf("fit", "x.npy", "-k", K, "--loss", "kl", "--tol", "0", "--max-iter", "10", "--checkpoint-every", "4",
            "-o", "o", "-q", cwd=tmp_path, check=0)
    ckpt = nio.read_checkpoint(tmp_path / "o" / "checkpoint.h5")
    info = json.loads(run_nmf("inspect", "o/checkpoint.h5", "--json", cwd=tmp_path, check=0).stdout)
    assert info["kind"] == "checkpoint" and info["iteration"] == ckpt["iteration"] == 8 and info["k"] == K
    assert (info["objective"], info["objective_iteration"]) == (ckpt["history"][-1], ckpt["history_iter"][-1])
    assert info["input"]["sha256"] == nio.file_sha256(tmp_path / "x.npy") and info["options"]["loss"] == "kl"
    text = run_nmf("inspect", "o/checkpoint.h5", cwd=tmp_path, check=0).stdout
    assert "o/checkpoint.h5 (checkpoint)" in text and "iteration: 8" in text and "loss kl, seed 0" in text


def test_inspect_model_report_json_and_plot(tmp_path):
    X = low_rank(M, N)
    write_csv(tmp_path / "d.csv", X, labels("r", M), labels("w", N))
    run_nmf("fit", "d.csv", "-k", K, "-o", "o", cwd=tmp_path, check=0)
    text = run_nmf("inspect", "o/model.h5", "--top", "2", cwd=tmp_path, check=0).stdout
    assert "k: 3" in text and "top features per component" in text
    model = nio.read_model(tmp_path / "o" / "model.h5")
    info = json.loads(run_nmf("inspect", "o/model.h5", "--top", "2", "--json", cwd=tmp_path, check=0).stdout)
    assert info["kind"] == "model" and info["k"] == K and info["converged"] == model["converged"]
    for i, comp in enumerate(info["components"]):
        order = np.argsort(-model["H"][i], kind="stable")[:2]
        assert [f["label"] for f in comp["top_features"]] == [f"w{j}" for j in order]
        assert [f["weight"] for f in comp["top_features"]] == [float(model["H"][i, j]) for j in order]
        assert f"{comp['name']}: w{order[0]} " in text
    rep = json.loads(run_nmf("inspect", "o/report.json", "--json", cwd=tmp_path, check=0).stdout)
    assert rep["kind"] == "report" and rep["n_iter"] == model["n_iter"]
    rtext = run_nmf("inspect", "o/report.json", cwd=tmp_path, check=0).stdout
    assert "relative_error" in rtext and "n_iter" in rtext
    pytest.importorskip("matplotlib")
    run_nmf("inspect", "o/model.h5", "--plot", "fit.png", cwd=tmp_path, check=0)
    png = (tmp_path / "fit.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_a_fit_folder_stands_for_its_model(tmp_path):
    """inspect, transform --model and reconstruct --model take the fit's output folder for its model.h5."""
    X = low_rank(M, N)
    np.save(tmp_path / "x.npy", X)
    run_nmf("fit", "x.npy", "-k", K, "-o", "o", "-q", cwd=tmp_path, check=0)
    by_folder = json.loads(run_nmf("inspect", "o", "--json", cwd=tmp_path, check=0).stdout)
    by_file = json.loads(run_nmf("inspect", "o/model.h5", "--json", cwd=tmp_path, check=0).stdout)
    assert by_folder["kind"] == "model" and by_folder["components"] == by_file["components"]
    run_nmf("transform", "x.npy", "--model", "o", "-o", "w_folder.npy", cwd=tmp_path, check=0)
    run_nmf("transform", "x.npy", "--model", "o/model.h5", "-o", "w_file.npy", cwd=tmp_path, check=0)
    assert np.array_equal(np.load(tmp_path / "w_folder.npy"), np.load(tmp_path / "w_file.npy"))
    run_nmf("reconstruct", "w_folder.npy", "--model", "o", "-o", "r.npy", cwd=tmp_path, check=0)
    H = nio.read_model(tmp_path / "o" / "model.h5")["H"]
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), np.load(tmp_path / "w_folder.npy") @ H)


def test_help_version_and_exit_codes():
    assert run_nmf("--version", check=0).stdout.strip().startswith("nmf ")
    top = run_nmf("--help", check=0).stdout
    assert "Exit codes" in top
    for code in ("0", "2", "3", "65", "66", "69", "70", "73", "74", "75", "130", "143"):
        assert re.search(rf"^\s+{code}\s+\S", top, re.M), code
    for command in ("fit", "transform", "reconstruct", "inspect"):
        text = run_nmf(command, "--help", check=0).stdout
        assert "Example" in text and f"nmf {command}" in text
    assert "pseudo-inverse" in run_nmf("transform", "--help", check=0).stdout


def test_top_level_help_and_version_load_no_numerical_library():
    """`nmf --help` and `--version` answer without importing the commands (scipy alone took 0.3 s),
    and list every command with the one-line help the command itself carries."""
    probe = (
        "import sys, io, contextlib\n"
        "from nmfcli.cli import run\n"
        "for args in (['--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert run(args) == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'scipy', 'h5py', 'rich'}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    from nmfcli.cli import SHORT_HELP, cli

    top = run_nmf("--help", check=0).stdout
    for name in cli.list_commands(None):
        command = cli.get_command(None, name)
        assert command.short_help == SHORT_HELP[name]
        assert re.search(rf"^\s+{name}\s+{re.escape(SHORT_HELP[name])}$", top, re.M), name
    assert set(cli.commands) == set(SHORT_HELP)


def test_fit_options_reach_the_core(tmp_path):
    X = low_rank(M, N)
    np.save(tmp_path / "x.npy", X)
    run_nmf("fit", "x.npy", "-k", K, "--loss", "kl", "--init", "random", "--seed", "7", "--max-iter", "50",
            "--tol", "0", "--alpha-W", "0.01", "--l1-ratio", "0.5", "--dtype", "float32", "--format", "h5",
            "-o", "o", cwd=tmp_path, check=0)
    expected = core.fit(X.astype(np.float32), K, loss="kl", init="random", seed=7, max_iter=50, tol=0.0,
                        alpha_W=0.01, l1_ratio=0.5)
    W = nio.read_matrix(tmp_path / "o" / "W.h5", dtype="float32").X
    with h5py.File(tmp_path / "o" / "H.h5") as f:
        H = f["X"][()]
    assert H.dtype == np.float32 and np.array_equal(H, expected.H) and np.array_equal(W, expected.W)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["solver"] == "emu" and report["loss"] == "kl" and report["beta"] == 1.0
    assert report["options"]["dtype"] == "float32" and report["n_iter"] == 50 and report["stop_reason"] == "max_iter"


def test_fit_takes_k_as_the_brief_spells_it(tmp_path):
    # `nmf fit data.npy --k 2`, as users write it in cron jobs, is the same as -k 2.
    X = low_rank(M, N)
    np.save(tmp_path / "x.npy", X)
    run_nmf("fit", "x.npy", "--k", "2", "-o", "long", cwd=tmp_path, check=0)
    run_nmf("fit", "x.npy", "-k", "2", "-o", "short", cwd=tmp_path, check=0)
    long_W, short_W = (np.load(tmp_path / d / "W.npy") for d in ("long", "short"))
    assert long_W.shape == (M, 2) and np.array_equal(long_W, short_W)


def test_demo_topics_come_from_the_column_labels(tmp_path):
    data = SAMPLE_DATA / "pydoc_topics.csv"
    if not data.exists():
        pytest.skip(f"{data} is not there yet (sample_data/ is built by another change)")
    shutil.copy(data, tmp_path / "pydoc_topics.csv")
    run_nmf("fit", "pydoc_topics.csv", "-k", 8, "-o", "o", cwd=tmp_path, check=0)
    terms = set(nio.read_matrix(tmp_path / "pydoc_topics.csv").col_labels)
    info = json.loads(run_nmf("inspect", "o/model.h5", "--top", 8, "--json", cwd=tmp_path, check=0).stdout)
    assert len(info["components"]) == 8
    words = [f["label"] for comp in info["components"] for f in comp["top_features"]]
    assert len(words) == 64 and set(words) <= terms
    text = run_nmf("inspect", "o/model.h5", "--top", 8, cwd=tmp_path, check=0).stdout
    # Topics the README's scikit-learn table also finds (the literal/number topic, the operator topic).
    assert "literal" in text and "operator" in text
    for comp in info["components"]:
        assert f"{comp['name']}: {comp['top_features'][0]['label']} (" in text


def test_float32_input_stays_float32_end_to_end(tmp_path):
    """Users with float32 data (images, spectrograms) must not get an upcast copy."""
    X = low_rank(30, 12, 3).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    run_nmf("fit", "x.npy", "-k", "3", "-q", cwd=tmp_path, check=0)
    W = np.load(tmp_path / "x.nmf" / "W.npy")
    H = np.load(tmp_path / "x.nmf" / "H.npy")
    assert W.dtype == np.float32 and H.dtype == np.float32
    expected = core.fit(X, 3)
    np.testing.assert_array_equal(W, expected.W)
    run_nmf("fit", "x.npy", "-k", "3", "-q", "--dtype", "float64", "-o", "f64", cwd=tmp_path, check=0)
    assert np.load(tmp_path / "f64" / "W.npy").dtype == np.float64


@pytest.mark.parametrize("delay_s, shown", [(0.0, True), (3600.0, False)])
def test_progress_display_counts_rows_and_waits_for_slow_work(monkeypatch, delay_s, shown):
    """The bar of the exact solve (transform, fit with a fixed factor) counts rows; with a
    delay (transform's: a second) quick work leaves nothing on the terminal."""
    import io

    from rich.console import Console

    from nmfcli.cli.terminal import ProgressDisplay, Terminal

    term = Terminal()
    term.tty = True
    screen = io.StringIO()
    monkeypatch.setattr(term, "console", lambda stderr=True: Console(file=screen, force_terminal=True, width=100))
    with ProgressDisplay(term, 0, "nmf transform", delay_s=delay_s) as bar:
        for done in (4096, 8192, 10000):
            bar.solved(done, 10000, "rows")
    assert ("rows 10000/10000" in screen.getvalue()) == shown, screen.getvalue()


def test_progress_bar_reads_the_objective_a_few_times_a_second(monkeypatch):
    """On a GPU each read of the objective waits for the device: the bar reads it when it is
    due to show it (and once at the end, so that it ends on the last one), not every iteration."""
    import io

    from rich.console import Console

    from nmfcli.cli import terminal
    from nmfcli.core import IterationInfo

    term = terminal.Terminal()
    term.tty = True
    screen = io.StringIO()
    monkeypatch.setattr(term, "console", lambda stderr=True: Console(file=screen, force_terminal=True, width=120))
    clock = [0.0]
    monkeypatch.setattr(terminal.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(terminal, "DETAIL_EVERY_S", 0.25)
    reads = []
    history = []

    def floats():
        reads.append(len(history))
        return history

    with terminal.ProgressDisplay(term, 100, "nmf fit k=3") as bar:
        for iteration in range(1, 101):
            history.append(1000.0 / iteration)
            clock[0] += 1 / 32  # eight iterations per refresh of the objective (sums without rounding)
            bar.update(IterationInfo(iteration, 100, clock[0], None, None, None, floats))
    # reads (objective, change) at each refresh: iterations 1, 9, 17, ..., 97, and the last one
    assert sorted(set(reads)) == [*range(1, 100, 8), 100], reads
    assert "objective 10 " in screen.getvalue()  # the last iteration's, shown at the end


def test_a_fit_stopped_by_max_iter_says_what_to_do(tmp_path):
    np.save(tmp_path / "x.npy", low_rank(M, N))
    p = run_nmf("fit", "x.npy", "-k", "3", "--max-iter", "3", "-o", "a", cwd=tmp_path, check=0)
    lines = p.stderr.splitlines()
    assert lines[0].startswith("wrote a/: k=3, 3 iterations, not converged (max_iter)")
    assert lines[1:] == ["note: stopped at --max-iter 3 before the tol 0.0001 test was met; raise --max-iter to go "
                         "on (--strict turns this into exit 3 for alerting)"]
    # tol 0 asks for max_iter iterations: nothing to say
    p = run_nmf("fit", "x.npy", "-k", "3", "--max-iter", "3", "--tol", "0", "-o", "b", cwd=tmp_path, check=0)
    assert len(p.stderr.splitlines()) == 1
