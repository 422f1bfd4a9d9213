"""`nmf rank`: fit a range of k several times each and compare error and stability (choosing k)."""

from __future__ import annotations

import contextlib
import signal
import sys

import click

from nmfcli import core, errors, rank, summary
from nmfcli import io as nio
from nmfcli.cli import shared
from nmfcli.cli.terminal import ProgressDisplay, Terminal

RANK_HELP = """Compare numbers of components k: fit INPUT with every k of KS, several times each.

For each k it prints the relative error ||X - WH|| / ||X|| of the best run (and the
median over the runs), and the stability of the components: the mean cosine between
the components of two runs, matched one to one as --align-to matches them, averaged
over every pair of runs (1.000: every run found the same components), and the lowest
such cosine (the least reproducible component). A good k is where the error stops
falling much as k grows while the stability stays near 1; past the k the data
supports, components split and merge differently from run to run.

The runs start from random factors with seeds --seed, --seed + 1, ... (the same for
every k), so `nmf fit INPUT -k K --init random --seed S` refits the best run of a k
(its seed is in the table). KS is a list and/or ranges: 2:10 (2 to 10), 2:20:2
(every second), 3,5,8, or 2:6,8,10.

--jobs N runs the fits side by side in N worker processes, each fit on one BLAS
thread: up to N times sooner where N cores are free. Each worker holds a copy of the
input, and a fit whose products with X would have run on several threads can differ
from a serial survey's in the last digits.

\b
Examples:
  nmf rank docs.csv -k 2:12
  nmf rank docs.csv -k 2:30 --jobs 8
  nmf rank counts.npy -k 2:10 --runs 10 --loss kl --report ranks.json
  nmf rank X.npy -k 4:40:4 --json | jq '.ranks[] | [.k, .stability]'
  nmf rank X.npy -k 2:8 --plot ranks.png
"""


MAX_KS = 1000  # a typo such as 2:20000 is refused, not run for days


class RanksType(click.ParamType):
    """A list of k: 2:10, 2:20:2, 3,5,8, or a mix (ranges are inclusive)."""

    name = "ks"

    def get_metavar(self, param, ctx=None):
        return "KS"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        ks = []
        for part in str(value).split(","):
            pieces = part.strip().split(":")
            try:
                numbers = [int(p) for p in pieces]
            except ValueError:
                self.fail(f"{part.strip()!r} is not a k, a range START:STOP or START:STOP:STEP of integers",
                          param, ctx)
            if len(numbers) == 1:
                ks.append(numbers[0])
            elif len(numbers) in (2, 3):
                start, stop, step = (*numbers, 1) if len(numbers) == 2 else numbers
                if step < 1 or stop < start:
                    self.fail(f"{part.strip()!r}: a range needs START <= STOP and STEP >= 1", param, ctx)
                if len(ks) + (stop - start) // step + 1 > MAX_KS:
                    self.fail(f"{value!r} asks for more than {MAX_KS} values of k", param, ctx)
                ks.extend(range(start, stop + 1, step))
            else:
                self.fail(f"{part.strip()!r} has more than three numbers", param, ctx)
        if any(k < 1 for k in ks):
            self.fail(f"every k must be at least 1; got {value!r}", param, ctx)
        return sorted(set(ks))


@click.argument("input_path", metavar="INPUT")
@click.option("-k", "--k", "ks", type=RanksType(), required=True,
              help="The k values to try: 2:10, 2:20:2, 3,5,8 or a mix.")
@click.option("--runs", type=click.IntRange(min=1), default=rank.DEFAULT_RUNS, show_default=True,
              help="Fits per k, from random starts with seeds --seed, --seed + 1, ...")
@click.option("--seed", type=shared.SEED_TYPE, default=core.DEFAULT_SEED, show_default=True, help="Seed of the first run.")
@click.option("--init", type=click.Choice([i for i in shared.INIT_CHOICE.choices if i != "custom"]), default="random", show_default=True,
              help="Start of every run; the nndsvd starts barely depend on the seed, so the stability "
                   "then says little.")
@click.option("--solver", type=shared.SOLVER_CHOICE, default="auto", show_default=True)
@click.option("--loss", type=shared.LossType(), default="frobenius", show_default=True)
@click.option("--max-iter", type=click.IntRange(min=1), default=core.DEFAULT_MAX_ITER, show_default=True)
@click.option("--tol", type=click.FloatRange(min=0), default=core.DEFAULT_TOL, show_default=True)
@click.option("--alpha-W", "alpha_W", type=float, default=0.0, show_default=True, help="Penalty on W.")
@click.option("--alpha-H", "alpha_H", type=shared.AlphaHType(), default="same", show_default=True,
              help="Penalty on H ('same' copies --alpha-W).")
@click.option("--l1-ratio", type=float, default=0.0, show_default=True, help="L1 share of the penalties.")
@click.option("--dtype", type=shared.DTYPE_CHOICE, default=None, help="[default: INPUT's float type, else float64]")
@click.option("--missing", type=click.Choice(["nan"]), default=None,
              help="nan: NaN entries are missing values, left out of every fit (as nmf fit --missing nan).")
@click.option("--weights", "weights_path", default=None, metavar="FILE",
              help="Weight of each entry of INPUT, in every fit (as nmf fit --weights).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes fitting side by side (each fit on one BLAS thread).")
@click.option("--report", "report_path", default=None, metavar="FILE", help="Write the survey as JSON (- for stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print the survey as JSON on stdout instead of the table.")
@click.option("--plot", "plot_path", default=None, metavar="PNG",
              help="Draw error and stability against k (needs matplotlib: pip install 'nmfcli[plot]').")
@click.option("--force", is_flag=True, help="Replace an existing --report or --plot file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="A line per fit on stderr (off a terminal).")
@shared.input_options
def rank_command(input_path, ks, runs, seed, init, solver, loss, max_iter, tol, alpha_W, alpha_H, l1_ratio,
                 dtype, missing, weights_path, jobs, report_path, as_json, plot_path, force, quiet, verbose,
                 input_format, dataset, header, index_col):
    term = Terminal(quiet=quiet, verbose=verbose)
    # Refused before the fits, which can take hours, rather than after them.
    for path in (report_path, plot_path):
        if path and path != "-":
            nio.refuse_existing(path, force=force)
    if plot_path:
        from nmfcli import plot

        plot.require_matplotlib()
    opts = {"input_format": input_format, "dataset": dataset, "header": header, "index_col": index_col}
    shared.refuse_declared_fit(input_path, opts, max(ks), dtype, loss)
    matrix = shared.read_input(input_path, opts, dtype=dtype, quiet=quiet)
    X = matrix.X
    weights = shared.read_weights(weights_path, matrix, input_path, dtype=X.dtype) if weights_path else None
    total = len(ks) * runs
    _check_memory(input_path, X, max(ks), loss, missing, min(jobs, total), weights is not None)
    finished = []
    with ProgressDisplay(term, total, "rank survey", unit="fits") as display, _stopping_workers(jobs):

        def progress(k, run, result):
            finished.append((k, run))  # in order, or with --jobs in the order the fits end
            if term.tty:
                display.solved(len(finished), total, "fits")
            elif term.verbose:
                term.say(f"k={k} run {run + 1}/{runs}: relative error {result.metrics['relative_error']:.6g}, "
                         f"{result.n_iter} iterations ({result.stop_reason})")

        with shared.naming_files({"X": input_path, "k": input_path, **shared.weights_messages(weights_path)}):
            surveyed = rank.survey_ranks(X, ks, runs=runs, seed=seed, init=init, solver=solver, loss=loss,
                                         max_iter=max_iter, tol=tol, alpha_W=alpha_W, alpha_H=alpha_H,
                                         l1_ratio=l1_ratio, missing=missing, progress=progress, jobs=jobs,
                                         **({"weights": weights.X} if weights is not None else {}))
    report = _report(input_path, matrix, surveyed, runs=runs, seed=seed, init=init, solver=solver, loss=loss,
                     max_iter=max_iter, tol=tol, alpha_W=alpha_W, alpha_H=alpha_H, l1_ratio=l1_ratio,
                     dtype=str(X.dtype), missing=missing, jobs=jobs,
                     **({"weights": weights.record} if weights is not None else {}))
    if plot_path:
        nio.write_bytes(plot_path, plot.render_ranks_png(report["ranks"], title=input_path), force=force)
    if report_path:
        nio.write_report(report_path, report, force=force, stdout=sys.stdout)
    if as_json:
        if report_path != "-":
            nio.write_report("-", report, stdout=sys.stdout)
    elif report_path != "-":
        _print_table(report)


def _check_memory(input_path, X, k, loss, missing, at_once, weighted=False):
    """Refuse, before the first fit, a survey whose fits running at once (each worker with its
    own copy of X) need more memory than is available, at the largest k: exit 69, as nmf fit."""
    beta = summary.beta_of(loss)
    if beta is None:
        return
    need = at_once * summary.fit_memory(X, k, X.dtype, beta, missing, weighted)
    m, n = X.shape
    if at_once == 1:
        shared.refuse_beyond_memory(input_path, need, "the fit needs", f"{m} x {n}, k={k}",
                                    "use a smaller k, --dtype float32 or sparse input (.npz, .mtx or a sparse "
                                    "HDF5 group)")
    else:
        shared.refuse_beyond_memory(input_path, need, f"{at_once} fits at once need",
                                    f"{m} x {n}, k up to {k}, each worker with its own copy of X", "use fewer --jobs")


@contextlib.contextmanager
def _stopping_workers(jobs):
    """With worker processes, SIGTERM leaves the survey by an exception, so that its pool is
    stopped (a killed parent would leave each worker to finish its fit); exit code 143 as before."""
    if jobs == 1:
        yield
        return

    def terminated(signum, frame):
        raise SystemExit(errors.EXIT_SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(input_path, matrix, surveyed, **options):
    ranks = []
    for r in surveyed:
        ranks.append({
            "k": r.k,
            "relative_error": r.relative_error,
            "median_relative_error": r.median_relative_error,
            "stability": r.stability,
            "lowest_similarity": r.lowest_similarity,
            "best_seed": r.seeds[r.best],
            "seeds": r.seeds,
            "relative_errors": r.relative_errors,
            "objectives": r.objectives,
            "n_iter": r.n_iter,
            "converged": r.converged,
            "time_s": r.time_s,
        })
    return {
        "kind": "rank_survey",
        "input": {"path": input_path, "sha256": matrix.sha256, "format": matrix.format},
        "shape": list(matrix.X.shape),
        **options,
        "ranks": ranks,
        "versions": core.versions(),
    }


def _print_table(report):
    out = sys.stdout
    runs = report["runs"]
    print(f"{report['input']['path']}: {report['shape'][0]} x {report['shape'][1]}, {runs} run"
          f"{'s' if runs > 1 else ''} per k ({report['init']} starts, seeds {report['seed']}.."
          f"{report['seed'] + runs - 1}), loss {report['loss']}", file=out)
    header = f"{'k':>4}  {'rel. error':>10}  {'median':>10}  {'stability':>9}  {'lowest':>7}  " \
             f"{'best seed':>9}  {'iterations':>10}  {'converged':>9}"
    print(header, file=out)
    for r in report["ranks"]:
        stability = "-" if r["stability"] is None else f"{r['stability']:.3f}"
        lowest = "-" if r["lowest_similarity"] is None else f"{r['lowest_similarity']:.3f}"
        converged = f"{sum(r['converged'])}/{len(r['converged'])}"
        its = f"{min(r['n_iter'])}" if min(r["n_iter"]) == max(r["n_iter"]) else f"{min(r['n_iter'])}-{max(r['n_iter'])}"
        print(f"{r['k']:>4}  {r['relative_error']:>10.5g}  {r['median_relative_error']:>10.5g}  {stability:>9}  "
              f"{lowest:>7}  {r['best_seed']:>9}  {its:>10}  {converged:>9}",
              file=out)
    out.flush()
