"""`jaxem.hmmlearn`: hmmlearn's `hmm.GaussianHMM`, `hmm.CategoricalHMM` and `hmm.PoissonHMM`, fitted
by a compiled Baum-Welch loop in JAX. Swap one import::

    from hmmlearn import hmm          # before
    from jaxem import hmmlearn as hmm  # after

Same class names, constructor parameters and defaults, fitted attributes (``startprob_``,
``transmat_``, ``means_``, ``covars_`` / ``_covars_``, ``emissionprob_``, ``lambdas_``,
``n_features``, ``monitor_``) and methods (``fit(X, lengths)``, ``predict``, ``predict_proba``,
``score``, ``score_samples``, ``decode``, ``sample``, ``aic``, ``bic``, ``get_stationary_distribution``),
and the same iterates: from the same starting parameters a fit follows hmmlearn's M-step exactly
(MAP with its Dirichlet / normal / inverse-gamma / inverse-Wishart priors, ``covars_prior`` and
``covars_weight`` included, letters of ``params`` updated and the others held fixed, a zero entry
of ``startprob_`` / ``transmat_`` kept at zero) and stops on hmmlearn's rule (after the first
iteration whose gain in total log-likelihood is below ``tol``, or ``n_iter`` iterations). The
start is hmmlearn's too (``init_params`` letters drawn with NumPy from ``random_state``: Dirichlet
``startprob_`` / ``transmat_``, scikit-learn's k-means for ``means_``, the data covariance plus
``min_covar`` for ``covars_``; parameters set by the user before ``fit`` and whose letter is not in
``init_params`` are kept), so ``fit`` from the same ``random_state`` reaches hmmlearn's parameters
to rounding; ``sample`` draws with NumPy in hmmlearn's order (the same samples for the same seed).

The E-step is jaxem's forward-backward (`jaxem.GaussianHMM` etc.); the whole EM loop is one
compiled `jax.lax.while_loop` over all sequences at once (padded to a shape bucket, so refits of
similar data reuse the compiled program). Work is in float64 (hmmlearn's precision) inside a
scoped `jax.enable_x64` context; the global JAX configuration is not changed.

Differences from hmmlearn: ``implementation`` is accepted and ignored (jaxem's scaled
forward-backward with a log-space fallback is used for both: "scaling" never underflows here);
the convergence rule is evaluated inside the compiled loop, so a user subclass of
``ConvergenceMonitor`` replacing ``monitor_`` changes nothing but the reported ``converged``;
``verbose`` reports are printed after the loop; a state that receives no posterior mass keeps its
previous parameters (hmmlearn would produce NaN); a fit whose log-likelihood becomes non-finite
stops at the last finite parameters with a logged warning. `GMMHMM`, `MultinomialHMM` and the
variational models are not provided.

scikit-learn is required (hmmlearn's own dependency: k-means start, estimator base class).
``import jaxem`` never imports this module.
"""

from __future__ import annotations

import dataclasses
import logging
import string
import sys
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg
from sklearn import cluster
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from ._compile import compiled
from ._where import where
from .models.hmm import CategoricalHMM as _JCategorical
from .models.hmm import CategoricalHMMParams
from .models.hmm import GaussianHMM as _JGaussian
from .models.hmm import GaussianHMMParams
from .models.hmm import PoissonHMM as _JPoisson
from .models.hmm import PoissonHMMParams
from .models.hmm import HMMStatistics
from .models.hmm._inference import forward_backward, safe_log
from .models.hmm._inference import viterbi as _viterbi

__all__ = ["GaussianHMM", "CategoricalHMM", "PoissonHMM", "ConvergenceMonitor",
           "COVARIANCE_TYPES", "DECODER_ALGORITHMS"]

_log = logging.getLogger(__name__)
_INFERENCE = "sequential"  # on CPU the scan beats the associative scan here (T <= ~10^4)
#: Supported decoder algorithms (as hmmlearn.base).
DECODER_ALGORITHMS = frozenset(("viterbi", "map"))
COVARIANCE_TYPES = frozenset(("spherical", "diag", "full", "tied"))


class ConvergenceMonitor:
    """hmmlearn's convergence monitor: ``history`` (total log-likelihood at the parameters entering
    each iteration), ``iter`` (iterations run) and ``converged`` (``iter == n_iter`` or the last
    gain below ``tol``). `fit` fills it from the compiled loop's trace."""

    _template = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol, n_iter, verbose):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history = deque()
        self.iter = 0

    def __repr__(self):
        class_name = self.__class__.__name__
        params = sorted(dict(vars(self), history=list(self.history)).items())
        return ("{}(\n".format(class_name)
                + "".join(map("    {}={},\n".format, *zip(*params))) + ")")

    def _reset(self):
        self.iter = 0
        self.history.clear()

    def report(self, log_prob):
        """Record one iteration's log-likelihood (printed to stderr if ``verbose``)."""
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(self._template.format(iter=self.iter + 1, log_prob=log_prob, delta=delta),
                  file=sys.stderr)
        precision = np.finfo(float).eps ** (1 / 2)
        if self.history and (log_prob - self.history[-1]) < -precision:
            delta = log_prob - self.history[-1]
            _log.warning(f"Model is not converging.  Current: {log_prob} is not greater than "
                         f"{self.history[-1]}. Delta is {delta}")
        self.history.append(log_prob)
        self.iter += 1

    @property
    def converged(self):
        """Whether the EM algorithm converged."""
        return (self.iter == self.n_iter or
                (len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol))


# --- the compiled programs ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static description of a fit: the jaxem model used for the E-step, hmmlearn's family and
    covariance type, and the letters of ``params`` (updated; the others are held fixed)."""

    model: object
    family: str  # "gaussian" | "categorical" | "poisson"
    letters: str
    covariance_type: str = ""


def _m_step(spec: _Spec, st, p, prior):
    """hmmlearn's `_do_mstep` from jaxem's expected statistics (`HMMStatistics`)."""
    L = spec.letters
    new = {}
    if "s" in L:
        sp = jnp.maximum(prior["startprob"] - 1 + st.initial_counts, 0)
        sp = where(p.initial_probs == 0, 0.0, sp)
        new["initial_probs"] = sp / jnp.sum(sp)
    if "t" in L:
        tm = jnp.maximum(prior["transmat"] - 1 + st.transition_counts, 0)
        tm = where(p.transition_matrix == 0, 0.0, tm)
        row = jnp.sum(tm, 1, keepdims=True)
        new["transition_matrix"] = where(row > 0, tm / where(row > 0, row, 1.0),
                                         p.transition_matrix)
    em = st.emission
    if spec.family == "categorical" and "e" in L:
        e = jnp.maximum(prior["emissionprob"] - 1 + em, 0)
        row = jnp.sum(e, 1, keepdims=True)
        new["emission_probs"] = where(row > 0, e / where(row > 0, row, 1.0), p.emission_probs)
    if spec.family == "poisson" and "l" in L:
        post, obs = em
        n = jnp.sum(post)
        y_bar = obs / where(post > 0, post, 1.0)[:, None]
        lam = (prior["lambdas_prior"] + n * y_bar) / (prior["lambdas_weight"] + n)
        new["rates"] = where((post > 0)[:, None], lam, p.rates)
    if spec.family == "gaussian":
        new.update(_gaussian_m_step(spec, em, p, prior))
    return p._replace(**new)


def _gaussian_m_step(spec, em, p, prior):
    """hmmlearn's GaussianHMM M-step (Huang, Acero & Hon 2001, pp. 443-445), with the residual
    statistics about the current means (``em``: `GaussianMixtureStatistics`) in place of raw
    moments: Σγ(x - μ)(x - μ)ᵀ = S - d sᵀ - s dᵀ + N d dᵀ with d = μ - μ_old."""
    L, ct = spec.letters, spec.covariance_type
    n, sx, sxx = em.counts, em.sum_x, em.sum_xx
    mu_old = p.means
    mp, mw = prior["means_prior"], prior["means_weight"]
    out = {}
    mu = mu_old
    if "m" in L:
        obs = sx + n[:, None] * mu_old
        den = mw + n[:, None]
        mu = where(den > 0, (mw * mp + obs) / where(den > 0, den, 1.0), mu_old)
        out["means"] = mu
    if "c" in L:
        cp, cw = prior["covars_prior"], prior["covars_weight"]
        d = mu - mu_old
        md = mu - mp
        if ct in ("spherical", "diag"):
            c_n = mw * md ** 2 + sxx - 2 * d * sx + n[:, None] * d * d
            c_d = jnp.maximum(cw - 1, 0) + n[:, None]
            cov = (cp + c_n) / jnp.maximum(c_d, 1e-5)
            if ct == "spherical":
                cov = jnp.broadcast_to(jnp.mean(cov, 1, keepdims=True), cov.shape)
            out["covariances"] = cov
        else:
            D = mu.shape[1]
            outer = lambda a, b: a[:, :, None] * b[:, None, :]
            mw3 = mw if np.ndim(mw) == 0 else mw[..., None]
            c_n = mw3 * outer(md, md) + (
                sxx - outer(d, sx) - outer(sx, d) + n[:, None, None] * outer(d, d))
            cvw = jnp.maximum(cw - D, 0)
            if ct == "tied":
                tot = cvw + jnp.sum(n)
                cov = (cp + jnp.sum(c_n, 0)) / tot
                cov = jnp.broadcast_to(cov, c_n.shape)
                out["covariances"] = where(tot > 0, cov, p.covariances)
            else:
                den = cvw + n[:, None, None]
                cov = (cp + c_n) / where(den > 0, den, 1.0)
                out["covariances"] = where(den > 0, cov, p.covariances)
    return out


def _e_step(model, p, X, w):
    """Baum-Welch's expected statistics (`HMMStatistics`) by jaxem's normalised forward-backward
    (`forward_backward`, one `lax.scan` each way, vmapped over the sequences) and the family's
    emission statistics; also γ ``(S, T, K)``, log p(x_s) ``(S,)`` and the log-densities."""
    log_b = model._log_b(p, X)
    mask = w > 0
    gamma, xi, ll = jax.vmap(forward_backward, (None, None, 0, 0))(
        safe_log(p.initial_probs), p.transition_matrix, log_b, mask)
    gamma = where(mask[..., None], gamma, 0.0)
    ws = w[:, 0]
    S, T, D = X.shape
    rw = (gamma * w[..., None]).reshape(S * T, -1)
    st = HMMStatistics(
        initial_counts=ws @ gamma[:, 0],
        transition_counts=jnp.einsum("s,sjk->jk", ws, where(ws[:, None, None] > 0, xi, 0.0)),
        emission=model._emission_statistics(p, X.reshape(S * T, D), rw),
        log_likelihood=jnp.sum(where(ws > 0, ws * ll, 0.0)),
        total_weight=jnp.sum(w),
        n_invalid=jnp.zeros((), X.dtype))
    return st, gamma, ll, log_b


@compiled(static_argnames=("spec", "trace_len"))
def _fit_program(spec, params, prior, X, w, n_iter, tol, *, trace_len):
    """Baum-Welch with hmmlearn's M-step and stopping rule for at most ``n_iter`` iterations
    (traced): ``(params, trace, n_run, ok)``; ``trace[i]`` is the total log-likelihood at the
    parameters entering iteration i (so a run of one iteration scores the given parameters); a
    non-finite log-likelihood or update stops at the last finite parameters (``ok`` False)."""
    model = spec.model

    def cond(s):
        i, _, _, done, _ = s
        return (i < n_iter) & ~done

    def body(s):
        i, p, trace, _, _ = s
        st = _e_step(model, p, X, w)[0]
        ll = st.log_likelihood
        new = _m_step(spec, st, p, prior)
        ok = jnp.isfinite(ll) & jax.tree_util.tree_reduce(
            jnp.logical_and, jax.tree_util.tree_map(lambda a: jnp.all(jnp.isfinite(a)), new))
        trace = trace.at[i].set(ll)
        conv = (i >= 1) & (ll - trace[jnp.maximum(i - 1, 0)] < tol)
        p = jax.tree_util.tree_map(lambda a, b: where(ok, a, b), new, p)
        return i + 1, p, trace, conv | ~ok, ok

    init = (jnp.int32(0), params, jnp.full((trace_len,), jnp.nan, X.dtype), jnp.bool_(False),
            jnp.bool_(True))
    n_run, p, trace, _, ok = jax.lax.while_loop(cond, body, init)
    return p, trace, n_run, ok


@compiled(static_argnames=("model",))
def _infer_program(model, params, X, w):
    """At ``params``: γ ``(S, T, K)``, log p(x_s) ``(S,)``, the emission log-densities
    ``(S, T, K)``, the Viterbi paths ``(S, T)`` and their log-probabilities ``(S,)``."""
    _, gamma, ll, log_b = _e_step(model, params, X, w)
    path, score = _viterbi_paths(params, log_b, w > 0)
    return gamma, ll, log_b, path, score


def _viterbi_paths(params, log_b, mask):
    """Viterbi paths ``(S, T)`` (-1 on padding) and their log-probabilities ``(S,)``."""
    log_pi = safe_log(params.initial_probs)
    log_A = safe_log(params.transition_matrix)
    path = jax.vmap(_viterbi, (None, None, 0, 0))(log_pi, log_A, log_b, mask)
    z = jnp.maximum(path, 0)
    lb = jnp.take_along_axis(log_b, z[..., None], -1)[..., 0]
    la = log_A[z[:, :-1], z[:, 1:]]
    score = (log_pi[z[:, 0]] + jnp.sum(where(mask, lb, 0.0), 1)
             + jnp.sum(where(mask[:, 1:], la, 0.0), 1))
    return path.astype(jnp.int32), score


# --- data layout ----------------------------------------------------------------------------------
def _bucket(n: int, lo: int, pow2_upto: int) -> int:
    """Padded size: >= lo; a power of two up to ``pow2_upto`` (few distinct shapes, hence few
    compiles, for small data); beyond, a multiple of 2^(bits(n) - 4) (<= 1/8 extra work)."""
    if n <= lo:
        return lo
    if n <= pow2_upto:
        return 1 << (n - 1).bit_length()
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


def _split_lengths(X, lengths):
    if lengths is None:
        return np.asarray([len(X)])
    lengths = np.asarray(lengths, dtype=int).reshape(-1)
    if lengths.sum() != len(X):
        raise ValueError(f"lengths array {lengths} doesn't sum to {len(X)} samples")
    if np.any(lengths < 1):
        raise ValueError(f"lengths must be positive, got {lengths}")
    return lengths


def _to_sequences(X, lengths):
    """Concatenated ``(n_samples, D)`` -> padded ``(S', T', D)`` float64 and frame weights
    ``(S', T')`` (1 on real frames), with S' and T' rounded up to buckets."""
    lengths = _split_lengths(X, lengths)
    S, T = len(lengths), int(lengths.max())
    Sp, Tp = _bucket(S, 1, 64), _bucket(T, 16, 256)
    D = X.shape[1]
    Xs = np.zeros((Sp, Tp, D))
    w = np.zeros((Sp, Tp))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for s, (a, n) in enumerate(zip(starts, lengths)):
        Xs[s, :n] = X[a:a + n]
        w[s, :n] = 1.0
    return Xs, w, lengths


def _unpad(arr, lengths):
    """``(S', T', ...)`` -> concatenated ``(n_samples, ...)``."""
    return np.concatenate([arr[s, :n] for s, n in enumerate(lengths)])


def _x64():
    return jax.enable_x64(True)


def _normalize(a, axis=None):
    a = np.array(a, dtype=float)
    s = a.sum(axis)
    if axis and a.ndim > 1:
        s[s == 0] = 1
        s = np.expand_dims(s, axis)
    return a / s


# --- the estimators -----------------------------------------------------------------------------
class BaseHMM(BaseEstimator):
    """The hmmlearn `BaseHMM` surface over jaxem's Baum-Welch (see the module docstring)."""

    _family = ""
    _emission_letters = ""

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0,
                 algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False,
                 params=string.ascii_letters, init_params=string.ascii_letters,
                 implementation="log"):
        self.n_components = n_components
        self.params = params
        self.init_params = init_params
        self.algorithm = algorithm
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.implementation = implementation
        self.random_state = random_state
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

    # --- family hooks ---------------------------------------------------------------------------
    def _jax_model(self):
        raise NotImplementedError

    def _jax_params(self):
        raise NotImplementedError

    def _set_from_jax(self, p):
        raise NotImplementedError

    def _emission_prior(self):
        return {}

    def _frames(self, X):
        """Validated ``X`` as float frames ``(n_samples, D)``."""
        return np.asarray(X, dtype=float)

    def _get_n_fit_scalars_per_param(self):
        raise NotImplementedError

    def _generate_sample_from_state(self, state, random_state):
        return ()

    # --- hmmlearn's checks and initialisation ---------------------------------------------------
    def _needs_init(self, code, name):
        if code in self.init_params:
            if hasattr(self, name):
                _log.warning(
                    "Even though the %r attribute is set, it will be overwritten during "
                    "initialization because 'init_params' contains %r", name, code)
            return True
        if not hasattr(self, name):
            return True
        return False

    def _check_and_set_n_features(self, X):
        _, n_features = X.shape
        if hasattr(self, "n_features"):
            if self.n_features != n_features:
                raise ValueError(f"Unexpected number of dimensions, got {n_features} but "
                                 f"expected {self.n_features}")
        else:
            self.n_features = n_features

    def _check_sum_1(self, name):
        s = getattr(self, name).sum(axis=-1)
        if not np.allclose(s, 1):
            raise ValueError(
                f"{name} must sum to 1 (got {s:.4f})" if s.ndim == 0
                else f"{name} rows must sum to 1 (got row sums of {s})" if s.ndim == 1
                else "Expected 1D or 2D array")

    def _check(self):
        """Validate the parameters (ValueError naming the attribute)."""
        self.startprob_ = np.asarray(self.startprob_, dtype=float)
        if len(self.startprob_) != self.n_components:
            raise ValueError("startprob_ must have length n_components")
        self._check_sum_1("startprob_")
        self.transmat_ = np.asarray(self.transmat_, dtype=float)
        if self.transmat_.shape != (self.n_components, self.n_components):
            raise ValueError("transmat_ must have shape (n_components, n_components)")
        self._check_sum_1("transmat_")

    def _init(self, X, lengths=None):
        """hmmlearn's start: Dirichlet(1/K) ``startprob_`` and rows of ``transmat_`` drawn from
        ``random_state`` for the letters of ``init_params`` (or when unset)."""
        self._check_and_set_n_features(X)
        init = 1. / self.n_components
        random_state = check_random_state(self.random_state)
        if self._needs_init("s", "startprob_"):
            self.startprob_ = random_state.dirichlet(np.full(self.n_components, init))
        if self._needs_init("t", "transmat_"):
            self.transmat_ = random_state.dirichlet(np.full(self.n_components, init),
                                                    size=self.n_components)
        per = self._get_n_fit_scalars_per_param()
        if per is not None:
            n_fit_scalars = sum(per[p] for p in self.params if p in per)
            if X.size < n_fit_scalars:
                _log.warning(
                    "Fitting a model with %d free scalar parameters with only %d data points "
                    "will result in a degenerate solution.", n_fit_scalars, X.size)

    # --- fitting --------------------------------------------------------------------------------
    def fit(self, X, lengths=None):
        """Estimate the parameters by Baum-Welch (hmmlearn's start, M-step and stopping rule);
        ``lengths`` gives the lengths of the sequences concatenated in ``X``. Returns ``self``."""
        X = check_array(X)
        if lengths is None:
            lengths = np.asarray([X.shape[0]])
        self._init(X, lengths)
        self._check()
        self._check_input(X)
        self.monitor_._reset()
        n_iter = int(self.n_iter)
        if n_iter <= 0:
            return self
        Xs, w, _ = _to_sequences(self._frames(X), lengths)
        p, trace, n_run, ok = self._run(Xs, w, n_iter)
        self._set_from_jax(p)
        for ll in trace[:n_run]:
            self.monitor_.report(float(ll))
            if self.monitor_.converged:
                break
        if not ok:
            _log.warning("The log-likelihood or the parameters became non-finite at iteration "
                         "%d; the fit stopped at the last finite parameters.", n_run)
        if (self.transmat_.sum(axis=1) == 0).any():
            _log.warning("Some rows of transmat_ have zero sum because no transition from the "
                         "state was ever observed.")
        return self

    def _spec(self):
        return _Spec(self._jax_model(), self._family, "".join(sorted(set(self.params))),
                     getattr(self, "covariance_type", ""))

    def _run(self, Xs, w, n_iter):
        """`_fit_program` on padded data, in float64: ``(params, trace, n_run, ok)`` (NumPy)."""
        prior = {"startprob": np.asarray(self.startprob_prior, float),
                 "transmat": np.asarray(self.transmat_prior, float), **self._emission_prior()}
        trace_len = max(16, 1 << (max(int(self.n_iter), 1) - 1).bit_length())
        with _x64():
            out = _fit_program(self._spec(), self._jax_params(), prior, Xs, w, n_iter,
                               float(self.monitor_.tol), trace_len=trace_len)
            p, trace, n_run, ok = jax.tree_util.tree_map(np.asarray, out)
        return p, trace, int(n_run), bool(ok)

    def _infer(self, X, lengths):
        """``(gamma, log p(x_s), log_b, paths, path log-probs, lengths)`` at the current
        parameters (padded arrays; the first ``len(lengths)`` sequences are real)."""
        Xs, w, lengths = self._prepare(X, lengths)
        with _x64():
            out = _infer_program(self._jax_model(), self._jax_params(), Xs, w)
            out = tuple(np.asarray(a) for a in out)
        return out + (lengths,)

    # --- inference ------------------------------------------------------------------------------
    def _prepare(self, X, lengths):
        check_is_fitted(self, "startprob_")
        self._check()
        X = check_array(X)
        self._check_input(X)
        return _to_sequences(self._frames(X), lengths)

    def _check_input(self, X):
        pass

    def _score(self, X, lengths=None, *, compute_posteriors):
        gamma, ll, _, _, _, lengths = self._infer(X, lengths)
        log_prob = float(np.sum(ll[:len(lengths)]))
        post = _unpad(gamma, lengths) if compute_posteriors else np.empty((0, self.n_components))
        return log_prob, post

    def score_samples(self, X, lengths=None):
        """``(log p(X), posteriors (n_samples, n_components))``."""
        return self._score(X, lengths, compute_posteriors=True)

    def score(self, X, lengths=None):
        """Total log-likelihood log p(X) of all the sequences."""
        # trace[0] of a one-iteration run of the fit program (compiled once for fit and score).
        Xs, w, _ = self._prepare(X, lengths)
        return float(self._run(Xs, w, 1)[1][0])

    def _compute_log_likelihood(self, X):
        """``(n_samples, n_components)`` emission log-densities log p(x_t | state)."""
        Xs, w, lengths = _to_sequences(self._frames(check_array(X)), None)
        with _x64():
            log_b = _infer_program(self._jax_model(), self._jax_params(), Xs, w)[2]
            return _unpad(np.asarray(log_b), lengths)

    def decode(self, X, lengths=None, algorithm=None):
        """``(log_prob, state_sequence)`` by Viterbi (log-probability of the best path) or
        "map" (the per-step most probable states; log_prob is hmmlearn's Σ_t max_k γ_t(k))."""
        check_is_fitted(self, "startprob_")
        self._check()
        algorithm = algorithm or self.algorithm
        if algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"Unknown decoder {algorithm!r}")
        if algorithm == "map":
            _, post = self.score_samples(X, lengths)
            return np.max(post, axis=1).sum(), np.argmax(post, axis=1)
        _, _, _, path, score, lengths = self._infer(X, lengths)
        return float(score[:len(lengths)].sum()), _unpad(path, lengths).astype(int)

    def predict(self, X, lengths=None):
        """Most likely state sequence (by ``algorithm``)."""
        return self.decode(X, lengths)[1]

    def predict_proba(self, X, lengths=None):
        """``(n_samples, n_components)`` posterior state probabilities."""
        return self.score_samples(X, lengths)[1]

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """``(X, state_sequence)`` drawn with NumPy in hmmlearn's order (identical draws for the
        same ``random_state``)."""
        check_is_fitted(self, "startprob_")
        self._check()
        if random_state is None:
            random_state = self.random_state
        random_state = check_random_state(random_state)
        transmat_cdf = np.cumsum(self.transmat_, axis=1)
        if currstate is None:
            startprob_cdf = np.cumsum(self.startprob_)
            currstate = (startprob_cdf > random_state.rand()).argmax()
        state_sequence = [currstate]
        X = [self._generate_sample_from_state(currstate, random_state=random_state)]
        for _ in range(n_samples - 1):
            currstate = (transmat_cdf[currstate] > random_state.rand()).argmax()
            state_sequence.append(currstate)
            X.append(self._generate_sample_from_state(currstate, random_state=random_state))
        return np.atleast_2d(X), np.array(state_sequence, dtype=int)

    def get_stationary_distribution(self):
        """The stationary distribution of the states (left eigenvector of ``transmat_``)."""
        check_is_fitted(self, "transmat_")
        eigvals, eigvecs = linalg.eig(self.transmat_.T)
        eigvec = np.real_if_close(eigvecs[:, np.argmax(eigvals)])
        return eigvec / eigvec.sum()

    def aic(self, X, lengths=None):
        """-2 log L + 2 (number of free scalar parameters); lower is better."""
        n_params = sum(self._get_n_fit_scalars_per_param().values())
        return -2 * self.score(X, lengths=lengths) + 2 * n_params

    def bic(self, X, lengths=None):
        """-2 log L + (number of free scalar parameters) log(n_samples); lower is better."""
        n_params = sum(self._get_n_fit_scalars_per_param().values())
        return -2 * self.score(X, lengths=lengths) + n_params * np.log(len(X))


def _validate_covars(covars, covariance_type, n_components):
    """hmmlearn's (scikit-learn 0.19's) covariance checks."""
    if covariance_type == "spherical":
        if len(covars) != n_components:
            raise ValueError("'spherical' covars have length n_components")
        elif np.any(covars <= 0):
            raise ValueError("'spherical' covars must be positive")
    elif covariance_type == "tied":
        if covars.shape[0] != covars.shape[1]:
            raise ValueError("'tied' covars must have shape (n_dim, n_dim)")
        elif not np.allclose(covars, covars.T) or np.any(linalg.eigvalsh(covars) <= 0):
            raise ValueError("'tied' covars must be symmetric, positive-definite")
    elif covariance_type == "diag":
        if len(covars.shape) != 2:
            raise ValueError("'diag' covars must have shape (n_components, n_dim)")
        elif np.any(covars <= 0):
            raise ValueError("'diag' covars must be positive")
    elif covariance_type == "full":
        if len(covars.shape) != 3 or covars.shape[1] != covars.shape[2]:
            raise ValueError("'full' covars must have shape (n_components, n_dim, n_dim)")
        for n, cv in enumerate(covars):
            if not np.allclose(cv, cv.T) or np.any(linalg.eigvalsh(cv) <= 0):
                raise ValueError("component %d of 'full' covars must be symmetric, "
                                 "positive-definite" % n)
    else:
        raise ValueError("covariance_type must be one of 'spherical', 'tied', 'diag', 'full'")


def _fill_covars(covars, covariance_type="full", n_components=1, n_features=1):
    if covariance_type == "full":
        return covars
    elif covariance_type == "diag":
        return np.array(list(map(np.diag, covars)))
    elif covariance_type == "tied":
        return np.tile(covars, (n_components, 1, 1))
    elif covariance_type == "spherical":
        covars = np.ravel(covars)
        return np.eye(n_features)[None] * covars[:, None, None]


def _distribute_covar(tied_cv, covariance_type, n_components):
    if covariance_type == "spherical":
        return np.tile(tied_cv.mean() * np.ones(tied_cv.shape[1]), (n_components, 1))
    elif covariance_type == "tied":
        return tied_cv
    elif covariance_type == "diag":
        return np.tile(np.diag(tied_cv), (n_components, 1))
    elif covariance_type == "full":
        return np.tile(tied_cv, (n_components, 1, 1))
    raise ValueError("covariance_type must be one of 'spherical', 'tied', 'diag', 'full'")


class GaussianHMM(BaseHMM):
    """Hidden Markov model with Gaussian emissions: hmmlearn's `hmm.GaussianHMM` (parameters,
    defaults, attributes, iterates), fitted by jaxem.

    ``covars_`` returns full ``(n_components, n_features, n_features)`` matrices for every
    ``covariance_type``; ``_covars_`` holds hmmlearn's compact layout (spherical ``(K,)`` as set
    or ``(K, D)`` after a fit, diag ``(K, D)``, full ``(K, D, D)``, tied ``(D, D)``).

    Example:
      >>> import numpy as np
      >>> from jaxem import hmmlearn as hmm
      >>> X = np.concatenate([np.random.default_rng(0).normal(m, 1, (50, 2)) for m in (0, 5)])
      >>> model = hmm.GaussianHMM(n_components=2, random_state=0).fit(X)
      >>> states = model.predict(X)
    """

    _family = "gaussian"

    def __init__(self, n_components=1, covariance_type="diag", min_covar=1e-3,
                 startprob_prior=1.0, transmat_prior=1.0, means_prior=0, means_weight=0,
                 covars_prior=1e-2, covars_weight=1, algorithm="viterbi", random_state=None,
                 n_iter=10, tol=1e-2, verbose=False, params="stmc", init_params="stmc",
                 implementation="log"):
        super().__init__(n_components, startprob_prior=startprob_prior,
                         transmat_prior=transmat_prior, algorithm=algorithm,
                         random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation)
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight

    @property
    def covars_(self):
        """Covariances as full matrices ``(n_components, n_features, n_features)``."""
        return _fill_covars(self._covars_, self.covariance_type, self.n_components,
                            self.n_features)

    @covars_.setter
    def covars_(self, covars):
        covars = np.array(covars, copy=True)
        _validate_covars(covars, self.covariance_type, self.n_components)
        self._covars_ = covars

    def _get_n_fit_scalars_per_param(self):
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "m": nc * nf,
                "c": {"spherical": nc, "diag": nc * nf, "full": nc * nf * (nf + 1) // 2,
                      "tied": nf * (nf + 1) // 2}[self.covariance_type]}

    def _init(self, X, lengths=None):
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {sorted(COVARIANCE_TYPES)}, got "
                             f"{self.covariance_type!r}")
        super()._init(X, lengths)
        if self._needs_init("m", "means_"):
            kmeans = cluster.KMeans(n_clusters=self.n_components,
                                    random_state=self.random_state, n_init=10)
            kmeans.fit(X)
            self.means_ = kmeans.cluster_centers_
        if self._needs_init("c", "covars_"):
            cv = np.cov(X.T) + self.min_covar * np.eye(X.shape[1])
            if not cv.shape:
                cv.shape = (1, 1)
            self.covars_ = _distribute_covar(cv, self.covariance_type, self.n_components).copy()

    def _check(self):
        super()._check()
        self.means_ = np.asarray(self.means_)
        self.n_features = self.means_.shape[1]
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}")

    def _check_input(self, X):
        if X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[1]} features but the model has n_features = "
                             f"{self.n_features}.")

    def _jax_model(self):
        # tied -> per-state full statistics (hmmlearn sums them); spherical -> diag (hmmlearn's
        # fitted spherical covariances are (K, D) rows of equal values).
        ct = {"tied": "full", "spherical": "diag"}.get(self.covariance_type, self.covariance_type)
        return _JGaussian(self.n_components, ct, 0.0, inference=_INFERENCE)

    def _jax_params(self):
        K, D = self.n_components, self.means_.shape[1]
        cv, ct = np.asarray(self._covars_, float), self.covariance_type
        if ct == "spherical":
            cv = cv.reshape(K, -1)
            cv = np.broadcast_to(cv, (K, D)) if cv.shape[1] in (1, D) else cv
        elif ct == "tied":
            cv = np.broadcast_to(cv, (K, D, D))
        return GaussianHMMParams(np.asarray(self.startprob_, float),
                                 np.asarray(self.transmat_, float),
                                 np.asarray(self.means_, float), np.array(cv))

    def _set_from_jax(self, p):
        self.startprob_, self.transmat_ = np.array(p.initial_probs), np.array(p.transition_matrix)
        if "m" in self.params:
            self.means_ = np.array(p.means)
        if "c" in self.params:
            cv = np.array(p.covariances)
            self._covars_ = cv[0].copy() if self.covariance_type == "tied" else cv

    def _emission_prior(self):
        """hmmlearn's priors as arrays; a per-state ``(n_components,)`` weight is read per state
        (hmmlearn's docstring; its arithmetic broadcasts such an array along the features)."""
        f = lambda a: np.asarray(a, float)
        mw, cw = f(self.means_weight), f(self.covars_weight)
        full = self.covariance_type in ("full", "tied")
        if mw.ndim == 1:
            mw = mw[:, None]
        if cw.ndim == 1:
            cw = cw[:, None, None] if full else cw[:, None]
        return {"means_prior": f(self.means_prior), "means_weight": mw,
                "covars_prior": f(self.covars_prior), "covars_weight": cw}

    def _generate_sample_from_state(self, state, random_state):
        return random_state.multivariate_normal(self.means_[state], self.covars_[state])


class CategoricalHMM(BaseHMM):
    """Hidden Markov model with categorical emissions: hmmlearn's `hmm.CategoricalHMM`.

    ``X`` is an integer array ``(n_samples, 1)`` of symbols 0..n_features-1.

    Example:
      >>> import numpy as np
      >>> from jaxem import hmmlearn as hmm
      >>> X = np.random.default_rng(0).integers(0, 3, (200, 1))
      >>> model = hmm.CategoricalHMM(n_components=2, random_state=0).fit(X)
      >>> model.emissionprob_.shape
      (2, 3)
    """

    _family = "categorical"

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, *,
                 emissionprob_prior=1.0, n_features=None, algorithm="viterbi",
                 random_state=None, n_iter=10, tol=1e-2, verbose=False, params="ste",
                 init_params="ste", implementation="log"):
        super().__init__(n_components, startprob_prior=startprob_prior,
                         transmat_prior=transmat_prior, algorithm=algorithm,
                         random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation)
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features

    def _check_and_set_n_features(self, X):
        if not np.issubdtype(X.dtype, np.integer):
            raise ValueError("Symbols should be integers")
        if X.min() < 0:
            raise ValueError("Symbols should be nonnegative")
        if self.n_features is not None:
            if self.n_features - 1 < X.max():
                raise ValueError(f"Largest symbol is {X.max()} but the model only emits "
                                 f"symbols up to {self.n_features - 1}")
        else:
            self.n_features = X.max() + 1

    def _check_input(self, X):
        X = np.asarray(X)
        if not np.all(X == np.round(X)) or X.min() < 0 or X.max() >= self.n_features:
            raise ValueError(f"X must hold integer symbols in [0, {self.n_features}) "
                             "(n_features).")

    def _frames(self, X):
        X = np.asarray(X)
        if X.shape[1] != 1:  # hmmlearn: deprecated, read as one column
            X = np.concatenate(X)[:, None]
        return X.astype(float)

    def _get_n_fit_scalars_per_param(self):
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "e": nc * (nf - 1)}

    def _init(self, X, lengths=None):
        super()._init(X, lengths)
        self.random_state = check_random_state(self.random_state)
        if self._needs_init("e", "emissionprob_"):
            self.emissionprob_ = _normalize(
                self.random_state.rand(self.n_components, self.n_features), axis=1)

    def _check(self):
        super()._check()
        self.emissionprob_ = np.atleast_2d(self.emissionprob_)
        if self.n_features is None:
            self.n_features = self.emissionprob_.shape[1]
        if self.emissionprob_.shape != (self.n_components, self.n_features):
            raise ValueError(f"emissionprob_ must have shape({self.n_components}, "
                             f"{self.n_features})")
        self._check_sum_1("emissionprob_")

    def _jax_model(self):
        return _JCategorical(self.n_components, int(self.n_features), inference=_INFERENCE)

    def _jax_params(self):
        return CategoricalHMMParams(np.asarray(self.startprob_, float),
                                    np.asarray(self.transmat_, float),
                                    np.asarray(self.emissionprob_, float))

    def _set_from_jax(self, p):
        self.startprob_, self.transmat_ = np.array(p.initial_probs), np.array(p.transition_matrix)
        if "e" in self.params:
            self.emissionprob_ = np.array(p.emission_probs)

    def _emission_prior(self):
        return {"emissionprob": np.asarray(self.emissionprob_prior, float)}

    def _generate_sample_from_state(self, state, random_state=None):
        cdf = np.cumsum(self.emissionprob_[state, :])
        random_state = check_random_state(random_state)
        return [(cdf > random_state.rand()).argmax()]


class PoissonHMM(BaseHMM):
    """Hidden Markov model with independent Poisson emissions per feature: hmmlearn's
    `hmm.PoissonHMM` (``lambdas_`` (n_components, n_features); gamma prior ``lambdas_prior``,
    ``lambdas_weight`` in hmmlearn's form).

    Example:
      >>> import numpy as np
      >>> from jaxem import hmmlearn as hmm
      >>> X = np.random.default_rng(0).poisson(3.0, (200, 2))
      >>> model = hmm.PoissonHMM(n_components=2, random_state=0).fit(X)
      >>> model.lambdas_.shape
      (2, 2)
    """

    _family = "poisson"

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0,
                 lambdas_prior=0.0, lambdas_weight=0.0, algorithm="viterbi", random_state=None,
                 n_iter=10, tol=1e-2, verbose=False, params="stl", init_params="stl",
                 implementation="log"):
        super().__init__(n_components, startprob_prior=startprob_prior,
                         transmat_prior=transmat_prior, algorithm=algorithm,
                         random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation)
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight

    def _get_n_fit_scalars_per_param(self):
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "l": nc * nf}

    def _init(self, X, lengths=None):
        super()._init(X, lengths)
        self.random_state = check_random_state(self.random_state)
        mean_X, var_X = X.mean(), X.var()
        if self._needs_init("l", "lambdas_"):
            self.lambdas_ = self.random_state.gamma(
                shape=mean_X ** 2 / var_X, scale=var_X / mean_X,
                size=(self.n_components, self.n_features))

    def _check(self):
        super()._check()
        self.lambdas_ = np.atleast_2d(self.lambdas_)
        n_features = getattr(self, "n_features", self.lambdas_.shape[1])
        if self.lambdas_.shape != (self.n_components, n_features):
            raise ValueError("lambdas_ must have shape (n_components, n_features)")
        self.n_features = n_features

    def _check_input(self, X):
        if X.shape[1] != self.n_features or np.any(np.asarray(X) < 0):
            raise ValueError(f"X must hold non-negative counts with n_features = "
                             f"{self.n_features} columns.")

    def _jax_model(self):
        return _JPoisson(self.n_components, inference=_INFERENCE)

    def _jax_params(self):
        return PoissonHMMParams(np.asarray(self.startprob_, float),
                                np.asarray(self.transmat_, float),
                                np.asarray(self.lambdas_, float))

    def _set_from_jax(self, p):
        self.startprob_, self.transmat_ = np.array(p.initial_probs), np.array(p.transition_matrix)
        if "l" in self.params:
            self.lambdas_ = np.array(p.rates)

    def _emission_prior(self):
        f = lambda a: np.asarray(a, float)
        return {"lambdas_prior": f(self.lambdas_prior), "lambdas_weight": f(self.lambdas_weight)}

    def _generate_sample_from_state(self, state, random_state):
        return random_state.poisson(self.lambdas_[state])
