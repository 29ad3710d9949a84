"""Random restarts: n_init initialisations fitted in one batched call (`jaxem.batched`), best kept."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._batch import auto_batch_size, batched
from ._checks import as_key, fit_arguments, positive_int
from ._fit import FitResult, fit
from ._status import FATAL
from ._where import where


def best_restart(results: FitResult) -> FitResult:
    """The member of a batched `FitResult` with the highest final log-likelihood.

    Members with a fatal status (non-finite values, invalid input) or a non-finite log-likelihood
    are never chosen unless all are; ties go to the first member, as scikit-learn's ``n_init``.
    """
    ok = ((results.status & int(FATAL)) == 0) & jnp.isfinite(results.log_likelihood)
    score = where(ok, results.log_likelihood, -jnp.inf)
    best = jnp.argmax(score)
    return jax.tree_util.tree_map(lambda a: a[best], results)


def fit_restarts(model, key, X, n_init: int, *, weights=None, init_method: str | None = "kmeans",
                 init_fn=None, return_all: bool = False, batch_size: int | None = None,
                 **fit_kwargs):
    """Fit ``model`` from ``n_init`` random starts in ONE batched call; keep the best.

    The keys ``jax.random.split(key, n_init)`` give the starts θ⁽ʲ⁾₀ = ``model.init(key_j, X, weights,
    method=init_method)``; `jaxem.batched` (vmap semantics) runs init + `jaxem.fit` for all of them
    in one program (each member stops on its own criterion) and the member with the highest final
    mean log-likelihood among those without a fatal status is returned. Pure: works under
    `jax.jit` (``n_init`` is static).

    Args:
      model: a jaxem model with ``init`` (e.g. `jaxem.GaussianMixture`).
      key: a `jax.random` key, or an int seed.
      X: ``(N, D)`` data.
      n_init: number of restarts (static).
      weights: ``(N,)`` sample weights (None = ones).
      init_method: passed as ``method=`` to ``model.init`` (None: the model's default).
      init_fn: optional ``init_fn(key) -> params`` replacing ``model.init``.
      return_all: also return the whole batched `FitResult`.
      batch_size: restarts evaluated together per block (see `jaxem.batched`); None: all at once
        on GPU/TPU, a few at a time on CPU (faster there, same results).
      **fit_kwargs: passed to `jaxem.fit` (``max_iter``, ``tol``, ``m_step``, ``progress``, ...).

    Returns:
      The best `FitResult`, or ``(best, all_results)`` if ``return_all``.

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (200, 2))
      >>> best = jaxem.fit_restarts(jaxem.GaussianMixture(3), jax.random.key(1), X, n_init=4)
    """
    n_init = positive_int("n_init", n_init)
    key = as_key(key)  # an int seed is accepted
    if not hasattr(model, "e_step"):
        fit_arguments(model, None, X, "jaxem.fit_restarts", "model, key, X, n_init")
    if init_fn is None:
        kw = {} if init_method is None else {"method": init_method}
        init_fn = lambda k: model.init(k, X, weights, **kw)
    if batch_size is None:
        batch_size = auto_batch_size(n_init, jnp.size(X))
    one = lambda k: fit(model, init_fn(k), X, weights=weights, **fit_kwargs)
    results = batched(one, batch_size=batch_size)(jax.random.split(key, n_init))
    best = best_restart(results)
    return (best, results) if return_all else best
