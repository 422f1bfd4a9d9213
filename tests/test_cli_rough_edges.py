"""What a new user trips over: scikit-learn's loss names, a boolean mask as weights, a basis of
the wrong orientation, nndsvd under multiplicative updates, -o /dev/null, and help and error
text in the command line's words. Run in-process (nmfcli.cli.run) for speed; the error
boundary is the same one the console script uses.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

import nmfcli
from conftest import low_rank, nmf_in_process
from nmfcli import errors


nmf = nmf_in_process


@pytest.fixture
def data(tmp_path):
    X = low_rank(30, 12, seed=3)
    np.save(tmp_path / "X.npy", X)
    return tmp_path, X


@pytest.mark.parametrize("given,name", [("kullback-leibler", "kl"), ("itakura-saito", "is"), ("KL", "kl"),
                                        ("Frobenius", "frobenius"), ("IS", "is"), ("Kullback-Leibler", "kl")])
def test_scikit_learn_loss_names_in_any_case(capsys, data, given, name):
    d, _ = data
    code, out, err = nmf(capsys, "fit", d / "X.npy", "-k", 2, "--loss", given, "--max-iter", 5, "-o", d / "o",
                         "--json", "-q")
    assert code == 0, err
    report = json.loads(out)
    assert report["loss"] == name
    assert report["options"]["loss"] == name


def test_loss_names_become_the_canonical_name_and_numbers_stay_numbers():
    """What the command passes on (and a checkpoint records to compare a --resume with)."""
    from nmfcli.cli.shared import LossType

    convert = LossType().convert
    assert [convert(v, None, None) for v in ("kl", "KL", "kullback-leibler", "Itakura-Saito", "is", "fro",
                                             "frobenius")] == ["kl", "kl", "kl", "is", "is", "frobenius", "frobenius"]
    assert [convert(v, None, None) for v in ("2", "1", "1.5", 0.5)] == [2.0, 1.0, 1.5, 0.5]


def test_a_loss_name_that_is_no_loss_is_still_refused(capsys, data):
    d, _ = data
    code, _, err = nmf(capsys, "fit", d / "X.npy", "-k", 2, "--loss", "kullback", "-o", d / "o")
    assert code == errors.EXIT_USAGE
    assert err == ("Error: Invalid value for '--loss': 'kullback' is not one of frobenius, kl, is or a number "
                   "(beta) (see 'nmf fit --help')\n")


def test_boolean_npy_mask_is_accepted_as_weights_of_1_and_0(capsys, data):
    d, X = data
    mask = np.random.default_rng(0).random(X.shape) > 0.3
    np.save(d / "mask.npy", mask)
    np.save(d / "mask01.npy", mask.astype(np.float64))
    for name in ("mask", "mask01"):
        code, _, err = nmf(capsys, "fit", d / "X.npy", "-k", 2, "--weights", d / f"{name}.npy", "--max-iter", 20,
                           "-o", d / name, "-q")
        assert code == 0, err
    np.testing.assert_array_equal(np.load(d / "mask" / "W.npy"), np.load(d / "mask01" / "W.npy"))
    np.testing.assert_array_equal(np.load(d / "mask" / "H.npy"), np.load(d / "mask01" / "H.npy"))
    code, out, err = nmf(capsys, "transform", d / "X.npy", "--model", d / "mask", "--weights", d / "mask.npy")
    assert code == 0, err


def test_boolean_npy_is_still_refused_as_data(capsys, data):
    d, _ = data
    np.save(d / "bools.npy", np.ones((4, 3), dtype=bool))
    code, _, err = nmf(capsys, "fit", d / "bools.npy", "-k", 1, "-o", d / "o")
    assert code == errors.EXIT_DATA
    assert err == "Error: {}: holds booleans (bool); nmf needs real numbers (integers or floats)\n".format(
        d / "bools.npy")


@pytest.fixture
def spectrogram(tmp_path):
    """A 64 x 200 spectrogram (frequencies x frames) and a 64 x 3 basis of spectra (frequencies x components)."""
    rng = np.random.default_rng(1)
    basis = rng.random((64, 3))
    np.save(tmp_path / "spec.npy", basis @ rng.random((3, 200)))
    np.save(tmp_path / "frames.npy", (basis @ rng.random((3, 200))).T.copy())
    np.save(tmp_path / "basis.npy", basis)
    return tmp_path


def test_fix_H_given_a_W_says_fix_W_was_meant(capsys, spectrogram):
    d = spectrogram
    os.chdir(d)
    code, _, err = nmf(capsys, "fit", "spec.npy", "--fix-H", "basis.npy", "-o", "out")
    assert code == errors.EXIT_DATA
    assert err == ("Error: basis.npy: fixed H has shape 64 x 3; expected k x 200; it has spec.npy's 64 rows, as a "
                   "W (m x k) does: did you mean --fix-W basis.npy?\n")
    assert not (d / "out").exists()
    code, _, err = nmf(capsys, "fit", "spec.npy", "--fix-W", "basis.npy", "-o", "out", "-q")
    assert code == 0, err


def test_fix_H_given_transposed_says_transpose(capsys, spectrogram):
    os.chdir(spectrogram)
    code, _, err = nmf(capsys, "fit", "frames.npy", "-k", 3, "--fix-H", "basis.npy", "-o", "out")
    assert code == errors.EXIT_DATA
    assert err == ("Error: basis.npy: fixed H has shape 64 x 3; expected 3 x 64; its transpose (3 x 64) fits: H has "
                   "a row per component and a column per column of frames.npy, so transpose basis.npy\n")


def test_fix_W_given_an_H_says_fix_H_was_meant(capsys, spectrogram):
    d = spectrogram
    os.chdir(d)
    np.save(d / "basisT.npy", np.load(d / "basis.npy").T.copy())
    code, _, err = nmf(capsys, "fit", "frames.npy", "--fix-W", "basisT.npy", "-o", "out")
    assert code == errors.EXIT_DATA
    assert err == ("Error: basisT.npy: fixed W has shape 3 x 64; expected 200 x k; it has frames.npy's 64 columns, "
                   "as an H (k x n) does: did you mean --fix-H basisT.npy?\n")


def test_transform_components_of_the_wrong_orientation_get_a_hint(capsys, spectrogram):
    os.chdir(spectrogram)
    code, _, err = nmf(capsys, "transform", "frames.npy", "--components", "basis.npy")
    assert code == errors.EXIT_DATA
    assert err == ("Error: frames.npy: has 64 columns but the components in basis.npy have 3; the new data must "
                   "have the model's columns; its transpose (3 x 64) fits: H has a row per component and a column "
                   "per column of frames.npy, so transpose basis.npy\n")
    code, _, err = nmf(capsys, "transform", "spec.npy", "--components", "basis.npy")
    assert code == errors.EXIT_DATA
    assert err == ("Error: spec.npy: has 200 columns but the components in basis.npy have 3; the new data must "
                   "have the model's columns; it has spec.npy's 64 rows, as a W (m x k) does: did you mean nmf fit "
                   "spec.npy --fix-W basis.npy (the activations of its columns)?\n")


NNDSVD_WARNING = ("warning: init nndsvd leaves zeros in W and H that solver {} (multiplicative updates) can never "
                  "change, so the fit ends far from the best; use init nndsvda (or nndsvdar) instead\n")


@pytest.mark.parametrize("solver", ["mu", "emu"])
def test_nndsvd_with_multiplicative_updates_warns_and_suggests_nndsvda(capsys, data, solver):
    d, _ = data
    code, _, err = nmf(capsys, "fit", d / "X.npy", "-k", 3, "--loss", "kl", "--solver", solver, "--init", "nndsvd",
                       "--max-iter", 10, "-o", d / "o", "-q")
    assert code == 0
    assert err == NNDSVD_WARNING.format(solver)
    code, _, err = nmf(capsys, "fit", d / "X.npy", "-k", 3, "--loss", "kl", "--solver", solver, "--init", "nndsvda",
                       "--max-iter", 10, "-o", d / "o", "-q", "--force")
    assert code == 0 and err == ""


def test_nndsvd_warning_in_the_python_api(data):
    _, X = data
    with pytest.warns(errors.NMFWarning, match="use init nndsvda"):
        nmfcli.fit(X, 3, loss="kl", solver="mu", init="nndsvd", max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", errors.NMFWarning)
        nmfcli.fit(X, 3, solver="hals", init="nndsvd", max_iter=5)  # hals can leave a zero
        nmfcli.fit(X, 3, loss="kl", solver="mu", init="nndsvda", max_iter=5)


def test_reconstruct_to_dev_null(capsys, data):
    d, _ = data
    assert nmf(capsys, "fit", d / "X.npy", "-k", 2, "-o", d / "m", "-q")[0] == 0
    code, out, err = nmf(capsys, "reconstruct", d / "m" / "W.npy", d / "m" / "H.npy", "-o", os.devnull)
    assert (code, out, err) == (0, "", "")
    code, out, err = nmf(capsys, "transform", d / "X.npy", "--model", d / "m", "-o", os.devnull)
    assert (code, out, err) == (0, "", "")


def test_a_named_pipe_receives_csv(tmp_path, data):
    """A FIFO (as /dev/stdout often is) is written in place, not replaced by a file."""
    import threading

    d, X = data
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.update(text=fifo.read_text()))
    reader.start()
    from nmfcli import io as nio

    nio.write_matrix(str(fifo), X[:2, :3])
    reader.join(30)
    assert np.allclose(np.loadtxt(got["text"].splitlines(), delimiter=","), X[:2, :3])
    assert fifo.is_fifo()


def test_input_format_help_names_each_commands_argument(capsys):
    for command, argument in (("fit", "INPUT"), ("transform", "INPUT"), ("reconstruct", "X_FILE"),
                              ("inspect", "FILE")):
        code, out, _ = nmf(capsys, command, "--help")
        assert code == 0
        assert " ".join(out.split()).count(f"Format of {argument} (default: from its extension") == 1, command


def test_exit_code_list_names_dask_and_zarr_under_69(capsys):
    code, out, _ = nmf(capsys, "--help")
    line = [line.strip() for line in out.splitlines() if line.strip().startswith("69")]
    assert line == ["69   not enough memory, or an optional extra (matplotlib, cupy, dask, zarr) is missing"]


def test_errors_speak_options_not_python(capsys, data):
    d, X = data
    X = X.copy()
    X[1, 1] = np.nan
    np.save(d / "nan.npy", X)
    code, _, err = nmf(capsys, "fit", d / "nan.npy", "-k", 2, "-o", d / "o")
    assert code == errors.EXIT_DATA
    assert err == (f"Error: {d / 'nan.npy'}: X has 1 NaN or infinite value; the first is nan at row 2, column 2; to "
                   "leave NaN entries out of the fit as missing values, use --missing nan\n")
    code, _, err = nmf(capsys, "fit", d / "nan.npy", "-k", 2, "--missing", "nan", "--chunk-rows", 10, "-o", d / "o")
    assert code == errors.EXIT_USAGE
    assert err == ("Error: missing values (--missing nan) are fitted on the numpy engine in memory; got "
                   "--chunk-rows\n")
    assert "=" not in err
    code, _, err = nmf(capsys, "fit", d / "X.npy", "-k", 2, "--history", "all", "--chunk-rows", 10, "-o", d / "o")
    assert code == errors.EXIT_USAGE
    assert err == "Error: --history all is recorded on the numpy and cupy engines in memory\n"


def test_row_block_refusal_suggests_nmf_convert(capsys, data):
    import scipy.sparse as sp

    d, X = data
    os.chdir(d)
    sp.save_npz(d / "X.npz", sp.csr_matrix(X))
    code, _, err = nmf(capsys, "fit", "X.npz", "-k", 2, "--chunk-rows", 10, "-o", "o")
    assert code == errors.EXIT_DATA
    assert err == ("Error: X.npz: row blocks are read from HDF5, Zarr, NPY or a folder of NPY/NPZ row blocks, not "
                   "npz; convert it first, e.g. nmf convert X.npz X.h5 --dense\n")
    assert "--format" not in err
    code, _, err = nmf(capsys, "convert", "X.npz", "X.h5", "--dense", "-q")
    assert (code, err) == (0, "")
    assert nmf(capsys, "fit", "X.h5", "-k", 2, "--chunk-rows", 10, "-o", "o", "-q")[0] == 0


@pytest.mark.parametrize("jobs", [1, 2])
def test_nndsvd_warning_once_from_a_rank_survey(capsys, data, jobs):
    """The survey's fits warn once, in one line, also when they run in worker processes."""
    d, _ = data
    code, _, err = nmf(capsys, "rank", d / "X.npy", "-k", "2:3", "--runs", 2, "--loss", "kl", "--init", "nndsvd",
                       "--max-iter", 5, "--jobs", jobs)
    assert code == 0
    assert err == NNDSVD_WARNING.format("emu")


@pytest.mark.parametrize("args,message", [
    (["--alpha-W", "inf"], "Error: --alpha-W must be a finite number >= 0; got inf"),
    (["--l1-ratio", "3"], "Error: --l1-ratio must be between 0 and 1; got 3.0"),
])
def test_penalty_errors_name_the_option(capsys, data, args, message):
    d, _ = data
    code, _, err = nmf(capsys, "fit", d / "X.npy", "-k", 2, "-o", d / "o", *args)
    assert (code, err) == (errors.EXIT_USAGE, message + "\n")
    assert not (d / "o").exists()
