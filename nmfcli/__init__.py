"""nmfcli: non-negative matrix factorization, from the shell and from Python."""

__version__ = "0.1.0"

from nmfcli.core import FitResult, IterationInfo, fit, metrics, reconstruct, transform  # noqa: E402
from nmfcli.estimator import NMF  # noqa: E402

__all__ = ["NMF", "FitResult", "IterationInfo", "fit", "metrics", "reconstruct", "transform", "__version__"]
