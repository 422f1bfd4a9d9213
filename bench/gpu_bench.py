"""GPU engine benchmark: time per iteration and time to the CPU engine's final loss.

Run on a machine with an NVIDIA GPU and CuPy (``pip install -e '.[gpu]'``), via
``bench/gpu_check.sh``. Cases (float32, k = 50):

- dense 20000 x 5000 (low rank plus noise),
- sparse TF-IDF-like 200000 x 50000 at 0.5 % density.

For each: the numpy engine's fit (its final loss is the target), then the CuPy
engine's fit stopped as soon as it reaches that loss, and the GEMM / SpMM
throughput the same GPU reaches for the two products with X of one iteration
(the limit), printed as ratios. ``--small`` shrinks the cases for a dry run on
the CPU-only machine (the CuPy column is then skipped).
"""

import argparse
import json
import sys
import time

import numpy as np
import scipy.sparse as sp

import nmfcli


def dense_case(m, n, k_true=60, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.random((m, k_true), dtype=np.float32)
    H = rng.random((k_true, n), dtype=np.float32)
    X = W @ H
    X += 0.05 * float(X.mean()) * rng.random((m, n), dtype=np.float32)
    return X


def sparse_case(m, n, density, seed=0):
    rng = np.random.default_rng(seed)
    nnz = int(m * n * density)
    # Zipf-like column popularity, uniform rows: a TF-IDF-like pattern.
    p = 1.0 / np.arange(1, n + 1) ** 1.07
    cols = rng.choice(n, size=nnz, p=p / p.sum())
    rows = rng.integers(0, m, size=nnz)
    vals = rng.random(nnz, dtype=np.float32) + 0.1
    X = sp.csr_matrix((vals, (rows, cols)), shape=(m, n), dtype=np.float32)
    X.sum_duplicates()
    return X


def timed_fit(X, k, engine, target=None, max_iter=200):
    seen = {}

    def stop_at_target(info):
        seen["last"] = info.iteration
        if target is not None and info.objective is not None and info.objective <= target:
            return "target"

    start = time.perf_counter()
    result = nmfcli.fit(X, k, engine=engine, max_iter=max_iter, callback=stop_at_target)
    return result, time.perf_counter() - start


def gpu_product_seconds(X, k, repeats=5):
    """Seconds for X·Hᵀ and Wᵀ·X on the GPU (the limit one iteration cannot beat)."""
    import cupy
    import cupyx.scipy.sparse as csp

    m, n = X.shape
    Xd = csp.csr_matrix(X) if sp.issparse(X) else cupy.asarray(X)
    W = cupy.random.random((m, k), dtype=cupy.float32)
    H = cupy.random.random((k, n), dtype=cupy.float32)
    for _ in range(2):
        Xd @ H.T, (Xd.T @ W)
    cupy.cuda.Device().synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        Xd @ H.T
        Xd.T @ W
    cupy.cuda.Device().synchronize()
    return (time.perf_counter() - start) / repeats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny cases for a dry run")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    k = 50 if not args.small else 10
    cases = [
        ("dense 20000x5000", lambda: dense_case(*((20000, 5000) if not args.small else (500, 200)))),
        ("sparse 200000x50000 0.5%", lambda: sparse_case(*((200000, 50000, 0.005) if not args.small else (2000, 800, 0.01)))),
    ]
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
        device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        has_gpu, device = False, "none"
    print(f"GPU: {device}")
    rows = []
    for name, make in cases:
        X = make()
        cpu, cpu_s = timed_fit(X, k, "numpy")
        target = cpu.metrics["objective"] * (1 + 1e-3)
        row = {"case": name, "k": k, "cpu_s": cpu_s, "cpu_iter": cpu.n_iter,
               "cpu_s_per_iter": cpu_s / cpu.n_iter, "cpu_objective": cpu.metrics["objective"]}
        if has_gpu:
            timed_fit(X, k, "cupy", max_iter=2)  # warm-up: CUDA context, kernels, cuBLAS handles
            gpu, gpu_s = timed_fit(X, k, "cupy", target=target, max_iter=1000)
            full, full_s = timed_fit(X, k, "cupy", max_iter=cpu.n_iter)
            limit = gpu_product_seconds(X, k)
            row.update(gpu_s_to_cpu_loss=gpu_s, gpu_iter_to_cpu_loss=gpu.n_iter,
                       gpu_reached=gpu.stop_reason, gpu_s_per_iter=full_s / full.n_iter,
                       gpu_products_s=limit, per_iter_over_limit=(full_s / full.n_iter) / limit,
                       speedup_vs_cpu=cpu_s / gpu_s)
        rows.append(row)
        print(json.dumps(row))
    print()
    print(f"{'case':28} {'cpu s/it':>9} {'gpu s/it':>9} {'it/limit':>9} {'to CPU loss':>12} {'speedup':>8}")
    for r in rows:
        print(f"{r['case']:28} {r['cpu_s_per_iter']:9.4f} {r.get('gpu_s_per_iter', float('nan')):9.4f} "
              f"{r.get('per_iter_over_limit', float('nan')):9.2f} {r.get('gpu_s_to_cpu_loss', float('nan')):12.3f} "
              f"{r.get('speedup_vs_cpu', float('nan')):8.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
