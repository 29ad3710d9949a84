"""A 2-D Gaussian mixture fitted with jaxem.sklearn.GaussianMixture, drawn with covariance ellipses.

    python examples/gmm_ellipses.py        # writes gmm_ellipses.png (or the path given as argv[1])
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from jaxem.sklearn import GaussianMixture  # noqa: E402

rng = np.random.default_rng(0)
centers = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
shapes = [np.array([[1.2, 0.0], [0.8, 0.5]]), np.eye(2) * 0.7, np.array([[0.4, 0.0], [-0.6, 1.3]])]
X = np.concatenate([c + rng.normal(size=(250, 2)) @ S for c, S in zip(centers, shapes)])

gmm = GaussianMixture(3, covariance_type="full", n_init=4, random_state=0).fit(X)
labels = gmm.predict(X)
print(f"converged={gmm.converged_} n_iter={gmm.n_iter_} mean log-likelihood={gmm.score(X):.4f}")
nearest = np.linalg.norm(gmm.means_[:, None] - centers[None], axis=-1).min(0)  # per true centre
print(f"largest distance from a true centre to the nearest fitted mean: {nearest.max():.3f}")

fig, ax = plt.subplots(figsize=(6, 5))
ax.scatter(X[:, 0], X[:, 1], c=labels, s=6, cmap="viridis", alpha=0.6)
for mean, cov, w in zip(gmm.means_, gmm.covariances_, gmm.weights_):
    vals, vecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
    for n_std in (1.0, 2.0):  # 1- and 2-sigma contours
        ax.add_patch(Ellipse(mean, *(2 * n_std * np.sqrt(vals[::-1])), angle=angle, fill=False,
                             lw=1.5, color="crimson", alpha=0.9 / n_std))
    ax.annotate(f"π={w:.2f}", mean, color="crimson", ha="center", va="center", fontsize=9)
ax.set_title("jaxem.sklearn.GaussianMixture: 3 components, 1σ and 2σ ellipses")
ax.set_aspect("equal")
out = sys.argv[1] if len(sys.argv) > 1 else "gmm_ellipses.png"
fig.savefig(out, dpi=100, bbox_inches="tight")
print("saved", out)
