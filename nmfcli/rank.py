"""Choosing k: fit each k several times from different random starts and compare.

Two numbers per k answer the question users ask ("which k?"): how well the best of the
fits reproduces X (the relative error falls as k grows; where it stops falling much, more
components add little), and how reproducible the components are (the stability: when
fits from different starts find the same components, the cosine of matched components is
near 1; when k is larger than the data supports, the extra components split and merge
differently from run to run and the stability drops). The components are matched as
:func:`nmfcli.match_components` matches them (cosine of the rows of H, paired one to one).
"""

from __future__ import annotations

import multiprocessing
import signal
import warnings
from multiprocessing import connection
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from nmfcli import core
from nmfcli.engines import blas
from nmfcli.errors import NMFWarning, UnavailableError, UsageError

DEFAULT_RUNS = 5


@dataclass
class RankFit:
    """The fits of one k in :func:`survey_ranks`.

    Attributes
    ----------
    k : int
    seeds : list of int
        The seed of each run, in order.
    relative_errors : list of float
        ‖X − WH‖_F / ‖X‖_F of each run.
    objectives : list of float
        The objective (loss plus penalties) each run ended at; the best run is the lowest.
    n_iter : list of int
    converged : list of bool
    best : int
        The index (in ``seeds``) of the run with the lowest objective.
    stability : float or None
        The mean, over every pair of runs, of the mean cosine of their matched components
        (1: every run found the same components). None with a single run.
    lowest_similarity : float or None
        The lowest cosine of any matched pair of components over all pairs of runs: the
        least reproducible component. None with a single run.
    time_s : float
        The seconds all the runs of this k took.
    """

    k: int
    seeds: list
    relative_errors: list
    objectives: list
    n_iter: list
    converged: list
    best: int
    stability: float | None
    lowest_similarity: float | None
    time_s: float
    results: list = field(repr=False, default_factory=list)

    @property
    def relative_error(self) -> float:
        """The best run's relative error."""
        return self.relative_errors[self.best]

    @property
    def median_relative_error(self) -> float:
        return float(np.median(self.relative_errors))


def check_ranks(ks, shape, runs, init=None):
    """The k values sorted and without repeats; UsageError for an empty list, a k < 1 (or one
    larger than ``init`` allows), or runs < 1: all checked before the first fit."""
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise UsageError(f"runs must be a positive integer; got {runs!r}")
    ks = list(ks)
    if not ks:
        raise UsageError("give at least one k")
    for k in ks:
        core._check_k(k, shape, init)
    return sorted(set(int(k) for k in ks))


def survey_ranks(X, ks, *, runs=DEFAULT_RUNS, seed=core.DEFAULT_SEED, init="random", keep_factors=False,
                 progress=None, jobs=1, **fit_options):
    """Fit X with every k in ``ks``, ``runs`` times each, and measure error and stability.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix, shape (m, n)
    ks : iterable of int
        The numbers of components to try (sorted, repeats dropped).
    runs : int, default 5
        Fits per k, with seeds ``seed``, ``seed + 1``, ... (the same seeds for every k).
    seed : int, default 0
    init : str, default "random"
        Random starts make the runs differ, which the stability measures. The nndsvd starts
        barely depend on the seed, so their stability says little beyond the solver's.
    keep_factors : bool, default False
        Keep every run's :class:`FitResult` in ``RankFit.results`` (else only the numbers).
    progress : callable(k, run, FitResult), optional
        Called after each fit (the CLI prints a line); with ``jobs`` > 1, in the order the
        fits end.
    jobs : int, default 1
        Worker processes that run the fits side by side, each fit on one BLAS thread (the
        fits are independent; on a machine with more cores than one fit keeps busy, the
        survey ends up to ``jobs`` times sooner). Each worker holds a copy of X. The fits are
        those of ``jobs=1``, bit for bit where their BLAS calls run on one thread anyway (as for
        dense X under 2¹⁷ entries); where a serial fit's products with X run on several
        threads, the BLAS rounds differently and the numbers can differ in the last digits.
    **fit_options
        Passed to :func:`nmfcli.fit` (loss, solver, max_iter, tol, alpha_W, dtype, missing, weights, ...).

    Returns
    -------
    list of RankFit, one per k, in increasing k.
    """
    for name in ("k", "W0", "H0", "fix_W", "fix_H", "resume", "callback"):
        if name in fit_options:
            raise UsageError(f"survey_ranks does not take {name}")
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise UsageError(f"jobs must be a positive integer; got {jobs!r}")
    X = core._as_matrix(X, fit_options.pop("dtype", None), missing=fit_options.get("missing"),
                        weighted=fit_options.get("weights") is not None)
    ks = check_ranks(ks, X.shape, runs, init)
    tasks = [(k, seed + run) for k in ks for run in range(runs)]
    fits = {}
    for (k, run_seed), result in _fits(X, tasks, init, fit_options, jobs):
        fits[k, run_seed] = result
        if progress is not None:
            progress(k, run_seed - seed, result)
    seeds = [seed + run for run in range(runs)]
    return [_rank_fit(k, seeds, [fits[k, s] for s in seeds], keep_factors) for k in ks]


def _fits(X, tasks, init, fit_options, jobs):
    """((k, seed), FitResult) for every task: in order here, or as they end on ``jobs`` workers."""
    if jobs == 1 or len(tasks) == 1:
        for k, run_seed in tasks:
            yield (k, run_seed), core.fit(X, k, seed=run_seed, init=init, **fit_options)
        return
    # spawn: a fresh interpreter per worker on every platform (a fork would copy the BLAS's
    # threads' state). Each worker has its own pipe; the parent waits on the pipes and on the
    # workers' sentinels at once, so a worker that dies (killed, out of memory) is seen at once,
    # and stopping the survey terminates the workers without waiting on anything they hold
    # (concurrent.futures' pool, used before, could hang in its shutdown after a worker was killed
    # or terminated mid-reply: one run in six of the interrupt test).
    context = multiprocessing.get_context("spawn")
    count = min(jobs, len(tasks))
    workers = []
    finished = False
    try:
        for _ in range(count):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_worker_main, args=(child_end, X, init, fit_options), daemon=True)
            process.start()
            child_end.close()
            workers.append((process, parent_end))
        queue = list(tasks)
        busy = {}  # worker index -> its task

        def assign(i):
            if queue:
                busy[i] = queue.pop(0)
                try:
                    workers[i][1].send(busy[i])
                except OSError:  # (the worker died between two fits)
                    raise dead() from None

        def dead():
            return UnavailableError(f"a worker process of the survey stopped abruptly (killed, or out of memory: "
                                    f"each of the {count} holds a copy of X); try fewer jobs")

        for i in range(count):
            assign(i)
        while busy:
            ends = {workers[i][1]: i for i in busy}
            sentinels = {workers[i][0].sentinel: i for i in busy}
            for ready in connection.wait(list(ends) + list(sentinels)):
                i = ends.get(ready, sentinels.get(ready))
                if i not in busy:
                    continue
                try:
                    reply = workers[i][1].recv() if workers[i][1].poll() else None
                except (EOFError, OSError):
                    reply = None
                if reply is None:
                    if workers[i][0].is_alive() and ready in ends:
                        continue
                    raise dead()
                if reply[0] == "error":
                    raise reply[1]
                _, task, result, messages = reply
                del busy[i]
                for message in messages:  # a worker's warnings, shown once, here
                    warnings.warn(message, NMFWarning, stacklevel=2)
                yield task, result
                assign(i)
        finished = True
    finally:
        _stop(workers, finished)


def _stop(workers, finished):
    """End the workers: told to stop after a finished survey; terminated (then killed) after an
    error, an interrupt, a dead worker or the caller leaving early, so that none outlives it."""
    for process, end in workers:
        try:
            if finished:
                end.send(None)
            elif process.is_alive():
                process.terminate()
        except OSError:
            pass
    for process, end in workers:
        process.join(timeout=STOP_WAIT_S)
        if process.is_alive():
            process.kill()
            process.join(timeout=STOP_WAIT_S)
        end.close()


# How long stopping a survey waits for each worker to exit before killing it.
STOP_WAIT_S = 10


def _worker_main(end, X, init, fit_options):
    """A survey worker: fits the tasks its pipe sends until it sends None; replies with
    ("ok", task, FitResult, warnings) or ("error", the exception)."""
    _worker_start(X, init, fit_options)
    while True:
        try:
            task = end.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            end.send(("ok", *_worker_fit(task)))
        except Exception as e:  # noqa: BLE001 - the fit's own error, raised in the parent
            end.send(("error", e))


_worker = {}


def _worker_start(X, init, fit_options):
    # SIGINT (Ctrl-C reaches the whole process group) is the parent's to handle: it stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for library in blas.libraries():  # the workers share the cores: one BLAS thread each
        library.set(1)
    _worker.update(X=X, init=init, fit_options=fit_options)


def _worker_fit(task):
    """(task, FitResult, the messages of the fit's NMFWarnings, for the parent to show)."""
    k, run_seed = task
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NMFWarning)
        result = core.fit(_worker["X"], k, seed=run_seed, init=_worker["init"], **_worker["fit_options"])
    return task, result, [str(w.message) for w in caught if issubclass(w.category, NMFWarning)]


def _rank_fit(k, seeds, fits, keep_factors):
    objectives = [float(f.metrics["objective"]) for f in fits]
    similarities = [core.match_components(a.H, b.H).similarity for a, b in combinations(fits, 2)]
    return RankFit(
        k=k,
        seeds=seeds,
        relative_errors=[float(f.metrics["relative_error"]) for f in fits],
        objectives=objectives,
        n_iter=[f.n_iter for f in fits],
        converged=[bool(f.converged) for f in fits],
        best=int(np.argmin(objectives)),
        stability=float(np.mean([np.mean(s) for s in similarities])) if similarities else None,
        lowest_similarity=float(min(min(s) for s in similarities)) if similarities else None,
        time_s=float(sum(f.time_s for f in fits)),
        results=list(fits) if keep_factors else [],
    )
