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


def in_dtype(xp, value, dtype):
    """A Python float as it is (an operand of an array takes the array's dtype), a 0-d array
    (a device's scalar) cast to ``dtype``, so that both give the same bits."""
    return value if isinstance(value, (int, float)) else xp.astype(value, dtype)


def scalar(xp, value):
    """A 0-d array's value: a float on numpy, else a 0-d float64 array, which nothing waits for
    (a float of a device's array would make the host wait for the device)."""
    return float(value) if xp is np else xp.astype(value, xp.float64)
