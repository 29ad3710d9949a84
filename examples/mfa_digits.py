"""A mixture of factor analysers on handwritten digits: each component's mean and leading factors.

Each component k of p(x) = Σ_k π_k N(μ_k, W_k W_kᵀ + Ψ_k) is a factor analyser: a mean image μ_k and
q "factor" images (the columns of W_k), the directions in which that component's digits vary (a
stroke's thickness, slant or position), plus a per-pixel noise Ψ_k. With K = 10 and q = 4 on
scikit-learn's 8x8 digits (64 pixels), a component has a sixth of the parameters of a
full-covariance Gaussian and, on held-out digits, the mixture has a higher log-likelihood than a
diagonal Gaussian mixture with the same K. The pixel intensities 0..16 are dequantized (plus
uniform noise in [0, 1)) so that a density on them is meaningful. Saves ``mfa_digits.png`` (or the
path given as the first argument) if matplotlib is installed.
"""

import sys

import jax
import numpy as np
from sklearn.datasets import load_digits

import jaxem

K, Q = 10, 4
rng = np.random.default_rng(0)
digits = load_digits()
X = (digits.data + rng.uniform(size=digits.data.shape)).astype(np.float32)  # dequantized
perm = rng.permutation(len(X))
train, test = X[perm[:1200]], X[perm[1200:]]

mfa = jaxem.MixtureOfFactorAnalyzers(n_components=K, n_factors=Q)
params = mfa.init(jax.random.key(0), train)  # k-means, then each cluster's PCA / FA solution
result = jaxem.fit(mfa, params, train, max_iter=300, tol=1e-4)
print(f"MFA: converged={bool(result.converged)} after {int(result.n_iter)} iterations, "
      f"status: {jaxem.describe_status(result.status)}")

gmm = jaxem.GaussianMixture(n_components=K, covariance_type="diag")
gmm_fit = jaxem.fit(gmm, gmm.init(jax.random.key(0), train), train, max_iter=300, tol=1e-4)

ll_mfa = float(mfa.score(result.params, test))  # mean held-out log-likelihood per digit
ll_gmm = float(gmm.score(gmm_fit.params, test))
print(f"held-out log-likelihood per digit: MFA (K={K}, q={Q}) {ll_mfa:.2f} > diagonal GMM "
      f"(K={K}) {ll_gmm:.2f}: {ll_mfa > ll_gmm}")
print(f"parameters: MFA {mfa.n_parameters(result.params)}, diagonal GMM "
      f"{gmm.n_parameters(gmm_fit.params)}, full GMM {K * (64 + 64 * 65 // 2) + K - 1}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot")
    sys.exit(0)

p = result.params
order = np.argsort(-np.asarray(p.weights))
fig, axes = plt.subplots(K, Q + 1, figsize=(1.3 * (Q + 1), 1.3 * K))
for row, k in zip(axes, order):
    row[0].imshow(np.asarray(p.means[k]).reshape(8, 8), cmap="gray_r")
    row[0].set_ylabel(f"π={float(p.weights[k]):.2f}", fontsize=8)
    W = np.asarray(p.loadings[k])
    W = W[:, np.argsort(-np.sum(W * W, 0))]  # factors by the variance they explain
    for j in range(Q):
        lim = np.abs(W[:, j]).max()
        row[j + 1].imshow(W[:, j].reshape(8, 8), cmap="RdBu", vmin=-lim, vmax=lim)
    for ax in row:
        ax.set_xticks([])
        ax.set_yticks([])
axes[0, 0].set_title("mean μ_k", fontsize=9)
for j in range(Q):
    axes[0, j + 1].set_title(f"factor {j + 1}", fontsize=9)
fig.suptitle("Mixture of factor analysers on 8x8 digits", fontsize=10)
fig.tight_layout()
out = sys.argv[1] if len(sys.argv) > 1 else "mfa_digits.png"
fig.savefig(out, dpi=100)
print(f"saved {out}")
