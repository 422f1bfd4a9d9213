"""`nmf fit`: read -> check memory -> lock -> core.fit (with progress, signals, budget) -> write."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys

import click
import numpy as np
import scipy.sparse as sp

from nmfcli import core, errors, summary
from nmfcli import io as nio
from nmfcli.cli import shared
from nmfcli.cli.terminal import ProgressDisplay, SignalFlag, Terminal, fit_rows

CHECKPOINT = "checkpoint.h5"
# Options that change the iterates: a checkpoint resumes only under the same ones.
# max_iter, max_time and checkpoint_every may differ (they only say when to stop or save).
RESUME_KEYS = ("k", "solver", "loss", "init", "seed", "tol", "alpha_W", "alpha_H", "l1_ratio",
               "dtype", "engine", "fix_H", "fix_W", "W0", "H0", "missing", "weights")

FIT_HELP = """Factor INPUT (m x n, non-negative) into W (m x k) and H (k x n).

Writes W, H, model.h5 (everything `transform` needs) and report.json into
OUTDIR (default: INPUT's name with .nmf, e.g. docs.csv -> docs.nmf/).
INPUT is CSV/TSV (labels detected), .csv.gz, .npy, .npz (sparse), .mtx,
.h5 (FILE.h5::/dataset), .zarr, or - for CSV on stdin.

\b
Examples:
  nmf fit docs.csv -k 20                       # 20 topics, docs.nmf/
  nmf fit spec.npy -k 8 --loss kl -o out/      # KL loss (emu; --solver mu for scikit-learn's)
  nmf fit spec.npy --fix-H basis.npy           # activations of a fixed basis
  cat data.csv | nmf fit - -k 3 --json | jq .relative_error
  nmf fit big.npz -k 50 --max-time 3600 --checkpoint-every 100 --strict
  nmf fit big.npz -k 50 --resume big.nmf/checkpoint.h5   # after Ctrl-C
  nmf fit today.npz -k 20 --align-to yesterday.nmf   # components in last fit's order
  nmf fit ratings.csv -k 10 --missing nan      # NaN cells left out; W·H fills them
  nmf fit counts.npy -k 5 --weights conf.npy   # each cell's loss times its weight
  nmf fit big.h5::/X -k 50 --engine dask --workers 8 --format h5
  nmf fit big.h5::/X -k 50 --engine dask --scheduler tcp://head:8786
  nmf fit big.npy -k 50 --chunk-rows 100000    # out of core, no Dask
  nmf fit docs.npz -k 50 --engine cupy         # on an NVIDIA GPU

Data beyond memory: with --engine dask (a local cluster of processes, or
--scheduler ADDRESS) or with --chunk-rows R on the numpy engine, INPUT (an
.h5 dataset, a .zarr array, an .npy file, or a folder of .npy/.npz row
blocks) is never loaded whole: each block of rows is read when needed. With
--format h5, W is written to OUTDIR/W.h5 block by block and left out of
model.h5. The labels an .h5 or .zarr INPUT holds are kept.

SIGINT/SIGTERM finish the current iteration, write OUTDIR/checkpoint.h5,
print how to resume and exit 130/143. A resumed fit ends bit-identical to an
uninterrupted one. A fixed factor under the Frobenius loss is one exact solve
(no iterations, no checkpoint): the signal stops it and nothing is written.

Threads: the products with X (dense or sparse) use as many threads as the
BLAS has (OPENBLAS_NUM_THREADS, default every core); the many small steps
run on one. Sparse results do not depend on the count; dense ones can
differ in the last bits, as the BLAS's own sums do.
"""


def fit_options(f):
    opts = [
        click.argument("input_path", metavar="INPUT"),
        click.option("-k", "--k", "k", type=int, default=None,
                     help="Number of components (default: from --fix-H/--fix-W/--W0/--H0/--resume)."),
        click.option("-o", "--outdir", default=None,
                     help="Output folder, or a link to one [default: <INPUT stem>.nmf]; not - (see --json)."),
        click.option("--solver", type=shared.SOLVER_CHOICE, default="auto", show_default=True,
                     help="auto: ehals for frobenius, emu for every other loss (mu for kl and is with "
                          "--fix-H/--fix-W; anls for frobenius and mu for the others with --missing/--weights). "
                          "ehals and emu are hals and mu with extrapolation; cd and mu are scikit-learn's."),
        click.option("--loss", type=shared.LossType(), default="frobenius", show_default=True,
                     help="Beta-divergence: frobenius (2), kl (1), is (0) or any beta; scikit-learn's names "
                          "kullback-leibler and itakura-saito too, in any case."),
        click.option("--init", type=shared.INIT_CHOICE, default=None,
                     help="Initialisation [default: nndsvda if k <= min(m, n) else random; custom with --W0/--H0]."),
        click.option("--seed", type=shared.SEED_TYPE, default=core.DEFAULT_SEED, show_default=True,
                     help="Seed of the random start (0 to 2^32-1)."),
        click.option("--max-iter", type=int, default=core.DEFAULT_MAX_ITER, show_default=True),
        click.option("--history", type=click.Choice(("checks", "all")), default="checks", show_default=True,
                     help="Iterations whose objective the report, model and --plot curve keep. checks: where the "
                          "solver computes it anyway (every iteration for ehals, hals, cd; every 10th for mu, emu, "
                          "anls). all: every iteration; for mu, emu and anls that is one more divergence "
                          "evaluation (a pass over X) per iteration: 1.1-1.6x the time on KL fits of 2000x1000 dense and "
                          "5000x2000 sparse X (k=10). "
                          "Same iterates either way. Not with --engine dask or --chunk-rows."),
        click.option("--tol", type=float, default=core.DEFAULT_TOL, show_default=True,
                     help="Stopping tolerance. hals, ehals: projected gradient below TOL times its value at "
                          "iteration 2, tested every 10 iterations; cd: scikit-learn's test; mu, emu: the error fell "
                          "by less than TOL times its first value over 10 iterations. 0 runs to --max-iter."),
        click.option("--alpha-W", "alpha_W", type=float, default=0.0, show_default=True, help="Penalty on W."),
        click.option("--alpha-H", "alpha_H", type=shared.AlphaHType(), default="same", show_default=True,
                     help="Penalty on H ('same' copies --alpha-W)."),
        click.option("--l1-ratio", type=float, default=0.0, show_default=True, help="L1 share of the penalties."),
        click.option("--W0", "W0_path", default=None, metavar="FILE", help="Initial W (init custom)."),
        click.option("--H0", "H0_path", default=None, metavar="FILE", help="Initial H (init custom)."),
        click.option("--fix-H", "fix_H_path", default=None, metavar="FILE",
                     help="Keep H fixed (a matrix, or a model.h5's H) and solve W."),
        click.option("--fix-W", "fix_W_path", default=None, metavar="FILE", help="Keep W fixed and solve H."),
        click.option("--align-to", "align_path", default=None, metavar="MODEL",
                     help="Order the components like MODEL's (a model.h5 or fit folder, or an H file, of the same "
                          "columns): each takes the place of the one it resembles most (cosine of H's rows, best "
                          "one-to-one pairing), so refits keep their order. The report's 'alignment' lists the "
                          "pairs and their similarity."),
        click.option("--dtype", type=shared.DTYPE_CHOICE, default=None,
                     help="[default: float32 data stays float32, anything else becomes float64]"),
        click.option("--missing", type=click.Choice(["nan"]), default=None,
                     help="nan: NaN entries (nan in CSV) are missing values, left out of the fit; W·H predicts "
                          "them. Runs solver anls (exact alternating solves of each row and column over its "
                          "observed entries) for the frobenius loss, mu for the others; with --fix-H/--fix-W "
                          "and the frobenius loss, one exact solve. Dense INPUT in memory."),
        click.option("--weights", "weights_path", default=None, metavar="FILE",
                     help="Weight of each entry of INPUT (a matrix of INPUT's shape, >= 0): the loss is "
                          "summed with each entry's loss times its weight, so 0 leaves an entry out and 2 counts "
                          "it twice. Runs as --missing does (solver anls for the frobenius loss, mu for the "
                          "others; with --fix-H/--fix-W and the frobenius loss, one exact weighted solve) on "
                          "dense INPUT in memory; the errors are weighted too."),
        click.option("--engine", type=shared.ENGINE_CHOICE, default="numpy", show_default=True,
                     help=shared.ENGINE_HELP),
        shared.output_format_option,
        click.option("--json", "as_json", is_flag=True, help="Print the report on stdout."),
        shared.quiet_verbose,
        click.option("--force", is_flag=True, help="Replace existing outputs."),
        click.option("--resume", "resume_path", default=None, metavar="CKPT", help="Continue from a checkpoint."),
        click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Write OUTDIR/checkpoint.h5 every N iterations."),
        click.option("--max-time", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                     help="Stop after this long (stop_reason 'time'; outputs and a checkpoint are written). "
                          "Not for the exact solve of a fixed factor (Frobenius), which has no partial result."),
        click.option("--strict", is_flag=True,
                     help=f"Exit {errors.EXIT_NOT_CONVERGED} if the fit did not converge (after writing outputs)."),
        click.option("--lock/--no-lock", default=True, show_default=True,
                     help=f"Lock OUTDIR; a second run on it exits {errors.EXIT_LOCKED} at once."),
        shared.engine_options,
        shared.input_options,
        shared.labels_options,
    ]
    for d in reversed(opts):
        f = d(f)
    return f


def default_outdir(path: str) -> str:
    """docs.csv -> docs.nmf; data.csv.gz -> data.nmf; m.h5::/X -> m.nmf; - -> stdin.nmf."""
    if path == "-":
        return "stdin.nmf"
    if "::" in path and not os.path.exists(path):
        path = path.split("::", 1)[0]
    name = os.path.basename(path.rstrip("/")) or "input"
    for ext in (".gz",):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    stem = os.path.splitext(name)[0] or name
    return os.path.join(os.path.dirname(path.rstrip("/")), stem + ".nmf")


def _resume_command(resume_at: str) -> str:
    """The command line of this run with --resume pointing at the checkpoint."""
    argv = list(sys.argv[1:])
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--resume":
            skip = True
            continue
        if a.startswith("--resume="):
            continue
        out.append(a)
    return shlex.join(["nmf", *out, "--resume", resume_at])


def fit_command(input_path, k, outdir, solver, loss, init, seed, max_iter, tol, alpha_W, alpha_H, l1_ratio,
                W0_path, H0_path, fix_H_path, fix_W_path, dtype, engine, factor_format, as_json, quiet, verbose,
                force, resume_path, checkpoint_every, max_time, strict, lock, input_format, dataset, header,
                index_col, scheduler=None, workers=None, chunk_rows=None, memory_limit=None, align_path=None,
                missing=None, weights_path=None, row_labels_path=None, col_labels_path=None, history="checks"):
    term = Terminal(quiet=quiet, verbose=verbose)
    if fix_H_path and fix_W_path:
        raise errors.UsageError("--fix-H and --fix-W cannot both be given: nothing would be left to fit")
    if align_path and (fix_H_path or fix_W_path):
        raise errors.UsageError(f"--align-to reorders the fitted components; with --{'fix-H' if fix_H_path else 'fix-W'}"
                                " they keep the fixed factor's order")
    _refuse_contradictions(loss, init, W0_path, H0_path, fix_H_path, fix_W_path, max_time)
    _refuse_outdir(outdir if outdir is not None else default_outdir(input_path))
    row_blocks, engine_options = shared.engine_settings(engine, scheduler, workers, chunk_rows, memory_limit)

    # ---- read (io): the data, then the factor files, then the checkpoint
    if row_blocks:
        # The engine reads INPUT in row blocks itself: io checks it and describes it, nothing more.
        matrix = nio.read_row_source(input_path, dataset=dataset)
        shared.warn_column_chunks(term.say, matrix)
        X = shared.input_spec(matrix)
        x_dtype = dtype or nio.float_dtype(matrix.X.dtype, None).name
    else:
        opts = dict(input_format=input_format, dataset=dataset, header=header, index_col=index_col)
        shared.refuse_declared_fit(input_path, opts, k, dtype, loss)
        matrix = shared.read_input(input_path, opts, dtype=dtype, quiet=quiet)
        X = matrix.X
        x_dtype = str(X.dtype)
    matrix = shared.with_labels(matrix, row_labels_path, col_labels_path, input_path)
    factors = {}
    for key, path, which in (("fix_H", fix_H_path, "H"), ("fix_W", fix_W_path, "W"),
                             ("W0", W0_path, "W"), ("H0", H0_path, "H")):
        if path:
            factors[key] = shared.read_factor(path, which, dtype=dtype or x_dtype)
    shared.check_orientation(factors, matrix.shape, k, input_path)
    for key, factor in factors.items():
        if key in ("fix_H", "H0"):
            shared.check_labels(matrix.col_labels, factor.col_labels, got_path=factor.path,
                                expected_what=f"{input_path}'s", axis="column")
        else:
            shared.check_labels(matrix.row_labels, factor.row_labels, got_path=factor.path,
                                expected_what=f"{input_path}'s", axis="row")
    reference = shared.read_factor(align_path, "H") if align_path else None
    if reference is not None:
        if not np.all(np.isfinite(reference.X)):
            raise errors.DataError(f"{align_path}: its components hold NaN or infinite values; --align-to needs "
                                   "finite ones")
        if reference.X.shape[1] != matrix.shape[1]:
            raise errors.DataError(f"{align_path}: its components have {reference.X.shape[1]} columns but "
                                   f"{input_path} has {matrix.shape[1]}; --align-to needs a fit of the same columns")
        shared.check_labels(matrix.col_labels, reference.col_labels, got_path=reference.path,
                            expected_what=f"{input_path}'s", axis="column")
    weights = shared.read_weights(weights_path, matrix, input_path, dtype=x_dtype) if weights_path else None
    checkpoint = nio.read_checkpoint(resume_path) if resume_path else None
    if k is None:
        k = _infer_k(factors, checkpoint, resume_path)

    run_options = {
        "k": k, "solver": solver, "loss": loss, "init": init, "seed": seed, "tol": tol, "alpha_W": alpha_W,
        "alpha_H": alpha_H, "l1_ratio": l1_ratio, "dtype": x_dtype, "engine": engine, "missing": missing,
        **{key: (factors[key].sha256 if key in factors else None) for key in ("fix_H", "fix_W", "W0", "H0")},
        "weights": weights.sha256 if weights is not None else None,
    }
    if checkpoint is not None:
        _check_checkpoint(resume_path, checkpoint, matrix, run_options)
        if not row_blocks:  # a fit in row blocks may have kept W in the checkpoint as a stored matrix
            for key in ("W", "W_before"):
                if isinstance(checkpoint.get(key), str):
                    checkpoint[key] = nio.read_matrix(checkpoint[key], dtype=x_dtype).X

    # ---- memory, before anything big is allocated
    beta = summary.beta_of(loss)
    if isinstance(k, int) and k > 0 and beta is not None and not row_blocks:
        shared.refuse_beyond_memory(input_path, summary.fit_memory(X, k, X.dtype, beta, missing, weights is not None),
                                    "the fit needs",
                                    f"{matrix.shape[0]} x {matrix.shape[1]}, k={k}",
                                    "use --dtype float32, sparse input (.npz, .mtx or a sparse HDF5 group) or the "
                                    "Dask engine")

    outdir = outdir or default_outdir(input_path)
    ext = {"npy": ".npy", "csv": ".csv", "h5": ".h5"}[factor_format]
    paths = {name: os.path.join(outdir, name) for name in (f"W{ext}", f"H{ext}", "model.h5", "report.json")}
    ckpt_path = os.path.join(outdir, CHECKPOINT)
    streamed_W = streamed_before = None
    if row_blocks and factor_format == "h5":
        # The engine streams W block by block (dataset /X, as write_matrix names it) into a
        # temporary file in OUTDIR; it joins the other outputs in one step at the end, so an
        # interrupted run never leaves a new W beside an old H. ehals's and emu's W_before goes
        # to another one, for the final checkpoint; a checkpoint copies both in when written.
        streamed_W = nio.stream_temp_path(paths["W" + ext])
        streamed_before = nio.stream_temp_path(ckpt_path)
        engine_options["output"] = f"{streamed_W}::/X"
        engine_options["output_before"] = f"{streamed_before}::/X"

    if not force:
        _refuse_existing(paths)  # before the lock, so a refused run leaves the folder untouched
    created = not os.path.isdir(outdir)
    lock_existed = os.path.exists(os.path.join(outdir, ".nmf.lock"))
    written = []
    # The signal handlers stay until the outputs are written: a SIGTERM that arrives while
    # the checkpoint it asked for is being written must not kill that write.
    with SignalFlag() as flag, _maybe_lock(outdir, lock):
        try:
            if not force:
                _refuse_existing(paths)  # again, now that no other run can be writing
            result = _run_fit(term, flag, matrix, X, k, factors, checkpoint, run_options, ckpt_path,
                              checkpoint_every, max_time, max_iter, written,
                              dict(solver=solver, loss=loss, init=init, seed=seed, tol=tol, alpha_W=alpha_W,
                                   alpha_H=alpha_H, l1_ratio=l1_ratio, dtype=dtype, engine=engine,
                                   engine_options=engine_options, missing=missing,
                                   weights=weights.X if weights is not None else None,
                                   **({"history": history} if history != "checks" else {})),
                              input_path, resume_path, weights_path)
        except BaseException:
            _remove(streamed_W)
            _remove(streamed_before)
            if not written:
                _clean_up(outdir, created, lock_existed)
            raise

        try:
            state = _checkpoint_state(result.checkpoint, run_options, matrix) if result.checkpoint else None
            if result.stop_reason == "interrupted":
                with flag.shielded():
                    nio.write_checkpoint(ckpt_path, state, force=True)
                print(
                    f"Interrupted after iteration {result.n_iter}; checkpoint written to {ckpt_path}.\n"
                    f"Resume with:\n  {_resume_command(ckpt_path)}",
                    file=sys.stderr,
                    flush=True,
                )
                raise SystemExit(flag.exit_code or errors.EXIT_SIGINT)
            if result.stop_reason == "time" and state is not None:
                with flag.shielded():
                    nio.write_checkpoint(ckpt_path, state, force=True)
            alignment = None
            if reference is not None:  # after the checkpoint, which keeps the fit's own order
                result, alignment = _aligned(result, reference)
            with flag.shielded():
                report = _write_outputs(result, matrix, paths, factor_format, force, factors, written,
                                        engine_options, alignment, weights)
        finally:
            _remove(streamed_W)  # gone, or moved into place by _write_outputs
            _remove(streamed_before)
    if as_json:
        nio.write_report("-", report, stdout=sys.stdout)
    if term.tty and not quiet:
        term.table(f"nmf fit {input_path} -> {outdir}", fit_rows(report))
    elif not quiet:
        how = ("solved exactly (nnls)" if report["stop_reason"] == "exact" else
               f"{report['n_iter']} iterations, {'converged' if report['converged'] else 'not converged'} "
               f"({report['stop_reason']})")
        observed = (f" over the observed entries ({report['missing_entries']} missing)"
                    if report.get("missing_entries") else "")
        observed += f" weighted by {weights_path}" if weights_path else ""
        term.say(f"wrote {outdir}{os.sep}: k={report['k']}, {how}, relative error {report['relative_error']:.6g}"
                 f"{observed}")
    if alignment is not None and not quiet:
        paired = [v for v in alignment["similarity"] if v is not None]
        moved = sum(i != j for i, j in enumerate(alignment["order"]))
        term.say(f"components ordered like {alignment['model']}'s ({moved} moved), lowest similarity "
                 f"{min(paired):.3f}" if paired else f"no component of {alignment['model']} to order by")
    if result.stop_reason == "time" and not quiet:
        term.say(f"time budget reached; continue with: {_resume_command(ckpt_path)}")
    if result.stop_reason == "max_iter" and not strict and not quiet and tol > 0:
        term.say(f"note: stopped at --max-iter {max_iter} before the tol {tol:g} test was met; raise --max-iter "
                 f"to go on (--strict turns this into exit {errors.EXIT_NOT_CONVERGED} for alerting)")
    if result.stop_reason == "uncertified" and not quiet:
        term.say(shared.uncertified_note(result.metrics["kkt"], strict))
    if flag.received is not None:
        raise SystemExit(flag.exit_code)
    if strict and result.stop_reason == "uncertified":
        raise errors.NotConvergedError(f"{input_path}: {shared.uncertified_message(result.metrics['kkt'])}; "
                                       f"outputs were written to {outdir}")
    if strict and not result.converged:
        raise errors.NotConvergedError(
            f"{input_path}: the fit did not converge (stopped by {result.stop_reason} after {result.n_iter} "
            f"iterations); outputs were written to {outdir}; raise --max-iter/--max-time or loosen --tol"
        )


def _refuse_contradictions(loss, init, W0_path, H0_path, fix_H_path, fix_W_path, max_time):
    """Options that say opposite things, or one that would be silently ignored (exit 2)."""
    if max_time is not None and max_time != max_time:
        raise errors.UsageError("--max-time must be a number of seconds > 0; got nan")
    for fixed, fixed_path, start, start_path in (("H", fix_H_path, "H0", H0_path), ("W", fix_W_path, "W0", W0_path)):
        if fixed_path and start_path:
            raise errors.UsageError(f"--fix-{fixed} keeps {fixed} fixed at {fixed_path}, so --{start} (a start for "
                                    f"{fixed}) would not be used; give one of them")
    fixed_flag = "--fix-H" if fix_H_path else "--fix-W" if fix_W_path else None
    if fixed_flag is None:
        return
    if summary.beta_of(loss) == 2:
        given = [flag for flag, value in (("--W0", W0_path), ("--H0", H0_path)) if value]
        given += [f"--init {init}"] if init else []
        if given:
            raise errors.UsageError(f"{given[0]} would not be used: with {fixed_flag} and the frobenius loss the fit "
                                    "is one exact solve, which needs no start; leave it out")
    elif init not in (None, "custom"):
        start = "--W0" if fix_H_path else "--H0"
        raise errors.UsageError(f"--init {init} would not be used: with {fixed_flag} the free factor starts from "
                                f"a constant, or from {start} (--init custom)")


def _refuse_outdir(outdir):
    """OUTDIR must be a folder, or a name nothing has taken yet (exit 2 for '-', 73 otherwise)."""
    if outdir == "-":
        raise errors.UsageError("-o -: fit writes a folder of outputs (W, H, model.h5, report.json), not a stream; "
                                "give a folder name (--json prints the report on stdout)")
    if os.path.isdir(outdir):
        return
    if os.path.islink(outdir):
        raise errors.OutputError(f"{outdir}: is a symbolic link to {os.readlink(outdir)}, which is not a folder; "
                                 "fit writes a folder of outputs: give a folder name")
    if os.path.lexists(outdir):
        raise errors.OutputError(f"{outdir}: is not a folder (a file or a device); fit writes a folder of outputs: give a "
                                 "folder name")


def _refuse_existing(paths):
    for path in paths.values():
        nio.refuse_existing(path)


def _infer_k(factors, checkpoint, resume_path=None):
    if "fix_H" in factors:
        return int(factors["fix_H"].X.shape[0])
    if "H0" in factors:
        return int(factors["H0"].X.shape[0])
    if "fix_W" in factors:
        return int(factors["fix_W"].X.shape[1])
    if "W0" in factors:
        return int(factors["W0"].X.shape[1])
    if checkpoint is not None and "k" in checkpoint:
        if not _is_int(checkpoint["k"]):
            raise errors.DataError(f"{resume_path}: the checkpoint's 'k' is not what nmf writes there; it is damaged")
        return int(checkpoint["k"])
    raise errors.UsageError("missing -k (the number of components); give -k K, or --fix-H/--fix-W/--W0/--H0")


def _check_checkpoint(path, checkpoint, matrix, run_options):
    """Refuse a checkpoint made from other data (exit 65) or under other options (exit 2)."""
    for key in ("input", "options"):
        if not isinstance(checkpoint.get(key) or {}, dict):
            raise errors.DataError(f"{path}: the checkpoint's '{key}' is not what nmf writes there; it is damaged")
    saved_input = checkpoint.get("input") or {}
    if saved_input.get("sha256") != matrix.sha256:
        raise errors.DataError(
            f"{path}: the checkpoint was made from a different input ({saved_input.get('path')}, sha256 "
            f"{str(saved_input.get('sha256'))[:12]}) than {matrix.path} (sha256 {matrix.sha256[:12]}); "
            "resume with the same input"
        )
    saved = checkpoint.get("options") or {}
    diffs = [
        f"{key} {saved.get(key)!r} (now {run_options.get(key)!r})"
        for key in RESUME_KEYS
        if _norm(saved.get(key)) != _norm(run_options.get(key))
    ]
    if diffs:
        raise errors.UsageError(
            f"{path}: the checkpoint was made with different options: {', '.join(diffs)}; "
            "resume with the options of the interrupted run"
        )
    for key in ("W", "H", "iteration", "solver_state", "history", "history_iter"):
        if key not in checkpoint:
            raise errors.DataError(f"{path}: the checkpoint has no '{key}'; it is damaged")
    _check_checkpoint_types(path, checkpoint)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_checkpoint_types(path, checkpoint):
    """What the loop resumes from has the types it was written with (exit 65 otherwise): a file
    edited or damaged by hand must not reach the solver as a string where a number was."""
    def damaged(what):
        return errors.DataError(f"{path}: the checkpoint's '{what}' is not what nmf writes there; it is damaged")

    if not _is_int(checkpoint["iteration"]) or checkpoint["iteration"] < 0:
        raise damaged("iteration")
    state = checkpoint["solver_state"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and (v is None or _is_number(v))
                                              for k, v in state.items()):
        raise damaged("solver_state")
    history, history_iter = checkpoint["history"], checkpoint["history_iter"]
    if not isinstance(history, list) or not all(v is None or _is_number(v) for v in history):
        raise damaged("history")
    if not isinstance(history_iter, list) or not all(_is_int(v) for v in history_iter) \
            or len(history_iter) != len(history):
        raise damaged("history_iter")
    for key in ("W", "H", "W_before", "H_before"):
        value = checkpoint.get(key)
        if value is not None and not isinstance(value, str) and not (isinstance(value, np.ndarray)
                                                                     and value.ndim == 2):
            raise damaged(key)
    for key in ("W_before", "H_before"):  # the extrapolation's previous factors: the factors' shapes
        before, now = checkpoint.get(key), checkpoint.get(key[0])
        if isinstance(before, np.ndarray) and isinstance(now, np.ndarray) and before.shape != now.shape:
            raise damaged(key)


def _norm(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _checkpoint_state(core_checkpoint, run_options, matrix):
    state = dict(core_checkpoint)
    state["options"] = run_options
    state["input"] = {"path": matrix.path, "sha256": matrix.sha256}
    state["k"] = run_options["k"]
    return state


class _maybe_lock:
    """io.output_lock when --lock (the default), else just make the folder."""

    def __init__(self, outdir, lock):
        self.outdir, self.lock, self._cm = outdir, lock, None

    def __enter__(self):
        if self.lock:
            self._cm = nio.output_lock(self.outdir)
            return self._cm.__enter__()
        try:
            os.makedirs(self.outdir, exist_ok=True)
        except OSError as e:
            raise errors.OutputError(f"{self.outdir}: cannot be created ({e.strerror or e})") from None
        return None

    def __exit__(self, *exc):
        if self._cm is not None:
            return self._cm.__exit__(*exc)
        return False


def _remove(path):
    """Remove a temporary file if it is there."""
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


def _clean_up(outdir, created, lock_existed):
    """A run that wrote nothing leaves nothing: its lock file, and the folder if it made it."""
    lock_file = os.path.join(outdir, ".nmf.lock")
    if not lock_existed:
        try:
            os.unlink(lock_file)
        except OSError:
            pass
    if created:
        try:
            os.rmdir(outdir)
        except OSError:
            pass


def _run_fit(term, flag, matrix, X, k, factors, checkpoint, run_options, ckpt_path, checkpoint_every, max_time,
             max_iter, written, fit_kwargs, input_path, resume_path, weights_path=None):
    """core.fit with the callback that renders progress and obeys signals, the time budget and checkpoints."""
    files = {"X ": input_path, "k ": input_path, "k=": input_path,
             "fixed H": factors["fix_H"].path if "fix_H" in factors else None,
             "fixed W": factors["fix_W"].path if "fix_W" in factors else None,
             "W0": factors["W0"].path if "W0" in factors else None,
             "H0": factors["H0"].path if "H0" in factors else None,
             "the checkpoint": resume_path, **shared.weights_messages(weights_path)}

    what = "columns" if "fix_W" in factors else "rows"
    exact = core.reported_solver(None, summary.beta_of(fit_kwargs["loss"]), factors.get("fix_W"),
                                 factors.get("fix_H")) == "nnls"
    count = (matrix.shape[1] if what == "columns" else matrix.shape[0]) if exact else max_iter
    with ProgressDisplay(term, count, f"nmf fit k={k}", unit=what if exact else "iter") as progress:
        def callback(info):
            progress.update(info)
            if flag.received is not None:
                return "interrupted"
            if max_time is not None and info.elapsed_s >= max_time:
                return "time"
            if checkpoint_every and info.iteration % checkpoint_every == 0:
                with flag.shielded():
                    nio.write_checkpoint(ckpt_path, _checkpoint_state(info.checkpoint(), run_options, matrix),
                                         force=True)
                written.append(ckpt_path)
            return None

        def solved(done, total):  # the exact solve (a fixed factor, Frobenius): no iterations
            progress.solved(done, total, what)
            if flag.received is not None:
                print(f"Interrupted after {done} of {total} {what} of the exact solve; nothing written "
                      "(it keeps no checkpoint).", file=sys.stderr, flush=True)
                raise SystemExit(flag.exit_code)

        kwargs = dict(fit_kwargs)
        if kwargs["solver"] is None:
            kwargs["solver"] = "auto"
        with shared.naming_files(files):
            result = core.fit(
                X, k, max_iter=max_iter, callback=callback, progress=solved, resume=checkpoint,
                W0=factors["W0"].X if "W0" in factors else None,
                H0=factors["H0"].X if "H0" in factors else None,
                fix_H=factors["fix_H"].X if "fix_H" in factors else None,
                fix_W=factors["fix_W"].X if "fix_W" in factors else None,
                **kwargs,
            )
    return result


def _aligned(result, reference):
    """The result with its components in the order core.match_components gives against the
    reference's H (a streamed W is reordered in its file, a block of rows at a time), and
    the report's record of it."""
    match = core.match_components(result.H, reference.X)
    order = match.order
    if isinstance(result.W, str):
        nio.permute_columns(result.W, order)
        W = result.W
    else:
        W = np.ascontiguousarray(result.W[:, order])
    result = dataclasses.replace(result, W=W, H=np.ascontiguousarray(result.H[order]))
    return result, {"model": reference.path, "sha256": reference.sha256, "order": order, "matched": match.matched,
                    "similarity": match.similarity}


def _write_outputs(result, matrix, paths, factor_format, force, factors, written, engine_options=None,
                   alignment=None, weights=None):
    """W, H, model.h5 and report.json, which appear in OUTDIR together (io.replace_together).

    A W the engine already streamed to disk (result.W is then its path spec) is not
    written again, and model.h5 holds no W (it may not fit in memory).
    """
    outdir = os.path.dirname(paths[next(iter(paths))]) or "."
    with nio.replace_together(outdir, [os.path.basename(p) for p in paths.values()], force=force) as staged:
        report = _write_staged(result, matrix, paths, staged, factor_format, factors, engine_options, alignment,
                               weights)
    written.extend(paths.values())
    return report


def _write_staged(result, matrix, paths, staged, factor_format, factors, engine_options, alignment=None,
                 weights=None):
    k = result.options["k"]
    names = summary.component_names(k)
    W_path, H_path, model_path, report_path = paths.values()
    W_tmp, H_tmp, model_tmp, report_tmp = (staged[os.path.basename(p)] for p in paths.values())
    labelled = factor_format != "npy"
    streamed = isinstance(result.W, str)
    if streamed:  # the engine's temporary file (path::/dataset) joins the staged outputs
        os.replace(result.W.rsplit("::", 1)[0], W_tmp)
    else:
        nio.write_matrix(W_tmp, result.W, format=factor_format,
                         row_labels=matrix.row_labels if labelled else None, col_labels=names if labelled else None)
    nio.write_matrix(H_tmp, result.H, format=factor_format,
                     row_labels=names if labelled else None, col_labels=matrix.col_labels if labelled else None)
    input_info = {
        "path": matrix.path, "sha256": matrix.sha256, "format": matrix.format, "sparse": bool(sp.issparse(matrix.X)),
        "dtype": str(matrix.X.dtype),
    }
    fixed = {key: f.record for key, f in factors.items()}
    report = {
        "k": k,
        "shape": [int(s) for s in matrix.shape],
        "solver": result.options["solver"],
        "loss": result.options["loss"],
        "beta": result.options["beta"],
        "init": result.options["init"],
        "seed": result.options["seed"],
        "n_iter": result.n_iter,
        "converged": result.converged,
        "stop_reason": result.stop_reason,
        "objective": result.metrics["objective"],
        "beta_divergence": result.metrics["beta_divergence"],
        "reconstruction_error": result.metrics["reconstruction_error"],
        "relative_error": result.metrics["relative_error"],
        **({"kkt": result.metrics["kkt"]} if "kkt" in result.metrics else {}),
        **({"missing": result.options.get("missing", "nan"), "missing_entries": result.metrics["missing_entries"]}
           if "missing_entries" in result.metrics else {}),
        **({"weights": weights.record} if weights is not None else {}),
        "time_s": result.time_s,
        "history": result.history,
        "history_iter": result.history_iter,
        "options": result.options,
        "engine_options": {key: value for key, value in (engine_options or {}).items()
                           if key not in ("output", "output_before")},
        "input": input_info,
        "factors": fixed,
        **({"alignment": alignment} if alignment is not None else {}),
        "row_labels_present": matrix.row_labels is not None,
        "col_labels_present": matrix.col_labels is not None,
        "row_labels": matrix.row_labels,
        "col_labels": matrix.col_labels,
        "components": names,
        "outputs": {"W": W_path, "H": H_path, "model": model_path, "report": report_path},
        "versions": {**core.versions(), "python": sys.version.split()[0]},
    }
    model = {
        "H": np.ascontiguousarray(result.H),
        **({} if streamed else {"W": np.ascontiguousarray(result.W)}),
        "history": np.asarray(result.history, dtype=np.float64),
        "history_iter": np.asarray(result.history_iter, dtype=np.int64),
        **{key: value for key, value in report.items()
           if key not in ("history", "history_iter", "outputs")},
        "metrics": result.metrics,
    }
    nio.write_model(model_tmp, model)
    nio.write_report(report_tmp, report)
    return report
