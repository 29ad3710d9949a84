"""`jaxem.fit_stream` / `jaxem.init_stream`: exact EM over row blocks equals `jaxem.fit` in memory."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem._blocks import neumaier_add

N, D, B = 1500, 3, 512  # 1500 = 2 * 512 + 476: a ragged last block


def _data(kind, rng):
    if kind == "bernoulli":
        p = rng.uniform(0.1, 0.9, (2, D))
        return (rng.uniform(size=(N, D)) < p[rng.integers(0, 2, N)]).astype(np.float64)
    if kind == "poisson":
        lam = np.array([[1.0, 4.0, 2.0], [6.0, 0.5, 3.0]])
        return rng.poisson(lam[rng.integers(0, 2, N)]).astype(np.float64)
    centers = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 5.0, 5.0]])
    return centers[rng.integers(0, 3, N)] + rng.normal(size=(N, D)) @ np.diag([1.0, 0.5, 2.0])


SLOW = {"fa", "bernoulli"}  # the same code paths as ppca / poisson: run with -m slow
MODELS = {
    "gmm-full": (lambda: jaxem.GaussianMixture(3, covariance_type="full"), "gauss"),
    "gmm-diag": (lambda: jaxem.GaussianMixture(3, covariance_type="diag"), "gauss"),
    "ppca": (lambda: jaxem.PPCA(2), "gauss"),
    "fa": (lambda: jaxem.FactorAnalysis(1), "gauss"),
    "bernoulli": (lambda: jaxem.BernoulliMixture(2), "bernoulli"),
    "poisson": (lambda: jaxem.PoissonMixture(2), "poisson"),
}


def _assert_same_fit(r_mem, r_stream, rtol=1e-9):
    assert int(r_stream.n_iter) == int(r_mem.n_iter)
    assert int(r_stream.status) == int(r_mem.status)
    assert bool(r_stream.converged) == bool(r_mem.converged)
    np.testing.assert_allclose(r_stream.trace, np.asarray(r_mem.trace), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(r_stream.log_likelihood, float(r_mem.log_likelihood), rtol=rtol)
    for a, b in zip(jax.tree_util.tree_leaves(r_stream.params),
                    jax.tree_util.tree_leaves(r_mem.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m
                                  for m in MODELS])
def test_memmap_equals_in_memory_fit(name, tmp_path):
    make, kind = MODELS[name]
    model = make()
    X = _data(kind, np.random.default_rng(0))
    path = tmp_path / "X.npy"
    np.save(path, X)
    Xm = np.load(path, mmap_mode="r")
    p0 = model.init(jax.random.key(1), X)
    r_mem = jaxem.fit(model, p0, X, max_iter=50)
    r_stream = jaxem.fit_stream(model, p0, Xm, max_iter=50, block_size=B)
    assert r_stream.trace.shape == (50,)
    assert int(r_mem.n_iter) > 2  # a real run of several passes
    _assert_same_fit(r_mem, r_stream)


def test_generator_of_uneven_weighted_blocks_equals_weighted_fit():
    rng = np.random.default_rng(1)
    X = _data("gauss", rng)
    w = rng.uniform(0.0, 2.0, N)
    w[::7] = 0.0  # zero weights are padding
    cuts = [0, 512, 812, 1400, 1450, 1500]  # blocks of 512, 300, 588 (split in two), 50, 50

    def blocks():
        for a, b in zip(cuts[:-1], cuts[1:]):
            yield X[a:b], w[a:b]

    model = jaxem.GaussianMixture(3, covariance_type="diag")
    p0 = model.init(jax.random.key(2), X, w)
    r_mem = jaxem.fit(model, p0, X, weights=w)
    r_stream = jaxem.fit_stream(model, p0, blocks, block_size=B)
    _assert_same_fit(r_mem, r_stream)
    # The default block size of a callable source is its first block's length.
    _assert_same_fit(r_mem, jaxem.fit_stream(model, p0, blocks))
    # weights= with an array source.
    _assert_same_fit(r_mem, jaxem.fit_stream(model, p0, X, weights=w, block_size=B))

    class Dataset:  # h5py/zarr-like: shape and row slicing only; records the rows of each read
        def __init__(self, a):
            self.a, self.shape, self.reads = a, a.shape, []

        def __getitem__(self, index):
            self.reads.append(len(self.a[index]))
            return self.a[index]

    Xd, wd = Dataset(X), Dataset(w)
    _assert_same_fit(r_mem, jaxem.fit_stream(model, p0, Xd, weights=wd, block_size=B))
    assert max(Xd.reads) <= B and max(wd.reads) <= B  # never read whole


def test_tol_zero_runs_max_iter_like_fit():
    X = _data("gauss", np.random.default_rng(2))
    model = jaxem.GaussianMixture(3, covariance_type="diag")
    p0 = model.init(jax.random.key(0), X)
    r_mem = jaxem.fit(model, p0, X, max_iter=4, tol=0.0)
    r_stream = jaxem.fit_stream(model, p0, X, max_iter=4, tol=0.0, block_size=B)
    assert int(r_stream.n_iter) == 4 and not r_stream.converged
    _assert_same_fit(r_mem, r_stream)
    r_mem = jaxem.fit(model, p0, X, max_iter=3, tol=1e-12)  # tol not met: MAX_ITER_REACHED
    r_stream = jaxem.fit_stream(model, p0, X, max_iter=3, tol=1e-12, block_size=B)
    assert int(r_stream.status) == int(jaxem.Status.MAX_ITER_REACHED)
    _assert_same_fit(r_mem, r_stream)


def test_bad_block_names_its_index_and_keeps_the_last_complete_pass():
    X = _data("gauss", np.random.default_rng(3))
    model = jaxem.GaussianMixture(3, covariance_type="diag")
    p0 = model.init(jax.random.key(0), X)
    passes = []

    def blocks():  # block 2 turns bad on the third pass (the first call sizes nothing: B given)
        passes.append(1)
        for i, a in enumerate(range(0, N, 400)):
            x = X[a:a + 400].copy()
            if i == 2 and len(passes) == 3:
                x[300, 1] = np.nan
            yield x

    # Blocks of 400 rows in pieces of 256: the row is counted within the source's block.
    with pytest.raises(jaxem.StreamError,
                       match=r"block 2: X contains NaN or inf \(first at row 300 of the block\)"
                       ) as info:
        jaxem.fit_stream(model, p0, blocks, block_size=256)
    err = info.value
    assert isinstance(err, ValueError) and err.block == 2
    res = err.result
    assert int(res.n_iter) == 2 and res.status & jaxem.Status.INVALID_INPUT
    ref = jaxem.fit(model, p0, X, max_iter=2, tol=0.0)  # the params after two complete passes
    np.testing.assert_allclose(res.trace[:2], np.asarray(ref.trace), rtol=1e-10)
    assert np.all(np.isnan(res.trace[2:]))
    np.testing.assert_allclose(np.asarray(res.params.means), np.asarray(ref.params.means),
                               rtol=1e-9)


@pytest.mark.parametrize("kind", ["features", "negative", "support", "inf-weight"])
def test_bad_block_kinds(kind):
    X = _data("poisson", np.random.default_rng(4))
    w = np.ones(N)
    model = jaxem.PoissonMixture(2)
    p0 = model.init(jax.random.key(0), X)
    Xb = X.copy()
    if kind == "features":
        blocks = lambda: iter([X[:500], X[500:1000, :2]])
        msg = r"block 1: X_b must have shape \(n, 3\)"
    else:
        if kind == "negative":
            w[1200] = -1.0
            msg = r"block 2 \(rows from 1024\): weights must be non-negative .*; row 1200 is negative"
        elif kind == "support":
            Xb[700, 0] = -2.0
            msg = r"block 1 \(rows from 512\): row 700 is outside the family's support"
        else:
            w[3] = np.inf
            msg = r"block 0 \(rows from 0\): weights contain NaN or inf \(row 3\)"
        blocks = Xb
    with pytest.raises(jaxem.StreamError, match=msg) as info:
        jaxem.fit_stream(model, p0, blocks, weights=None if kind == "features" else w,
                         block_size=B)
    assert int(info.value.result.n_iter) == 0  # the first pass: the starting params are kept
    np.testing.assert_array_equal(np.asarray(info.value.result.params.rates),
                                  np.asarray(p0.rates))


def test_argument_validation():
    X = _data("gauss", np.random.default_rng(5))
    model = jaxem.GaussianMixture(2, covariance_type="diag")
    p0 = model.init(jax.random.key(0), X)
    bad = [
        (dict(max_iter=0), "max_iter must be a positive integer"),
        (dict(max_iter=2.5), "max_iter must be a positive integer"),
        (dict(tol=-1.0), "tol must be a finite, non-negative"),
        (dict(tol=float("nan")), "tol must be a finite, non-negative"),
        (dict(tol="a"), "tol must be a non-negative number"),
        (dict(block_size=0), "block_size must be a positive integer"),
        (dict(block_size=1.5), "block_size must be a positive integer"),
        (dict(weights=np.ones(3)), r"weights must have shape \(n_samples,\)"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            jaxem.fit_stream(model, p0, X, **kw)
    with pytest.raises(ValueError, match="weights= is for array sources"):
        jaxem.fit_stream(model, p0, lambda: iter([X]), weights=np.ones(N))
    with pytest.raises(ValueError, match="2-D"):
        jaxem.fit_stream(model, p0, X[:, 0])
    with pytest.raises(ValueError, match="features"):
        jaxem.fit_stream(model, p0, X[:, :2])
    with pytest.raises(ValueError, match="callable returning a fresh iterable"):
        jaxem.fit_stream(model, p0, iter([X]))
    with pytest.raises(ValueError, match="larger than the number of rows with positive weight"):
        jaxem.fit_stream(model, p0, X[:3], weights=np.array([1.0, 0.0, 0.0]))
    mm = jaxem.MixtureModel(lambda p, x: jnp.zeros(2), 2)
    with pytest.raises(ValueError, match="closed-form M-step"):
        jaxem.fit_stream(mm, p0, X)


def test_compensated_sum_in_float32():
    # 4,000 blocks of a float32 value that a running float32 sum rounds away.
    rng = np.random.default_rng(6)
    xs = rng.uniform(0.5, 1.5, 4000).astype(np.float32) * np.float32(1e-3)
    acc = comp = jnp.float32(1e4)
    comp = jnp.float32(0.0)
    naive = np.float32(1e4)
    add = jax.jit(neumaier_add)
    for x in xs:
        acc, comp = add(acc, comp, jnp.float32(x))
        naive = np.float32(naive + x)
    exact = 1e4 + xs.astype(np.float64).sum()
    assert abs(float(acc) + float(comp) - exact) < 2e-3 * abs(float(naive) - exact)


def test_float32_memmap_far_from_origin(tmp_path):
    rng = np.random.default_rng(7)
    X64 = 1e3 + _data("gauss", rng)
    X = X64.astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    model = jaxem.GaussianMixture(3, covariance_type="full")
    p0 = model.init(jax.random.key(0), X)
    r_mem = jaxem.fit(model, p0, X, max_iter=5, tol=0.0)
    r_stream = jaxem.fit_stream(model, p0, Xm, max_iter=5, tol=0.0, block_size=256)
    assert r_stream.trace.dtype == np.float32
    np.testing.assert_allclose(r_stream.trace, np.asarray(r_mem.trace), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(r_stream.params.means), np.asarray(r_mem.params.means),
                               rtol=1e-5)


def test_init_stream():
    rng = np.random.default_rng(8)
    X = _data("gauss", rng)
    w = rng.uniform(0.5, 1.5, N)
    # PPCA (and FA, the same code): the streamed moments give model.init's parameters.
    for model in (jaxem.PPCA(2),):
        ps = jaxem.init_stream(model, jax.random.key(3), X, weights=w, block_size=B)
        pm = model.init(jax.random.key(3), X, w)
        for a, b in zip(jax.tree_util.tree_leaves(ps), jax.tree_util.tree_leaves(pm)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10)
    # Mixtures: k-means on a reservoir sample + streamed Lloyd passes; the fit from it reaches
    # the in-memory fit's log-likelihood.
    model = jaxem.GaussianMixture(3, covariance_type="diag")
    blocks = lambda: ((X[a:a + B], w[a:a + B]) for a in range(0, N, B))
    ps = jaxem.init_stream(model, jax.random.key(4), blocks, sample_size=400, n_passes=2)
    assert np.allclose(np.sum(np.asarray(ps.weights)), 1.0)
    assert np.all(np.asarray(ps.covariances) > 0)
    r_stream = jaxem.fit_stream(model, ps, blocks)
    r_mem = jaxem.fit(model, model.init(jax.random.key(4), X, w), X, weights=w)
    assert int(r_stream.status) == 0
    assert float(r_stream.log_likelihood) > float(r_mem.log_likelihood) - 1e-3
    # Product mixtures: a valid start (probabilities in range, weights on the simplex).
    Xb = _data("bernoulli", rng)
    pb = jaxem.init_stream(jaxem.BernoulliMixture(2), jax.random.key(5), Xb, block_size=B)
    assert np.all((np.asarray(pb.probs) > 0) & (np.asarray(pb.probs) < 1))
    np.testing.assert_allclose(np.sum(np.asarray(pb.weights)), 1.0)
    with pytest.raises(ValueError, match="n_passes"):
        jaxem.init_stream(model, jax.random.key(0), X, n_passes=0)


def test_progress_bar_runs(capsys):
    X = _data("gauss", np.random.default_rng(9))
    model = jaxem.GaussianMixture(3, covariance_type="diag")
    p0 = model.init(jax.random.key(0), X)
    r = jaxem.fit_stream(model, p0, X, max_iter=2, block_size=B, progress=True)
    assert int(r.n_iter) == 2
    assert "EM pass" in capsys.readouterr().err


_RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np, jax, jaxem
    B = 1 << 17
    model = jaxem.GaussianMixture(2, covariance_type="diag")
    p0 = model.init(jax.random.key(0), np.random.default_rng(0).normal(size=(1000, 2)).astype(
        np.float32))

    buf = np.empty((B, 2), np.float32)

    def peak_after(n):  # MB of peak RSS after a streamed fit over n rows generated on the fly
        def blocks():  # into one reused buffer: fit_stream copies each block before the next
            rng = np.random.default_rng(1)
            for a in range(0, n, B):
                yield rng.standard_normal(dtype=np.float32, out=buf)[:min(B, n - a)]

        r = jaxem.fit_stream(model, p0, blocks, max_iter=1, tol=0.0)  # two passes
        assert np.isfinite(float(r.log_likelihood))
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(peak_after(int(sys.argv[1])), peak_after(int(sys.argv[2])))
""")


def _peak_rss_mb(n_small, n_large):
    """Peak RSS (MB) of one process after a streamed fit over n_small rows (compiling everything
    and warming the allocator), then after one over n_large rows."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(n_small), str(n_large)],
                         capture_output=True, text=True, env=env, check=True)
    return [float(x) for x in out.stdout.split()[-2:]]


def test_peak_rss_flat_in_n():
    # 6M generated rows are 48 MB of float32 (each passed over twice): none of it may stay.
    small, large = _peak_rss_mb(2_000_000, 6_000_000)
    assert large - small < 16, (small, large)


@pytest.mark.slow
def test_peak_rss_flat_20m_rows():
    small, large = _peak_rss_mb(2_000_000, 20_000_000)  # 160 MB of generated rows
    assert large - small < 16, (small, large)


def test_nonfinite_guard_like_fit():
    # An isolated point captures a component; with reg_covar=0 its covariance becomes singular and
    # the next E-step's log-likelihood is NaN: both drivers go back to the last finite params.
    rng = np.random.default_rng(10)
    X = np.concatenate([rng.normal(size=(500, 2)), [[50.0, 50.0]]])
    model = jaxem.GaussianMixture(2, covariance_type="full", reg_covar=0.0)
    p0 = jaxem.GaussianMixtureParams(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [50.0, 50.0]]),
                                     jnp.stack([jnp.eye(2), jnp.eye(2)]))
    r_mem = jaxem.fit(model, p0, X)
    r_stream = jaxem.fit_stream(model, p0, X, block_size=128)
    assert int(r_stream.status) == int(jaxem.Status.NONFINITE)
    _assert_same_fit(r_mem, r_stream)
