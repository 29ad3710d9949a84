"""A Bernoulli mixture on binarised handwritten digits: the learned prototypes, as images.

Each component k of p(x) = Σ_k π_k Π_d p_kd^x_d (1 - p_kd)^(1 - x_d) is a "prototype" image p_k:
with K = 10 on scikit-learn's 8x8 digits, the prototypes look like the ten digits. Saves
``bernoulli_digits.png`` (or the path given as the first argument).
"""

import sys

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import jaxem  # noqa: E402

digits = load_digits()
X = (digits.data > 7).astype(np.float32)  # intensities 0..16 -> binary pixels

model = jaxem.BernoulliMixture(n_components=10)
params = model.init(jax.random.key(0), X)  # k-means start + M-step
result = jax.jit(lambda p, X: jaxem.fit(model, p, X, max_iter=200, tol=1e-5))(params, X)
print(f"converged={bool(result.converged)} after {int(result.n_iter)} iterations, "
      f"mean log-likelihood {float(result.log_likelihood):.3f}, "
      f"status: {jaxem.describe_status(result.status)}")

# Label each prototype with the digit most of its members are.
labels = np.asarray(model.predict(result.params, X))
majorities = {k: np.bincount(digits.target[labels == k], minlength=10).argmax()
              for k in np.unique(labels)}
purity = np.mean([majorities[k] == t for k, t in zip(labels, digits.target)])
print(f"purity {purity:.3f}: share of images whose component's majority digit is their own digit "
      f"({len(set(majorities.values()))} distinct digits among the {len(majorities)} prototypes)")
order = np.argsort(-np.asarray(result.params.weights))
fig, axes = plt.subplots(2, 5, figsize=(8, 3.6))
for ax, k in zip(axes.ravel(), order):
    members = digits.target[labels == k]
    majority = np.bincount(members, minlength=10).argmax() if members.size else -1
    purity = np.mean(members == majority) if members.size else 0.0
    ax.imshow(np.asarray(result.params.probs[k]).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(f"π={float(result.params.weights[k]):.2f}\n'{majority}' {purity:.0%}", fontsize=9)
    ax.axis("off")
fig.suptitle("Bernoulli mixture prototypes p(pixel on | component)")
fig.tight_layout()
out = sys.argv[1] if len(sys.argv) > 1 else "bernoulli_digits.png"
fig.savefig(out, dpi=100)
print(f"saved {out}")
