"""Choose K (and the covariance type) by BIC/AIC, every candidate K fitted in one vmapped batch.

All candidate sizes share one program: each start is padded to K_max components, the extra ones with
weight exactly 0. `jaxem.GaussianMixture` keeps a weight-0 component switched off (weight 0,
responsibility 0, parameters frozen, no EMPTY_COMPONENT flag), so a padded member follows exactly the
iterates of the K-component fit from the same start. Criteria (Schwarz 1978; Akaike 1974), with
n = Σ_n w_n and p the number of free parameters of the K-component model:
  BIC = -2 log L + p log n,   AIC = -2 log L + 2 p   (lower is better), as mclust and scikit-learn.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._batch import auto_batch_size, batched
from ._checks import positive_int, tolerance
from ._compile import compiled
from ._fit import FitResult, fit
from ._restarts import best_restart
from ._validate import as_data, validate
from .models.gaussian_mixture import GaussianMixture, GaussianMixtureParams


class SelectionResult(NamedTuple):
    """Outcome of `select_n_components`. Tables are ``(C, M)``: covariance types × candidate K.

    Attributes:
      n_components: the candidate K, ascending (M,).
      covariance_types: the covariance types tried (C,).
      criterion: "bic" or "aic" (the one used for ``best_*``).
      bic, aic: the criteria; log_likelihood: weighted mean log-likelihood per sample;
        n_parameters: free parameters p; status: the fits' status codes.
      best_n_components, best_covariance_type: the minimiser of ``criterion``.
      best_model: `jaxem.GaussianMixture` for the best (K, type).
      best_result: its `FitResult`, params trimmed to K components.
    """

    n_components: tuple
    covariance_types: tuple
    criterion: str
    bic: np.ndarray
    aic: np.ndarray
    log_likelihood: np.ndarray
    n_parameters: np.ndarray
    status: np.ndarray
    best_n_components: int
    best_covariance_type: str
    best_model: Any
    best_result: FitResult

    def table(self) -> str:
        """The scores as text, one row per (covariance type, K)."""
        rows = [f"{'type':<10}{'K':>4}{'BIC':>14}{'AIC':>14}{'loglik/n':>12}"]
        for c, ct in enumerate(self.covariance_types):
            for m, k in enumerate(self.n_components):
                rows.append(f"{ct:<10}{k:>4}{self.bic[c, m]:>14.3f}{self.aic[c, m]:>14.3f}"
                            f"{self.log_likelihood[c, m]:>12.5f}")
        return "\n".join(rows)


def n_free_parameters(K: int, D: int, covariance_type: str) -> int:
    """Free parameters of a K-component, D-dimensional Gaussian mixture (scikit-learn's count)."""
    cov = {"full": K * D * (D + 1) // 2, "diag": K * D, "tied": D * (D + 1) // 2,
           "spherical": K}[covariance_type]
    return cov + K * D + K - 1


def pad_components(params: GaussianMixtureParams, K_max: int, covariance_type: str):
    """Pad ``params`` to ``K_max`` components; the extra ones get weight exactly 0 (switched off)."""
    K, D = params.means.shape
    extra = K_max - K
    if extra == 0:
        return params
    w = jnp.concatenate([params.weights, jnp.zeros(extra, params.weights.dtype)])
    mu = jnp.concatenate([params.means, jnp.repeat(params.means[:1], extra, 0)])
    cov = params.covariances
    if covariance_type != "tied":
        fill = jnp.ones((extra,) + cov.shape[1:], cov.dtype)
        if covariance_type == "full":
            fill = jnp.broadcast_to(jnp.eye(D, dtype=cov.dtype), (extra, D, D))
        cov = jnp.concatenate([cov, fill])
    return GaussianMixtureParams(w, mu, cov)


def restart_keys(key, K: int, n_init: int):
    """The keys of the ``n_init`` starts of candidate K: ``split(fold_in(key, K), n_init)``."""
    return jax.random.split(jax.random.fold_in(key, K), n_init)


@compiled(static_argnames=("models", "n_init", "K_max", "method"))
def _starts(key, X, w, *, models, n_init, K_max, method):
    """Padded starts of every candidate, stacked K-major: ``(len(models) * n_init, ...)``.
    One program for all K (compiling one program is ~3x faster than one per K)."""
    out = []
    for model in models:
        init = lambda k: pad_components(model.init(k, X, w, method=method), K_max,
                                        model.covariance_type)
        keys = restart_keys(key, model.n_components, n_init)
        out.append(batched(init, batch_size=auto_batch_size(n_init, X.size))(keys))
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *out)


@compiled(static_argnames=("model", "n_init", "static_kw"))
def _fit_batch(starts, X, w, tol, *, model, n_init, static_kw):
    one = lambda p: fit(model, p, X, weights=w, tol=tol, **dict(static_kw))
    n = jax.tree_util.tree_leaves(starts)[0].shape[0]
    res = batched(one, batch_size=auto_batch_size(n, X.size))(starts)
    res = jax.tree_util.tree_map(lambda a: a.reshape((-1, n_init) + a.shape[1:]), res)
    return jax.vmap(best_restart)(res)  # best of n_init per candidate K


def select_n_components(key, X, n_components_range, covariance_types=("full",), criterion="bic",
                        weights=None, n_init: int = 1, *, init_method: str = "kmeans",
                        reg_covar: float = 1e-6, tol=1e-3, **fit_kwargs) -> SelectionResult:
    """Fit Gaussian mixtures for every K in ``n_components_range`` and pick K by BIC or AIC.

    For each covariance type, all (K, restart) pairs run as ONE `jaxem.batched` call of `jaxem.fit` on a
    K_max-component model, unused components masked by weight 0 (see the module docstring). Restart
    j of candidate K starts from ``GaussianMixture(K, type, reg_covar).init(restart_keys(key, K,
    n_init)[j], X, weights, method=init_method)``; the best restart per K is the one with the highest
    final log-likelihood. A Python-level driver (it returns Python objects): it jits its batch itself.

    Args:
      key: a `jax.random` key.
      X: ``(N, D)`` data.
      n_components_range: candidate numbers of components (e.g. ``range(1, 7)``).
      covariance_types: covariance types to try (one batch each).
      criterion: "bic" or "aic".
      weights: ``(N,)`` sample weights; n in the criteria is Σ w.
      n_init: restarts per candidate K.
      init_method, reg_covar: as in `jaxem.GaussianMixture` / its ``init``.
      tol, **fit_kwargs: passed to `jaxem.fit` (``max_iter``, ``m_step``, ``progress``, ...).

    Returns:
      A `SelectionResult` (score tables, the best model and its fit).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (200, 2))
      >>> sel = jaxem.select_n_components(jax.random.key(1), X, range(1, 4))
      >>> sel.best_n_components
      1
    """
    if criterion not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}.")
    Ks = tuple(sorted({positive_int("n_components_range entries", k) for k in n_components_range}))
    if not Ks:
        raise ValueError(f"n_components_range must hold integers >= 1, got {n_components_range!r}.")
    n_init = positive_int("n_init", n_init)
    tolerance(tol)
    X, w = as_data(X, weights)
    validate(X, w, Ks[-1])
    K_max, D = Ks[-1], X.shape[1]
    n = float(jnp.sum(w))
    static_kw = tuple(sorted(fit_kwargs.items()))
    tables = {name: np.zeros((len(covariance_types), len(Ks))) for name in ("bic", "aic", "ll", "p")}
    status = np.zeros((len(covariance_types), len(Ks)), np.int64)
    fits = []
    for c, ct in enumerate(covariance_types):
        models = tuple(GaussianMixture(K, ct, reg_covar) for K in Ks)
        starts = _starts(key, X, w, models=models, n_init=int(n_init), K_max=K_max,
                         method=init_method)
        res = _fit_batch(starts, X, w, tol, model=GaussianMixture(K_max, ct, reg_covar),
                         n_init=int(n_init), static_kw=static_kw)
        fits.append(res)
        ll_sum = np.asarray(res.log_likelihood, np.float64) * n
        p = np.array([n_free_parameters(K, D, ct) for K in Ks], np.float64)
        tables["bic"][c] = -2.0 * ll_sum + p * np.log(n)
        tables["aic"][c] = -2.0 * ll_sum + 2.0 * p
        tables["ll"][c], tables["p"][c] = ll_sum / n, p
        status[c] = np.asarray(res.status)
    score = np.where(np.isfinite(tables[criterion]), tables[criterion], np.inf)
    c, m = np.unravel_index(np.argmin(score), score.shape)
    K, ct = Ks[m], covariance_types[c]
    best = jax.tree_util.tree_map(lambda a: a[m], fits[c])
    P = best.params
    P = GaussianMixtureParams(P.weights[:K], P.means[:K],
                              P.covariances if ct == "tied" else P.covariances[:K])
    return SelectionResult(Ks, tuple(covariance_types), criterion, tables["bic"], tables["aic"],
                           tables["ll"], tables["p"].astype(int), status, K, ct,
                           GaussianMixture(K, ct, reg_covar), best._replace(params=P))
