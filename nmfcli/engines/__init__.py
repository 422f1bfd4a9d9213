"""Engines own X and supply the few products the solvers need.

A solver never touches X directly: it asks the engine for X·Hᵀ, Wᵀ·X, ‖X‖² and,
for beta-divergences, the elementwise terms at the entries of X. That keeps one
solver code path for dense, sparse, GPU and chunked data. Optional engines are
imported lazily, with an install hint when their package is missing.
"""

import numpy as np

from nmfcli.errors import UnavailableError, UsageError

ENGINES = ("numpy", "cupy", "dask", "auto")
# CPU stand-ins for the GPU code path, for tests: array_api_strict rejects the
# numpy-only habits (out=, in-place masks, implicit host copies) that break on CuPy;
# array-api-numpy is the plain array-API engine over numpy and scipy.sparse, which
# runs the generic sparse code that otherwise only CuPy runs.
TEST_ENGINES = ("array-api-strict", "array-api-numpy")


def get_engine(name, X, dtype):
    """Return an engine instance holding X for the engine called ``name``."""
    if name in ("numpy", None):
        from nmfcli.engines.numpy import NumpyEngine

        return NumpyEngine(X, dtype)
    if name == "array-api-strict":
        import array_api_strict

        from nmfcli.engines.array_api import ArrayEngine

        return ArrayEngine(X, dtype, array_api_strict, name="array-api-strict")
    if name == "array-api-numpy":
        import scipy.sparse

        from nmfcli.engines.array_api import ArrayEngine

        return ArrayEngine(X, dtype, np, scipy.sparse, name="array-api-numpy")
    if name == "auto":
        return get_engine(_auto_engine(), X, dtype)
    if name == "cupy":
        try:
            from nmfcli.engines.cupy import CupyEngine
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise UnavailableError(
                f"engine 'cupy' needs CuPy and an NVIDIA GPU ({exc}); "
                "install it with: pip install 'nmfcli[gpu]'"
            ) from None
        return CupyEngine(X, dtype)
    raise UsageError(f"engine must be one of {', '.join(ENGINES[:-1])} or auto; got {name!r}")


def _auto_engine():
    """'cupy' when CuPy imports and sees a GPU, else 'numpy'."""
    try:
        from nmfcli.engines.cupy import gpu_available
    except Exception:  # noqa: BLE001 - no CuPy, or a broken CUDA install: no usable GPU
        return "numpy"
    return "cupy" if gpu_available() else "numpy"
