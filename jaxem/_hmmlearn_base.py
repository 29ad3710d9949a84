"""The hmmlearn-style estimator base of `jaxem.hmmlearn`: hmmlearn's ``BaseHMM`` (validation,
``params`` / ``init_params`` letters, fit / score / decode / sample around the compiled programs of
`jaxem._hmmlearn_em`) and its ``ConvergenceMonitor``. The emission families are in
`jaxem.hmmlearn`."""

from __future__ import annotations

import logging
import string
import sys
from collections import deque

import jax
import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from ._hmmlearn_em import _fit_program, _infer_program, _Spec, _to_sequences, _unpad, _x64

_log = logging.getLogger(__name__)
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

    # The family's jaxem params type and its emission fields: (attribute, params field, letter).
    _params_type = None
    _emission_attrs = ()

    def _jax_emission(self):
        return [np.asarray(getattr(self, attr), float) for attr, _, _ in self._emission_attrs]

    def _jax_params(self):
        """The estimator's attributes as the jaxem model's params."""
        return self._params_type(np.asarray(self.startprob_, float),
                                 np.asarray(self.transmat_, float), *self._jax_emission())

    def _set_from_jax(self, p):
        """Fitted jaxem params back into the attributes (emission fields whose letter is in
        ``params``; the others were held fixed)."""
        self.startprob_, self.transmat_ = np.array(p.initial_probs), np.array(p.transition_matrix)
        for attr, field, letter in self._emission_attrs:
            if letter in self.params:
                setattr(self, attr, np.array(getattr(p, field)))

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
