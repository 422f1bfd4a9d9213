"""The Dask engine side by side with the numpy engine, and on a matrix larger than a worker's memory.

    python bench/bench_dask.py [--rows 20000 --cols 500 --big-rows 100000 --limit 250MB]

Part 1 (fits in memory): numpy engine vs Dask engine on LocalClusters of 1 and 2
worker processes (1 thread each), the same hals fit; time per iteration and
the ratio to the numpy engine (the Dask overhead). Cluster start-up is not timed;
sending X to the workers is.
Part 2 (out of core): an HDF5 matrix several times a worker's memory limit,
streamed from the file in row blocks; time per iteration and each worker's peak
resident memory (VmHWM, as the workers report it).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from nmfcli import core


def peak_rss():
    """The process's peak resident memory (VmHWM: unlike ru_maxrss it does not inherit the parent's across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def low_rank(m, n, k, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((m, k)) @ rng.random((k, n)) + 0.01 * rng.random((m, n))


def main():
    import distributed

    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--cols", type=int, default=500)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--big-rows", type=int, default=100_000)
    p.add_argument("--big-cols", type=int, default=1_000)
    p.add_argument("--big-iters", type=int, default=3)
    p.add_argument("--limit", default="250MB", help="memory limit per worker in part 2")
    args = p.parse_args()
    rows = []

    X = low_rank(args.rows, args.cols, args.k)
    fit = dict(solver="hals", init="random", max_iter=args.iters, tol=0.0)
    t = time.perf_counter()
    ref = core.fit(X, args.k, **fit)
    base = (time.perf_counter() - t) / ref.n_iter
    rows.append(("numpy engine", f"{args.rows}x{args.cols}", "-", base, 1.0, "-", 0.0))
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None, silence_logs=50) as cluster, \
                distributed.Client(cluster) as client:
            t = time.perf_counter()
            res = core.fit(X, args.k, engine="dask", engine_options={"scheduler": client}, **fit)
            per = (time.perf_counter() - t) / res.n_iter
            diff = float(np.abs(res.W - ref.W).max())
            peak = max(client.run(peak_rss).values())
        rows.append((f"dask, {workers} worker{'s' * (workers > 1)}", f"{args.rows}x{args.cols}", "-", per,
                     per / base, f"{peak / 1e6:.0f} MB", diff))

    import h5py

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.h5")
        m, n = args.big_rows, args.big_cols
        rng = np.random.default_rng(1)
        basis = rng.random((args.k, n))
        with h5py.File(path, "w") as f:
            d = f.create_dataset("X", shape=(m, n), dtype="f8", chunks=(min(m, 1000), n))
            for s in range(0, m, 5000):
                e = min(m, s + 5000)
                d[s:e] = rng.random((e - s, args.k)) @ basis
        size = m * n * 8
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=args.limit,
                                      dashboard_address=None, silence_logs=50) as cluster, \
                distributed.Client(cluster) as client:
            t = time.perf_counter()
            res = core.fit(f"{path}::X", args.k, engine="dask", init="random", solver="hals",
                           max_iter=args.big_iters, tol=0.0,
                           engine_options={"scheduler": client, "output": os.path.join(tmp, "W.zarr")})
            per = (time.perf_counter() - t) / res.n_iter
            peak = max(client.run(peak_rss).values())
        rows.append((f"dask, 2 workers, limit {args.limit}", f"{m}x{n} HDF5 ({size / 1e6:.0f} MB)", "streamed",
                     per, float("nan"), f"{peak / 1e6:.0f} MB", res.metrics["relative_error"]))

    print(f"{'run':<32} {'X':<28} {'X kept':<9} {'s/iter':>8} {'ratio':>6} {'peak/worker':>12} {'note':>10}")
    for name, shape, kept, per, ratio, peak, note in rows:
        print(f"{name:<32} {shape:<28} {kept:<9} {per:8.3f} {ratio:6.2f} {peak:>12} {note:10.2e}")
    print("note: max |W - W_numpy| for part 1; relative error for part 2 (whole-run time / iterations, "
          "including the data-check pass and the final metrics pass)")


if __name__ == "__main__":
    main()
