"""The CuPy engine: the same solvers on an NVIDIA GPU, dense or cupyx.scipy.sparse X.

Imported only for ``engine="cupy"``; nothing else in nmfcli imports CuPy. X is
copied to the device once; initial factors are drawn on the host (so every
engine starts from identical factors) and copied once; results come back once.
"""

import cupy
import cupyx.scipy.sparse

from nmfcli.engines.array_api import ArrayEngine
from nmfcli.errors import UnavailableError


def gpu_available():
    """True when the CUDA runtime answers and sees at least one device."""
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - a missing driver raises CUDARuntimeError and friends
        return False


class CupyEngine(ArrayEngine):
    name = "cupy"

    def __init__(self, X, dtype):
        if not gpu_available():
            raise UnavailableError("engine 'cupy' found no NVIDIA GPU; use --engine numpy")
        need = _device_bytes(X, dtype)
        free, _total = cupy.cuda.runtime.memGetInfo()
        if need > free:
            raise UnavailableError(
                f"X needs about {need / 2**30:.1f} GiB on the GPU but {free / 2**30:.1f} GiB "
                "is free; use --dtype float32, sparse input, or --engine numpy/dask"
            )
        super().__init__(X, dtype, cupy, cupyx.scipy.sparse)


def _device_bytes(X, dtype):
    import numpy as np

    itemsize = np.dtype(dtype).itemsize
    if hasattr(X, "nnz"):
        return X.nnz * (itemsize + 4) + (X.shape[0] + 1) * 4
    return X.shape[0] * X.shape[1] * itemsize * 2  # X and one row-block workspace at most
