"""``nmfcli.NMF``: a scikit-learn-style estimator over :func:`nmfcli.fit`.

It follows scikit-learn's estimator conventions (constructor arguments stored
as given, ``get_params``/``set_params``, fitted attributes ending in ``_``) so it
drops into a ``sklearn.pipeline.Pipeline``, without importing scikit-learn.
"""

import inspect

import numpy as np

from nmfcli import core


class NMF:
    """Non-negative matrix factorization X ≈ W·H with scikit-learn's method names.

    Parameters are those of :func:`nmfcli.fit`; ``n_components`` is k and
    ``random_state`` the seed, under scikit-learn's names.

    Attributes
    ----------
    components_ : ndarray (k, n)
    n_components_ : int
    reconstruction_err_ : float
        √(2·D_beta(X ‖ WH)), scikit-learn's definition.
    n_iter_ : int
    result_ : FitResult
    """

    def __init__(self, n_components=None, *, init=None, solver="auto", beta_loss="frobenius",
                 tol=core.DEFAULT_TOL, max_iter=core.DEFAULT_MAX_ITER,
                 random_state=core.DEFAULT_SEED, alpha_W=0.0, alpha_H="same", l1_ratio=0.0,
                 engine="numpy"):
        self.n_components = n_components
        self.init = init
        self.solver = solver
        self.beta_loss = beta_loss
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.alpha_W = alpha_W
        self.alpha_H = alpha_H
        self.l1_ratio = l1_ratio
        self.engine = engine

    @classmethod
    def _param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(p for p in signature.parameters if p != "self")

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for NMF; valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        changed = ", ".join(
            f"{k}={v!r}" for k, v in self.get_params().items()
            if v != inspect.signature(type(self).__init__).parameters[k].default
        )
        return f"NMF({changed})"

    def _fit(self, X, W=None, H=None):
        k = self.n_components if self.n_components is not None else X.shape[1]
        result = core.fit(
            X, k, solver=self.solver, loss=self.beta_loss, init=self.init,
            seed=self.random_state, max_iter=self.max_iter, tol=self.tol,
            alpha_W=self.alpha_W, alpha_H=self.alpha_H, l1_ratio=self.l1_ratio,
            W0=W, H0=H, engine=self.engine,
        )
        self.result_ = result
        self.components_ = result.H
        self.n_components_ = result.H.shape[0]
        self.n_features_in_ = result.H.shape[1]
        self.reconstruction_err_ = result.metrics["reconstruction_error"]
        self.n_iter_ = result.n_iter
        return result.W

    def fit(self, X, y=None, **params):
        self._fit(X, **params)
        return self

    def fit_transform(self, X, y=None, W=None, H=None):
        return self._fit(X, W, H)

    def transform(self, X):
        """The exact non-negative least-squares W for fixed components (not an early-stopped solve)."""
        self._check_fitted()
        return core.transform(X, self.components_, loss=self.beta_loss, alpha_W=self.alpha_W,
                              l1_ratio=self.l1_ratio, engine=self.engine)

    def inverse_transform(self, X):
        self._check_fitted()
        return np.asarray(X) @ self.components_

    def __sklearn_tags__(self):
        """Tags for scikit-learn's meta-estimators; only scikit-learn calls this, so it is there."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(),
            input_tags=InputTags(sparse=True),
        )

    def __sklearn_is_fitted__(self):
        return hasattr(self, "components_")

    def _check_fitted(self):
        if not hasattr(self, "components_"):
            raise AttributeError("This NMF instance is not fitted yet; call fit first")
