"""The numpy engine: dense ndarrays and scipy.sparse CSR matrices on the CPU."""

import numpy as np
import scipy.sparse

from nmfcli.engines.array_api import ArrayEngine


class NumpyEngine(ArrayEngine):
    name = "numpy"

    def __init__(self, X, dtype):
        super().__init__(X, dtype, np, scipy.sparse)
