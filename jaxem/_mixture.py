"""`MixtureModel`: a finite mixture defined by one user function ``log_joint(params, x) -> (K,)``.

Generalized EM (Dempster, Laird & Rubin 1977, §3; Neal & Hinton 1998) needs only the complete-data log
density. With ℓ_nk(θ) = log p(x_n, z_n = k | θ) = ``log_joint(θ, x_n)[k]``:
  E-step:        r_nk = exp(ℓ_nk - logsumexp_k ℓ_nk)
  Q(θ, θ_old) =  Σ_n w_n Σ_k r_nk(θ_old) ℓ_nk(θ)
  log p(X | θ) = Σ_n w_n logsumexp_k ℓ_nk(θ)
  ELBO        =  Q + Σ_n w_n H[r_n]  (= log p(X | θ) at the exact posterior).
There is no closed-form M-step: fit with ``m_step=jaxem.GradientMStep(optimizer)``, which ascends Q
with an optax optimizer. The optimizer moves every leaf of ``params`` freely, so write ``log_joint`` in
an *unconstrained parametrisation*:

  ==========================  ===================================  ====================================
  quantity (constraint)       store in params                      inside log_joint
  ==========================  ===================================  ====================================
  mixing weights (simplex)    logits ``a (K,)``                    ``log π = jax.nn.log_softmax(a)``
  scale / variance (> 0)      ``log_scale``                        ``scale = jnp.exp(log_scale)``
  degrees of freedom (> 0)    ``log_df``                           ``df = jnp.exp(log_df)``
  covariance (SPD)            lower-triangular ``L_raw (K, D, D)``  ``L = tril(L_raw, -1) + diag(exp(
                                                                    diag(L_raw)))``, Σ = L Lᵀ
  probability (0, 1)          logit ``b``                          ``log p = jax.nn.log_sigmoid(b)``
  ==========================  ===================================  ====================================

Example: a full-covariance Gaussian mixture in these coordinates (``examples/student_t_mixture.py``
has a Student-t one)::

    class Params(NamedTuple):
        logits: jax.Array  # (K,)      π = softmax(logits)
        means: jax.Array   # (K, D)
        L_raw: jax.Array   # (K, D, D) strict lower triangle of L, and log of its diagonal

    def log_joint(p, x):  # x: (D,) -> (K,)
        log_diag = jnp.diagonal(p.L_raw, axis1=-2, axis2=-1)              # (K, D)
        L = jnp.tril(p.L_raw, -1) + jnp.exp(log_diag)[..., None] * jnp.eye(x.shape[0])
        z = jax.lax.linalg.triangular_solve(L, (x - p.means)[..., None], left_side=True,
                                            lower=True)[..., 0]         # L⁻¹ (x - μ_k)
        log_n = -0.5 * jnp.sum(z**2, -1) - jnp.sum(log_diag, -1) - 0.5 * x.shape[0] * jnp.log(2 * jnp.pi)
        return jax.nn.log_softmax(p.logits) + log_n

Σ_k = L_k L_kᵀ is then symmetric positive definite for every value of ``L_raw``, and log|Σ_k| =
2 Σ_d log_diag_kd is exact (no determinant, no inverse).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ._checks import optional_positive_int, positive_int, tree_summary
from ._validate import as_data, is_concrete, validate
from .models._base import Mixture


@dataclasses.dataclass(frozen=True, init=False)
class MixtureModel(Mixture):
    """A K-component mixture given by its complete-data log density, for generalized EM.

    The user writes ``log_joint(params, x) -> (K,)`` = [log p(x, z=k | params)]_k for ONE sample
    ``x (D,)`` with ``params`` any pytree; jaxem vectorises it over rows (``jax.vmap``) and derives the
    E-step, ``q_function``, ``jaxem.elbo``, ``log_likelihood``, ``score_samples``, ``predict_proba``,
    ``predict``, ``bic``/``aic`` from it (see the module docstring for the equations). There is no
    closed-form ``m_step`` (fit with `jaxem.GradientMStep`), and ``init`` / ``sample`` exist only
    through the optional hooks below (otherwise bring your own params).

    The model is a frozen dataclass hashed by the *identity* of ``log_joint``: define ``log_joint``
    once (at module level, not in a loop or inside the function you jit) so that two models built from
    it compare equal and `jax.jit` caches hit. Keep ``params`` unconstrained (log-scales, softmax
    logits, Cholesky factors with log-diagonal): the optimizer moves every leaf freely.

    Args:
      log_joint: pure function ``(params, x (D,)) -> (K,)``.
      n_components: K (the length of ``log_joint``'s output; checked at trace time).
      n_features: optional D; when given, data with another number of columns is rejected with a
        ValueError. The default None skips that check (D cannot be read off an arbitrary pytree).
      init: optional ``init(key, X) -> params`` (or ``init(key, X, weights)`` to see the sample
        weights): then ``model.init`` works, and so do `jaxem.fit_restarts` and
        `jaxem.select_n_components` (pass ``model=lambda K: MixtureModel(log_joint, K,
        init=...)`` with an ``init`` that makes K-component params). Pure and jax-traceable.
      sample: optional ``sample(key, params, n) -> X (n, D)``: then ``model.sample`` works.

    The hooks are part of the model's identity (hashing, jit caches) like ``log_joint``: define them
    once, at module level.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxem
      >>> def log_joint(p, x):  # two unit-variance Gaussians, unconstrained weights
      ...     return (jax.nn.log_softmax(p["logits"])
      ...             + jax.scipy.stats.norm.logpdf(x[0], p["loc"], 1.0))
      >>> model = jaxem.MixtureModel(log_joint, n_components=2)
      >>> X = jnp.concatenate([jnp.zeros((5, 1)) - 2.0, jnp.zeros((5, 1)) + 2.0])
      >>> params = {"logits": jnp.zeros(2), "loc": jnp.array([-1.0, 1.0])}
      >>> result = jaxem.fit(model, params, X, m_step=jaxem.GradientMStep(optax.adam(0.1)))
    """

    log_joint: Callable[[Any, jax.Array], jax.Array]
    n_components: int
    _n_features: int | None
    _init: Callable | None = None
    _sample: Callable | None = None

    def __init__(self, log_joint, n_components: int, n_features: int | None = None, *,
                 init: Callable | None = None, sample: Callable | None = None):
        if not callable(log_joint):
            raise ValueError(
                f"log_joint must be a function (params, x) -> (K,), got {type(log_joint).__name__}."
            )
        for name, hook, sig in (("init", init, "(key, X) -> params"),
                                ("sample", sample, "(key, params, n) -> X")):
            if hook is not None and not callable(hook):
                raise ValueError(f"{name} must be None or a function {sig}, got "
                                 f"{type(hook).__name__}.")
        object.__setattr__(self, "log_joint", log_joint)
        object.__setattr__(self, "n_components", positive_int("n_components", n_components))
        object.__setattr__(self, "_n_features", optional_positive_int("n_features", n_features))
        object.__setattr__(self, "_init", init)
        object.__setattr__(self, "_sample", sample)

    def n_features(self, params) -> int | None:
        """D if given to the constructor, else None (then the data's width is not checked)."""
        return self._n_features

    def log_joint_matrix(self, params, X) -> jax.Array:
        """``(N, K)`` matrix ℓ_nk = ``log_joint(params, X[n])[k]`` (vmapped over rows)."""
        try:
            lj = jax.vmap(lambda x: self.log_joint(params, x))(X)
        except (AttributeError, KeyError, TypeError, IndexError) as err:
            # Most often params of another structure than log_joint reads (a dict for a
            # NamedTuple, a missing key, the arguments swapped): name what was passed.
            raise ValueError(
                f"log_joint(params, x) raised {type(err).__name__}: {err}, with params = "
                f"{tree_summary(params)} and x of shape {X.shape[1:]} (one row of X). Pass the "
                "params pytree your log_joint reads (same keys/fields and shapes); jaxem.fit "
                "takes (model, params, X).") from err
        K = self.n_components
        if lj.ndim != 2 or lj.shape[1] != K:
            raise ValueError(
                f"log_joint(params, x) must return shape (n_components,) = ({K},) for one sample x "
                f"of shape (D,); after vmapping over {X.shape[0]} rows it gave {lj.shape[1:]} per row. "
                "Return log p(x, z=k | params) for every k, e.g. log_softmax(logits) + log p(x | k)."
            )
        return lj

    def n_parameters(self, params) -> int:
        """Total number of scalars in ``params`` (an upper bound on the free parameters: softmax
        logits, for example, carry one redundant degree of freedom)."""
        return sum(int(jnp.size(l)) for l in jax.tree_util.tree_leaves(params))

    def init(self, key, X, weights=None):
        """Starting params from the ``init`` hook: ``init(key, X)``, or ``init(key, X, weights)``
        when the hook takes three arguments (ValueError without a hook or with weights it cannot
        see)."""
        if self._init is None:
            raise NotImplementedError(
                "This MixtureModel has no init hook: bring your own params, or build it with "
                "MixtureModel(log_joint, K, init=lambda key, X: params).")
        X, w = as_data(X, weights, self._n_features)
        validate(X, w, self.n_components)
        if _n_positional(self._init) >= 3:
            return self._init(key, X, w)
        if weights is not None and is_concrete(w) and not bool(jnp.all((w == 0) | (w == w[0]))):
            raise ValueError("weights were given but the init hook is init(key, X): write it as "
                             "init(key, X, weights) to use them.")
        return self._init(key, X)

    def sample(self, key, params, n: int):
        """``n`` samples ``(n, D)`` from the ``sample`` hook (NotImplementedError without one)."""
        if self._sample is None:
            raise NotImplementedError(
                "MixtureModel knows only log p(x, z | params), not how to sample from it; give it a "
                "sample hook, MixtureModel(log_joint, K, sample=lambda key, params, n: X), or draw "
                "samples from your own component distributions."
            )
        return self._sample(key, params, int(n))


def _n_positional(fn) -> int:
    """Number of positional parameters of ``fn`` (a large number for ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 99
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
