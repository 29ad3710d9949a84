"""`jaxem.sklearn.GaussianMixture`: a drop-in for scikit-learn's, fitted by `jaxem.fit`.

scikit-learn is an optional dependency: it is imported here, and ``import jaxem`` never imports
this module.

Precision. float64 data is computed in float64 inside a `jax.enable_x64` context (thread-local and
scoped to the call: the global JAX config is not changed); float32 data is computed in float32.

Compilation. The jitted programs are module-level functions whose static arguments are the model
(a hashable dataclass), ``n_init``, ``init_params`` and ``max_iter``; rows are padded with weight-0
copies of the first row up to a size bucket (at most 1/8 extra), so refitting, or fitting data of a
similar size, reuses the compiled program.
"""

from __future__ import annotations

import contextlib
import warnings
from numbers import Integral, Real

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, validate_data

from ._compile import compiled
from ._fit import fit
from ._restarts import fit_restarts
from ._status import FATAL, describe_status
from .models.gaussian_mixture import GaussianMixture as _GMM
from .models.gaussian_mixture import GaussianMixtureParams

__all__ = ["GaussianMixture"]


# --- compiled programs (module level: shared by all estimators, cached per static config/shape) ----
# The PRNG key is made from the integer seed inside the programs: an eager `jax.random.key` or
# `split` would compile programs of its own (~0.1 s of a cold fit).
@compiled(static_argnames=("model", "n_init", "init_method", "max_iter", "progress"))
def _fit_from_seed(seed, X, w, tol, given, *, model, n_init, init_method, max_iter, progress):
    key = jax.random.key(seed)

    def init_fn(k):
        if init_method is None:  # every parameter given (or a warm start)
            return GaussianMixtureParams(*given)
        p = _init(model, k, X, w, init_method)
        return GaussianMixtureParams(*(p if g is None else g for p, g in zip(p, given)))

    return fit_restarts(model, key, X, n_init, weights=w, init_fn=init_fn, max_iter=max_iter,
                        tol=tol, progress=progress)


def _init(model, key, X, w, init_method):
    if model.n_components == 1:  # every init method gives all-ones responsibilities: skip k-means
        return model.m_step(jnp.ones((X.shape[0], 1), X.dtype), X, w)
    return model.init(key, X, w, method=init_method)


@compiled(static_argnames=("model", "init_method"))
def _init_only(seed, X, w, given, *, model, init_method):
    """The start of a single fit: the same as member 0 of ``_fit_from_seed``."""
    p = _init(model, jax.random.split(jax.random.key(seed), 1)[0], X, w, init_method)
    return GaussianMixtureParams(*(p if g is None else g for p, g in zip(p, given)))


@compiled(static_argnames=("model",))
def _log_joint(params, X, *, model):
    return model.log_joint_matrix(params, X)


def _bucket(n: int) -> int:
    """Padded row count: >= 64, rounded up to a multiple of 2^(bits(n) - 4) (<= 1/8 extra)."""
    if n <= 64:
        return 64
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


def _pad(X, w=None):
    n = X.shape[0]
    extra = _bucket(n) - n
    Xp = np.concatenate([X, np.repeat(X[:1], extra, 0)]) if extra else X
    if w is None:
        return Xp
    return Xp, np.concatenate([w, np.zeros(extra, w.dtype)])


def _precision(dtype):
    """float64 work in an x64 context (scoped, thread-local); float32 work as is."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM in JAX, with scikit-learn's parameters, methods and attributes.

    Same iterates as `sklearn.mixture.GaussianMixture` from the same start (E-step, M-step with
    ``reg_covar`` on the diagonal, stop after the first iteration whose lower-bound change is below
    ``tol``). Differences: ``fit`` accepts ``sample_weight``; the ``n_init`` restarts run as one
    batched call (`jaxem.fit_restarts`) and the best is the one with the highest final
    log-likelihood; ``verbose >= 1`` shows a tqdm bar (``verbose_interval`` is accepted and ignored);
    a warm start's first iteration is compared with -inf (not with the previous ``lower_bound_``), so
    it runs at least two iterations; a component given weight exactly 0 in ``weights_init`` stays
    switched off. Initial k-means uses jaxem's own k-means, so random starts differ from
    scikit-learn's; ``sample`` uses NumPy with ``random_state`` exactly as scikit-learn does.

    Parameters and attributes: see `sklearn.mixture.GaussianMixture`.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions({"kmeans", "random", "random_from_data", "k-means++"})],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", weights_init=None, means_init=None,
                 precisions_init=None, random_state=None, warm_start=False, verbose=0,
                 verbose_interval=10):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    # --- fitting ----------------------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Fit by EM (``n_init`` restarts in one batch); returns ``self``."""
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each row of ``X``."""
        return self._log_joint_np(self._fit(X, sample_weight)).argmax(1)

    def _fit(self, X, sample_weight):
        """Validate, fit, set the fitted attributes; returns the validated ``X``."""
        self._validate_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        K = self.n_components
        if X.shape[0] < K:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {K}, "
                f"n_samples = {X.shape[0]}"
            )
        w = _check_sample_weight(sample_weight, X, dtype=X.dtype, ensure_non_negative=True)
        if np.sum(w > 0) < K:
            raise ValueError(
                f"sample_weight has {int(np.sum(w > 0))} positive entries but n_components = {K}; "
                "give at least n_components rows a positive weight."
            )
        given = self._given_params(X)
        model = _GMM(K, self.covariance_type, float(self.reg_covar))
        warm = self.warm_start and hasattr(self, "converged_")
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        Xp, wp = _pad(X, w)
        with _precision(X.dtype):
            seed = np.int32(seed)
            res = None
            if warm:  # continue from the fitted parameters
                given = tuple(np.asarray(a, X.dtype) for a in
                              (self.weights_, self.means_, self.covariances_))
                params = GaussianMixtureParams(*given)
            if self.max_iter == 0:  # scikit-learn: max_iter=0 returns the initial parameters
                if not warm:
                    params = _init_only(seed, Xp, wp, given, model=model,
                                        init_method=self.init_params)
            else:
                # All starts identical (everything given, a warm start, or K = 1): one member.
                fixed = all(g is not None for g in given)
                n_init = 1 if fixed or K == 1 else self.n_init
                init_method = None if fixed else self.init_params
                if n_init == 1:  # jaxem's own init and fit programs (shared, no batch axis)
                    params = (GaussianMixtureParams(*given) if fixed else _init_only(
                        seed, Xp, wp, given, model=model, init_method=init_method))
                    res = fit(model, params, Xp, weights=wp, tol=self.tol,
                              max_iter=self.max_iter, progress=self.verbose > 0)
                else:
                    res = _fit_from_seed(seed, Xp, wp, self.tol, given, model=model,
                                        n_init=n_init, init_method=init_method,
                                        max_iter=self.max_iter, progress=self.verbose > 0)
            if res is not None:
                jax.effects_barrier()
                params, res = res.params, jax.tree_util.tree_map(np.asarray, res)
            params = jax.tree_util.tree_map(lambda a: np.asarray(a, X.dtype), params)
        self._set_fitted(params, res)
        if res is not None and int(res.status) & int(FATAL):
            warnings.warn(describe_status(int(res.status)), RuntimeWarning)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        return X

    def _set_fitted(self, params, res):
        self.weights_, self.means_, self.covariances_ = params
        self.precisions_cholesky_ = _precision_cholesky(self.covariances_, self.covariance_type)
        if self.covariance_type in ("full", "tied"):
            P = self.precisions_cholesky_
            self.precisions_ = P @ np.swapaxes(P, -1, -2)
        else:
            self.precisions_ = self.precisions_cholesky_**2
        if res is None:
            self.converged_, self.n_iter_ = False, 0
            self.lower_bound_, self.lower_bounds_ = -np.inf, []
            self.status_ = 0
        else:
            n = int(res.n_iter)
            self.converged_ = bool(res.converged)
            self.n_iter_ = n
            self.lower_bounds_ = [float(v) for v in res.trace[:n]]
            self.lower_bound_ = self.lower_bounds_[-1] if n else -np.inf
            self.status_ = int(res.status)

    def _given_params(self, X):
        """weights_init, means_init and the covariances of precisions_init, checked, as X.dtype."""
        K, D = self.n_components, X.shape[1]
        ct = self.covariance_type
        wi = mi = ci = None
        if self.weights_init is not None:
            wi = check_array(self.weights_init, dtype=[np.float64, np.float32], ensure_2d=False)
            _check_shape(wi, (K,), "weights")
            if np.any(wi < 0) or np.any(wi > 1):
                raise ValueError(
                    "The parameter 'weights' should be in the range [0, 1], but got max value "
                    f"{wi.max():.5f}, min value {wi.min():.5f}"
                )
            if not np.allclose(np.abs(1.0 - np.sum(wi)), 0.0):
                raise ValueError(
                    f"The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{np.sum(wi):.5f}"
                )
            wi = wi.astype(X.dtype)
        if self.means_init is not None:
            mi = check_array(self.means_init, dtype=[np.float64, np.float32], ensure_2d=False)
            _check_shape(mi, (K, D), "means")
            mi = mi.astype(X.dtype)
        if self.precisions_init is not None:
            pi = check_array(self.precisions_init, dtype=[np.float64, np.float32],
                             ensure_2d=False, allow_nd=True)
            shapes = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}
            _check_shape(pi, shapes[ct], f"{ct} precision")
            ci = _covariances_from_precisions(pi, ct).astype(X.dtype)
        return (wi, mi, ci)

    # --- inference ------------------------------------------------------------------------------
    def _log_joint_np(self, X):
        """(N, K) log π_k + log N(x_n | μ_k, Σ_k), computed by jaxem in the fitted dtype."""
        dtype = np.result_type(X.dtype, self.means_.dtype, np.float32)
        params = GaussianMixtureParams(self.weights_, self.means_, self.covariances_)
        model = _GMM(self.n_components, self.covariance_type, float(self.reg_covar))
        with _precision(dtype):
            params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
            lj = _log_joint(params, jnp.asarray(_pad(X.astype(dtype)), dtype), model=model)
            return np.asarray(lj)[: X.shape[0]]

    def _checked(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def score_samples(self, X):
        """``(N,)`` log p(x_n) under the fitted mixture."""
        return scipy.special.logsumexp(self._log_joint_np(self._checked(X)), axis=1)

    def score(self, X, y=None):
        """Mean log-likelihood per sample (scikit-learn's ``score``)."""
        return float(np.mean(self.score_samples(X)))

    def predict(self, X):
        """``(N,)`` most probable component of each row."""
        return self._log_joint_np(self._checked(X)).argmax(1)

    def predict_proba(self, X):
        """``(N, K)`` posterior probabilities of the components."""
        lj = self._log_joint_np(self._checked(X))
        return np.exp(lj - scipy.special.logsumexp(lj, axis=1, keepdims=True))

    def _n_parameters(self):
        K, D = self.means_.shape
        cov = {"full": K * D * (D + 1) / 2.0, "diag": K * D, "tied": D * (D + 1) / 2.0,
               "spherical": K}[self.covariance_type]
        return int(cov + K * D + K - 1)

    def bic(self, X):
        """Bayesian information criterion -2 log L + p log N (lower is better)."""
        X = self._checked(X)
        return -2 * self.score(X) * X.shape[0] + self._n_parameters() * np.log(X.shape[0])

    def aic(self, X):
        """Akaike information criterion -2 log L + 2 p (lower is better)."""
        X = self._checked(X)
        return -2 * self.score(X) * X.shape[0] + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw ``(X (n_samples, D), y (n_samples,))`` with NumPy, exactly as scikit-learn does."""
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least one "
                "sample."
            )
        D = self.means_.shape[1]
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        ct = self.covariance_type
        parts = []
        for k, (mean, n) in enumerate(zip(self.means_, counts)):
            if ct == "full":
                parts.append(rng.multivariate_normal(mean, self.covariances_[k], int(n)))
            elif ct == "tied":
                parts.append(rng.multivariate_normal(mean, self.covariances_, int(n)))
            else:
                parts.append(mean + rng.standard_normal(size=(n, D)) * np.sqrt(self.covariances_[k]))
        y = np.concatenate([np.full(int(n), k, dtype=np.int64) for k, n in enumerate(counts)])
        return np.vstack(parts).astype(np.float64), y


def _check_shape(a, shape, name):
    if a.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got "
                         f"{a.shape}")


def _covariances_from_precisions(prec, ct):
    """Σ = Λ⁻¹ through a Cholesky factor of Λ (which also checks positive definiteness)."""
    if ct in ("diag", "spherical"):
        if np.any(prec <= 0.0):
            raise ValueError(f"'{ct} precision' should be positive")
        return 1.0 / prec
    mats = prec[None] if ct == "tied" else prec
    out = []
    for m in mats:
        if not np.allclose(m, m.T):
            raise ValueError(f"'{ct} precision' should be symmetric, positive-definite")
        try:
            c = scipy.linalg.cho_factor(m, lower=True)
        except np.linalg.LinAlgError:
            raise ValueError(f"'{ct} precision' should be symmetric, positive-definite") from None
        out.append(scipy.linalg.cho_solve(c, np.eye(m.shape[0], dtype=m.dtype)))
    out = np.stack(out)
    return out[0] if ct == "tied" else out


def _precision_cholesky(cov, ct):
    """scikit-learn's ``precisions_cholesky_``: P = L⁻ᵀ with L Lᵀ = Σ (P Pᵀ = Σ⁻¹)."""
    if ct in ("diag", "spherical"):
        return 1.0 / np.sqrt(cov)
    mats = cov[None] if ct == "tied" else cov
    out = []
    for m in mats:
        L = scipy.linalg.cholesky(m, lower=True)
        out.append(scipy.linalg.solve_triangular(L, np.eye(m.shape[0], dtype=m.dtype), lower=True).T)
    out = np.stack(out).astype(cov.dtype)
    return out[0] if ct == "tied" else out
