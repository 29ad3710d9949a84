"""BIC over the number of components: all candidate K (x 3 restarts) fitted in one vmapped batch.

    python examples/bic_curve.py           # writes bic_curve.png (or the path given as argv[1])
"""

import sys

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxem  # noqa: E402

rng = np.random.default_rng(1)
centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])  # true K = 4
X = np.concatenate([c + rng.normal(size=(150, 2)) for c in centers]).astype(np.float32)

sel = jaxem.select_n_components(jax.random.key(0), X, range(1, 7),
                                covariance_types=("full", "spherical"), n_init=3)
print(sel.table())
print(f"best: K={sel.best_n_components}, covariance_type={sel.best_covariance_type!r}")

fig, ax = plt.subplots(figsize=(6, 4))
for c, ct in enumerate(sel.covariance_types):
    ax.plot(sel.n_components, sel.bic[c], marker="o", label=ct)
ax.axvline(sel.best_n_components, color="grey", ls="--", lw=1)
ax.set_xlabel("number of components K")
ax.set_ylabel("BIC (lower is better)")
ax.set_title("jaxem.select_n_components (true K = 4)")
ax.legend()
out = sys.argv[1] if len(sys.argv) > 1 else "bic_curve.png"
fig.savefig(out, dpi=100, bbox_inches="tight")
print("saved", out)
