"""Choose the number of components (factors, states) by BIC, AIC or ICL, restarts fitted in batches.

Criteria, with log L the maximised log-likelihood, n = Σ_n w_n (HMMs: the number of weighted time
steps Σ_s w_s · length_s) and p the number of free parameters of the candidate (lower is better):
  BIC = -2 log L + p log n                          (Schwarz 1978; as mclust and scikit-learn)
  AIC = -2 log L + 2 p                              (Akaike 1974)
  ICL = BIC + 2 H,  H = -Σ_n w_n Σ_k r_nk log r_nk  (Biernacki, Celeux & Govaert 2000)
where r_nk are the posterior responsibilities at the fitted parameters: ICL is BIC computed on the
expected *complete*-data log-likelihood (-2 E_q[log p(X, Z)] + p log n), so it also penalises
overlapping components. For an HMM, H is the entropy of the posterior over whole state sequences,
H = log L - Q (the ELBO identity at the exact posterior); for PPCA / factor analysis (continuous z)
it is the differential entropy of the Gaussian posterior, which makes ICL depend on the latent
scale fixed by z ~ N(0, I) — prefer BIC there.

Gaussian mixtures: all candidate K of a covariance type share one program. Each start is padded to
K_max components, the extra ones with weight exactly 0; `jaxem.GaussianMixture` keeps a weight-0
component switched off (weight 0, responsibility 0, parameters frozen, no EMPTY_COMPONENT flag), so
a padded member follows exactly the iterates of the K-component fit from the same start. PPCA and
factor analysis likewise: a q-factor start is padded to q_max columns of W that are exactly 0 and
stay 0 (see `_pad`). A Gaussian mixture's k-means (k-means++, random-rows) start of K does not
depend on the covariance type: it is traced and compiled once per K and shared by every type tried
(`_shared_starts`), and the start programs (consecutive K, one per core) and the per-type fit
programs are compiled side by side before they run (cold, on iris with 4 types x K = 1..8: 7
programs instead of 4 start + 4 fit programs and 35 eager slice programs). Every other family (Bernoulli / Poisson mixtures, HMMs over the number of
states, `jaxem.MixtureModel` with an ``init`` hook, any model with ``init``) is fitted one candidate
at a time, its ``n_init`` restarts in one `jaxem.batched` call.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _shard
from ._batch import auto_batch_size, batched
from ._checks import positive_int, tolerance
from ._compile import _cores, compiled, precompile_concurrently
from ._fit import FitResult, fit
from ._init import _hard_start, _init_rows
from ._missing import allows_missing
from ._prior import for_init
from ._mixture import MixtureModel
from ._restarts import best_restart
from ._validate import as_data, validate
from .models._linear_gaussian import LinearGaussian
from .models.gaussian_mixture import GaussianMixture, GaussianMixtureParams
from .models.hmm._base import HiddenMarkovModel

CRITERIA = ("bic", "aic", "icl")


class SelectionWarning(UserWarning):
    """`jaxem.select_n_components` found a sign that the search was too narrow or too short."""


class SelectionResult(NamedTuple):
    """Outcome of `select_n_components`. Tables are ``(C, M)``: covariance types × candidate K.

    Attributes:
      n_components: the candidate K (q for PPCA / factor analysis, states for HMMs), ascending (M,).
      covariance_types: the covariance types tried (C,); ``(None,)`` for families without one.
      criterion: "bic", "aic" or "icl" (the one used for ``best_*``).
      bic, aic, icl: the criteria; entropy: the posterior entropy H in ICL;
        log_likelihood: weighted mean log-likelihood per sample (HMMs: per time step);
        n_parameters: free parameters p; status: the fits' status codes.
      best_n_components, best_covariance_type: the minimiser of ``criterion``.
      best_model: the model of the best (K, type).
      best_result: its `FitResult` (params with K components).
    """

    n_components: tuple
    covariance_types: tuple
    criterion: str
    bic: np.ndarray
    aic: np.ndarray
    icl: np.ndarray
    entropy: np.ndarray
    log_likelihood: np.ndarray
    n_parameters: np.ndarray
    status: np.ndarray
    best_n_components: int
    best_covariance_type: Any
    best_model: Any
    best_result: FitResult

    def table(self) -> str:
        """The scores as text, one row per (covariance type, K)."""
        rows = [f"{'type':<10}{'K':>4}{'BIC':>14}{'AIC':>14}{'ICL':>14}{'loglik/n':>12}"]
        for c, ct in enumerate(self.covariance_types):
            for m, k in enumerate(self.n_components):
                rows.append(f"{str(ct if ct is not None else '-'):<10}{k:>4}"
                            f"{self.bic[c, m]:>14.3f}{self.aic[c, m]:>14.3f}"
                            f"{self.icl[c, m]:>14.3f}{self.log_likelihood[c, m]:>12.5f}")
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


def posterior_entropy(model, params, X, w):
    """H = Σ_n w_n H[p(z_n | x_n, params)] at ``params`` (data in the layout `jaxem.fit` uses).

    Mixtures and PPCA / factor analysis: the model's ``posterior_entropy`` of its E-step. HMMs: the
    entropy of the posterior over state sequences, log L - Q(θ, θ) (the ELBO equals log L at the
    exact posterior), as the per-step marginals do not determine it."""
    if isinstance(model, HiddenMarkovModel):
        post, ll = model._e_step(params, X, w)
        return ll - model.q_function(params, post, X, w)
    post, _ = model.e_step(params, X, w)
    return model.posterior_entropy(post, w)


# --- Gaussian mixtures and PPCA / factor analysis: every K in one padded program ---------------
def _pad(model, params, K_max: int):
    """Gaussian mixture: extra components of weight exactly 0. PPCA / factor analysis: extra
    columns of W exactly 0 — a zero loading has posterior mean 0 and variance 1, so its column of
    Σ_n w_n (x_n - μ) E[z_n]ᵀ is 0 and the M-step keeps it 0: the q-factor iterates exactly."""
    if isinstance(model, GaussianMixture):
        return pad_components(params, K_max, model.covariance_type)
    W = params.W
    return params._replace(W=jnp.concatenate([W, jnp.zeros((W.shape[0], K_max - W.shape[1]),
                                                           W.dtype)], 1))


def _trim(model, params):
    """The K-component (q-factor) part of padded ``params``."""
    K = model.n_components
    if isinstance(model, GaussianMixture):
        tied = model.covariance_type == "tied"
        return GaussianMixtureParams(params.weights[:K], params.means[:K],
                                     params.covariances if tied else params.covariances[:K])
    return params._replace(W=params.W[:, :K])


def _paddable(model) -> bool:
    return isinstance(model, (GaussianMixture, LinearGaussian))


@compiled(static_argnames=("models", "n_init", "K_max", "method"))
def _starts(key, X, w, *, models, n_init, K_max, method):
    """Padded starts of every candidate, stacked K-major: ``(len(models) * n_init, ...)``.
    One program for all K (compiling one program is ~3x faster than one per K)."""
    out = []
    for model in models:
        init = _initializer(model, X, w, method)
        keys = restart_keys(key, model.n_components, n_init)
        pad = lambda k: _pad(model, init(k), K_max)
        out.append(batched(pad, batch_size=auto_batch_size(n_init, X.size))(keys))
    return _concat(out)


def _concat(parts):
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)


_HARD_STARTS = ("kmeans", "k-means++", "random_from_data")


def _shared_method(models, X, method):
    """The init method whose hard start (k-means labels, or seed rows, of K) every covariance type
    of these Gaussian mixtures begins with, when they can share it; else None."""
    method = "kmeans" if method is None else method  # `GaussianMixture.init`'s default
    ok = (method in _HARD_STARTS and _shard.row_sharding(X) is None
          and all(type(m).init is GaussianMixture.init and not allows_missing(m)
                  and hasattr(m, "_m_step_labels") for m in models))
    return method if ok else None


@compiled(static_argnames=("grid", "n_init", "K_max", "method"))
def _shared_starts(key, X, w, *, grid, n_init, K_max, method):
    """`_starts` of every covariance type at once: ``grid[m][c]`` is the model of candidate K_m
    and covariance type c. A start is the model's M-step from the labels of a hard start (k-means
    of ``restart_keys(key, K, n_init)``, as ``model.init``), which does not depend on the
    covariance type: each K's k-means is traced and compiled once and shared by all the types
    (it is most of the program: four types cost four k-means programs before). Returns a tuple
    over types of the padded starts, K-major."""
    per_type = [[] for _ in grid[0]]
    for row in grid:
        K = row[0].n_components

        def one(k, row=row, K=K):
            hard = _hard_start(k, X, w, K, method)
            return tuple(_pad(m, _init_rows(for_init(m, X, w), k, X, w, method, hard), K_max)
                         for m in row)

        keys = restart_keys(key, K, n_init)
        for c, s in enumerate(batched(one, batch_size=auto_batch_size(n_init, X.size))(keys)):
            per_type[c].append(s)
    return tuple(_concat(parts) for parts in per_type)


@compiled(static_argnames=("models", "n_init", "static_kw"))
def _fit_batch(starts, X, w, tol, *, models, n_init, static_kw):
    """Every (K, restart) of one covariance type fitted in one batch of the K_max model; returns
    the best restart of each K trimmed to its K components (a tuple over ``models``: split inside
    the program, as eager indexing would compile a slice program per array), and their posterior
    entropies. ``starts``: the padded starts, K-major, or a tuple of consecutive parts of them."""
    if type(starts) is tuple:  # parts from several start programs (params are NamedTuples)
        starts = _concat(starts)
    model = models[-1]
    one = lambda p: fit(model, p, X, weights=w, tol=tol, **dict(static_kw))
    n = jax.tree_util.tree_leaves(starts)[0].shape[0]
    res = batched(one, batch_size=auto_batch_size(n, X.size))(starts)
    res = jax.tree_util.tree_map(lambda a: a.reshape((-1, n_init) + a.shape[1:]), res)
    best = jax.vmap(best_restart)(res)  # best of n_init per candidate K
    ent = jax.vmap(lambda p: posterior_entropy(model, p, X, w))(best.params)
    fits = []
    for m, mod in enumerate(models):
        r = jax.tree_util.tree_map(lambda a: a[m], best)
        fits.append(r._replace(params=_trim(mod, r.params)))
    return tuple(fits), ent


def _start_shapes(model, n, X):
    """`jax.ShapeDtypeStruct`s of ``n`` starts of the Gaussian mixture ``model`` (its K)."""
    K, D = model.n_components, X.shape[1]
    cov = {"full": (n, K, D, D), "tied": (n, D, D), "diag": (n, K, D),
           "spherical": (n, K)}[model.covariance_type]
    S = lambda shape: jax.ShapeDtypeStruct(shape, X.dtype)
    return GaussianMixtureParams(S((n, K)), S((n, K, D)), S(cov))


def _groups(n: int, parts: int):
    """``range(n)`` cut into at most ``parts`` consecutive, near-equal groups."""
    parts = max(1, min(parts, n))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [tuple(range(a, b)) for a, b in zip(edges, edges[1:])]


def _shared_route(key, X, w, Ks, grid, types, n_init, method, tol, static_kw):
    """Per covariance type: the per-K results and entropies of `_fit_batch`, from starts shared
    among the types. The programs are independent given their shapes, so they are compiled side by
    side first (`precompile_concurrently`): the starts cut into one program per core (consecutive
    K; a k-means per K is most of their compile time), and one fit program per type."""
    groups = _groups(len(Ks), _cores())
    kws = [dict(grid=tuple(grid[i] for i in g), n_init=n_init, K_max=Ks[-1], method=method)
           for g in groups]
    fit_kw = [dict(models=tuple(row[c] for row in grid), n_init=n_init, static_kw=static_kw)
              for c in range(len(types))]
    shapes = [tuple(_start_shapes(kw["models"][-1], len(g) * n_init, X) for g in groups)
              for kw in fit_kw]
    precompile_concurrently(
        [lambda kw=kw: _shared_starts.precompile(key, X, w, **kw) for kw in kws]
        + [lambda s=s, kw=kw: _fit_batch.precompile(s, X, w, tol, **kw)
           for s, kw in zip(shapes, fit_kw)])
    parts = [_shared_starts(key, X, w, **kw) for kw in kws]  # each: a tuple over types
    return [_fit_batch(tuple(p[c] for p in parts), X, w, tol, **kw)
            for c, kw in enumerate(fit_kw)]


def _select_padded(key, X, w, Ks, make, types, n_init, init_method, tol, static_kw, n):
    """Per covariance type: (per-K `FitResult`, entropies, models, n_parameters), every K in one
    batch of the K_max model."""
    grid = tuple(tuple(make(K, ct) for ct in types) for K in Ks)
    method = _shared_method([m for row in grid for m in row], X, init_method)
    n_init = int(n_init)
    if method is not None:  # starts shared among the types
        shared = _shared_route(key, X, w, Ks, grid, types, n_init, method, tol, static_kw)
    out = []
    for c, ct in enumerate(types):
        models = tuple(row[c] for row in grid)
        if method is not None:
            fits, ent = shared[c]
        else:
            starts = _starts(key, X, w, models=models, n_init=n_init, K_max=Ks[-1],
                             method=init_method)
            fits, ent = _fit_batch(starts, X, w, tol, models=models, n_init=n_init,
                                   static_kw=static_kw)
        ent = np.asarray(ent, np.float64)
        if isinstance(models[-1], LinearGaussian):
            # a zero column adds a N(0, 1) posterior dimension: ½ (1 + log 2π) per unit weight
            ent = ent - n * (Ks[-1] - np.asarray(Ks)) * 0.5 * (1.0 + np.log(2 * np.pi))
        # switched-off mixture components have responsibility exactly 0: no entropy to remove
        out.append((list(fits), ent, models,
                    [int(model.n_parameters(f.params)) for model, f in zip(models, fits)]))
    return out


# --- any family with `init`: one candidate at a time, its restarts in one batch ----------------
def _initializer(model, X, w, method):
    """``key -> params`` for ``model`` on checked data (HMMs: the internal sequence layout)."""
    if isinstance(model, HiddenMarkovModel):
        return lambda k: model._init(k, X, w)
    names = inspect.signature(model.init).parameters
    kw = {"method": method} if method is not None and "method" in names else {}
    return lambda k: model.init(k, X, w, **kw)


@compiled(static_argnames=("model", "method", "static_kw"))
def _fit_candidate(keys, X, w, tol, *, model, method, static_kw):
    init = _initializer(model, X, w, method)
    one = lambda k: fit(model, init(k), X, weights=w, tol=tol, **dict(static_kw))
    best = best_restart(batched(one, batch_size=auto_batch_size(keys.shape[0], X.size))(keys))
    return best, posterior_entropy(model, best.params, X, w)


def _select_family(key, X, w, Ks, make, types, n_init, init_method, tol, static_kw, n):
    out = []
    for ct in types:
        fits, ent, models, p = [], [], [], []
        for K in Ks:
            model = make(K, ct)  # a factory's K may be any size (e.g. MFA's factors)
            res, h = _fit_candidate(restart_keys(key, K, n_init), X, w, tol, model=model,
                                    method=init_method, static_kw=static_kw)
            fits.append(res)
            ent.append(float(h))
            models.append(model)
            p.append(int(model.n_parameters(res.params)))
        out.append((fits, np.asarray(ent, np.float64), tuple(models), p))
    return out


def _family(model, covariance_types, reg_covar):
    """``(make(K, covariance_type) -> model, covariance types, padded route?, template)``."""
    if model is None:
        model = GaussianMixture(1, "full", reg_covar)
    if isinstance(model, type) or (callable(model) and not hasattr(model, "e_step")):
        # a factory K -> model (e.g. a function, or a model class such as jaxem.PPCA)
        if covariance_types is not None:
            raise ValueError("covariance_types= is for a model with a covariance_type field; with "
                             "model=a function K -> model, build the covariance type into it.")
        return (lambda K, ct: model(K)), (None,), False, None
    fields = {f.name for f in dataclasses.fields(model)} if dataclasses.is_dataclass(model) else {}
    if isinstance(model, MixtureModel):
        raise ValueError("For a jaxem.MixtureModel pass model=a function K -> MixtureModel(log_joint, "
                         "K, init=...) whose init hook makes K-component params (one log_joint "
                         "cannot tell jaxem how its params grow with K).")
    if not hasattr(model, "init") or (isinstance(model, HiddenMarkovModel)
                                      and not hasattr(model, "_emission_init")):
        raise ValueError(f"{type(model).__name__} has no init; select_n_components needs one to "
                         "start each candidate (for your own family pass model=a function K -> "
                         "model with an init).")
    size = "n_states" if "n_states" in fields else "n_components"
    if size not in fields:
        raise ValueError(f"model must be a jaxem model (a dataclass with n_components), got "
                         f"{type(model).__name__}.")
    if covariance_types is None:
        types = (getattr(model, "covariance_type", None),)
    elif "covariance_type" not in fields:
        raise ValueError(f"{type(model).__name__} has no covariance_type; leave covariance_types "
                         "at None.")
    else:
        types = tuple(covariance_types)

    def make(K, ct):
        kw = {size: K} if ct is None else {size: K, "covariance_type": ct}
        return dataclasses.replace(model, **kw)

    return make, types, _paddable(model), model


def _data(template_model, X, weights, lengths, K_max):
    """Checked data in the layout `jaxem.fit` reads, and n = Σ w (HMMs: weighted time steps)."""
    if isinstance(template_model, HiddenMarkovModel):
        X, w = template_model.prepare_data(X, weights, lengths)
    elif lengths is not None:
        raise ValueError("lengths= is for sequence models (HMMs); pass it with model=an HMM.")
    else:
        X, w = as_data(X, weights)
        validate(X, w, K_max)
        template_model.check_data(X)
    return X, w, float(jnp.sum(w))


def _warn(Ks, types, ll, best_m, tol, criterion):
    """Two signs of a search too narrow or too short (`SelectionWarning`)."""
    K = Ks[best_m]
    if len(Ks) > 1 and (best_m == len(Ks) - 1 or (best_m == 0 and Ks[0] > 1)):
        side = "largest" if best_m == len(Ks) - 1 else "smallest"
        warnings.warn(
            f"The best n_components by {criterion.upper()}, {K}, is the {side} candidate: the "
            f"criterion may keep improving beyond it; widen n_components_range "
            f"({'upward' if side == 'largest' else 'downward'}).", SelectionWarning, stacklevel=3)
    falls = []
    for c, ct in enumerate(types):
        for m in range(len(Ks) - 1):
            a, b = ll[c, m], ll[c, m + 1]
            if np.isfinite(a) and np.isfinite(b) and a - b > max(tol, 1e-9 * (1.0 + abs(a))):
                falls.append(f"K={Ks[m]} -> {Ks[m + 1]}" + (f" ({ct})" if ct is not None else ""))
    if falls:
        warnings.warn(
            "The maximised log-likelihood falls as n_components grows (" + ", ".join(falls) + "): "
            "a larger model nests the smaller one, so its fit stopped short of its maximum; use more "
            "restarts (n_init) or iterations (max_iter, a smaller tol).", SelectionWarning,
            stacklevel=3)


def select_n_components(key, X, n_components_range, covariance_types=None, criterion="bic",
                        weights=None, n_init: int = 1, *, model=None, lengths=None,
                        init_method: str | None = "kmeans", reg_covar: float = 1e-6, tol=1e-3,
                        **fit_kwargs) -> SelectionResult:
    """Fit a family for every K in ``n_components_range`` and pick K by BIC, AIC or ICL.

    The family is ``model``: None for Gaussian mixtures (``covariance_types`` × K), or a jaxem model
    used as a template (its ``n_components`` — q for `jaxem.PPCA` / `jaxem.FactorAnalysis`, the
    number of states for HMMs — replaced by each K, every other setting kept; a template with a
    ``covariance_type`` field also tries ``covariance_types``), or a function ``K -> model`` (e.g.
    for `jaxem.MixtureModel` with an ``init`` hook; K may stand for any size, such as the factors
    of a mixture of factor analysers: ``lambda q: MixtureOfFactorAnalyzers(3, q)``). Restart j of candidate K starts from
    ``model_K.init(restart_keys(key, K, n_init)[j], X, weights, method=init_method)`` (``method``
    only for families whose ``init`` takes one); the best restart per K is the one with the highest
    final log-likelihood. Gaussian mixtures (and PPCA / factor analysis) run all (K, restart) pairs
    of a covariance type as ONE `jaxem.batched` call on a K_max-component model, unused components
    masked by weight 0 (zero columns of W; see the module docstring); other families one batched
    call per K. A Python-level driver (it returns
    Python objects): it jits its batches itself.

    Two `SelectionWarning` warnings flag a search that was too narrow or too short: the best K is at
    the edge of the range (the largest candidate, or the smallest when it is above 1), and the
    maximised log-likelihood falls as K grows by more than ``tol`` (nested models: the larger fit
    stopped short of its maximum).

    Args:
      key: a `jax.random` key.
      X: ``(N, D)`` data (HMMs: ``(T, D)`` or ``(S, T, D)`` sequences, see ``lengths``).
      n_components_range: candidate K (e.g. ``range(1, 7)``).
      covariance_types: covariance types to try (one batch each); None: ``("full",)`` for the
        default Gaussian family, the template's own otherwise.
      criterion: "bic", "aic" or "icl".
      weights: ``(N,)`` sample weights (HMMs: ``(S,)`` per sequence); n in the criteria is Σ w.
      n_init: restarts per candidate K.
      model: the family (see above); None: `jaxem.GaussianMixture` with ``reg_covar``.
      lengths: HMMs: ``(S,)`` lengths of sequences padded at the end.
      init_method: passed as ``method=`` to ``init`` where the family takes it (None: its default).
      reg_covar: for the default Gaussian family (a template carries its own).
      tol, **fit_kwargs: passed to `jaxem.fit` (``max_iter``, ``m_step``, ``accelerate``, ...).

    Returns:
      A `SelectionResult` (score tables, the best model and its fit).

    Example:
      >>> import jax, jaxem
      >>> X = jax.random.normal(jax.random.key(0), (200, 2))
      >>> sel = jaxem.select_n_components(jax.random.key(1), X, range(1, 4))
      >>> sel.best_n_components
      1
      >>> Z = jax.random.normal(jax.random.key(2), (300, 2))     # 2 latent factors, 6 features
      >>> Y = Z @ jax.random.normal(jax.random.key(3), (2, 6)) + 0.3 * jax.random.normal(
      ...     jax.random.key(5), (300, 6))
      >>> sel = jaxem.select_n_components(jax.random.key(4), Y, range(1, 5), model=jaxem.PPCA(1),
      ...                                 tol=1e-6, max_iter=2000)
      >>> sel.best_n_components
      2
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    Ks = tuple(sorted({positive_int("n_components_range entries", k) for k in n_components_range}))
    if not Ks:
        raise ValueError(f"n_components_range must hold integers >= 1, got {n_components_range!r}.")
    n_init = positive_int("n_init", n_init)
    tolerance(tol)
    make, types, padded, template = _family(model, covariance_types, reg_covar)
    if template is None:  # a factory: its smallest candidate tells the data layout and support
        template = make(Ks[0], types[0])
    X, w, n = _data(template, X, weights, lengths, Ks[-1])
    static_kw = tuple(sorted(fit_kwargs.items()))
    route = _select_padded if padded else _select_family
    per_type = route(key, X, w, Ks, make, types, n_init, init_method, tol, static_kw, n)

    shape = (len(types), len(Ks))
    ll, p, ent = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    status = np.zeros(shape, np.int64)
    for c, (fits, h, _, pc) in enumerate(per_type):
        ll[c] = [float(r.log_likelihood) for r in fits]
        status[c] = [int(r.status) for r in fits]
        p[c], ent[c] = pc, h
    ll_sum = ll * n
    tables = {"bic": -2.0 * ll_sum + p * np.log(n), "aic": -2.0 * ll_sum + 2.0 * p}
    tables["icl"] = tables["bic"] + 2.0 * ent
    score = np.where(np.isfinite(tables[criterion]), tables[criterion], np.inf)
    c, m = np.unravel_index(np.argmin(score), score.shape)
    fits, _, models, _ = per_type[c]
    _warn(Ks, types, ll, int(m), float(tol), criterion)
    return SelectionResult(Ks, tuple(types), criterion, tables["bic"], tables["aic"],
                           tables["icl"], ent, ll, p.astype(int), status, Ks[m], types[c],
                           models[m], fits[m])
