"""Hostile input and hostile file systems: every case gets one `Error:` line with the exit code
the README's table gives, or the right result, and nothing outside the named output changes.

Most cases run `nmf` in this process (nmfcli.cli.run, the same boundary as the console
script); closed stdin, /dev/full and signals need a real process.
"""

from __future__ import annotations

import contextlib
import gzip
import io as stdio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import NMF, REPO, low_rank, nmf_env, one_error_line, start_nmf, wait_for
from conftest import snapshot as conftest_snapshot
from nmfcli import io as nio
from nmfcli.cli import run


class Ran:
    def __init__(self, code, stdout, stderr):
        self.returncode, self.stdout, self.stderr = code, stdout, stderr


def nmf(*args, stdin: bytes | None = None) -> Ran:
    """`nmf ARGS` in this process, in the current folder; stdout and stderr captured."""
    out, err = stdio.StringIO(), stdio.StringIO()
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = stdio.TextIOWrapper(stdio.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run([str(a) for a in args])
    finally:
        sys.stdin = old_stdin
    return Ran(code, out.getvalue(), err.getvalue())


def refused(r: Ran, code: int, message):
    """One error line, the exit code, the exact message (or a regex for machine-dependent numbers)."""
    line = one_error_line(r)
    assert r.returncode == code, line
    if isinstance(message, str):
        assert line == message
    else:
        assert message.fullmatch(line), line
    return line


def snapshot(folder: Path) -> dict:
    """Every file under folder (links as links) and its bytes or link target."""
    return conftest_snapshot(folder)


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", low_rank(20, 8))
    return tmp_path


@pytest.fixture
def fitted(here):
    assert nmf("fit", "x.npy", "-k", "2", "-o", "m", "-q").returncode == 0
    return here


# ------------------------------------------------------------------------------ tracebacks


def test_csv_lines_longer_than_the_csv_modules_field_limit_are_read(here):
    X = low_rank(5, 15000)
    np.savetxt("wide.csv", X, delimiter=",")
    assert len(Path("wide.csv").read_text().splitlines()[0]) > 131072
    r = nmf("inspect", "wide.csv", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["shape"] == [5, 15000]
    np.testing.assert_array_equal(nio.read_matrix("wide.csv").X, np.loadtxt("wide.csv", delimiter=","))


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
@pytest.mark.parametrize("command", ["fit", "rank"])
def test_seeds_numpy_cannot_take_are_usage_errors(here, command, seed):
    args = ["fit", "x.npy", "-k", "2", "-o", "out"] if command == "fit" else ["rank", "x.npy", "-k", "2"]
    refused(nmf(*args, "--seed", seed), 2,
            f"Error: Invalid value for '--seed': {seed} is not in the range 0<=x<=4294967295. "
            f"(see 'nmf {command} --help')")
    assert not Path("out").exists()


def test_seed_at_the_top_of_the_range_is_accepted(here):
    assert nmf("fit", "x.npy", "-k", "2", "--seed", str(2**32 - 1), "-o", "out", "-q").returncode == 0


def test_closed_stdin_is_a_missing_input(tmp_path):
    p = subprocess.run(f"exec '{NMF}' fit - -k 2 <&-", shell=True, cwd=tmp_path, env=nmf_env(), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 66, p.stderr
    assert one_error_line(p) == "Error: -: stdin is closed; give INPUT as a file, or pipe the data in"
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [["transform", "x.npy", "--model", "m/model.h5"],
                                  ["fit", "x.npy", "-k", "2", "-o", "m2", "--json", "-q"],
                                  ["inspect", "m/model.h5"]])
def test_a_full_stdout_exits_74(fitted, args):
    with open("/dev/full", "w") as full:
        p = subprocess.run([str(NMF), *args], cwd=fitted, env=nmf_env(), stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=120)
    p.stdout = ""
    assert p.returncode == 74, p.stderr
    assert one_error_line(p) == "Error: -: writing to stdout failed (No space left on device)"


def test_a_closed_stderr_keeps_messages_out_of_the_data_on_stdout(fitted):
    p = subprocess.run(f"exec '{NMF}' transform x.npy --model m/model.h5 --loss hinge 2>&-", shell=True, cwd=fitted,
                       env=nmf_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_stderr_still_gives_the_exit_code(fitted):
    with open("/dev/full", "w") as full:
        p = subprocess.run([str(NMF), "fit", "nope.csv", "-k", "2"], cwd=fitted, env=nmf_env(),
                           stdout=subprocess.PIPE, stderr=full, text=True, timeout=120)
    assert p.returncode == 66 and p.stdout == ""


def _model_with_extra_H_row(src, dst):
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for key, value in f.attrs.items():
            g.attrs[key] = value
        for key in f:
            g[key] = f[key][()]
        H = f["H"][()]
        del g["H"]
        g["H"] = np.vstack([H, H[:1]])


@pytest.mark.parametrize("args", [["inspect", "bad.h5"], ["transform", "x.npy", "--model", "bad.h5"]])
def test_a_model_whose_H_has_more_rows_than_its_k_is_damaged(fitted, args):
    _model_with_extra_H_row("m/model.h5", "bad.h5")
    refused(nmf(*args), 65, "Error: bad.h5: the model's H has 3 rows but the model says k=2; the file is damaged")


def test_a_model_whose_component_names_do_not_match_H_is_damaged(fitted):
    with h5py.File("m/model.h5", "a") as f:
        f.attrs["components"] = json.dumps(["c0", "c1", "c2"])
        f.attrs["k"] = json.dumps(2)
    refused(nmf("inspect", "m/model.h5"), 65,
            "Error: m/model.h5: the model has 3 components for 2 rows of H; the file is damaged")


@pytest.fixture
def checkpointed(here):
    r = nmf("fit", "x.npy", "-k", "2", "-o", "c", "-q", "--tol", "0", "--max-iter", "3", "--checkpoint-every", "1")
    assert r.returncode == 0, r.stderr
    return here


@pytest.mark.parametrize("key, value", [("iteration", '"x"'), ("solver_state", "[1, 2]"), ("history", "{}"),
                                        ("options", "[1]"), ("H_before", np.ones((1, 1)))])
def test_a_hand_edited_checkpoint_is_refused_as_damaged(checkpointed, key, value):
    with h5py.File("c/checkpoint.h5", "a") as f:
        if isinstance(value, str):
            f.attrs[key] = value
        else:
            del f[key]
            f[key] = value
    refused(nmf("fit", "x.npy", "-k", "2", "--tol", "0", "--max-iter", "5", "--resume", "c/checkpoint.h5", "-o",
                "out"), 65, f"Error: c/checkpoint.h5: the checkpoint's '{key}' is not what nmf writes there; it is "
                            "damaged")
    assert not Path("out").exists()
    r = nmf("inspect", "c/checkpoint.h5")
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_a_model_whose_options_are_not_a_record_is_damaged(fitted):
    with h5py.File("m/model.h5", "a") as f:
        f.attrs["options"] = "[1, 2]"
    refused(nmf("transform", "x.npy", "--model", "m/model.h5"), 65,
            "Error: m/model.h5: the model's 'options' is not a record (a JSON object); the file is damaged")


@pytest.mark.parametrize("name, message", [
    ("m/report.json", "Error: m/report.json: is an nmf report, not a matrix or a model; give the model.h5 beside it"),
    ("c/checkpoint.h5", "Error: c/checkpoint.h5: is an nmf checkpoint, not a matrix or a model; give it to --resume"),
])
def test_a_report_or_checkpoint_given_as_a_factor(fitted, name, message):
    assert nmf("fit", "x.npy", "-k", "2", "-o", "c", "-q", "--tol", "0", "--max-iter", "2",
               "--checkpoint-every", "1").returncode == 0
    refused(nmf("fit", "x.npy", "-k", "2", "--align-to", name, "-o", "out"), 65, message)
    refused(nmf("transform", "x.npy", "--components", name), 65, message)


def test_align_to_a_model_with_nan_components_is_refused(fitted):
    with h5py.File("m/model.h5", "a") as f:
        del f["H"]
        f["H"] = np.full((2, 8), np.nan)
    refused(nmf("fit", "x.npy", "-k", "2", "--align-to", "m/model.h5", "-o", "out"), 65,
            "Error: m/model.h5: the model's H has 16 NaN or infinite values (the first at row 1, column 1); a fit never writes them: the file is damaged")


# ------------------------------------------------------------------------------ memory


def test_a_tiny_mtx_declaring_huge_rows_is_refused_before_reading(here):
    Path("rows.mtx").write_text("%%MatrixMarket matrix coordinate real general\n1000000000000 3 1\n1 1 1\n")
    refused(nmf("fit", "rows.mtx", "-k", "2", "-o", "out"), 69, re.compile(
        r"Error: rows\.mtx: the fit needs about [\d.]+ TiB of memory \(1000000000000 x 3 declared, k=2\) but only "
        r"[\d.]+ [KMGT]iB is available; check the shape in its header, or use a machine with more memory"))
    assert not Path("out").exists()


@pytest.mark.parametrize("command", ["transform", "rank"])
def test_transform_and_rank_refuse_a_huge_declared_sparse_input_before_reading_it(fitted, command):
    Path("rows.mtx").write_text("%%MatrixMarket matrix coordinate real general\n1000000000000 8 1\n1 1 1\n")
    args = ["transform", "rows.mtx", "--model", "m/model.h5"] if command == "transform" else \
        ["rank", "rows.mtx", "-k", "2:3"]
    needs, k = ("the transform needs", 2) if command == "transform" else ("the fit needs", 3)
    refused(nmf(*args), 69, re.compile(
        rf"Error: rows\.mtx: {needs} about [\d.]+ TiB of memory \(1000000000000 x 8 declared, k={k}\) but only "
        r"[\d.]+ [KMGT]iB is available; check the shape in its header, or use a machine with more memory"))


def test_transform_names_the_model_whose_H_is_refused(fitted):
    with h5py.File("m/model.h5", "a") as f:
        H = f["H"][()]
        H[0, 1] = -1
        del f["H"]
        f["H"] = H
    line = refused(nmf("transform", "x.npy", "--model", "m/model.h5"), 65, re.compile(r"Error: m/model\.h5: .*"))
    assert "negative" in line


def test_a_tiny_mtx_declaring_huge_rows_is_refused_by_the_reader_too(here):
    """inspect reads it: the reader counts CSR's pointer per declared row before allocating."""
    Path("rows.mtx").write_text("%%MatrixMarket matrix coordinate real general\n100000000000 100000000000 1\n"
                                "1 1 1\n")
    assert os.path.getsize("rows.mtx") < 90
    refused(nmf("inspect", "rows.mtx"), 69, re.compile(
        r"Error: rows\.mtx: the sparse matrix \(100000000000 x 100000000000, 1 entries\) needs [\d.]+ TiB of "
        r"memory but only [\d.]+ [KMGT]iB is available; use a smaller input or read it lazily"))


def test_a_small_coo_npz_declaring_huge_rows_is_refused(here):
    np.savez_compressed("coo.npz", format=np.array("coo"), shape=np.array([10**12, 3]), data=np.array([1.0]),
                        row=np.array([0]), col=np.array([0]))
    assert os.path.getsize("coo.npz") < 2000
    refused(nmf("fit", "coo.npz", "-k", "2", "-o", "out"), 69, re.compile(
        r"Error: coo\.npz: the fit needs about [\d.]+ TiB of memory \(1000000000000 x 3 declared, k=2\) but only .*"))
    refused(nmf("inspect", "coo.npz"), 69, re.compile(
        r"Error: coo\.npz: the sparse matrix \(1000000000000 x 3, 1 values\) needs [\d.]+ TiB of memory but "
        r"only [\d.]+ [KMGT]iB is available; use a smaller input or read it lazily"))


def test_a_model_whose_H_declares_gigabytes_it_does_not_store_is_damaged(fitted):
    with h5py.File("m/model.h5", "a") as f:
        del f["H"]
        f.create_dataset("H", shape=(2, 250_000_000), dtype="f8", chunks=(1, 1_000_000))
        f.attrs["col_labels"] = "null"
    assert os.path.getsize("m/model.h5") < 1 << 20
    for args in (["inspect", "m/model.h5"], ["transform", "x.npy", "--model", "m/model.h5"]):
        refused(nmf(*args), 65, "Error: m/model.h5: dataset 'H' declares 2 x 250000000 float64 (3.7 GiB) but the "
                                "file stores 0 bytes of it; the file is damaged")


def test_a_memory_refusal_exits_69(here):
    with h5py.File("huge.h5", "w") as f:
        f.create_dataset("X", shape=(10**7, 10**6), dtype="f8", chunks=(1000, 1000))
    refused(nmf("fit", "huge.h5", "-k", "2", "-o", "out"), 69, re.compile(
        r"Error: huge\.h5: dataset '/X' \(10000000 x 1000000 float64\) needs 72\.8 TiB of memory but only "
        r"[\d.]+ [KMGT]iB is available; use a smaller input or read it lazily"))


def test_running_out_of_memory_exits_69_with_one_line(here, monkeypatch):
    def oom(*args, **kwargs):
        raise MemoryError("Unable to allocate 16.0 GiB for an array with shape (2, 1073741824) and data type float64")

    monkeypatch.setattr("nmfcli.core.fit", oom)
    refused(nmf("fit", "x.npy", "-k", "2", "-o", "out"), 69,
            "Error: out of memory (Unable to allocate 16.0 GiB for an array with shape (2, 1073741824) and data "
            "type float64); use --dtype float32, sparse input, --chunk-rows or the Dask engine, or a machine with "
            "more memory")
    assert not Path("out").exists()


def test_gzip_text_too_large_once_inflated_is_refused_from_its_size(here, monkeypatch):
    row = ",".join(["0"] * 10) + "\n"
    Path("bomb.csv.gz").write_bytes(gzip.compress((row * 50_000).encode()))  # 1 MB of text, 50,000 lines
    monkeypatch.setattr("nmfcli.io._text.available_memory", lambda: 4_500_000)
    monkeypatch.setattr("nmfcli.io._common.available_memory", lambda: 4_500_000)
    refused(nmf("inspect", "bomb.csv.gz"), 69,
            "Error: bomb.csv.gz: the text (976.6 KiB, read into lines) needs 8.6 MiB of memory but only 4.3 MiB "
            "is available; use a smaller input or read it lazily")


def test_text_reading_reports_its_progress(here):
    np.savetxt("tall.csv", low_rank(10_000, 3), delimiter=",")
    seen = []
    nio.read_matrix("tall.csv", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (10_000, 10_000) and len(seen) >= 2
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# ------------------------------------------------------------------------------ internal errors


def test_a_bug_exits_70_with_one_line_and_NMF_DEBUG_shows_the_traceback(here, monkeypatch):
    def bug(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr("nmfcli.core.fit", bug)
    monkeypatch.delenv("NMF_DEBUG", raising=False)
    r = nmf("fit", "x.npy", "-k", "2", "-o", "out")
    line = refused(r, 70, re.compile(r"Error: internal error \(a bug in nmf\): ZeroDivisionError: division by zero "
                                     r"at \S+\.py:\d+; rerun with NMF_DEBUG=1 for the traceback and "
                                     r"please report it"))
    assert not Path("out").exists()
    monkeypatch.setenv("NMF_DEBUG", "1")
    r = nmf("fit", "x.npy", "-k", "2", "-o", "out")
    assert r.returncode == 70
    assert "Traceback (most recent call last)" in r.stderr and "ZeroDivisionError" in r.stderr
    assert r.stderr.splitlines()[-1] == line


def test_NMF_DEBUG_is_documented():
    r = nmf("--help")
    assert "NMF_DEBUG=1" in r.stdout and "70" in r.stdout
    assert "NMF_DEBUG=1" in (REPO / "README.md").read_text()


# ------------------------------------------------------------------------------ data lost or misplaced


def test_reconstruct_checks_against_before_replacing_its_output(fitted):
    np.save("wrong.npy", np.ones((3, 3)))
    Path("out.csv").write_text("keep me\n")
    r = nmf("reconstruct", "m/W.npy", "m/H.npy", "--against", "wrong.npy", "-o", "out.csv", "--force")
    refused(r, 65, "Error: wrong.npy: is 3 x 3 but W·H is 20 x 8; they must match")
    assert Path("out.csv").read_text() == "keep me\n"
    r = nmf("reconstruct", "m/W.npy", "m/H.npy", "--against", "wrong.npy", "-o", "new.csv")
    assert r.returncode == 65 and not Path("new.csv").exists()


def test_reconstruct_refuses_an_existing_output_before_any_work(fitted):
    Path("out.csv").write_text("keep me\n")
    refused(nmf("reconstruct", "m/W.npy", "m/H.npy", "-o", "out.csv"), 73,
            "Error: out.csv: already exists; use --force to replace it")


def test_an_output_that_is_a_fifo_is_not_replaced_even_with_force(fitted):
    """A matrix output that is a device or a FIFO is written into (see test_cli_rough_edges); a
    file output that is replaced atomically (a figure, a report, a model) refuses to replace one."""
    os.mkfifo("out.png")
    refused(nmf("inspect", "m/model.h5", "--plot", "out.png", "--force"), 73,
            "Error: out.png: is not a regular file (a device, a FIFO or a socket); nmf replaces only files; give a "
            "file name")
    assert Path("out.png").is_fifo()


def test_an_output_file_name_ending_in_a_slash_is_a_folder(fitted):
    refused(nmf("transform", "x.npy", "--model", "m/model.h5", "-o", "out.csv/"), 73,
            "Error: out.csv/: is a folder; give a file name")
    assert not Path("out.csv").exists()


def test_a_symlinked_lock_file_is_not_written_through(fitted):
    Path("victim.txt").write_text("precious\n")
    os.unlink("m/.nmf.lock") if os.path.lexists("m/.nmf.lock") else None
    os.symlink("../victim.txt", "m/.nmf.lock")
    before = snapshot(fitted / "m")
    refused(nmf("fit", "x.npy", "-k", "3", "-o", "m", "--force"), 73,
            "Error: m/.nmf.lock: is a symbolic link; nmf does not write through links in its output folder: "
            "remove it")
    assert Path("victim.txt").read_text() == "precious\n"
    assert snapshot(fitted / "m") == before


def test_a_symlinked_outdir_keeps_its_link_and_its_target_gets_the_new_files(fitted):
    os.symlink("m", "link")
    r = nmf("fit", "x.npy", "-k", "3", "-o", "link", "--force", "-q")
    assert r.returncode == 0, r.stderr
    assert os.path.islink("link") and os.readlink("link") == "m"
    assert np.load("m/H.npy").shape == (3, 8)
    assert sorted(p for p in os.listdir(".") if "staging" in p or ".tmp-" in p) == []


def test_without_force_a_run_without_the_lock_does_not_replace_outputs_that_appeared_meanwhile(here, monkeypatch):
    """Another run (--no-lock too) fills the folder while this one computes: its outputs stay."""
    from nmfcli import core

    original, theirs = core.fit, {}

    def fit_while_another_run_writes(*args, **kwargs):
        result = original(*args, **kwargs)
        monkeypatch.setattr("nmfcli.core.fit", original)
        assert nmf("fit", "x.npy", "-k", "2", "-o", "shared", "--no-lock", "-q").returncode == 0
        theirs.update(snapshot(here / "shared"))
        return result

    monkeypatch.setattr("nmfcli.core.fit", fit_while_another_run_writes)
    refused(nmf("fit", "x.npy", "-k", "3", "-o", "shared", "--no-lock", "-q"), 73,
            "Error: shared/H.npy: appeared while this run was writing (another run without a lock?); nothing was "
            "replaced; use --force to replace it")
    assert theirs and snapshot(here / "shared") == theirs
    assert sorted(x for x in os.listdir(here) if "staging" in x) == []


# Three signals in a burst while the checkpoint they ask for is written: sent by the process
# itself from inside write_checkpoint, the moment it matters, so the test needs no timing.
BURST = textwrap.dedent("""
    import os, signal, sys
    import nmfcli.io as nio
    from nmfcli.cli import main
    original, calls = nio.write_checkpoint, []

    def write_checkpoint(path, state, **kwargs):
        calls.append(state["iteration"])
        os.kill(os.getpid(), signal.SIGTERM)  # the first asks the run to stop; the next ones land mid-write
        if len(calls) > 1:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        return original(path, state, **kwargs)

    nio.write_checkpoint = write_checkpoint
    main(["fit", "x.npy", "-k", "3", "--tol", "0", "--max-iter", "1000", "--checkpoint-every", "2", "-o", "out"])
""")


def test_signals_while_the_checkpoint_is_written_do_not_kill_it(here):
    p = subprocess.run([sys.executable, "-c", BURST], cwd=here, env=nmf_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 143, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    ckpt = nio.read_checkpoint("out/checkpoint.h5")
    assert f"Interrupted after iteration {ckpt['iteration']}; checkpoint written to out/checkpoint.h5." in p.stderr
    assert ckpt["iteration"] > 2  # the checkpoint of the stop, not the periodic one before it
    assert sorted(os.listdir("out")) == [".nmf.lock", "checkpoint.h5"]


def test_a_burst_of_sigterms_leaves_a_whole_checkpoint(here):
    np.save("big.npy", low_rank(300, 200, k=10))
    p = start_nmf("fit", "big.npy", "-k", "10", "--tol", "0", "--max-iter", "100000", "-q",
                  "--checkpoint-every", "20", "-o", "out", cwd=here)
    wait_for(here / "out" / "checkpoint.h5", p)
    for _ in range(3):
        p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err.decode()
    assert "checkpoint written to out/checkpoint.h5" in err.decode()
    assert nio.read_checkpoint("out/checkpoint.h5")["iteration"] >= 20
    assert [x for x in os.listdir("out") if ".tmp-" in x] == []


# ------------------------------------------------------------------------------ misleading answers


def test_fit_refuses_dash_as_its_output_folder(here):
    refused(nmf("fit", "x.npy", "-k", "2", "-o", "-"), 2,
            "Error: -o -: fit writes a folder of outputs (W, H, model.h5, report.json), not a stream; give a folder "
            "name (--json prints the report on stdout)")
    assert not Path("-").exists()


@pytest.mark.parametrize("kind", ["file", "dangling", "device"])
def test_fit_refuses_an_output_folder_that_is_not_a_folder(here, kind):
    if kind == "file":
        Path("afile").write_text("mine\n")
        outdir, message = "afile", ("Error: afile: is not a folder (a file or a device); fit writes a folder of "
                                    "outputs: give a folder name")
    elif kind == "dangling":
        os.symlink("nowhere", "dangling")
        outdir, message = "dangling", ("Error: dangling: is a symbolic link to nowhere, which is not a folder; fit "
                                       "writes a folder of outputs: give a folder name")
    else:
        outdir, message = "/dev/null", ("Error: /dev/null: is not a folder (a file or a device); fit writes a folder "
                                        "of outputs: give a folder name")
    before = snapshot(here)
    refused(nmf("fit", "x.npy", "-k", "2", "-o", outdir), 73, message)
    assert snapshot(here) == before


def test_fit_refuses_a_default_output_folder_that_is_a_file(here):
    Path("x.nmf").write_text("mine\n")
    refused(nmf("fit", "x.npy", "-k", "2"), 73,
            "Error: x.nmf: is not a folder (a file or a device); fit writes a folder of outputs: give a folder name")
    assert Path("x.nmf").read_text() == "mine\n"


def test_a_folder_without_a_model_given_as_model(here):
    os.mkdir("empty")
    refused(nmf("transform", "x.npy", "--model", "empty"), 66,
            "Error: empty: is a folder without a model.h5; give a model file or the folder of a fit")


def test_semicolon_csv_with_decimal_commas_is_not_read_as_a_header(here):
    Path("semi.csv").write_text("1;2,5;3\n4;5;6\n")
    refused(nmf("inspect", "semi.csv"), 65,
            "Error: semi.csv: row 1, column 2 (line 1, field 2): '2,5' is not a number; use '.' as the decimal point")


@pytest.mark.parametrize("args, message", [
    (["--fix-H", "H.npy", "--H0", "H.npy"],
     "Error: --fix-H keeps H fixed at H.npy, so --H0 (a start for H) would not be used; give one of them"),
    (["--fix-W", "W.npy", "--W0", "W.npy"],
     "Error: --fix-W keeps W fixed at W.npy, so --W0 (a start for W) would not be used; give one of them"),
    (["--fix-H", "H.npy", "--W0", "W.npy", "--init", "custom"],
     "Error: --W0 would not be used: with --fix-H and the frobenius loss the fit is one exact solve, which needs "
     "no start; leave it out"),
    (["--fix-H", "H.npy", "--init", "random", "--loss", "kl"],
     "Error: --init random would not be used: with --fix-H the free factor starts from a constant, or from --W0 "
     "(--init custom)"),
    (["-k", "2", "--max-time", "nan"], "Error: --max-time must be a number of seconds > 0; got nan"),
])
def test_options_that_would_be_ignored_are_refused(here, args, message):
    np.save("H.npy", np.ones((2, 8)))
    np.save("W.npy", np.ones((20, 2)))
    refused(nmf("fit", "x.npy", *args, "-o", "out"), 2, message)
    assert not Path("out").exists()


def test_a_start_for_the_free_factor_under_kl_is_still_used(here):
    np.save("H.npy", np.ones((2, 8)))
    np.save("W.npy", np.ones((20, 2)))
    r = nmf("fit", "x.npy", "--fix-H", "H.npy", "--W0", "W.npy", "--init", "custom", "--loss", "kl", "-o", "out", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(Path("out/report.json").read_text())["init"] == "custom"


def test_npy_bytes_on_stdin_point_to_input_format(here):
    refused(nmf("fit", "-", "-k", "2", stdin=Path("x.npy").read_bytes()), 65,
            "Error: -: is an NPY file, not CSV text; give --input-format npy")
    assert not Path("stdin.nmf").exists()


class Endless(stdio.RawIOBase):
    """Zeros for ever, like /dev/zero; fails the test once more than a few MiB are asked for."""

    def __init__(self):
        self.given = 0

    def readable(self):
        return True

    def readinto(self, b):
        assert self.given < 8 << 20, "read far beyond the first bytes"
        b[:] = bytes(len(b))
        self.given += len(b)
        return len(b)


@pytest.mark.parametrize("fmt, message", [
    ("csv", "Error: -: byte 1 is a NUL byte: this is binary data, not CSV text"),
    ("npy", "Error: -: is not an NPY file (its first bytes are not the npy magic number)"),
])
def test_an_endless_stream_of_zeros_is_refused_from_its_first_bytes(here, monkeypatch, fmt, message):
    stream = Endless()
    monkeypatch.setattr(sys, "stdin", stdio.TextIOWrapper(stdio.BufferedReader(stream)))
    refused(nmf("fit", "-", "--input-format", fmt, "-k", "2"), 65, message)
    assert stream.given <= 2 << 20


def test_dev_zero_as_csv_is_refused_at_once(here):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    refused(nmf("fit", "/dev/zero", "--input-format", "csv", "-k", "2", "-o", "out"), 65,
            "Error: /dev/zero: byte 1 is a NUL byte: this is binary data, not CSV text")


# ------------------------------------------------------------------------------ the README's table


README_ROWS = [
    "`Error: -: stdin is closed; give INPUT as a file, or pipe the data in` | 66",
    "`Error: -: writing to stdout failed (No space left on device)` | 74",
    "`Error: bad.h5: the model's H has 3 rows but the model says k=2; the file is damaged` | 65",
    "`Error: m/model.h5: dataset 'H' declares 2 x 250000000 float64 (3.7 GiB) but the file stores 0 bytes of it; "
    "the file is damaged` | 65",
    "`Error: out of memory (…); use --dtype float32, sparse input, --chunk-rows or the Dask engine, or a machine "
    "with more memory` | 69",
    "`Error: internal error (a bug in nmf): ZeroDivisionError: division by zero at …; rerun with NMF_DEBUG=1 for "
    "the traceback and please report it` | 70",
    "`Error: wrong.npy: is 3 x 3 but W·H is 20 x 8; they must match` | 65",
    "`Error: m/.nmf.lock: is a symbolic link; nmf does not write through links in its output folder: remove it` "
    "| 73",
    "`Error: shared/H.npy: appeared while this run was writing (another run without a lock?); nothing was replaced; "
    "use --force to replace it` | 73",
    "`Error: -o -: fit writes a folder of outputs (W, H, model.h5, report.json), not a stream; give a folder name "
    "(--json prints the report on stdout)` | 2",
    "`Error: afile: is not a folder (a file or a device); fit writes a folder of outputs: give a folder name` | 73",
    "`Error: dangling: is a symbolic link to nowhere, which is not a folder; fit writes a folder of outputs: give a "
    "folder name` | 73",
    "`Error: empty: is a folder without a model.h5; give a model file or the folder of a fit` | 66",
    "`Error: semi.csv: row 1, column 2 (line 1, field 2): '2,5' is not a number; use '.' as the decimal point` | 65",
    "`Error: --fix-H keeps H fixed at H.npy, so --H0 (a start for H) would not be used; give one of them` | 2",
    "`Error: --W0 would not be used: with --fix-H and the frobenius loss the fit is one exact solve, which needs no "
    "start; leave it out` | 2",
    "`Error: --max-time must be a number of seconds > 0; got nan` | 2",
    "`Error: Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295. (see 'nmf fit --help')` | 2",
    "`Error: -: is an NPY file, not CSV text; give --input-format npy` | 65",
    "`Error: c/checkpoint.h5: the checkpoint's 'iteration' is not what nmf writes there; it is damaged` | 65",
    "`Error: m/model.h5: the model's 'options' is not a record (a JSON object); the file is damaged` | 65",
    "`Error: m/report.json: is an nmf report, not a matrix or a model; give the model.h5 beside it` | 65",
    "`Error: m/model.h5: the model's H has 16 NaN or infinite values (the first at row 1, column 1); a fit never writes them: the file is damaged` | 65",
    "`Error: out.png: is not a regular file (a device, a FIFO or a socket); nmf replaces only files; give a file "
    "name` | 73",
    "`Error: /dev/zero: byte 1 is a NUL byte: this is binary data, not CSV text` | 65",
    "`Error: rows.mtx: the fit needs about … of memory (1000000000000 x 3 declared, k=2) but only … is available; "
    "check the shape in its header, or use a machine with more memory` | 69",
    "`Error: huge.h5: dataset '/X' (10000000 x 1000000 float64) needs 72.8 TiB of memory but only … is available; "
    "use a smaller input or read it lazily` | 69",
    "`Error: bomb.csv.gz: the text (976.6 KiB, read into lines) needs 8.6 MiB of memory but only 4.3 MiB is "
    "available; use a smaller input or read it lazily` | 69",
]


@pytest.mark.parametrize("row", README_ROWS, ids=[r[7:50] for r in README_ROWS])
def test_every_refusal_above_has_its_row_in_the_readme(row):
    """The rows the tests above assert (… stands for numbers that vary by machine)."""
    table = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| ")]
    assert any(line.endswith(" | " + row + " |") for line in table), row
