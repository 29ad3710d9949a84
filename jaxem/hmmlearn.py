"""`jaxem.hmmlearn`: hmmlearn's `hmm.GaussianHMM`, `hmm.CategoricalHMM` and `hmm.PoissonHMM`, fitted
by a compiled Baum-Welch loop in JAX. Swap one import::

    from hmmlearn import hmm          # before
    from jaxem import hmmlearn as hmm  # after

Same class names, constructor parameters and defaults, fitted attributes (``startprob_``,
``transmat_``, ``means_``, ``covars_`` / ``_covars_``, ``emissionprob_``, ``lambdas_``,
``n_features``, ``monitor_``) and methods (``fit(X, lengths)``, ``predict``, ``predict_proba``,
``score``, ``score_samples``, ``decode``, ``sample``, ``aic``, ``bic``,
``get_stationary_distribution``), and the same iterates: from the same starting parameters a fit
follows hmmlearn's M-step exactly (MAP with its Dirichlet / normal / inverse-gamma / inverse-Wishart
priors, ``covars_prior`` and ``covars_weight`` included, letters of ``params`` updated and the
others held fixed, a zero entry of ``startprob_`` / ``transmat_`` kept at zero) and stops on
hmmlearn's rule (after the first iteration whose gain in total log-likelihood is below ``tol``, or
``n_iter`` iterations). The start is hmmlearn's too (``init_params`` letters drawn with NumPy from
``random_state``: Dirichlet ``startprob_`` / ``transmat_``, scikit-learn's k-means for ``means_``,
the data covariance plus ``min_covar`` for ``covars_``; parameters set by the user before ``fit``
and whose letter is not in ``init_params`` are kept), so ``fit`` from the same ``random_state``
reaches hmmlearn's parameters to rounding; ``sample`` draws with NumPy in hmmlearn's order (the same
samples for the same seed).

The E-step is jaxem's forward-backward (`jaxem.GaussianHMM` etc.); the whole EM loop is one
compiled `jax.lax.while_loop` over all sequences at once (padded to a shape bucket, so refits of
similar data reuse the compiled program). Work is in float64 (hmmlearn's precision) inside a
scoped `jax.enable_x64` context; the global JAX configuration is not changed.

Differences from hmmlearn: ``implementation`` is accepted and ignored (jaxem's normalised
forward-backward is used for both, and it does not underflow: hmmlearn's "scaling" raises on an
extreme outlier, this does not); the convergence rule is evaluated inside the compiled loop, so a
user subclass of ``ConvergenceMonitor`` replacing ``monitor_`` changes nothing but the reported
``converged``; ``verbose`` reports are printed after the loop; a state with no posterior mass keeps
its mean, Poisson rates (and full/tied covariance) where hmmlearn divides by zero, and a row of
``transmat_`` / ``emissionprob_`` with no counts keeps its values where hmmlearn leaves zeros; a fit
whose log-likelihood or parameters become non-finite stops at the last finite parameters with a
logged warning. Array-valued ``means_weight`` / ``covars_weight`` of shape ``(n_components,)`` are
read per state. `GMMHMM`, `MultinomialHMM` and the variational models are not provided.

scikit-learn is required (hmmlearn's own dependency: k-means start, estimator base class).
``import jaxem`` never imports this module.
"""


from __future__ import annotations

import numpy as np
from scipy import linalg
from sklearn import cluster
from sklearn.utils import check_random_state

from ._hmmlearn_base import COVARIANCE_TYPES as COVARIANCE_TYPES
from ._hmmlearn_base import DECODER_ALGORITHMS as DECODER_ALGORITHMS
from ._hmmlearn_base import BaseHMM as BaseHMM
from ._hmmlearn_base import ConvergenceMonitor as ConvergenceMonitor
from ._hmmlearn_em import _normalize
from .models.hmm import CategoricalHMM as _JCategorical
from .models.hmm import CategoricalHMMParams
from .models.hmm import GaussianHMM as _JGaussian
from .models.hmm import GaussianHMMParams
from .models.hmm import PoissonHMM as _JPoisson
from .models.hmm import PoissonHMMParams

__all__ = ["GaussianHMM", "CategoricalHMM", "PoissonHMM", "ConvergenceMonitor",
           "COVARIANCE_TYPES", "DECODER_ALGORITHMS"]


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
        return _JGaussian(self.n_components, ct, 0.0)

    _params_type = GaussianHMMParams
    _emission_attrs = (("means_", "means", "m"),)  # covariances: their own layout, below

    def _jax_emission(self):
        K, D = self.n_components, self.means_.shape[1]
        cv, ct = np.asarray(self._covars_, float), self.covariance_type
        if ct == "spherical":
            cv = cv.reshape(K, -1)
            cv = np.broadcast_to(cv, (K, D)) if cv.shape[1] in (1, D) else cv
        elif ct == "tied":
            cv = np.broadcast_to(cv, (K, D, D))
        return super()._jax_emission() + [np.array(cv)]

    def _set_from_jax(self, p):
        super()._set_from_jax(p)
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
        return _JCategorical(self.n_components, int(self.n_features))

    _params_type = CategoricalHMMParams
    _emission_attrs = (("emissionprob_", "emission_probs", "e"),)

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
        return _JPoisson(self.n_components)

    _params_type = PoissonHMMParams
    _emission_attrs = (("lambdas_", "rates", "l"),)

    def _emission_prior(self):
        f = lambda a: np.asarray(a, float)
        return {"lambdas_prior": f(self.lambdas_prior), "lambdas_weight": f(self.lambdas_weight)}

    def _generate_sample_from_state(self, state, random_state):
        return random_state.poisson(self.lambdas_[state])
