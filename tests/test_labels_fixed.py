"""Partial labels (semi-supervised EM) and fixed parameter fields (ECM) in `jaxem.fit`.

References: NumPy semi-supervised EM / ECM written from the equations, the closed-form supervised
MLE, brute-force enumeration of HMM state paths, the unsupervised fit itself.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import gammaln, logsumexp
from scipy.stats import multivariate_normal

import jaxem
from _hmm_reference import forward_backward, gaussian_densities

REG = 1e-6
JIT = dict(compiler_options=dict(jaxem.COMPILER_OPTIONS))


@pytest.fixture(scope="module")
def data():
    """Two overlapping 2-D Gaussian clusters, 60 rows; labels y and a partial version (-1)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    X = np.array([[-1.0, 0.0], [1.5, 0.5]])[y] + rng.normal(size=(60, 2)) * [[1.0, 0.7]]
    partial = np.where(rng.uniform(size=60) < 0.4, y, -1)
    return X, y, partial


def gmm_start(ct="full"):
    """Starting params of a 2-component mixture in 2-D, by hand (no init to compile)."""
    cov = {"full": np.array([[[1.0, 0.2], [0.2, 0.8]], [[0.7, 0.0], [0.0, 1.2]]]),
           "diag": np.array([[1.0, 0.8], [0.7, 1.2]]), "spherical": np.array([0.9, 1.1]),
           "tied": np.array([[1.0, 0.1], [0.1, 0.9]])}[ct]
    return jaxem.GaussianMixtureParams(np.array([0.4, 0.6]), np.array([[-0.5, 0.3], [0.5, -0.2]]),
                                       cov)


@pytest.fixture(scope="module")
def start():
    return gmm_start()


# --- NumPy references -------------------------------------------------------------------------
def _full(cov, ct, D):
    if ct == "full":
        return cov
    if ct == "diag":
        return np.stack([np.diag(c) for c in cov])
    if ct == "spherical":
        return np.stack([c * np.eye(D) for c in cov])
    return np.stack([cov] * 2)


def np_log_joint(X, p, ct="full"):
    K, D = p.means.shape
    C = _full(np.asarray(p.covariances), ct, D)
    return np.stack([np.log(p.weights[k]) + multivariate_normal(p.means[k], C[k]).logpdf(X)
                     for k in range(K)], 1)


def np_clamp(lj, labels):
    lj = lj.copy()
    K = lj.shape[1]
    lab = labels >= 0
    lj[lab] = np.where(np.arange(K)[None] == labels[lab, None], lj[lab], -np.inf)
    return lj


def np_gmm_m_step(X, R, ct, prev=None, fixed=()):
    """Weighted-mean M-step; with ``fixed`` the ECM maximisers (covariances about fixed means)."""
    Nk = R.sum(0)
    D = X.shape[1]
    weights = Nk / Nk.sum() if "weights" not in fixed else np.asarray(prev.weights)
    mu = (R.T @ X) / Nk[:, None] if "means" not in fixed else np.asarray(prev.means)
    full = np.stack([((X - mu[k]).T * R[:, k]) @ (X - mu[k]) / Nk[k] for k in range(len(Nk))])
    if ct == "full":
        cov = full + REG * np.eye(D)
    elif ct == "diag":
        cov = np.stack([np.diag(c) for c in full]) + REG
    elif ct == "spherical":
        cov = np.stack([np.diag(c).mean() for c in full]) + REG
    else:
        cov = np.einsum("k,kde->de", Nk, full) / Nk.sum() + REG * np.eye(D)
    if "covariances" in fixed:
        cov = np.asarray(prev.covariances)
    return jaxem.GaussianMixtureParams(weights, mu, cov)


def np_gmm_em(X, p, n_iter, labels=None, ct="full", fixed=()):
    """Semi-supervised EM / ECM from the equations: (params, trace)."""
    trace = []
    for _ in range(n_iter):
        lj = np_log_joint(X, p, ct)
        if labels is not None:
            lj = np_clamp(lj, labels)
        lse = logsumexp(lj, axis=1)
        trace.append(lse.mean())
        p = np_gmm_m_step(X, np.exp(lj - lse[:, None]), ct, p, fixed)
    return p, np.array(trace)


def assert_params(a, b, rtol=1e-8, atol=1e-10):
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def assert_same_fit(ref, r):
    """Another driver's result ``r`` on the same rows as `jaxem.fit`'s ``ref``: n_iter, status
    (but MAX_ITER_REACHED: fit_online has no tol here), trace and params to rounding."""
    n = int(ref.n_iter)
    mask = ~int(jaxem.Status.MAX_ITER_REACHED)
    assert int(r.n_iter) == n and int(r.status) & mask == int(ref.status) & mask
    np.testing.assert_allclose(np.asarray(r.trace)[:n], np.asarray(ref.trace)[:n], rtol=1e-10)
    assert_params(r.params, ref.params, rtol=1e-9, atol=1e-11)


def monotone(trace):
    t = np.asarray(trace)
    t = t[np.isfinite(t)]
    return np.all(np.diff(t) >= -1e-10 * (1 + np.abs(t[:-1])))


# --- partial labels -----------------------------------------------------------------------------
def test_all_unknown_labels_equal_the_unsupervised_fit(data, start):
    X = data[0]
    model = jaxem.GaussianMixture(2)
    a = jaxem.fit(model, start, X, labels=np.full(60, -1), max_iter=4, tol=0)
    b = jaxem.fit(model, start, X, max_iter=4, tol=0)
    assert_params(a.params, b.params, rtol=1e-10)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-12)


@pytest.mark.parametrize("ct", ["full", "diag", "spherical", "tied"])
def test_fully_labelled_fit_is_the_supervised_mle(data, ct):
    """All labels known: one M-step of one-hot responsibilities = class proportions, class means
    and class (co)variances (+ reg_covar), a fixed point; log_likelihood = mean log p(x, z=y)."""
    X, y, _ = data
    model = jaxem.GaussianMixture(2, ct)
    params = gmm_start(ct)
    r = jaxem.fit(model, params, X, labels=y, tol=1e-10)
    mle = np_gmm_m_step(X, np.eye(2)[y], ct)
    assert int(r.status) == 0 and int(r.n_iter) == 3  # θ_0, the MLE, the MLE again
    assert_params(r.params, mle, rtol=1e-10)
    lj = np_log_joint(X, mle, ct)
    np.testing.assert_allclose(r.log_likelihood, lj[np.arange(60), y].mean(), rtol=1e-10)


def test_partial_labels_follow_numpy_semi_supervised_em(data, start):
    X, _, partial = data
    model = jaxem.GaussianMixture(2)
    r = jaxem.fit(model, start, X, labels=partial, max_iter=4, tol=0)
    ref, trace = np_gmm_em(X, start, 4, partial)
    assert_params(r.params, ref, rtol=1e-9)
    np.testing.assert_allclose(r.trace, trace, rtol=1e-10)
    # The labelled rows' posteriors are one-hot; log p(x, z=y) there, log p(x) elsewhere; and
    # the statistics protocol takes the labels too. (Jitted: eager calls compile op by op.)
    (post, ll), st = jax.jit(lambda p, l: (model.e_step(p, X, labels=l),
                                           model.sufficient_statistics(start, X, labels=l)),
                             **JIT)(r.params, partial)
    lab = partial >= 0
    np.testing.assert_array_equal(np.asarray(post)[lab], np.eye(2)[partial[lab]])
    lj = np_clamp(np_log_joint(X, r.params), partial)
    np.testing.assert_allclose(ll, logsumexp(lj, axis=1).sum(), rtol=1e-10)
    np.testing.assert_allclose(st.log_likelihood, trace[0] * 60, rtol=1e-10)
    lj0 = np_clamp(np_log_joint(X, start), partial)
    np.testing.assert_allclose(st.counts, np.exp(lj0 - logsumexp(lj0, 1)[:, None]).sum(0),
                               rtol=1e-10)
    assert monotone(r.trace)
    # The scale-out drivers on the same rows run the same iterates: fit_stream over a generator
    # of uneven (X_b, None, y_b) blocks (16, 5, 29 in two pieces, 10 rows) and fit_online on one
    # stacked batch of all the rows with γ = 1 (batch EM), the labels stacked like it.
    cuts = [0, 16, 21, 50, 60]
    blocks = lambda: ((X[a:b], None, partial[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))
    assert_same_fit(r, jaxem.fit_stream(model, start, blocks, max_iter=4, tol=0, block_size=16))
    assert_same_fit(r, jaxem.fit_online(model, start, np.stack([X] * 4),
                                        labels=np.stack([partial] * 4), step_size=1.0))


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_product_mixtures_with_partial_labels(family):
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 20)
    if family == "bernoulli":
        X = (rng.uniform(size=(40, 5)) < np.array([[0.2] * 5, [0.7] * 5])[y]).astype(float)
        model, theta = jaxem.BernoulliMixture(2), "probs"
    else:
        X = rng.poisson(np.array([[1.0] * 3, [4.0] * 3])[y]).astype(float)
        model, theta = jaxem.PoissonMixture(2), "rates"
    labels = np.where(np.arange(40) % 3 == 0, y, -1)
    p = (jaxem.BernoulliMixtureParams if family == "bernoulli" else jaxem.PoissonMixtureParams)(
        np.array([0.5, 0.5]), np.array([[0.3] * X.shape[1], [0.6] * X.shape[1]])
        * (1.0 if family == "bernoulli" else 5.0))
    r = jaxem.fit(model, p, X, labels=labels, max_iter=3, tol=0)
    w, t = np.asarray(p.weights), np.asarray(getattr(p, theta))
    trace = []
    for _ in range(3):  # NumPy semi-supervised EM
        if family == "bernoulli":
            lj = np.log(w) + X @ np.log(t).T + (1 - X) @ np.log1p(-t).T
        else:
            lj = np.log(w) + X @ np.log(t).T - t.sum(1) - gammaln(X + 1).sum(1)[:, None]
        lj = np_clamp(lj, labels)
        lse = logsumexp(lj, axis=1)
        trace.append(lse.mean())
        R = np.exp(lj - lse[:, None])
        w, t = R.sum(0) / 40, (R.T @ X) / R.sum(0)[:, None]
    np.testing.assert_allclose(r.trace, trace, rtol=1e-10)
    np.testing.assert_allclose(r.params.weights, w, rtol=1e-10)
    np.testing.assert_allclose(getattr(r.params, theta), t, rtol=1e-9)


def test_gradient_m_step_with_labels_reaches_the_supervised_mle(data):
    """MixtureModel + GradientMStep: with every row labelled the maximiser of log p(X, Z=y) is
    the class proportions and class means (unit-variance components)."""
    X, y, _ = data

    model = jaxem.MixtureModel(_unit_gaussians, n_components=2)
    params = {"logits": jnp.zeros(2), "means": jnp.array([[0.0, 0.0], [0.1, 0.1]])}
    gm = jaxem.GradientMStep(optax.adam(0.1), num_steps=20)
    r = jaxem.fit(model, params, X, labels=y, m_step=gm, max_iter=30, tol=0)
    means = np.stack([X[y == k].mean(0) for k in range(2)])
    np.testing.assert_allclose(r.params["means"], means, atol=2e-3)
    np.testing.assert_allclose(jax.nn.softmax(r.params["logits"]), [0.5, 0.5], atol=2e-3)
    assert int(r.status) == 0


def _unit_gaussians(p, x):
    return jax.nn.log_softmax(p["logits"]) - 0.5 * jnp.sum((x - p["means"]) ** 2, -1)


@pytest.fixture(scope="module")
def hmm_problem():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2, 6, 1)) + np.array([0.0, 1.5])[rng.integers(0, 2, (2, 6))][..., None]
    labels = np.full((2, 6), -1)
    labels[0, 1], labels[0, 4], labels[1, 0], labels[1, 5] = 1, 0, 0, 1
    model = jaxem.GaussianHMM(2, "diag")
    params = jaxem.GaussianHMMParams(np.array([0.6, 0.4]), np.array([[0.7, 0.3], [0.4, 0.6]]),
                                     np.array([[-0.5], [1.0]]), np.array([[1.0], [0.8]]))
    return model, params, X, labels


def np_hmm_step(params, X, labels, fixed=()):
    """One Baum-Welch step with the known states' other emissions zeroed (clamped)."""
    pi, A, mu, cov = (np.asarray(a) for a in params)
    n0, nA, ll, R = 0, 0, 0.0, []
    for x, lab in zip(X, labels):
        B = gaussian_densities(x, mu, cov, "diag")
        B = np.where((lab[:, None] < 0) | (lab[:, None] == np.arange(2)), B, 0.0)
        g, xi, l = forward_backward(pi, A, B)
        n0, nA, ll = n0 + g[0], nA + xi, ll + l
        R.append(g)
    R, Xf = np.concatenate(R), X.reshape(-1, 1)
    Nk = R.sum(0)
    m = mu if "means" in fixed else (R.T @ Xf) / Nk[:, None]
    c = np.stack([(R[:, k] @ (Xf - m[k]) ** 2) / Nk[k] for k in range(2)]) + REG
    new = (n0 / n0.sum(), nA / nA.sum(1, keepdims=True), m, c)
    new = tuple(p if f in fixed else n for p, n, f in zip(params, new, params._fields))
    return jaxem.GaussianHMMParams(*new), ll


def test_hmm_known_states_against_clamped_forward_backward_and_brute_force(hmm_problem):
    model, params, X, labels = hmm_problem
    r = jaxem.fit(model, params, X, labels=labels, max_iter=2, tol=0)
    p1, ll0 = np_hmm_step(params, X, labels)
    p2, ll1 = np_hmm_step(p1, X, labels)
    assert_params(r.params, p2, rtol=1e-9)
    np.testing.assert_allclose(r.trace, np.array([ll0, ll1]) / 12, rtol=1e-10)
    # brute force: log Σ over the state paths consistent with the known states of p(x, z)
    pi, A, mu, cov = (np.asarray(a) for a in params)
    total = 0.0
    for x, lab in zip(X, labels):
        logb = np.log(gaussian_densities(x, mu, cov, "diag"))
        terms = [np.log(pi[z[0]]) + sum(np.log(A[z[t], z[t + 1]]) for t in range(5))
                 + sum(logb[t, z[t]] for t in range(6))
                 for z in itertools.product(range(2), repeat=6)
                 if all(l < 0 or l == zt for l, zt in zip(lab, z))]
        total += logsumexp(terms)
    post, ll = model.e_step(params, X, labels=labels)
    np.testing.assert_allclose(ll, total, rtol=1e-10)
    np.testing.assert_array_equal(post.state_probs[0, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"labels must have shape \(n_sequences, T\)"):
        model.log_likelihood(params, X, labels=labels[0])


def test_labels_under_jit_and_vmap(data, start):
    X, y, partial = data
    model = jaxem.GaussianMixture(2)
    L = np.stack([partial, np.where(np.arange(60) < 10, y, -1)])
    f = jax.jit(jax.vmap(lambda l: jaxem.fit(model, start, X, labels=l, max_iter=4, tol=0)), **JIT)
    rb = f(jnp.asarray(L))
    for i in range(2):
        ref, trace = np_gmm_em(X, start, 4, L[i])
        assert_params(jax.tree_util.tree_map(lambda a: a[i], rb.params), ref, rtol=1e-9)
    bad = f(jnp.asarray(np.stack([partial, np.full(60, 2)])))  # label 2 of a 2-component model
    assert int(bad.status[0]) == 0
    assert int(bad.status[1]) & int(jaxem.Status.INVALID_INPUT)
    np.testing.assert_array_equal(bad.params.means[1], start.means)


def test_label_errors(data, start):
    X, y, _ = data
    gm = jaxem.GaussianMixture(2)
    with pytest.raises(ValueError, match="labels must lie in"):
        jaxem.fit(gm, start, X, labels=np.full(60, 2))
    with pytest.raises(ValueError, match=r"labels must have shape \(60,\)"):
        jaxem.fit(gm, start, X, labels=y[:50])
    with pytest.raises(ValueError, match="labels must be an integer array"):
        jaxem.fit(gm, start, X, labels=y.astype(float))
    ppca = jaxem.PPCA(1)
    with pytest.raises(ValueError, match="labels= needs a model with discrete components"):
        jaxem.fit(ppca, jaxem.PPCAParams(np.zeros(2), np.ones((2, 1)), np.array(1.0)), X, labels=y)


# --- fixed fields ------------------------------------------------------------------------------
@pytest.mark.parametrize("fixed", [("means",), ("covariances", "weights")])
def test_gmm_fixed_fields_follow_numpy_ecm(data, start, fixed):
    X = data[0]
    model = jaxem.GaussianMixture(2)
    r = jaxem.fit(model, start, X, fixed=fixed, max_iter=4, tol=0)
    ref, trace = np_gmm_em(X, start, 4, fixed=fixed)
    for f in fixed:  # bit for bit
        np.testing.assert_array_equal(getattr(r.params, f), getattr(start, f))
    assert_params(r.params, ref, rtol=1e-9)
    np.testing.assert_allclose(r.trace, trace, rtol=1e-10)
    assert monotone(r.trace)
    # SQUAREM: monotone, the fields untouched, and it stops at a fixed point of the ECM map
    s = jaxem.fit(model, start, X, fixed=fixed, tol=1e-12, max_iter=200, accelerate="squarem")
    assert int(s.status) == 0 and monotone(s.trace)
    for f in fixed:
        np.testing.assert_array_equal(getattr(s.params, f), getattr(start, f))
    again, _ = np_gmm_em(X, s.params, 1, fixed=fixed)
    assert_params(s.params, again, rtol=1e-6, atol=1e-9)


def np_factor_ecm_step(X, p, fixed, isotropic):
    """One ECM step of factor analysis / PPCA from the posterior moments (no intercept trick)."""
    mu, W = np.asarray(p.mean), np.asarray(p.W)
    psi = np.broadcast_to(np.asarray(p.noise_variance), mu.shape)
    q = W.shape[1]
    C = W @ W.T + np.diag(psi)
    G = np.eye(q) + W.T @ (W / psi[:, None])
    S = np.linalg.inv(G)
    M = (X - mu) @ (W / psi[:, None]) @ S  # E[z_n]
    ll = multivariate_normal(mu, C).logpdf(X).sum()
    N = len(X)
    Ezz = N * S + M.T @ M
    if "W" in fixed:
        Wn = W
        mun = mu if "mean" in fixed else (X - M @ W.T).mean(0)
    else:
        mun = mu
        Wn = ((X - mun).T @ M) @ np.linalg.inv(Ezz)
    Y = X - mun
    R = (Y ** 2).sum(0) - 2 * np.sum(Wn * (Y.T @ M), 1) + np.sum((Wn @ Ezz) * Wn, 1)
    psin = R / N
    psin = psin.mean() if isotropic else psin
    if "noise_variance" in fixed:
        psin = np.asarray(p.noise_variance)
    return type(p)(mun, Wn, psin), ll


@pytest.mark.parametrize("cls,fixed", [(jaxem.FactorAnalysis, ("mean",)),
                                       (jaxem.FactorAnalysis, ("W",)),
                                       (jaxem.PPCA, ("mean", "noise_variance"))])
def test_latent_factor_fixed_fields_follow_numpy_ecm(cls, fixed):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4)) + 3.0
    model = cls(2)
    W = rng.normal(size=(4, 2))
    # the mean away from the sample mean, so that fixing it matters
    p = (jaxem.PPCAParams(X.mean(0) + 0.5, W, np.array(0.7)) if cls is jaxem.PPCA else
         jaxem.FactorAnalysisParams(X.mean(0) + 0.5, W, np.array([0.5, 0.7, 0.9, 1.1])))
    r = jaxem.fit(model, p, X, fixed=fixed, max_iter=3, tol=0)
    ref, trace = p, []
    for _ in range(3):
        ref, ll = np_factor_ecm_step(X, ref, fixed, cls is jaxem.PPCA)
        trace.append(ll / 50)
    for f in fixed:
        np.testing.assert_array_equal(getattr(r.params, f), getattr(p, f))
    assert_params(r.params, ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(r.trace, trace, rtol=1e-10)
    assert monotone(r.trace)


def test_hmm_fixed_fields_follow_numpy_reference(hmm_problem):
    model, params, X, labels = hmm_problem
    for fixed in [("means", "transition_matrix")]:
        r = jaxem.fit(model, params, X, labels=labels, fixed=fixed, max_iter=2, tol=0)
        p1, _ = np_hmm_step(params, X, labels, fixed)
        p2, _ = np_hmm_step(p1, X, labels, fixed)
        for f in fixed:
            np.testing.assert_array_equal(getattr(r.params, f), getattr(params, f))
        assert_params(r.params, p2, rtol=1e-9)


def test_gradient_m_step_keeps_fixed_leaves(data):
    X = data[0]
    model = jaxem.MixtureModel(_unit_gaussians, n_components=2)
    params = {"logits": jnp.array([0.3, -0.3]), "means": jnp.array([[-1.0, 0.0], [1.0, 0.0]])}
    gm = jaxem.GradientMStep(optax.adamw(0.1, weight_decay=0.5), num_steps=5)
    r = jaxem.fit(model, params, X, m_step=gm, fixed=("logits",), max_iter=5, tol=0)
    np.testing.assert_array_equal(r.params["logits"], params["logits"])
    assert not np.allclose(r.params["means"], params["means"])


def test_implicit_gradients_with_fixed_fields_match_finite_differences(data, start):
    """Fixed means and partial labels: d(fit)/d(the fixed means) and a directional d(fit)/dX by
    the implicit function theorem equal central differences of converged fits."""
    X = jnp.asarray(data[0])
    model = jaxem.GaussianMixture(2)
    labels = data[2]

    def loss(X, means):
        r = jaxem.fit(model, start._replace(means=means), X, fixed=("means",), labels=labels,
                      tol=0, max_iter=300)
        return (jnp.sum(r.params.covariances[:, 0, :])
                + jnp.sum(r.params.weights * r.params.means[:, 0]))

    m0 = jnp.asarray(start.means)
    gX, gm = jax.jit(jax.grad(loss, (0, 1)), **JIT)(X, m0)
    f = jax.jit(loss, **JIT)
    h = 1e-5
    E = np.eye(4).reshape(4, 2, 2)
    fd = [(f(X, m0 + h * e) - f(X, m0 - h * e)) / (2 * h) for e in E]
    np.testing.assert_allclose(np.asarray(gm).ravel(), fd, rtol=1e-5, atol=1e-8)
    assert np.abs(fd).max() > 1e-2  # the fixed values do move the fit
    V = np.random.default_rng(5).normal(size=X.shape)
    fdX = (f(X + h * V, m0) - f(X - h * V, m0)) / (2 * h)
    np.testing.assert_allclose(np.sum(np.asarray(gX) * V), fdX, rtol=1e-5)


def test_batched_respects_fixed(data, start):
    X = data[0]
    model = jaxem.GaussianMixture(2)
    Xs = jnp.stack([X, X[::-1] + 0.1])
    one = lambda X: jaxem.fit(model, start, X, fixed=("weights",), max_iter=4, tol=0)
    rb = jaxem.batched(one, batch_size=1, n_threads=1)(Xs)
    np.testing.assert_array_equal(rb.params.weights, np.stack([start.weights] * 2))
    ref, _ = np_gmm_em(np.asarray(Xs[1]), start, 4, fixed=("weights",))
    assert_params(jax.tree_util.tree_map(lambda a: a[1], rb.params), ref, rtol=1e-9)


def test_fixed_errors(data, start):
    X = data[0]
    with pytest.raises(ValueError, match=r"\['weights', 'means', 'covariances'\]"):
        jaxem.fit(jaxem.GaussianMixture(2), start, X, fixed=("mean",))


# --- labels / fixed with main's routes: residual statistics, HMM parallel route, missing values,
# --- priors, mixtures of factor analysers --------------------------------------------------------
def test_partial_labels_in_the_component_major_residual_route(data, start):
    """Full covariances by residuals (the component-major route that float32 uses by default)."""
    X, _, partial = data
    model = jaxem.GaussianMixture(2, statistics="residuals")
    r = jaxem.fit(model, start, X, labels=partial, max_iter=3, tol=0)
    ref, trace = np_gmm_em(X, start, 3, partial)
    assert_params(r.params, ref, rtol=1e-9)
    np.testing.assert_allclose(r.trace, trace, rtol=1e-10)


def test_hmm_known_states_in_the_parallel_route(hmm_problem):
    model, params, X, labels = hmm_problem
    model = jaxem.GaussianHMM(2, "diag", inference="parallel")
    r = jaxem.fit(model, params, X, labels=labels, max_iter=2, tol=0)
    p1, ll0 = np_hmm_step(params, X, labels)
    p2, ll1 = np_hmm_step(p1, X, labels)
    assert_params(r.params, p2, rtol=1e-9)
    np.testing.assert_allclose(r.trace, np.array([ll0, ll1]) / 12, rtol=1e-10)


def np_diag_missing_em(X, p, n_iter, labels):
    """Semi-supervised EM of a diagonal mixture with NaN entries integrated out (Ghahramani &
    Jordan 1994): the observed entries' marginal scores a row, the missing ones are filled with
    μ_kd and add σ²_kd to the second moment."""
    o = ~np.isnan(X)
    x0 = np.where(o, X, 0.0)
    w, mu, var = (np.asarray(a, float) for a in p)
    trace = []
    for _ in range(n_iter):
        lj = np.log(w) - 0.5 * np.einsum("nd,kd->nk", o, np.log(2 * np.pi * var)) - 0.5 * np.sum(
            o[:, None] * (x0[:, None] - mu[None]) ** 2 / var[None], -1)
        lj = np_clamp(lj, labels)
        lse = logsumexp(lj, axis=1)
        trace.append(lse.mean())
        R = np.exp(lj - lse[:, None])
        Nk = R.sum(0)
        xhat = np.where(o[:, None], x0[:, None], mu[None])  # (N, K, D)
        mu_new = np.einsum("nk,nkd->kd", R, xhat) / Nk[:, None]
        var = (np.einsum("nk,nkd->kd", R, (xhat - mu_new[None]) ** 2 + (~o)[:, None] * var[None])
               / Nk[:, None] + REG)
        w, mu = Nk / Nk.sum(), mu_new
    return jaxem.GaussianMixtureParams(w, mu, var), np.array(trace)


def test_labels_with_missing_values_follow_numpy_reference(data):
    X, y, partial = data
    X = np.array(X)
    X[np.random.default_rng(7).uniform(size=X.shape) < 0.2] = np.nan
    X[np.isnan(X).all(1), 0] = 0.5  # no row without an observed entry (those get weight 0)
    assert np.isnan(X).any(1).sum() > 10
    model = jaxem.GaussianMixture(2, "diag", missing="marginalize")
    p = gmm_start("diag")
    r = jaxem.fit(model, p, X, labels=partial, max_iter=3, tol=0)
    ref, trace = np_diag_missing_em(X, p, 3, partial)
    assert int(r.status) == 0
    assert_params(r.params, ref, rtol=1e-9)
    np.testing.assert_allclose(r.trace, trace, rtol=1e-10)
    # every row labelled: the fixed point is each class's observed-entry mean and variance (the
    # fixed point of v = (S_obs + n_miss v) / n + reg is v = var_obs + reg n / n_obs)
    full = jaxem.fit(model, p, X, labels=y, tol=1e-13, max_iter=500)
    mle = np.stack([np.nanmean(X[y == k], 0) for k in range(2)])
    n_obs = np.stack([(~np.isnan(X[y == k])).sum(0) for k in range(2)])
    np.testing.assert_allclose(full.params.means, mle, rtol=1e-8)
    np.testing.assert_allclose(full.params.covariances, np.stack(
        [np.nanvar(X[y == k], 0) for k in range(2)]) + REG * 30 / n_obs, rtol=1e-8)
    np.testing.assert_allclose(full.params.weights, [0.5, 0.5], rtol=1e-12)


def test_prior_with_fixed_means_and_labels_is_the_conditional_map(data):
    """Every row labelled, means fixed, a normal-inverse-Wishart prior with κ_P > 0: one ECM step
    reaches the conditional posterior mode Σ_k = (Λ_P + S_k + κ_P e_k e_kᵀ) / (ν_P + n_k + D + 2)
    + reg_covar·I about the fixed means (e_k = μ_k - μ_P), π_k ∝ n_k + α - 1."""
    X, y, _ = data
    prior = jaxem.GaussianPrior(shrinkage=2.0, mean=(0.5, -0.5), dof=4.0, scale=0.3,
                                weights_concentration=3.0)
    model = jaxem.GaussianMixture(2, prior=prior)
    p = gmm_start()
    r = jaxem.fit(model, p, X, labels=y, fixed=("means",), tol=1e-12)
    mu = np.asarray(p.means)
    nk = np.bincount(y).astype(float)
    cov = []
    for k in range(2):
        d, e = X[y == k] - mu[k], mu[k] - np.array([0.5, -0.5])
        cov.append((0.3 * np.eye(2) + d.T @ d + 2.0 * np.outer(e, e)) / (4.0 + nk[k] + 2 + 1 + 1)
                   + REG * np.eye(2))
    assert int(r.status) == 0 and monotone(r.trace)
    np.testing.assert_array_equal(r.params.means, p.means)
    np.testing.assert_allclose(r.params.covariances, np.stack(cov), rtol=1e-10)
    np.testing.assert_allclose(r.params.weights, (nk + 2.0) / (60 + 4.0), rtol=1e-12)
    # The same MAP ECM fit by fit_stream (blocks of 16 rows, the labels sliced like X) and by
    # fit_online (one batch of all the rows, γ = 1, the prior weighed against n_samples=60 rows).
    s = jaxem.fit_stream(model, p, X, labels=y, fixed=("means",), tol=1e-12, block_size=16)
    assert_same_fit(r, s)
    np.testing.assert_allclose(s.log_likelihood, float(r.log_likelihood), rtol=1e-10)
    o = jaxem.fit_online(model, p, [(X, None, y)] * int(r.n_iter), fixed=("means",),
                         n_samples=60, step_size=1.0)
    np.testing.assert_array_equal(o.params.means, p.means)
    assert_same_fit(r, o)


@pytest.fixture(scope="module")
def mfa_problem():
    rng = np.random.default_rng(8)
    y = np.repeat([0, 1], 25)
    X = (np.array([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]])[y]
         + rng.normal(size=(50, 1)) * np.array([[1.0, 0.5, 0.2]]) + 0.3 * rng.normal(size=(50, 3)))
    p = jaxem.MixtureOfFactorAnalyzersParams(
        np.array([0.5, 0.5]), np.array([[-1.5, 0.2, 0.8], [1.5, 0.8, -0.8]]),
        np.array([[[0.8], [0.3], [0.1]], [[0.6], [0.4], [0.2]]]), np.full((2, 3), 0.2))
    return jaxem.MixtureOfFactorAnalyzers(2, 1), p, X, y, np.where(np.arange(50) % 4 == 0, y, -1)


def test_mfa_partial_labels(mfa_problem):
    model, p, X, _, partial = mfa_problem
    r = jaxem.fit(model, p, X, labels=partial, max_iter=3, tol=0)
    # the trace is the clamped log-likelihood; the streamed statistics route equals the M-step
    # from the clamped posterior (two code paths); labelled rows' responsibilities are one-hot
    lj = np_clamp(np.asarray(model.log_joint_matrix(p, X)), partial)
    np.testing.assert_allclose(r.trace[0], logsumexp(lj, axis=1).mean(), rtol=1e-10)
    post, ll = model.e_step(p, X, labels=partial)
    np.testing.assert_array_equal(np.asarray(post.responsibilities)[partial >= 0],
                                  np.eye(2)[partial[partial >= 0]])
    one = jaxem.fit(model, p, X, labels=partial, max_iter=1, tol=0)
    assert_params(one.params, model.m_step(post, X, params=p), rtol=1e-8)
    assert monotone(r.trace) and int(r.status) == 0


@pytest.mark.parametrize("fixed", [("means",), ("loadings",)])
def test_mfa_fixed_fields_are_conditional_maximisers_of_q(mfa_problem, fixed):
    """ECM: one step maximises Q over the free fields given the fixed ones, so the gradient of
    Q(·, θ_old) with respect to the free fields vanishes there (restoring a field that the joint
    solve of μ_k and W_k moved would not); monotone; the fixed fields bit for bit."""
    model, p, X, _, _ = mfa_problem
    one = jaxem.fit(model, p, X, fixed=fixed, max_iter=1, tol=0)
    post, _ = model.e_step(p, X)
    g = jax.grad(lambda q: model.q_function(q, post, X) / 50)(one.params)
    for f in ("means", "loadings", "noise_variance"):
        if f not in fixed:
            np.testing.assert_allclose(getattr(g, f), 0.0, atol=1e-9)
    assert np.abs(getattr(g, fixed[0])).max() > 1e-3  # held away from the joint maximiser
    r = jaxem.fit(model, p, X, fixed=fixed, max_iter=20, tol=0)
    assert monotone(r.trace) and r.trace[-1] > r.trace[0]
    for f in fixed:
        np.testing.assert_array_equal(getattr(r.params, f), getattr(p, f))


def test_generalized_em_implicit_root_is_the_map_with_a_prior(data):
    """The implicit adjoint of a GradientMStep fit solves ∇ log posterior = 0: at the MAP (the
    closed-form fit) the root function vanishes in the unconstrained fields, while the
    log-likelihood's own gradient does not."""
    from jaxem._adjoint import root_function

    X = jnp.asarray(data[0])
    w = jnp.ones(60)
    prior = jaxem.GaussianPrior(shrinkage=5.0, mean=(1.0, 1.0), dof=3.0, scale=0.5)
    model = jaxem.GaussianMixture(2, "diag", reg_covar=0.0, prior=prior)  # the exact MAP
    r = jaxem.fit(model, gmm_start("diag"), X, tol=1e-14, max_iter=1000)
    assert int(r.status) == 0
    F = root_function(model, jaxem.GradientMStep(optax.sgd(0.1)), X, w)(r.params)
    np.testing.assert_allclose(F.means, 0.0, atol=1e-6)  # converged to tol, not exactly
    np.testing.assert_allclose(F.covariances, 0.0, atol=1e-6)
    g = jax.grad(lambda p: model.log_likelihood(p, X) / 60)(r.params)
    assert np.abs(np.asarray(g.means)).max() > 1e-2



# --- fit_stream / fit_online: argument errors, fixed fields of another family --------------------
def test_scale_out_label_and_fixed_errors(data, start):
    X, y, partial = data
    gm = jaxem.GaussianMixture(2)
    bad = partial.copy()
    bad[20] = 2  # in block 1 of 16 rows
    with pytest.raises(jaxem.StreamError, match=r"block 1 \(rows from 16\): labels must lie in "
                                                r"\[-1, 1\]") as info:
        jaxem.fit_stream(gm, start, X, labels=bad, block_size=16)
    assert info.value.block == 1 and int(info.value.result.n_iter) == 0
    with pytest.raises(jaxem.StreamError, match=r"block 1: labels must have shape \(5,\)"):
        jaxem.fit_stream(gm, start, lambda: iter([(X[:30], None, y[:30]), (X[30:35], None, y)]),
                         block_size=16)
    with pytest.raises(ValueError, match=r"labels must have shape \(60,\)"):
        jaxem.fit_stream(gm, start, X, labels=y[:50])
    with pytest.raises(ValueError, match="labels must be an integer array"):
        jaxem.fit_stream(gm, start, X, labels=y.astype(float))
    with pytest.raises(ValueError, match="labels= is for array sources"):
        jaxem.fit_stream(gm, start, lambda: iter([X]), labels=y)
    ppca = jaxem.PPCAParams(np.zeros(2), np.ones((2, 1)), np.array(1.0))
    with pytest.raises(ValueError, match="labels= needs a model with discrete components"):
        jaxem.fit_stream(jaxem.PPCA(1), ppca, X, labels=y)
    with pytest.raises(ValueError, match="labels must lie in"):
        jaxem.fit_online(gm, start, [(X, None, np.full(60, 2))])
    with pytest.raises(ValueError, match=r"labels of stacked batches must have shape \(T, B\)"):
        jaxem.fit_online(gm, start, X[None], labels=partial)
    with pytest.raises(ValueError, match="labels= is for stacked batches"):
        jaxem.fit_online(gm, start, [X], labels=partial)
    with pytest.raises(ValueError, match="labels= needs a model with discrete components"):
        jaxem.fit_online(jaxem.PPCA(1), ppca, X[None], labels=y[None])
    for driver in (jaxem.fit_stream, jaxem.fit_online):
        with pytest.raises(ValueError, match=r"\['weights', 'means', 'covariances'\]"):
            driver(gm, start, [X] if driver is jaxem.fit_online else X, fixed=("mean",))


def test_scale_out_drivers_with_fixed_loadings_are_fit():
    """Factor analysis with W fixed and the mean free (`test_latent_factor_fixed_fields_follow_
    numpy_ecm`'s problem): `fit_stream` (blocks of 16 rows) and `fit_online` (one batch, γ = 1;
    its statistics about θ_0's mean while the mean moves) run `jaxem.fit`'s ECM iterates."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4)) + 3.0
    p = jaxem.FactorAnalysisParams(X.mean(0) + 0.5, rng.normal(size=(4, 2)),
                                   np.array([0.5, 0.7, 0.9, 1.1]))
    model = jaxem.FactorAnalysis(2)
    ref = jaxem.fit(model, p, X, fixed=("W",), max_iter=3, tol=0)
    s = jaxem.fit_stream(model, p, X, fixed=("W",), max_iter=3, tol=0, block_size=16)
    o = jaxem.fit_online(model, p, [X] * 3, fixed=("W",), step_size=1.0)
    for r in (s, o):
        assert_same_fit(ref, r)
        np.testing.assert_array_equal(r.params.W, p.W)
    assert not np.allclose(o.params.mean, p.mean)  # the mean moved away from the reference
