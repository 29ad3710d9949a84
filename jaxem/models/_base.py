"""The model protocol, and the shared E-step / Q / ELBO machinery of finite mixtures."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._checks import optional_positive_int, param_shapes, positive_int
from .._chunk import chunked_map
from .._labels import clamp, labelled_sum, with_labels
from .._missing import allows_missing, observed_weights
from .._validate import as_data, finite_rows, is_concrete
from .._where import where


def weighted_posterior(lj, w):
    """For one block of log joints ``lj (n, K)`` and weights ``w (n,)``: the weighted
    responsibilities w_n r_nk and Σ_n w_n log p(x_n) (zero-weight rows contribute nothing, even if
    their log-likelihood is not finite)."""
    # logsumexp with its exponentials reused for r_nk (one exp per entry, three fused kernels).
    m = jax.lax.stop_gradient(jnp.max(lj, axis=1, keepdims=True))
    m = where(m > -jnp.inf, m, 0.0)  # a row of -inf: lse = -inf, no NaN from -inf - -inf
    e = jnp.exp(lj - m)
    s = jnp.sum(e, axis=1, keepdims=True)
    rw = e * (w[:, None] / s)
    lse = jnp.log(s[:, 0]) + m[:, 0]
    # Σ_n w_n log p(x_n) = Σ_k Σ_n w_n r_nk log p(x_n), as Σ_k r_nk = 1: a matrix-vector product
    # (XLA's CPU backend splits a plain sum over n into a tree of three kernels).
    return rw, jnp.sum(where(w > 0, lse, 0.0) @ rw)


class Model:
    """Base of every jaxem model (subclasses are frozen dataclasses).

    A model provides ``e_step``, ``q_function``, ``log_likelihood``, ``score_samples``, and, where the
    family has one, a closed-form ``m_step``. ``em_update`` is one full EM iteration; the default
    composes ``e_step`` and ``m_step``, families override it with a fused, streamed version.
    """

    n_components: int

    def __post_init__(self):
        """Configuration checks shared by every family (dataclass subclasses inherit this)."""
        # Normalised to a Python int (a NumPy integer would hash the same but print differently).
        object.__setattr__(self, "n_components", positive_int("n_components", self.n_components))
        if "chunk_size" in getattr(self, "__dataclass_fields__", {}):
            optional_positive_int("chunk_size", self.chunk_size)

    def _param_shapes(self, params) -> dict:
        """``{field: shape}`` that ``params`` must have for this model (empty: not checked)."""
        return {}

    def check_params(self, params) -> None:
        """ValueError if ``params`` has the wrong shapes for this model (static: works under jit)."""
        param_shapes(params, self._param_shapes(params), type(self).__name__)

    # --- to be provided by families -----------------------------------------------------------
    def n_features(self, params) -> int:
        raise NotImplementedError

    def e_step(self, params, X, weights=None):
        raise NotImplementedError

    def q_function(self, params, posterior, X, weights=None):
        raise NotImplementedError

    def posterior_entropy(self, posterior, weights=None):
        """Weighted sum over samples of the entropy H[q(z_n)] of the posterior."""
        raise NotImplementedError

    def score_samples(self, params, X):
        raise NotImplementedError

    def m_step(self, posterior, X, weights=None, params=None):
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form M-step; fit it with "
            "m_step=jaxem.GradientMStep(optimizer)."
        )

    # --- shared ---------------------------------------------------------------------------------
    def log_likelihood(self, params, X, weights=None):
        """Weighted sum over samples of log p(x_n | params)."""
        X, w = as_data(X, weights, self.n_features(params))
        lp = self.score_samples(params, X)
        return jnp.sum(where(w > 0, w * lp, 0.0))

    def score(self, params, X, weights=None):
        """Weighted MEAN log-likelihood per sample, (1/Σw) Σ_n w_n log p(x_n | params): the scale
        of `FitResult.log_likelihood` and of scikit-learn's ``score`` (`log_likelihood` is the
        sum)."""
        X, w = as_data(X, weights, self.n_features(params))
        return self.log_likelihood(params, X, w) / jnp.sum(w)

    def n_parameters(self, params) -> int:
        """Number of free parameters (for `bic` and `aic`)."""
        raise NotImplementedError

    def bic(self, params, X):
        """Bayesian information criterion -2 log L + p log N (lower is better). With a prior on the
        model, L is still the likelihood (at the MAP estimate), not the posterior: Fraley &
        Raftery's (2007) BIC for MAP fits, as mclust reports it."""
        X, _ = as_data(X, None, self.n_features(params))
        return -2.0 * self.log_likelihood(params, X) + self.n_parameters(params) * math.log(
            X.shape[0]
        )

    def aic(self, params, X):
        """Akaike information criterion -2 log L + 2 p (lower is better)."""
        return -2.0 * self.log_likelihood(params, X) + 2.0 * self.n_parameters(params)

    def check_data(self, X) -> None:
        """Raise ValueError (outside jit) if X lies outside the family's support; called by `fit`."""

    # --- expected sufficient statistics: the additive unit between E and M ---------------------
    def sufficient_statistics(self, params, X, weights=None, *, reference=None):
        """Expected complete-data sufficient statistics at ``params``: an additive pytree (the
        statistics of a row-concatenation are the sum of the parts'), including the weighted
        log-likelihood sum and Σw. ``reference``: the point the family's moments are taken about
        (None: `statistics_reference` of ``params``); parts to be added must share it."""
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form M-step, so no sufficient statistics; fit it "
            "with m_step=jaxem.GradientMStep(optimizer).")

    def maximize(self, stats, params, *, reference=None):
        """The closed-form M-step from `sufficient_statistics` (``params``: those they were taken
        at, or any with the same structure when ``reference`` is given)."""
        return self._maximize(stats, params, reference)[0]

    def statistics_reference(self, params):
        """The point `sufficient_statistics` takes its moments about by default (None: none)."""
        return None

    def _statistics(self, params, X, weights, labels=None):
        """`sufficient_statistics` of checked data about the default reference (fused route);
        ``labels`` (families with components): see `jaxem._labels`."""
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form M-step; fit it with "
            "m_step=jaxem.GradientMStep(optimizer).")

    def _maximize(self, stats, params, reference=None):
        """``(maximize(stats, params), status)``."""
        raise NotImplementedError

    def em_update(self, params, X, weights, labels=None):
        """One EM iteration, `maximize` ∘ `sufficient_statistics`: returns ``(new_params,
        log_likelihood_at_params, status)`` (``labels``: see `jaxem._labels`)."""
        from .._prior import log_posterior_sum

        st = self._statistics(params, X, weights, **with_labels(labels))
        new, status = self._maximize(st, params)
        # with a prior: + log p(θ) (the log posterior, which MAP EM increases)
        return new, log_posterior_sum(self, params, st.log_likelihood.astype(X.dtype)), status


class Mixture(Model):
    """Finite mixtures: p(x) = Σ_k p(x, z=k). Families supply ``log_joint_matrix``.

    With ℓ_nk = log p(x_n, z_n=k | θ):
      E-step:  r_nk = exp(ℓ_nk - logsumexp_k ℓ_nk)            (responsibilities)
      Q(θ, θ_old) = Σ_n w_n Σ_k r_nk ℓ_nk(θ)
      log p(X | θ) = Σ_n w_n logsumexp_k ℓ_nk(θ)
    With partial labels (``labels (N,)``, -1 unknown; `jaxem._labels`) ℓ_nk = -inf for k ≠ y_n on a
    labelled row: its responsibilities are one-hot on y_n and its log-likelihood term is
    log p(x_n, z_n = y_n | θ).
    """

    _supports_labels = True

    def log_joint_matrix(self, params, X) -> jax.Array:
        """``(N, K)`` matrix of log p(x_n, z_n = k | params)."""
        raise NotImplementedError

    def e_step(self, params, X, weights=None, *, labels=None):
        """Responsibilities ``(N, K)`` (rows sum to one) and the weighted log-likelihood.

        ``labels (N,)`` (-1 unknown): a labelled row's responsibilities are one-hot on its label
        and its term of the log-likelihood is log p(x_n, z_n = y_n) (`jaxem._labels`)."""
        X, w = as_data(X, weights, self.n_features(params))
        self.check_params(params)
        lj = clamp(self.log_joint_matrix(params, X), labels)
        lse = jax.scipy.special.logsumexp(lj, axis=1)
        resp = jnp.exp(lj - lse[:, None])
        return resp, jnp.sum(where(w > 0, w * lse, 0.0))

    def q_function(self, params, posterior, X, weights=None):
        """Q = Σ_n w_n Σ_k r_nk log p(x_n, z_n=k | params).

        With ``missing="marginalize"`` x_n is the row's observed entries, log p(x_n,o, z_n=k |
        params) (a row with none has no weight): the Q-function of EM with only z latent, the
        missing entries integrated out inside it. Its gradient at θ_old is the observed-data
        log-likelihood's (Fisher's identity), so `jaxem.GradientMStep` ascending it is generalized
        EM on the same likelihood as the closed-form M-step (which also treats x_m as latent)."""
        X, w = as_data(X, weights, self.n_features(params))
        if allows_missing(self):
            w = observed_weights(X, w)
        lj = self.log_joint_matrix(params, X)
        rl = where(posterior > 0, posterior * lj, 0.0)
        return jnp.sum(w * jnp.sum(rl, axis=1))

    def posterior_entropy(self, posterior, weights=None):
        r = posterior
        h = -jnp.sum(where(r > 0, r * jnp.log(where(r > 0, r, 1.0)), 0.0), axis=1)
        w = jnp.ones(r.shape[0], r.dtype) if weights is None else jnp.asarray(weights, r.dtype)
        return jnp.sum(w * h)

    # Streamed evaluation: families precompute per-parameter quantities (Cholesky factors, logs) in
    # `_log_joint_fn` once, and the rows are visited in blocks of `chunk_size` (see `jaxem._chunk`).
    chunk_size = None

    def _log_joint_fn(self, params):
        """``X_block -> (n, K)`` log joint at ``params``."""
        return lambda X: self.log_joint_matrix(params, X)

    def _width(self, X) -> int:
        """Widest per-row intermediate of `_log_joint_fn` (sets the automatic chunk size)."""
        return self.n_components

    def score_samples(self, params, X):
        """``(N,)`` per-sample log p(x_n | params)."""
        X, _ = as_data(X, None, self.n_features(params))
        self.check_params(params)
        lj = self._log_joint_fn(params)
        return chunked_map(lambda x: jax.scipy.special.logsumexp(lj(x), axis=1), X,
                           self.chunk_size, self._width(X))

    def log_likelihood(self, params, X, weights=None, *, labels=None):
        """Weighted sum over samples of log p(x_n | params), streamed over row blocks; with
        ``labels (N,)`` (-1 unknown) a labelled row contributes log p(x_n, z_n = y_n | params)."""
        X, w = as_data(X, weights, self.n_features(params))
        self.check_params(params)
        lj = self._log_joint_fn(params)

        def block(x, lb, wb):
            lse = jax.scipy.special.logsumexp(clamp(lj(x), lb), axis=1)
            return jnp.sum(where(wb > 0, wb * lse, 0.0))

        return labelled_sum(block, X, w, labels, self.chunk_size, self._width(X))

    def predict_proba(self, params, X):
        """``(N, K)`` responsibilities p(z_n = k | x_n)."""
        return self.e_step(params, X)[0]

    def predict(self, params, X):
        """``(N,)`` most probable component of each sample.

        A row with NaN or inf has no most probable component: outside jit that raises a
        ValueError naming the rows; under jit (no exceptions) such a row, or one whose log joint is
        NaN, gets the label -1.
        """
        X, _ = as_data(X, None, self.n_features(params))
        self.check_params(params)
        miss = allows_missing(self)  # NaN entries are missing values, inf is not
        if is_concrete(X):
            finite_rows(X, "predict", allow_nan=miss)
        lj = self.log_joint_matrix(params, X)
        ok = jnp.all(~jnp.isinf(X) if miss else jnp.isfinite(X), axis=1) & ~jnp.any(
            jnp.isnan(lj), axis=1)
        return where(ok, jnp.argmax(lj, axis=1), -1)
