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

from ._compile import compiled, precompile_concurrently
from ._fit import fit, precompile_fit
from ._missing import allows_missing
from ._batch import auto_batch_size, batched
from ._status import FATAL, Status, describe_status
from .models.gaussian_mixture import GaussianMixture as _GMM
from .models.gaussian_mixture import GaussianMixtureParams

__all__ = ["GaussianMixture"]


# --- compiled programs (module level: shared by all estimators, cached per static config/shape) ----
# The PRNG key is made from the integer seed inside the programs: an eager `jax.random.key` or
# `split` would compile programs of its own (~0.1 s of a cold fit). Restart i starts from
# ``fold_in(key(seed), i)``, so restart 0 of ``n_init=k`` is the ``n_init=1`` fit for the same seed
# (as in scikit-learn, where more restarts can only improve the chosen lower bound).
@compiled(static_argnames=("model", "n_init", "init_method", "max_iter", "progress"))
def _fit_from_seed(seed, X, w, tol, given, *, model, n_init, init_method, max_iter, progress):
    """Every restart's `FitResult` (a leading ``n_init`` axis); the best is chosen on the host."""
    key = jax.random.key(seed)

    def one(i):
        p = _start(model, jax.random.fold_in(key, i), X, w, given, init_method)
        return fit(model, p, X, weights=w, max_iter=max_iter, tol=tol, progress=progress)

    bs = auto_batch_size(n_init, X.size)
    return batched(one, batch_size=bs)(jnp.arange(n_init, dtype=jnp.uint32))


def _start(model, key, X, w, given, init_method):
    if init_method is None:  # every parameter given (or a warm start)
        return GaussianMixtureParams(*given)
    p = _init(model, key, X, w, init_method)
    return GaussianMixtureParams(*(p if g is None else g for p, g in zip(p, given)))


def _init(model, key, X, w, init_method):
    if model.n_components == 1 and not allows_missing(model):
        # every init method gives all-ones responsibilities: skip k-means
        return model.m_step(jnp.ones((X.shape[0], 1), X.dtype), X, w)
    return model.init(key, X, w, method=init_method)


@compiled(static_argnames=("model", "init_method"))
def _init_only(seed, X, w, given, *, model, init_method):
    """The start of a single fit: the same as restart 0 of ``_fit_from_seed``."""
    key = jax.random.fold_in(jax.random.key(seed), jnp.uint32(0))
    return _start(model, key, X, w, given, init_method)


def _param_shapes(model, X):
    """Shapes of ``model``'s parameters for data like ``X`` (`jax.ShapeDtypeStruct`)."""
    K, D = model.n_components, X.shape[1]
    cov = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}
    S = lambda shape: jax.ShapeDtypeStruct(shape, X.dtype)
    return GaussianMixtureParams(S((K,)), S((K, D)), S(cov[model.covariance_type]))


@compiled(static_argnames=("model",))
def _log_joint(params, X, *, model):
    return model.log_joint_matrix(params, X)


@compiled(static_argnames=("model",))
def _impute(params, X, *, model):
    return model.impute(params, X)


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
    ``tol``; a warm start's first lower bound is compared with the previous ``lower_bound_``).
    The ``n_init`` restarts run as one batched call (`jaxem.batched`); restart i starts from
    ``fold_in(key(seed), i)``, so restart 0 is the ``n_init=1`` fit, and the best is chosen as
    scikit-learn does (highest final lower bound, first on ties). ``fit`` is atomic: if it raises
    (bad input, or scikit-learn's "ill-defined empirical covariance" ValueError), the estimator is
    left exactly as it was. Differences: ``fit`` accepts ``sample_weight``; ``verbose >= 1`` shows
    a tqdm bar when tqdm is installed (else scikit-learn's messages, printed after the compiled
    fit, without time lapses); a component given weight exactly 0 in ``weights_init`` stays
    switched off; data whose squares overflow the dtype is refused with a ValueError. Initial
    k-means uses jaxem's own k-means, so random starts differ from scikit-learn's; ``sample`` uses
    NumPy with ``random_state`` exactly as scikit-learn does. ``missing="marginalize"`` (jaxem's
    extension; `jaxem.GaussianMixture`'s option) takes NaN entries as missing values integrated
    out exactly (Ghahramani & Jordan 1994) in ``fit``, ``score_samples``, ``predict`` and friends,
    and adds ``impute(X)``: X with NaN replaced by E[x_missing | x_observed].

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
        "missing": [StrOptions({"error", "marginalize"})],
    }

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", weights_init=None, means_init=None,
                 precisions_init=None, random_state=None, warm_start=False, verbose=0,
                 verbose_interval=10, missing="error"):
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
        self.missing = missing

    # --- fitting ----------------------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Fit by EM (``n_init`` restarts in one batch); returns ``self``."""
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each row of ``X``."""
        return self._log_joint_np(self._fit(X, sample_weight)).argmax(1)

    def _fit(self, X, sample_weight):
        """Validate, fit, set the fitted attributes; returns the validated ``X``.

        Atomic: everything is computed first and assigned at the end, and a fit that raises leaves
        the estimator exactly as it was (``validate_data``'s ``n_features_in_`` included).
        """
        before = dict(self.__dict__)
        try:
            X, fitted, res = self._compute_fit(X, sample_weight)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        self.__dict__.update(fitted)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        return X

    def _compute_fit(self, X, sample_weight):
        """Everything `fit` sets, without setting it: ``(X, {attribute: value}, result)``."""
        self._validate_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2,
                          ensure_all_finite=self._finite())
        K = self.n_components
        if X.shape[0] < K:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {K}, "
                f"n_samples = {X.shape[0]}"
            )
        _check_scale(X)
        w = _check_sample_weight(sample_weight, X, dtype=X.dtype, ensure_non_negative=True)
        if np.sum(w > 0) < K:
            raise ValueError(
                f"sample_weight has {int(np.sum(w > 0))} positive entries but n_components = {K}; "
                "give at least n_components rows a positive weight."
            )
        given = self._given_params(X)
        model = self._model()
        warm = self.warm_start and hasattr(self, "converged_")
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        Xp, wp = _pad(X, w)
        progress = self.verbose > 0 and _have_tqdm()
        runs = []  # (trace, n_iter, converged) of every restart, for the printed messages
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
                max_iter = self.max_iter
                # scikit-learn compares a warm start's first lower bound with the previous fit's
                # `lower_bound_` (jaxem.fit with -inf): converged after one iteration if close.
                warm_done = warm and abs(self._mean_log_likelihood(
                    params, Xp, wp, model) - self.lower_bound_) < self.tol
                if warm_done:
                    max_iter = 1
                if n_init == 1:  # jaxem's own init and fit programs (shared, no batch axis)
                    if not fixed:  # both compiled side by side (the fit needs only shapes)
                        precompile_concurrently([
                            lambda: _init_only.precompile(seed, Xp, wp, given, model=model,
                                                          init_method=init_method),
                            lambda: precompile_fit(model, _param_shapes(model, Xp), Xp, wp,
                                                   tol=self.tol, max_iter=max_iter,
                                                   progress=progress)])
                    params = (GaussianMixtureParams(*given) if fixed else _init_only(
                        seed, Xp, wp, given, model=model, init_method=init_method))
                    res = fit(model, params, Xp, weights=wp, tol=self.tol,
                              max_iter=max_iter, progress=progress)
                    jax.effects_barrier()
                    res = jax.tree_util.tree_map(np.asarray, res)
                    runs = [res]
                else:
                    every = _fit_from_seed(seed, Xp, wp, self.tol, given, model=model,
                                           n_init=n_init, init_method=init_method,
                                           max_iter=max_iter, progress=progress)
                    jax.effects_barrier()
                    every = jax.tree_util.tree_map(np.asarray, every)
                    runs = [jax.tree_util.tree_map(lambda a: a[i], every) for i in range(n_init)]
                    res = runs[_best_restart(every)]
                if warm_done:
                    res = res._replace(converged=np.bool_(True), status=np.int32(
                        int(res.status) & ~int(Status.MAX_ITER_REACHED)))
                params = res.params
            params = jax.tree_util.tree_map(lambda a: np.asarray(a, X.dtype), params)
        if self.verbose > 0 and not progress:
            self._print_verbose(runs)
        if res is not None and int(res.status) & int(FATAL):
            if int(res.status) & int(Status.NONFINITE):
                raise ValueError(_ILL_DEFINED + f" (jaxem: {describe_status(int(res.status))})")
            raise ValueError(describe_status(int(res.status)))
        return X, self._fitted_attributes(params, res), res

    def _mean_log_likelihood(self, params, Xp, wp, model):
        """(1/Σw) Σ_n w_n log p(x_n | params) on padded data (scikit-learn's lower bound)."""
        lj = np.asarray(_log_joint(jax.tree_util.tree_map(jnp.asarray, params),
                                   jnp.asarray(Xp), model=model))
        ll = scipy.special.logsumexp(lj, axis=1)
        return float(np.sum(np.where(wp > 0, wp * ll, 0.0)) / np.sum(wp))

    def _print_verbose(self, runs):
        """scikit-learn's messages, printed after the (compiled) fit from each restart's trace:
        the fallback when tqdm is not installed (no time lapses: the loop runs inside XLA)."""
        for i, r in enumerate(runs):
            print("Initialization %d" % i)
            n, trace = int(r.n_iter), np.asarray(r.trace)
            prev = -np.inf
            for it in range(1, n + 1):
                if it % self.verbose_interval == 0:
                    if self.verbose == 1:
                        print("  Iteration %d" % it)
                    else:
                        print("  Iteration %d\t time lapse %.5fs\t ll change %.5f"
                              % (it, 0.0, trace[it - 1] - prev))
                prev = trace[it - 1]
            msg = "converged" if bool(r.converged) else "did not converge"
            if self.verbose == 1:
                print(f"Initialization {msg}.")
            else:
                lb = trace[n - 1] if n else -np.inf
                print(f"Initialization {msg}. time lapse {0.0:.5f}s\t lower bound {lb:.5f}.")

    def _fitted_attributes(self, params, res):
        """The fitted attributes as a dict; ValueError (scikit-learn's message) for a covariance
        that is not positive definite or parameters that are not finite."""
        weights, means, covariances = params
        if not all(np.all(np.isfinite(a)) for a in params):
            raise ValueError(_ILL_DEFINED)
        out = dict(weights_=weights, means_=means, covariances_=covariances)
        out["precisions_cholesky_"] = P = _precision_cholesky(covariances, self.covariance_type)
        if self.covariance_type in ("full", "tied"):
            out["precisions_"] = P @ np.swapaxes(P, -1, -2)
        else:
            out["precisions_"] = P**2
        if res is None:
            out.update(converged_=False, n_iter_=0, lower_bound_=-np.inf, lower_bounds_=[],
                       status_=0)
        else:
            n = int(res.n_iter)
            lbs = [float(v) for v in res.trace[:n]]
            out.update(converged_=bool(res.converged), n_iter_=n, lower_bounds_=lbs,
                       lower_bound_=lbs[-1] if n else -np.inf, status_=int(res.status))
        return out

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
        model = self._model()
        with _precision(dtype):
            params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
            lj = _log_joint(params, jnp.asarray(_pad(X.astype(dtype)), dtype), model=model)
            return np.asarray(lj)[: X.shape[0]]

    def _checked(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32],
                             ensure_all_finite=self._finite())

    def _finite(self):
        return "allow-nan" if self.missing == "marginalize" else True

    def _model(self):
        return _GMM(self.n_components, self.covariance_type, float(self.reg_covar),
                    missing=self.missing)

    def impute(self, X):
        """``X`` with every NaN entry replaced by E[x_missing | x_observed] under the fitted
        mixture (``missing="marginalize"`` only; see `jaxem.GaussianMixture.impute`)."""
        if self.missing != "marginalize":
            raise ValueError('impute needs missing="marginalize"; construct the estimator with '
                             'GaussianMixture(..., missing="marginalize").')
        X = self._checked(X)
        dtype = np.result_type(X.dtype, self.means_.dtype, np.float32)
        params = GaussianMixtureParams(self.weights_, self.means_, self.covariances_)
        with _precision(dtype):
            params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
            out = _impute(params, jnp.asarray(_pad(X.astype(dtype)), dtype), model=self._model())
            return np.asarray(out)[: X.shape[0]]

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


_ILL_DEFINED = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)


def _have_tqdm() -> bool:
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        return False
    return True


def _check_scale(X):
    """ValueError if squares of the data overflow X's dtype (the E- and M-steps sum them)."""
    fmax = float(np.finfo(X.dtype).max)
    scale = float(np.nanmax(np.abs(X))) if X.size and not np.isnan(X).all() else 0.0
    if scale > np.sqrt(fmax / (10.0 * max(X.size, 1))):
        raise ValueError(
            f"X's scale overflows {X.dtype}: max |x| = {scale:.3g}, but the fit sums squares of "
            f"the data, which must stay below {fmax:.3g}. Rescale the input data (e.g. "
            "sklearn.preprocessing.StandardScaler)" + (", or pass float64 data." if
                                                        X.dtype == np.float32 else ".")
        )


def _best_restart(results) -> int:
    """scikit-learn's choice among restarts: the highest final lower bound (the log-likelihood at
    the parameters entering the last iteration, ``trace[n_iter - 1]``), the first on ties; restarts
    with a failure status are never chosen unless all have one."""
    n = np.maximum(np.asarray(results.n_iter), 1)
    lb = np.take_along_axis(np.asarray(results.trace), (n - 1)[:, None], 1)[:, 0]
    ok = ((np.asarray(results.status) & int(FATAL)) == 0) & np.isfinite(lb)
    return int(np.argmax(np.where(ok, lb, -np.inf)))


def _precision_cholesky(cov, ct):
    """scikit-learn's ``precisions_cholesky_``: P = L⁻ᵀ with L Lᵀ = Σ (P Pᵀ = Σ⁻¹); ValueError
    (scikit-learn's message) if a covariance is not positive definite."""
    if ct in ("diag", "spherical"):
        if np.any(cov <= 0.0):
            # A singleton's ML variance is 0 (reg_covar=0), to rounding of either sign. The fit
            # stopped before an E-step used it (else it reports NONFINITE, raised above).
            warnings.warn("some components have zero variance (singleton or collapsed samples); "
                          "their precisions are inf. Increase reg_covar.", RuntimeWarning)
            cov = np.maximum(cov, 0.0)
        with np.errstate(divide="ignore"):
            return 1.0 / np.sqrt(cov)
    mats = cov[None] if ct == "tied" else cov
    out = []
    for m in mats:
        try:
            L = scipy.linalg.cholesky(m, lower=True)
        except (np.linalg.LinAlgError, ValueError):
            raise ValueError(_ILL_DEFINED) from None
        out.append(scipy.linalg.solve_triangular(L, np.eye(m.shape[0], dtype=m.dtype), lower=True).T)
    out = np.stack(out).astype(cov.dtype)
    return out[0] if ct == "tied" else out
