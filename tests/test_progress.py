"""progress=True: a tqdm bar fed by jax.debug.callback; one bar under vmap; nothing when off."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from helpers import blobs

X, _ = blobs(seed=5, n=90, d=2, k=3)
MODEL = jaxem.GaussianMixture(3, "diag")
P0 = MODEL.init(jax.random.key(0), X, method="random")
STARTS = jax.vmap(lambda k: MODEL.init(k, X, method="random"))(jax.random.split(jax.random.key(1), 6))


def _fit(p, progress, **kw):
    return jaxem.fit(MODEL, p, X, max_iter=40, tol=1e-6, progress=progress, **kw)


_fit_jit = jax.jit(_fit, static_argnames="progress")
_fit_batch = jax.jit(jax.vmap(_fit, in_axes=(0, None)), static_argnums=1)


def _bars(err):
    """(number of bars tqdm opened, [(n, total, loglik) of every redraw])."""
    pat = r"EM:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) \[[^\]]*?(?:loglik=([-\d.e+]+))?\]"
    return len(re.findall(r"EM:\s+0%", err)), re.findall(pat, err)


def test_bar_shows_iterations_and_loglik(capsys):
    res = _fit_jit(P0, True)
    jax.effects_barrier()
    err = capsys.readouterr().err
    n_bars, states = _bars(err)
    assert n_bars == 1
    n, total, ll = states[-1]
    assert int(total) == 40 and int(n) == int(res.n_iter) and int(n) > 2
    # the bar's log-likelihood is the last trace value (the last E-step), to the 6 digits shown
    assert float(ll) == pytest.approx(float(res.trace[int(res.n_iter) - 1]), rel=1e-5)


def test_progress_changes_nothing_in_the_result(capsys):
    on, off = _fit_jit(P0, True), _fit_jit(P0, False)
    jax.effects_barrier()
    capsys.readouterr()
    for a, b in zip(jax.tree_util.tree_leaves(on), jax.tree_util.tree_leaves(off)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_one_bar_under_vmap(capsys):
    res = _fit_batch(STARTS, True)
    jax.effects_barrier()
    n_bars, states = _bars(capsys.readouterr().err)
    assert n_bars == 1  # one bar for 6 members, not 6
    assert int(states[-1][0]) == int(jnp.max(res.n_iter))  # it follows the slowest member
    assert len(set(np.asarray(res.n_iter).tolist())) > 1  # members really stop at different times
    # one callback in the batched program (jax.debug.callback alone would be unrolled 6 times)
    jaxpr = str(jax.make_jaxpr(jax.vmap(lambda p: _fit(p, True)))(STARTS))
    assert jaxpr.count("debug_callback[") == 1


def test_no_callback_when_off():
    """Zero cost when off: the program has no callback at all (same for the batched program)."""
    assert "debug_callback" not in str(jax.make_jaxpr(lambda p: _fit(p, False))(P0))
    assert "debug_callback" not in str(jax.make_jaxpr(jax.vmap(lambda p: _fit(p, False)))(STARTS))
    assert "debug_callback" in str(jax.make_jaxpr(lambda p: _fit(p, True))(P0))


def test_gradient_passes_through_progress(capsys):
    """The reported values are stop_gradient-ed: d/dX through the unrolled fit is unchanged."""
    def loss(x, progress):
        r = jaxem.fit(MODEL, P0, x, max_iter=4, tol=0.0, progress=progress, adjoint="unrolled")
        return jnp.sum(r.params.means)

    g_on = jax.jit(jax.grad(loss), static_argnums=1)(jnp.asarray(X), True)
    g_off = jax.jit(jax.grad(loss), static_argnums=1)(jnp.asarray(X), False)
    jax.effects_barrier()
    assert "EM:" in capsys.readouterr().err
    np.testing.assert_allclose(g_on, g_off, rtol=1e-12)


def test_sklearn_verbose_uses_the_bar(capsys):
    from jaxem.sklearn import GaussianMixture

    est = GaussianMixture(1, covariance_type="diag", verbose=1).fit(X)  # K=1: no k-means compile
    n_bars, states = _bars(capsys.readouterr().err)
    assert n_bars == 1 and int(states[-1][0]) == est.n_iter_
