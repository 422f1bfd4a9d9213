"""The array namespace of an array: numpy, CuPy or any array-API library."""

import numpy as np

# Array types whose namespace an engine has declared (type -> namespace). The CuPy
# engine registers cupy.ndarray with a namespace that fills in the array-API names an
# older CuPy lacks, so the solvers never depend on the CuPy version.
_REGISTERED = {}


def register(array_type, xp):
    """Make ``namespace`` return xp for arrays of array_type."""
    _REGISTERED[array_type] = xp


def namespace(*arrays):
    """The namespace module of the first array that declares one (numpy for plain scalars)."""
    for a in arrays:
        xp = _REGISTERED.get(type(a))
        if xp is not None:
            return xp
        get = getattr(a, "__array_namespace__", None)
        if get is not None:
            return get()
    return np
