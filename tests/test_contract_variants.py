"""The contract of tests/test_contract.py run with and without `jax.jit` (`chex.variants`).

jaxem takes different routes for concrete and traced input (host-side checks and NumPy casts
eagerly; status codes and `jnp` under a trace), so the same call is checked both ways, on the
contract's shared problems (one small shape per family, compiled once), as optax and distrax test
their transformations.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

import jaxem
from test_contract import MAX_ITER, N_CONTRACT, NAMES, TOL, _problem


class ContractVariants(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_e_step_log_likelihood_and_score_samples_agree(self, name):
        model, X, w, p0 = _problem(name)
        w = np.random.default_rng(0).uniform(0.5, 2.0, N_CONTRACT)
        evaluate = lambda p, x, w: (model.log_likelihood(p, x, w), model.score_samples(p, x),
                                    model.e_step(p, x, w)[1])  # one program per variant
        ll, scores, e_ll = self.variant(evaluate)(p0, X, w)
        chex.assert_shape(scores, (N_CONTRACT,))
        chex.assert_type([ll, scores, e_ll], jnp.float64)
        # The weighted sum of the per-sample log-likelihoods, three routes (streamed, E-step,
        # per row); rounding of a 48-term sum.
        chex.assert_trees_all_close(ll, e_ll, jnp.dot(w, scores), rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("gmm_diag", "ppca")
    def test_fit_eager_equals_fit_in_a_jit(self, name):
        """The eager fit (host checks, jaxem's own compiled loop) and the fit inside a caller's
        jit (traced checks, status codes) are the same iterations."""
        model, X, w, p0 = _problem(name)
        fit = lambda p, x, w: jaxem.fit(model, p, x, weights=w, max_iter=MAX_ITER, tol=TOL)
        res = self.variant(fit)(p0, X, w)
        ref = _reference_fit(name)
        assert int(res.status) == 0 and int(res.n_iter) == int(ref.n_iter)
        chex.assert_trees_all_close(res.params, ref.params, rtol=1e-9, atol=1e-12)
        chex.assert_trees_all_equal_shapes_and_dtypes(res.params, p0)


_REFERENCE = {}


def _reference_fit(name):
    """EM iterated in plain Python, one `model.em_update` per iteration (no jaxem.fit), to the
    same stopping rule: the reference both variants must match."""
    if name not in _REFERENCE:
        model, X, w, p = _problem(name)
        X, w = jnp.asarray(X), jnp.asarray(w)
        step = jax.jit(model.em_update)
        prev, n = -np.inf, 0
        while n < MAX_ITER:
            new, ll_sum, _ = step(p, X, w)
            ll, n = float(ll_sum) / float(jnp.sum(w)), n + 1
            p = new
            if abs(ll - prev) < TOL:
                break
            prev = ll
        _REFERENCE[name] = jaxem.FitResult(p, None, n, True, None, 0)
    return _REFERENCE[name]
