"""The CuPy engine: the same solvers on an NVIDIA GPU, dense or cupyx.scipy.sparse X.

Imported only for ``engine="cupy"``; nothing else in nmfcli imports CuPy. X is
copied to the device once; initial factors are drawn on the host (so every
engine starts from identical factors) and copied once; results come back once.

Two things are CuPy's own here, the rest is the array-API engine:

- the namespace: cupy with the few array-API names the solvers use filled in where
  this CuPy lacks them (``with_array_api_names``), registered for cupy.ndarray so
  the solvers never depend on the CuPy version.
- fused HALS sweeps: a sweep updates the k rows of a factor in order, but every
  column is independent, so one kernel with a thread per column does the whole
  sweep (k² multiply-adds a thread) and sums its squared change on the device,
  where the next sweep's kernel reads it and returns at once if the inner loop
  has stopped, so the loop needs no round trip to the host. Row by row, the same
  sweep is ~4 kernel launches a row, ~50× slower for k = 50 (measured on an H100).
  The inner loop's launches (up to max_inner of them, most returning at once) are
  recorded once per factor buffer as a CUDA graph and replayed with one launch (GRAPH).
- sparse X keeps a CSR copy of Xᵀ when the GPU has room for it, so that Wᵀ·X is a
  plain SpMM rather than cuSPARSE's transposed one.
"""

import warnings

import cupy
import cupyx
import cupyx.scipy.sparse
import numpy as np

from nmfcli.engines.array_api import ArrayEngine, with_array_api_names
from nmfcli.errors import UnavailableError
from nmfcli.solvers import xp as solver_xp
from nmfcli.solvers.cd import inner_sweeps

# The fused sweep; set to False to run the solvers' row-by-row sweep, and UNROLL to False to
# compile it for any k instead of the exact k (the benchmark compares the three). GRAPH: the
# inner loop replayed as a CUDA graph (False: launched kernel by kernel). KEEP_XT: sparse X
# keeps a CSR copy of Xᵀ when there is room (False: Wᵀ·X by the transposed product).
FUSED_SWEEP = True
UNROLL = True
# Graphs made dense iterations 6% faster (1.78 against 1.90 ms on the H100). A graph keeps
# every buffer it writes (_record): the first version did not, and its replays overwrote the
# objectives recorded in the iterations that recorded graphs (~1e-31).
GRAPH = True
KEEP_XT = True
_THREADS = 128  # a block; 20000 columns make 157 blocks, more than an H100's 132 SMs

_SWEEP_SOURCE = r"""
// Column j of A (k x p, C order): row t <- max(0, Rs[t, j] - sum_s Gs[t, s] A[s, j]), t in order.
// With K defined (k <= MAX_UNROLLED), the column lives in registers and Gs in shared memory.
// Sweep number `sweep` (from 0) of an inner loop adds its squared change to changes[sweep], and
// does nothing once the loop has stopped: after a sweep whose change was <= delta2 times the first's.
extern "C" __global__ void scaled_sweep(
    T* __restrict__ A, const T* __restrict__ Gs, const T* __restrict__ Rs,
    const int k, const long long p, const int sweep, const T delta2, T* __restrict__ changes)
{
    if (sweep > 0 && (changes[0] == 0 || changes[sweep - 1] <= delta2 * changes[0])) return;
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    T moved = 0;
#ifdef K
    __shared__ T g[K * K];
    for (int i = threadIdx.x; i < K * K; i += blockDim.x) g[i] = Gs[i];
    __syncthreads();
    if (j < p) {
        T a[K];
#pragma unroll
        for (int s = 0; s < K; ++s) a[s] = A[(long long)s * p + j];
#pragma unroll
        for (int t = 0; t < K; ++t) {
            T acc = 0;
#pragma unroll
            for (int s = 0; s < K; ++s) acc += g[t * K + s] * a[s];
            T value = Rs[(long long)t * p + j] - acc;
            value = value > 0 ? value : 0;
            const T step = value - a[t];
            moved += step * step;
            a[t] = value;
        }
#pragma unroll
        for (int t = 0; t < K; ++t) A[(long long)t * p + j] = a[t];
    }
#else
    if (j < p) {
        for (int t = 0; t < k; ++t) {
            const T* g = Gs + (long long)t * k;
            T acc = 0;
            for (int s = 0; s < k; ++s) acc += g[s] * A[(long long)s * p + j];
            const long long at = (long long)t * p + j;
            T value = Rs[at] - acc;
            value = value > 0 ? value : 0;
            const T step = value - A[at];
            moved += step * step;
            A[at] = value;
        }
    }
#endif
    // The squared change: summed over a warp, then one atomic add per warp.
    for (int offset = 16; offset > 0; offset >>= 1) moved += __shfl_down_sync(0xffffffffu, moved, offset);
    if ((threadIdx.x & 31) == 0) atomicAdd(changes + sweep, moved);
}
"""
# Up to this k the sweep is compiled for the exact k (fully unrolled, the column in registers).
MAX_UNROLLED = 64


def gpu_available():
    """True when the CUDA runtime answers and sees at least one device."""
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - a missing driver raises CUDARuntimeError and friends
        return False


XP = with_array_api_names(cupy)
solver_xp.register(cupy.ndarray, XP)


class CupyEngine(ArrayEngine):
    name = "cupy"
    # The numpy engine's defaults, so that a fit gives the same numbers with or without a GPU;
    # ehals and emu keep or reject each step on the GPU (ArrayEngine.decides_on_device).
    default_frobenius_solver = "ehals"
    extrapolated = ("ehals", "emu")

    def __init__(self, X, dtype):
        if not gpu_available():
            raise UnavailableError("engine 'cupy' found no NVIDIA GPU; use --engine numpy")
        need = _device_bytes(X, dtype)
        free, _total = cupy.cuda.runtime.memGetInfo()
        if need > free:
            raise UnavailableError(
                f"X needs about {_size(need)} on the GPU but {_size(free)} is free; "
                "use --dtype float32, sparse input, or --engine numpy/dask"
            )
        super().__init__(X, dtype, XP, cupyx.scipy.sparse)
        # Row blocks as large as a few temporaries in what is free allow, up to 2²⁷ entries:
        # a CPU's cache-sized blocks (2¹⁸ entries, 52 rows of 5000) made a KL iteration of
        # 20000×5000 thousands of small launches, 92 ms against 0.65 ms for its products.
        free, _total = cupy.cuda.runtime.memGetInfo()
        self.block_entries = int(max(self.block_entries, min(1 << 27, free // (8 * np.dtype(dtype).itemsize))))
        self._changes = cupy.zeros(0, dtype=self.dtype)  # each sweep's squared change, on the device
        self._graphs = {}  # the inner loop as CUDA graphs, with the buffers their kernels read
        self._Xt = None
        if self.is_sparse and KEEP_XT:
            free, _total = cupy.cuda.runtime.memGetInfo()
            if _device_bytes(X, dtype) <= free // 2:  # the copy takes at most a half of what is free
                self._Xt = self.X.T.tocsr()

    def asarray(self, a):
        if isinstance(a, cupy.ndarray):
            return cupy.ascontiguousarray(a, dtype=self.dtype)
        return cupy.asarray(np.ascontiguousarray(a, dtype=self.dtype))

    def contiguous_copy(self, a):
        return cupy.array(a, order="C", copy=True)

    def WtX(self, W):
        if self._Xt is None:
            return super().WtX(W)
        return self.contiguous_copy((self._Xt @ W).T)

    def session(self):
        """CuPy's solvers raise LinAlgError on a singular system, as numpy's do (the exact solve falls back)."""
        return cupyx.errstate(linalg="raise")

    @property
    def inner_sweeps(self):
        return self._fused_sweeps if FUSED_SWEEP else None

    def _fused_sweeps(self, A, Gs, Rs, max_inner, delta):
        """cd.inner_sweeps with one kernel a sweep, the stopping rule applied on the device: no round trips."""
        k, p = A.shape
        kernel = _sweep_kernel(A.dtype, k)
        if kernel is None or not A.flags.c_contiguous:
            return inner_sweeps(A, Gs, Rs, max_inner, delta)
        Gs = cupy.ascontiguousarray(Gs, dtype=A.dtype)
        Rs = cupy.ascontiguousarray(Rs, dtype=A.dtype)
        delta2 = A.dtype.type(delta * delta)
        if GRAPH and self._replay(kernel, A, Gs, Rs, max_inner, delta2):
            return None
        if self._changes.size < max_inner:
            self._changes = cupy.zeros(max_inner, dtype=A.dtype)
        _launch_sweeps(kernel, A, Gs, Rs, max_inner, delta2, self._changes)
        return None

    def _replay(self, kernel, A, Gs, Rs, max_inner, delta2):
        """The inner loop as a CUDA graph recorded for A (copying Gs and Rs into its buffers); False if none.

        A graph replays its kernels with the arguments they were recorded with, so each
        graph owns the buffers its kernels read, and is kept per factor (by A's address).
        """
        key = (_address(A), A.shape, A.dtype, max_inner, float(delta2))
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= _MAX_GRAPHS:
                self._graphs.clear()
            entry = self._graphs[key] = _record(kernel, A, max_inner, delta2)
        if entry is False:
            return False
        graph, Gs_kept, Rs_kept, _changes = entry
        cupy.copyto(Gs_kept, Gs)
        cupy.copyto(Rs_kept, Rs)
        graph.launch()
        return True


# Graphs kept per engine (two factors of one fit need two; more means a factor moved).
_MAX_GRAPHS = 8


def _address(a):
    """Where a device array's data starts."""
    return a.data.ptr


def _launch_sweeps(kernel, A, Gs, Rs, max_inner, delta2, changes):
    """Launch the inner loop's max_inner sweep kernels (after zeroing their changes) on the current stream."""
    k, p = A.shape
    changes.fill(0)
    blocks = (p + _THREADS - 1) // _THREADS
    for sweep in range(max_inner):
        kernel((blocks,), (_THREADS,), (A, Gs, Rs, np.int32(k), np.int64(p), np.int32(sweep), delta2, changes))


def _record(kernel, A, max_inner, delta2):
    """(graph, Gs, Rs, changes buffers): the inner loop on A recorded on a side stream; False if that fails.

    The entry must hold every buffer the graph reads or writes for as long as the graph
    lives: a replay writes into them whether or not Python still refers to them, so a
    buffer freed to CuPy's pool would be written over in whatever array the pool hands
    it to next (the first version kept no reference to ``changes``, and replays zeroed
    and summed sweep changes into the objective values the loop had recorded).
    """
    k, p = A.shape
    Gs = cupy.empty((k, k), dtype=A.dtype)
    Rs = cupy.empty((k, p), dtype=A.dtype)
    changes = cupy.zeros(max_inner, dtype=A.dtype)
    stream = cupy.cuda.Stream(non_blocking=True)
    try:
        with stream:
            stream.begin_capture()
            try:
                _launch_sweeps(kernel, A, Gs, Rs, max_inner, delta2, changes)
            finally:
                graph = stream.end_capture()
    except Exception as exc:  # noqa: BLE001 - no graphs here: launch kernel by kernel
        warnings.warn(f"nmfcli: could not record the GPU sweeps as a CUDA graph ({exc}); launching them one "
                      "by one", RuntimeWarning, stacklevel=3)
        return False
    return graph, Gs, Rs, changes


_KERNELS = {}


def _sweep_kernel(dtype, k):
    """The compiled fused sweep for dtype (float32 or float64) and k, or None if it does not compile."""
    dtype = np.dtype(dtype)
    key = (dtype, k if UNROLL and k <= MAX_UNROLLED else None)
    if key not in _KERNELS:
        ctype = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[dtype]
        defines = f"#define T {ctype}\n" + (f"#define K {k}\n" if key[1] else "")
        try:
            kernel = cupy.RawKernel(defines + _SWEEP_SOURCE, "scaled_sweep")
            kernel.compile()
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the row-by-row sweep still works
            warnings.warn(f"nmfcli: the fused GPU sweep did not compile ({exc}); sweeping row by row",
                          RuntimeWarning, stacklevel=2)
            kernel = None
        _KERNELS[key] = kernel
    return _KERNELS[key]


def _size(nbytes):
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _device_bytes(X, dtype):
    itemsize = np.dtype(dtype).itemsize
    if hasattr(X, "nnz"):
        return X.nnz * (itemsize + 4) + (X.shape[0] + 1) * 4
    return X.shape[0] * X.shape[1] * itemsize * 2  # X and one row-block workspace at most

