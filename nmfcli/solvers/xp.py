"""The array namespace of an array: numpy, CuPy or any array-API library."""

import numpy as np


def namespace(*arrays):
    """The namespace module of the first array that declares one (numpy for plain scalars)."""
    for a in arrays:
        get = getattr(a, "__array_namespace__", None)
        if get is not None:
            return get()
    return np
