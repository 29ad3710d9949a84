"""Starting parameters from data read in row blocks: `init_stream` (the companion of `fit_stream`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._blocks import (Source, StreamError, block_flags, check_block_size, default_block_size,
                      neumaier_add, progress_bar, stream_pass, zeros_like_shapes)
from ._chunk import chunked_sum_rows
from ._compile import compiled
from ._precision import normal
from ._init import _sq_dists, kmeans
from ._stream import check_model
from .models._linear_gaussian import LinearGaussian
from .models._product_mixture import ProductMixture
from .models.gaussian_mixture import GaussianMixture, _Stats


# --- mixtures: k-means on a weighted reservoir sample, then streamed Lloyd passes -------------
def _hard_fn(model, C):
    """Per block: the family's statistics of the hard assignment of each row to its nearest
    center (one-hot responsibilities), about the centers for a Gaussian mixture."""
    K = C.shape[0]

    def fn(x, w):
        R = jax.nn.one_hot(jnp.argmin(_sq_dists(x, C), axis=1), K, dtype=x.dtype) * w[:, None]
        if isinstance(model, GaussianMixture):
            return tuple(model._stats(R, x[:, None, :] - C[None]))
        return model._stats(R, x)

    return fn


@compiled(static_argnames=("model",))
def _hard_step(model, C, acc, comp, X, w):
    st = chunked_sum_rows(_hard_fn(model, C), (X, w), getattr(model, "chunk_size", None),
                          C.shape[0] * X.shape[1])
    acc, comp = neumaier_add(acc, comp, st)
    return acc, comp, block_flags(model, X, w)


@compiled(static_argnames=("model",))
def _hard_finish(model, C, acc, comp):
    """``(params, next centers)`` from the hard statistics at the centers ``C``: the family's
    M-step of the one-hot responsibilities, and the Lloyd update (an empty cluster stays)."""
    st = jax.tree_util.tree_map(jnp.add, acc, comp)
    nk = st[0]
    safe = jnp.where(nk > 0, nk, 1.0)[:, None]
    if isinstance(model, GaussianMixture):
        params = model._params_from_stats(_Stats(*st), model._identity_geometry(C), None)[0]
        return params, jnp.where(nk[:, None] > 0, C + st[1] / safe, C)
    params = model._params_from_stats(*st)[0]
    return params, jnp.where(nk[:, None] > 0, st[1] / safe, C)


@compiled(static_argnames=("model",))
def _flags_step(model, X, w):
    return block_flags(model, X, w)


@compiled(static_argnames=("n_clusters",))
def _kmeans_sample(key, S, n_clusters: int):
    return kmeans(key, S, jnp.ones(S.shape[0], S.dtype), n_clusters)[0]


class _Reservoir:
    """Weighted sampling without replacement in one pass (Efraimidis & Spirakis 2006, A-Res):
    row n gets the key u_n^(1/w_n) (here log u_n / w_n); the ``size`` largest keys are kept."""

    def __init__(self, size: int, D: int, dtype, seed: int):
        self.rng = np.random.default_rng(seed)
        self.X = np.zeros((0, D), dtype)
        self.k = np.zeros(0)
        self.size = size

    def add(self, b):
        w = b.w[:b.n].astype(np.float64)
        pos = w > 0
        if not np.any(pos):
            return
        k = np.log(self.rng.uniform(size=int(pos.sum()))) / w[pos]
        X = b.X[:b.n][pos]
        if len(self.k) >= self.size:  # only rows that beat the smallest kept key
            keep = k > self.k.min()
            k, X = k[keep], X[keep]
        self.k = np.concatenate([self.k, k])
        self.X = np.concatenate([self.X, X])
        if len(self.k) > self.size:
            top = np.argpartition(-self.k, self.size - 1)[:self.size]
            self.k, self.X = self.k[top], self.X[top]


# --- PPCA / factor analysis: a streamed weighted mean and variance --------------------------
def _moments_fn(c0):
    def fn(x, w):
        y = x - c0
        return jnp.sum(w), w @ y, w @ (y * y)

    return fn


@compiled(static_argnames=("model",))
def _moment_step(model, c0, acc, comp, X, w):
    acc, comp = neumaier_add(acc, comp, _moments_fn(c0)(X, w))
    return acc, comp, block_flags(model, X, w)


@compiled(static_argnames=("model",))
def _latent_finish(model, key, c0, acc, comp):
    """`LinearGaussian.init` from the moments about c0: μ = c0 + s1/s0, var = s2/s0 - (s1/s0)²."""
    s0, s1, s2 = jax.tree_util.tree_map(jnp.add, acc, comp)
    d = s1 / s0
    mu, var = c0 + d, jnp.maximum(s2 / s0 - d * d, 0.0)
    q = model.n_components
    scale = jnp.sqrt(jnp.mean(var) / (2.0 * q))
    W = scale * normal(key, (c0.shape[0], q), c0.dtype)
    psi = model._floor(0.5 * var, var)
    return model._make(mu, W, jnp.mean(psi) if model.isotropic else psi)


def init_stream(model, key, source, *, weights=None, block_size: int | None = None,
                sample_size: int | None = None, n_passes: int = 3, progress: bool = False):
    """Starting parameters for `jaxem.fit_stream`, from data read in row blocks.

    - Mixtures (GaussianMixture, BernoulliMixture, PoissonMixture): one pass draws a weighted
      reservoir sample of ``sample_size`` rows (Efraimidis & Spirakis 2006: the rows with the
      largest u^(1/w)); k-means (k-means++ seeding, then Lloyd to convergence, as ``model.init``)
      runs on the sample in memory; then ``n_passes`` streamed passes over all the data each assign
      every row to its nearest center and sum the family's hard-assignment statistics. Each pass
      but the last moves the centers to their clusters' means (full Lloyd steps); the last one's
      statistics give the parameters by the family's M-step, exactly as ``model.init`` turns
      k-means labels into parameters. So 1 + ``n_passes`` passes; with the whole data as the
      sample and Lloyd converged, this is ``model.init(key, X)``'s algorithm.
    - PPCA and factor analysis: one pass of weighted sums about the first row (compensated), for
      the mean and per-feature variance; then ``model.init``'s rule (μ = mean, random loadings
      scaled by the spread, noise = half the variance). Equal to ``model.init(key, X, weights)``
      up to rounding.

    Args:
      model: a closed-form family.
      key: a `jax.random` key.
      source, weights, block_size, progress: as in `jaxem.fit_stream` (labels that a callable's
        blocks carry, ``(X_b, w_b, y_b)``, are not used here).
      sample_size: rows in the reservoir sample (mixtures); None: max(10,000, 100 K).
      n_passes: streamed Lloyd passes (mixtures), >= 1.

    Returns:
      ``params`` in the data's floating dtype (float32 for integer data unless x64 is on).

    Raises:
      StreamError: a bad block (as in `jaxem.fit_stream`; ``err.result`` is None).
      ValueError: bad arguments, or fewer rows with positive weight than components.

    Example:
      >>> import numpy as np, jax, jaxem
      >>> X = np.random.default_rng(0).normal(size=(3000, 2)).astype(np.float32)
      >>> model = jaxem.GaussianMixture(3)
      >>> params = jaxem.init_stream(model, jax.random.key(0), X, block_size=1000)
      >>> params.means.shape
      (3, 2)
    """
    check_model(model, "init_stream")
    if getattr(model, "missing", "error") == "marginalize":
        # The starting passes need complete rows (a NaN entry raises StreamError): start a fit
        # with missing values from `model.init` on an in-memory sample instead.
        import dataclasses

        model = dataclasses.replace(model, missing="error")
    block_size = check_block_size(block_size)
    if isinstance(n_passes, bool) or not isinstance(n_passes, (int, np.integer)) or n_passes < 1:
        raise ValueError(f"n_passes must be a positive integer, got {n_passes!r}.")
    src = Source(source, weights)
    first = src.first_block()
    if first.ndim != 2:
        raise StreamError(f"block 0: X_b must be 2-D (n, D), got shape {first.shape}.", 0)
    D = first.shape[1]
    floating = np.issubdtype(first.dtype, np.floating)
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(first.dtype if floating else float))
    B = block_size or (len(first) if src.callable else min(default_block_size(D), src.n_rows))
    ctx = dict(src=src, B=B, dtype=dtype, D=D, model=model, progress=progress)
    if isinstance(model, LinearGaussian):
        return _init_latent(model, key, first, ctx)
    if not isinstance(model, (GaussianMixture, ProductMixture)):
        raise ValueError(f"init_stream does not know {type(model).__name__}; pass starting "
                         "parameters to fit_stream yourself.")
    return _init_mixture(model, key, sample_size, n_passes, ctx)


def _run(ctx, step, carry, desc, on_host=None):
    bar = progress_bar(ctx["progress"], ctx["src"].n_rows, desc)
    try:
        return stream_pass(ctx["src"], ctx["B"], ctx["dtype"], ctx["D"], step, carry,
                           model=ctx["model"], on_host=on_host, bar=bar)
    finally:
        if bar is not None:
            bar.close()


def _too_few(model, n_pos, need):
    if n_pos < need:
        raise ValueError(f"n_components={model.n_components} needs at least {need} rows with "
                         f"positive weight, got {n_pos}; use fewer components or more data.")


def _init_latent(model, key, first, ctx):
    D, dtype = ctx["D"], ctx["dtype"]
    model._check_rank(D)
    c0 = jax.device_put(np.nan_to_num(np.asarray(first[0], dtype)))
    shapes = jax.eval_shape(_moments_fn(c0), jax.ShapeDtypeStruct((ctx["B"], D), dtype),
                            jax.ShapeDtypeStruct((ctx["B"],), dtype))
    zero = zeros_like_shapes(shapes)

    def step(carry, X, w):
        acc, comp, flags = _moment_step(ctx["model"], c0, *carry, X, w)
        return (acc, comp), flags

    (acc, comp), n_pos = _run(ctx, step, (zero, zero), "init: moments")
    _too_few(model, n_pos, max(model.n_components, 2))
    return _latent_finish(model, key, c0, acc, comp)


def _init_mixture(model, key, sample_size, n_passes, ctx):
    K, D, dtype = model.n_components, ctx["D"], ctx["dtype"]
    if sample_size is None:
        sample_size = max(10_000, 100 * K)
    if isinstance(sample_size, bool) or not isinstance(sample_size, (int, np.integer)) \
            or sample_size < K:
        raise ValueError(f"sample_size must be an integer >= n_components ({K}), got "
                         f"{sample_size!r}.")
    k_sample, k_means = jax.random.split(key)
    seed = int(jax.random.randint(k_sample, (), 0, np.iinfo(np.int32).max))
    res = _Reservoir(int(sample_size), D, dtype, seed)
    step = lambda carry, X, w: (carry, _flags_step(model, X, w))
    _, n_pos = _run(ctx, step, None, "init: sample", on_host=res.add)
    _too_few(model, n_pos, K)
    C = _kmeans_sample(k_means, jax.device_put(res.X), K)
    w1 = jax.ShapeDtypeStruct((ctx["B"],), dtype)
    shapes = jax.eval_shape(lambda C, X, w: chunked_sum_rows(_hard_fn(model, C), (X, w), None,
                                                             K * D),
                            C, jax.ShapeDtypeStruct((ctx["B"], D), dtype), w1)
    for t in range(n_passes):
        zero = zeros_like_shapes(shapes)

        def step(carry, X, w, C=C):
            acc, comp, flags = _hard_step(model, C, *carry, X, w)
            return (acc, comp), flags

        (acc, comp), _ = _run(ctx, step, (zero, zero), f"init: Lloyd pass {t + 1}")
        params, C = _hard_finish(model, C, acc, comp)
    return params
