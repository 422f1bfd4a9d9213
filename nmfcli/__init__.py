"""nmfcli: non-negative matrix factorization, from the shell and from Python.

The public API (``fit``, ``transform``, ``reconstruct``, ``metrics``,
``match_components``, ``survey_ranks``, ``NMF``, ``FitResult``, ``IterationInfo``,
``ComponentMatch``, ``RankFit``) is imported on first use, so ``nmf --help`` and
``nmf --version`` start without loading scipy.
"""

__version__ = "0.1.0"

_API = {
    "ComponentMatch": "nmfcli.core",
    "FitResult": "nmfcli.core",
    "IterationInfo": "nmfcli.core",
    "fit": "nmfcli.core",
    "match_components": "nmfcli.core",
    "metrics": "nmfcli.core",
    "reconstruct": "nmfcli.core",
    "transform": "nmfcli.core",
    "NMF": "nmfcli.estimator",
    "RankFit": "nmfcli.rank",
    "survey_ranks": "nmfcli.rank",
}

__all__ = [*_API, "__version__"]


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'nmfcli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
