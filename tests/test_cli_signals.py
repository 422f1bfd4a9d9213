"""Interruptions, checkpoints, resuming bit-identically, the output lock, SIGKILL
during writing, time budgets and closed pipes, each with the real `nmf` process."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import NMF, low_rank, nmf_env, one_error_line, run_nmf, start_nmf, wait_for
from nmfcli import io as nio

MAX_ITER = 2000
LONG = ["-k", "10", "--tol", "0", "--max-iter", str(MAX_ITER), "-q"]  # 2-4 s even on a quiet machine: long enough to interrupt


@pytest.fixture(scope="module")
def long_fit(tmp_path_factory):
    """A 300 x 200 matrix and its uninterrupted fit (the reference for every resume)."""
    d = tmp_path_factory.mktemp("signals")
    rng = np.random.default_rng(0)
    np.save(d / "x.npy", rng.random((300, 10)) @ rng.random((10, 200)) + 0.1 * rng.random((300, 200)))
    run_nmf("fit", "x.npy", *LONG, "-o", "ref", cwd=d, check=0)
    return d


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_fit_writes_checkpoint_and_resume_is_bit_identical(long_fit, sig, code):
    d = long_fit
    out = d / f"run-{code}"
    p = start_nmf("fit", "x.npy", *LONG, "-o", out.name, "--checkpoint-every", "20", cwd=d)
    wait_for(out / "checkpoint.h5", p)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    stderr = stderr.decode()
    assert p.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == b""
    ckpt = nio.read_checkpoint(out / "checkpoint.h5")
    assert 20 <= ckpt["iteration"] < MAX_ITER
    assert ckpt["k"] == 10 and ckpt["input"]["sha256"] == nio.file_sha256(d / "x.npy")
    assert ckpt["options"]["seed"] == 0
    assert f"--resume {out.name}/checkpoint.h5" in stderr
    assert not (out / "W.npy").exists() and not (out / "report.json").exists()  # only the checkpoint

    r = run_nmf("fit", "x.npy", *LONG, "-o", out.name, "--resume", f"{out.name}/checkpoint.h5", cwd=d, check=0)
    assert "Traceback" not in r.stderr
    for name in ("W.npy", "H.npy"):
        assert np.array_equal(np.load(out / name), np.load(d / "ref" / name)), name
    report, ref = (json.loads((p_ / "report.json").read_text()) for p_ in (out, d / "ref"))
    assert report["n_iter"] == ref["n_iter"] == MAX_ITER and report["history"] == ref["history"]


def test_resume_refuses_other_input_or_options(long_fit):
    d = long_fit
    out = d / "refuse"
    p = start_nmf("fit", "x.npy", *LONG, "-o", out.name, "--checkpoint-every", "5", cwd=d)
    wait_for(out / "checkpoint.h5", p)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    shutil.copy(out / "checkpoint.h5", d / "ckpt.h5")
    np.save(d / "other.npy", np.load(d / "x.npy") * 2)
    r = run_nmf("fit", "other.npy", *LONG, "-o", "o2", "--resume", "ckpt.h5", cwd=d)
    line = one_error_line(r)
    assert r.returncode == 65
    assert line.startswith("Error: ckpt.h5: the checkpoint was made from a different input (x.npy, sha256 ")
    assert not (d / "o2").exists()
    r = run_nmf("fit", "x.npy", *LONG, "--seed", "3", "-o", "o3", "--resume", "ckpt.h5", cwd=d)
    assert r.returncode == 2
    assert one_error_line(r) == ("Error: ckpt.h5: the checkpoint was made with different options: seed 0 (now 3); "
                                 "resume with the options of the interrupted run")
    assert not (d / "o3").exists()


def test_second_run_on_the_same_folder_exits_75_at_once_and_no_stale_lock(long_fit):
    d = long_fit
    first = start_nmf("fit", "x.npy", *LONG, "-o", "locked", "--checkpoint-every", "5", cwd=d)
    wait_for(d / "locked" / "checkpoint.h5", first)
    t0 = time.monotonic()
    second = run_nmf("fit", "x.npy", *LONG, "-o", "locked", "--force", cwd=d)
    assert second.returncode == 75
    assert one_error_line(second) == (
        "Error: locked: another nmf run is writing here (lock held); wait for it or use another output folder")
    assert time.monotonic() - t0 < 10  # at once: it did not wait for the first to finish
    assert first.poll() is None  # the first is still running
    first.kill()  # SIGKILL: no chance to clean up
    first.wait()
    third = run_nmf("fit", "x.npy", "-k", "3", "-q", "-o", "locked", cwd=d)
    assert third.returncode == 0, third.stderr  # the kernel released the flock: no stale lock
    assert np.load(d / "locked" / "W.npy").shape == (300, 3)


def _load_all(folder):
    """The content of each output (None when absent), comparable across runs."""
    out = {}
    for name in ("W.csv", "H.csv"):
        path = folder / name
        out[name] = path.read_bytes() if path.exists() else None
    path = folder / "model.h5"
    if path.exists():
        model = nio.read_model(path)  # raises on a partial file
        out["model.h5"] = (model["W"].tobytes(), model["H"].tobytes(), model["seed"])
    else:
        out["model.h5"] = None
    path = folder / "report.json"
    if path.exists():
        report = json.loads(path.read_text())  # raises on a partial file
        report.pop("time_s")
        report.pop("outputs")
        out["report.json"] = json.dumps(report, sort_keys=True)
    else:
        out["report.json"] = None
    return out


def test_sigkill_at_any_moment_leaves_old_or_new_files_never_partial(tmp_path):
    np.save(tmp_path / "big.npy", np.random.default_rng(0).random((20000, 100)))
    args = ["fit", "big.npy", "-k", "20", "--init", "random", "--max-iter", "2", "--format", "csv", "-q"]
    t0 = time.monotonic()
    run_nmf(*args, "--seed", "0", "-o", "old", cwd=tmp_path, check=0)
    duration = time.monotonic() - t0
    run_nmf(*args, "--seed", "1", "-o", "new", cwd=tmp_path, check=0)
    old, new = _load_all(tmp_path / "old"), _load_all(tmp_path / "new")
    assert all(old[name] != new[name] for name in old)
    seen = set()
    for fraction in (0.3, 0.6, 0.8, 0.95):
        victim = tmp_path / f"victim-{fraction}"
        shutil.copytree(tmp_path / "old", victim)
        p = start_nmf(*args, "--seed", "1", "--force", "-o", victim.name, cwd=tmp_path)
        time.sleep(duration * fraction)
        p.kill()
        p.wait()
        got = _load_all(victim)
        for name, content in got.items():
            assert content in (old[name], new[name]), f"{name} is partial or mixed after a kill at {fraction}"
            seen.add((name, "old" if content == old[name] else "new"))
        versions = {"old" if content == old[name] else "new" for name, content in got.items()}
        assert len(versions) == 1, f"a mix of old and new files after a kill at {fraction}: {got.keys()}"
        assert all(content is not None for content in got.values()), "every output is still there"
    assert ("W.csv", "old") in seen  # the kills did land before and during writing


def test_max_time_stops_gracefully_and_strict_exits_3(long_fit):
    d = long_fit
    r = run_nmf("fit", "x.npy", "-k", "10", "--tol", "0", "--max-iter", "100000", "--max-time", "0.5",
                "-o", "timed", "--strict", cwd=d)
    assert r.returncode == 3
    line = one_error_line(r) if "time budget" not in r.stderr else r.stderr.splitlines()[-1]
    assert line.startswith("Error: x.npy: the fit did not converge (stopped by time after ")
    report = json.loads((d / "timed" / "report.json").read_text())
    assert report["stop_reason"] == "time" and report["converged"] is False and report["n_iter"] < 100000
    assert np.load(d / "timed" / "W.npy").shape == (300, 10)
    assert nio.read_checkpoint(d / "timed" / "checkpoint.h5")["iteration"] == report["n_iter"]


def test_closed_stdout_ends_quietly(tmp_path):
    X = low_rank(20000, 10)
    np.save(tmp_path / "x.npy", X)
    run_nmf("fit", "x.npy", "-k", "3", "-q", "-o", "m", cwd=tmp_path, check=0)
    p = subprocess.run(f"'{NMF}' transform x.npy --model m/model.h5 | head -1; echo \"rc=${{PIPESTATUS[0]}}\"",
                       shell=True, executable="/bin/bash", cwd=tmp_path, env=nmf_env(), capture_output=True,
                       text=True, timeout=120)
    assert p.stdout.splitlines() == ["c0,c1,c2", "rc=0"]
    assert p.stderr == ""
    p = subprocess.run(f"'{NMF}' reconstruct m/W.npy m/H.npy >&-; echo \"rc=$?\"", shell=True,
                       executable="/bin/bash", cwd=tmp_path, env=nmf_env(), capture_output=True, text=True,
                       timeout=120)
    assert "Traceback" not in p.stderr


def test_signal_during_the_exact_solve_stops_it_and_writes_nothing(tmp_path):
    """A fixed basis (Frobenius) is one exact solve, without iterations or a checkpoint: a
    signal stops it at the next block of rows, and the output folder is not left behind."""
    rng = np.random.default_rng(1)
    H = rng.random((30, 100))
    np.save(tmp_path / "basis.npy", H)
    np.save(tmp_path / "x.npy", rng.random((30000, 30)) @ H)
    p = start_nmf("fit", "x.npy", "--fix-H", "basis.npy", "-o", "out", "-v", cwd=tmp_path)
    first = p.stderr.readline().decode()  # -v off a terminal: a line per tenth of the rows
    assert first.startswith("solved ") and "/30000 rows" in first, first
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    stderr = stderr.decode()
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == b""
    assert "of 30000 rows of the exact solve; nothing written" in stderr
    assert not (tmp_path / "out").exists()
