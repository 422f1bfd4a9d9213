"""Kept pools of Python threads for the numpy engine's work that releases the GIL: scipy.sparse's
loops, numpy's gathers and ufuncs, and the exact solve's batches of LAPACK calls."""

import concurrent.futures
import os
import threading

from nmfcli.engines import blas

_PREFIX = "nmfcli-pool"
_pools = {}
_pools_lock = threading.Lock()


def _forget_pools():
    # A forked child has none of the parent's threads: a pool it inherited would take tasks and
    # never run them (multiprocessing's fork after a fit in the parent would hang).
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def count(workers=None):
    """``workers``, or by default the BLAS thread count the fit began with (blas.outer_thread_count)."""
    return blas.outer_thread_count() if workers is None else workers


def run(f, items, workers=None):
    """f(item) for every item, on up to ``workers`` threads (default: count()); in this thread
    when one, or when this thread is already one of a pool's, whose tasks could otherwise wait
    for each other."""
    workers = count(workers)
    items = list(items)
    if workers <= 1 or len(items) <= 1 or threading.current_thread().name.startswith(_PREFIX):
        for item in items:
            f(item)
        return
    for _ in pool(min(workers, len(items))).map(f, items):
        pass


def pool(workers):
    """A pool of ``workers`` threads, kept for the next call (a thread costs ~0.1 ms to start)."""
    with _pools_lock:
        executor = _pools.get(workers)
        if executor is None:
            executor = _pools[workers] = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix=_PREFIX)
        return executor
