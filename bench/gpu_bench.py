"""GPU engine benchmark: time per iteration and time to the numpy engine's final loss.

Run on a machine with an NVIDIA GPU and CuPy, via ``bench/gpu_check.sh``. Cases
(float32, k = 50, the default solver, ehals, on both engines):

- dense 20000 x 5000 (low rank plus noise),
- sparse TF-IDF-like 200000 x 50000 at 0.5 % density (Zipf column popularity).

For each case, on the same data and from the same initial factors (drawn once on
the host and timed; its time is added to every total: nndsvda for dense, random
for sparse, where nndsvda's randomized SVD alone takes minutes of host SpMM):

- the numpy engine's fit, stopped by its own rule or after ``--cpu-seconds``
  (the sparse case's single-threaded products make a full CPU fit take an hour);
  its final loss is the target;
- the CuPy engine's fit stopped as soon as its loss is within 0.1 % of the target;
- plain hals on the CuPy engine, to the same loss: ehals pays a read of its
  objective from the device every iteration, which hals does not;
- seconds per iteration of both engines, and of the CuPy engine with one of its
  choices undone: the row-by-row sweep instead of the fused one, the fused sweep
  compiled for any k instead of the exact k, the sweeps launched one by one
  instead of replayed as a CUDA graph, and (sparse) Wᵀ·X by the transposed
  product instead of a kept CSR copy of Xᵀ; then the default once more, to show
  how much the machine drifted meanwhile;
- with ``--transform``: the exact transform of the dense X against the fitted H;
- the limit: the two products with X of one iteration, timed on the same device
  (GEMM for dense, SpMM for sparse), each in its faster layout, and per-iteration
  time over that limit.

Prints a table and writes JSON after every case, so a run stopped early keeps what
it measured. ``--small`` shrinks the cases for a dry run on a machine without a GPU
(the CuPy columns are then skipped).
"""

import argparse
import contextlib
import json
import os
import platform
import sys
import time

import numpy as np
import scipy.sparse as sp

import nmfcli
from nmfcli.core import DEFAULT_TOL
from nmfcli.engines import get_engine
from nmfcli.init import nndsvd_factors, random_factors

TARGET_REL = 1e-3


def dense_case(m, n, k_true=60, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.random((m, k_true), dtype=np.float32)
    H = rng.random((k_true, n), dtype=np.float32)
    X = W @ H
    X += 0.05 * float(X.mean()) * rng.random((m, n), dtype=np.float32)
    return X


def sparse_case(m, n, density, seed=0):
    """TF-IDF-like: Zipf column popularity (capped at half the rows), uniform rows, about m·n·density entries."""
    rng = np.random.default_rng(seed)
    want = m * n * density
    p = 1.0 / np.arange(1, n + 1) ** 1.07
    lo, hi = 0.0, want / p[-1]
    for _ in range(100):  # the scale at which the capped counts add up to what we want
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.minimum(m // 2, mid * p).sum() < want else (lo, mid)
    counts = np.minimum(m // 2, np.rint(lo * p)).astype(np.int64)
    rows = np.concatenate([np.sort(rng.choice(m, c, replace=False)) for c in counts])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    idf = np.log(m / (1.0 + counts)).astype(np.float32) + 1.0
    vals = (rng.random(rows.size, dtype=np.float32) + 0.1) * np.repeat(idf, counts)
    return sp.csc_matrix((vals, rows, indptr), shape=(m, n)).tocsr()


def timed_fit(X, k, engine, W0, H0, target=None, max_iter=200, seconds=None, tol=DEFAULT_TOL, solver="auto",
              loss="frobenius"):
    """Fit from (W0, H0); returns (result, seconds, per-iteration seconds from the callback's clock)."""
    marks = []

    def watch(info):
        # Reading the objective waits for the device: done every iteration to stop at the target,
        # else at the first and the last one only, so that the clock brackets the device's work.
        objective = info.objective if target is not None or info.iteration in (1, max_iter) else None
        marks.append((info.iteration, time.perf_counter()))
        if target is not None and objective is not None and objective <= target:
            return "target"
        if seconds is not None and time.perf_counter() - start > seconds:
            return "time"
        return None

    start = time.perf_counter()
    result = nmfcli.fit(X, k, engine=engine, init="custom", W0=W0, H0=H0, max_iter=max_iter, tol=tol,
                        callback=watch, solver=solver, loss=loss)
    total = time.perf_counter() - start
    if len(marks) >= 3:  # from the first iteration's end: leaves out moving X and the start
        (i0, t0), (i1, t1) = marks[0], marks[-1]
        per_iter = (t1 - t0) / (i1 - i0)
    else:
        per_iter = total / max(result.n_iter, 1)
    return result, total, per_iter


def product_seconds(X, W, H, engine, repeats=5):
    """(seconds, {layout: seconds}): the two products with X of one iteration (HXt, WtX), each the best of repeats.

    On CuPy with sparse X, Wᵀ·X is timed both ways (by a kept CSR copy of Xᵀ, and by the
    transposed product of X) and the faster one counts: the limit is the fastest layout.
    """
    variants = [{}] if engine != "cupy" or not sp.issparse(X) else [{"keep_xt": True}, {"keep_xt": False}]
    best = {"HXt": float("inf"), "WtX": float("inf")}
    detail = {}  # each layout's time, for the JSON
    for variant in variants:
        with cupy_options(engine, **variant):
            eng = get_engine(engine, X, X.dtype)
            Wd, Hd = eng.asarray(W), eng.asarray(H)
            sync = (lambda: eng.to_host(eng.xp.zeros(1))) if engine != "numpy" else (lambda: None)
            with eng.session():
                for name, product in (("HXt", lambda: eng.HXt(Hd)), ("WtX", lambda: eng.WtX(Wd))):
                    for _ in range(repeats + 1):
                        sync()
                        start = time.perf_counter()
                        product()
                        sync()
                        seconds = time.perf_counter() - start
                        best[name] = min(best[name], seconds)
                        label = name + "".join(f" {key}={value}" for key, value in variant.items())
                        detail[label] = min(detail.get(label, float("inf")), seconds)
            del eng, Wd, Hd
    return best["HXt"] + best["WtX"], detail


@contextlib.contextmanager
def cupy_options(engine, **options):
    """The CuPy engine with some of its switches changed (fused, unroll, graph, keep_xt, on_device)."""
    if engine != "cupy" or not options:
        yield
        return
    from nmfcli.engines import cupy as cupy_engine

    names = {"fused": (cupy_engine, "FUSED_SWEEP"), "unroll": (cupy_engine, "UNROLL"),
             "graph": (cupy_engine, "GRAPH"), "keep_xt": (cupy_engine, "KEEP_XT"),
             "on_device": (cupy_engine.CupyEngine, "decides_on_device")}
    saved = [(names[key], getattr(*names[key])) for key in options]
    for key, value in options.items():
        setattr(*names[key], value)
    try:
        yield
    finally:
        for (owner, name), value in saved:
            setattr(owner, name, value)


def gpu_name():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: no GPU column
        pass
    return None


def run_case(name, X, k, init, args, gpu):
    row = {"case": name, "shape": list(X.shape), "k": k, "nnz": int(X.nnz) if sp.issparse(X) else None}
    start = time.perf_counter()
    if init == "random":
        W0, H0 = random_factors(X.mean(), k, X.shape, X.dtype, 0)
    else:
        W0, H0 = nndsvd_factors(X, k, init, 0)
    W0, H0 = W0.astype(X.dtype), H0.astype(X.dtype)
    row["init"] = init
    row["init_s"] = init_s = time.perf_counter() - start
    flop = 4.0 * (X.nnz if sp.issparse(X) else X.shape[0] * X.shape[1]) * k

    cpu, cpu_s, cpu_it = timed_fit(X, k, "numpy", W0, H0, max_iter=args.max_iter, seconds=args.cpu_seconds)
    target = cpu.metrics["objective"] * (1 + TARGET_REL)
    cpu_limit, _ = product_seconds(X, W0, H0, "numpy", repeats=1)
    row.update(cpu_s=init_s + cpu_s, cpu_iter=cpu.n_iter, cpu_stop=cpu.stop_reason, cpu_s_per_iter=cpu_it,
               cpu_products_s=cpu_limit, cpu_per_iter_over_limit=cpu_it / cpu_limit,
               cpu_gflops=flop / cpu_limit / 1e9, cpu_objective=cpu.metrics["objective"])
    print(json.dumps(row), flush=True)
    if gpu:
        engine = args.gpu_engine
        timed_fit(X, k, engine, W0, H0, max_iter=3)  # warm-up: CUDA context, kernels, cuBLAS/cuSPARSE handles
        gpu_fit, gpu_s, _ = timed_fit(X, k, engine, W0, H0, target=target, max_iter=10 * args.max_iter)
        many = max(cpu.n_iter, 30)
        full, _, gpu_it = timed_fit(X, k, engine, W0, H0, max_iter=many, tol=0)
        hals_fit, hals_s, _ = timed_fit(X, k, engine, W0, H0, target=target, max_iter=10 * args.max_iter,
                                        solver="hals")
        _, _, hals_it = timed_fit(X, k, engine, W0, H0, max_iter=many, tol=0, solver="hals")
        with cupy_options(engine, fused=False):
            _, _, rows_it = timed_fit(X, k, engine, W0, H0, max_iter=min(many, 20), tol=0)
        with cupy_options(engine, unroll=False):
            timed_fit(X, k, engine, W0, H0, max_iter=2)  # compiles it
            _, _, any_k_it = timed_fit(X, k, engine, W0, H0, max_iter=many, tol=0)
        with cupy_options(engine, graph=False):
            _, _, launched_it = timed_fit(X, k, engine, W0, H0, max_iter=many, tol=0)
        with cupy_options(engine, on_device=False):
            _, _, host_it = timed_fit(X, k, engine, W0, H0, max_iter=many, tol=0)
        kl = {}
        if not sp.issparse(X):  # KL: emu (steps decided on the device, or on the host) and mu, per iteration
            for label, solver, on_device in (("emu", "emu", True), ("emu_host", "emu", False), ("mu", "mu", True)):
                with cupy_options(engine, on_device=on_device):
                    _, _, kl[label] = timed_fit(X, k, engine, W0, H0, max_iter=60, tol=0, solver=solver, loss="kl")
        transposed_it = None
        if sp.issparse(X):
            with cupy_options(engine, keep_xt=False):
                _, _, transposed_it = timed_fit(X, k, engine, W0, H0, max_iter=many, tol=0)
        _, _, again_it = timed_fit(X, k, engine, W0, H0, max_iter=many, tol=0)  # the default again: drift
        limit, layouts = product_seconds(X, W0, H0, engine)
        row.update(gpu_solver=gpu_fit.options["solver"], gpu_s_to_cpu_loss=init_s + gpu_s,
                   gpu_iter_to_cpu_loss=gpu_fit.n_iter, gpu_reached=gpu_fit.stop_reason == "target",
                   gpu_s_per_iter=gpu_it, gpu_hals_s_to_cpu_loss=init_s + hals_s,
                   gpu_hals_iter_to_cpu_loss=hals_fit.n_iter, gpu_hals_reached=hals_fit.stop_reason == "target",
                   gpu_hals_s_per_iter=hals_it,
                   gpu_s_per_iter_again=again_it, gpu_row_sweep_s_per_iter=rows_it,
                   gpu_any_k_sweep_s_per_iter=any_k_it, gpu_launched_sweeps_s_per_iter=launched_it,
                   gpu_host_decisions_s_per_iter=host_it,
                   **{f"gpu_kl_{label}_s_per_iter": seconds for label, seconds in kl.items()},
                   gpu_transposed_product_s_per_iter=transposed_it, gpu_products_s=limit,
                   gpu_products_by_layout_s=layouts,
                   gpu_tflops=flop / limit / 1e12, gpu_per_iter_over_limit=gpu_it / limit,
                   speedup_to_loss=(init_s + cpu_s) / (init_s + gpu_s), speedup_per_iter=cpu_it / gpu_it,
                   objective_gap=(full.metrics["objective"] - cpu.metrics["objective"]) / cpu.metrics["objective"]
                   if full.n_iter == cpu.n_iter else None)
        print(json.dumps(row), flush=True)
    if args.transform and not sp.issparse(X):
        H = cpu.H
        start = time.perf_counter()
        ref = nmfcli.transform(X, H)
        row["cpu_transform_s"] = time.perf_counter() - start
        if gpu:
            nmfcli.transform(X[:100], H, engine=args.gpu_engine)  # warm-up
            start = time.perf_counter()
            got = nmfcli.transform(X, H, engine=args.gpu_engine)
            row["gpu_transform_s"] = time.perf_counter() - start
            row["transform_max_rel_diff"] = float(np.abs(got - ref).max() / np.abs(ref).max())
        print(json.dumps({k: v for k, v in row.items() if "transform" in k}), flush=True)
    return row


def table(rows):
    lines = [f"{'case':30} {'numpy s/it':>10} {'limit':>6} {'cupy s/it':>10} {'again':>8} {'limit':>6} "
             f"{'hals':>8} {'host':>8} {'rows':>8} {'any-k':>8} {'launched':>8} {'Xᵀ op':>8} "
             f"{'numpy s':>8} {'cupy s':>7} {'hals s':>7} {'speedup':>7}"]
    nan = float("nan")
    for r in rows:
        def ms(key):
            value = r.get(key)
            return f"{value * 1e3:8.2f}" if value is not None else f"{'-':>8}"

        lines.append(
            f"{r['case']:30} {r['cpu_s_per_iter']:10.4f} {r['cpu_per_iter_over_limit']:6.2f} "
            f"{r.get('gpu_s_per_iter', nan):10.5f} {ms('gpu_s_per_iter_again')} "
            f"{r.get('gpu_per_iter_over_limit', nan):6.2f} {ms('gpu_hals_s_per_iter')} "
            f"{ms('gpu_host_decisions_s_per_iter')} "
            f"{ms('gpu_row_sweep_s_per_iter')} {ms('gpu_any_k_sweep_s_per_iter')} "
            f"{ms('gpu_launched_sweeps_s_per_iter')} {ms('gpu_transposed_product_s_per_iter')} "
            f"{r['cpu_s']:8.2f} {r.get('gpu_s_to_cpu_loss', nan):7.2f} {r.get('gpu_hals_s_to_cpu_loss', nan):7.2f} "
            f"{r.get('speedup_to_loss', nan):6.1f}×")
    lines.append(
        "limit: per-iteration time over the time of the two products with X on the same device, each in its "
        "faster layout; again: the default CuPy fit timed once more, after the variants (ms per iteration); "
        "variants (ms per iteration): hals: plain hals instead of ehals; host: ehals's steps kept or rejected on "
        "the host (a read of the objective each iteration) instead of on the GPU; rows: the row-by-row sweep; any-k: the "
        "fused sweep compiled for any k; launched: the sweeps launched one by one instead of replayed as a CUDA "
        "graph; Xᵀ op: Wᵀ·X by the transposed product instead of a kept copy of Xᵀ; numpy s / cupy s / hals s: "
        "to the numpy fit's final loss (within 0.1%), the shared init included; both engines run their default, "
        "ehals.")
    for r in rows:
        if r.get("gpu_kl_emu_s_per_iter") is not None:
            lines.append(f"{r['case']}, KL (ms per iteration): emu {1e3 * r['gpu_kl_emu_s_per_iter']:.2f}, emu deciding on "
                         f"the host {1e3 * r['gpu_kl_emu_host_s_per_iter']:.2f}, mu {1e3 * r['gpu_kl_mu_s_per_iter']:.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny cases for a dry run")
    parser.add_argument("--only", choices=["dense", "sparse"], default=None, help="run one case")
    parser.add_argument("--cpu-seconds", type=float, default=60.0,
                        help="stop the numpy engine's fit after this long [default: 60]")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--transform", action="store_true", help="also time the exact transform of the dense X")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--gpu-engine", default="cupy", help=argparse.SUPPRESS)  # array-api-strict: a dry run
    args = parser.parse_args(argv)
    k = 10 if args.small else 50
    cases = {
        "dense": (f"dense {'500x200' if args.small else '20000x5000'} f32", "nndsvda",
                  lambda: dense_case(*((500, 200) if args.small else (20000, 5000)))),
        # random init: nndsvda's randomized SVD on 50M entries costs ~100 s of single-threaded SpMM on the host
        "sparse": (f"sparse {'2000x800' if args.small else '200000x50000'} 0.5% f32", "random",
                   lambda: sparse_case(*((2000, 800, 0.005) if args.small else (200000, 50000, 0.005)))),
    }
    gpu = gpu_name() if args.gpu_engine == "cupy" else args.gpu_engine
    machine = {"gpu": gpu, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "numpy": np.__version__, "python": platform.python_version()}
    try:
        import cupy

        machine["cupy"] = cupy.__version__
    except ImportError:
        pass
    print(json.dumps(machine), flush=True)
    rows = []
    for key, (name, init, make) in cases.items():
        if args.only and key != args.only:
            continue
        start = time.perf_counter()
        X = make()
        print(f"{name}: made in {time.perf_counter() - start:.1f} s", flush=True)
        rows.append(run_case(name, X, k, init, args, gpu))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"machine": machine, "rows": rows}, fh, indent=2)
        del X
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
