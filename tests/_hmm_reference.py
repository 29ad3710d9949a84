"""A NumPy Baum-Welch written from the equations (Rabiner 1989, §III; Bishop 2006, §13.2), used as
the reference in tests/test_hmm.py. Unscaled-free: forward-backward with Rabiner's scaling."""

import numpy as np
from scipy.special import gammaln
from scipy.stats import multivariate_normal


def forward_backward(pi, A, B):
    """B: (T, K) emission densities p(x_t | k). Returns gamma (T, K), xi_sum (K, K), log p(x)."""
    T, K = B.shape
    alpha = np.zeros((T, K))
    c = np.zeros(T)
    a = pi * B[0]
    c[0] = a.sum()
    alpha[0] = a / c[0]
    for t in range(1, T):
        a = (alpha[t - 1] @ A) * B[t]
        c[t] = a.sum()
        alpha[t] = a / c[t]
    beta = np.ones((T, K))
    for t in range(T - 2, -1, -1):
        beta[t] = A @ (B[t + 1] * beta[t + 1]) / c[t + 1]
    gamma = alpha * beta
    xi = np.zeros((K, K))
    for t in range(T - 1):
        xi += alpha[t][:, None] * A * (B[t + 1] * beta[t + 1])[None, :] / c[t + 1]
    return gamma, xi, np.log(c).sum()


def gaussian_densities(X, means, covs, covariance_type):
    K, D = means.shape
    if covariance_type == "full":
        C = covs
    elif covariance_type == "diag":
        C = np.stack([np.diag(c) for c in covs])
    elif covariance_type == "spherical":
        C = np.stack([c * np.eye(D) for c in covs])
    else:
        C = np.stack([covs] * K)
    return np.stack([multivariate_normal(means[k], C[k]).pdf(X).reshape(len(X)) for k in range(K)], 1)


def baum_welch_step(family, params, seqs, weights, covariance_type="full", reg_covar=0.0):
    """One Baum-Welch iteration over a list of sequences (each (T_s, D) or (T_s,)) with sequence
    weights; returns (new params tuple, Σ_s w_s log p(x_s))."""
    pi, A = params[0], params[1]
    K = len(pi)
    n0 = np.zeros(K)
    nA = np.zeros((K, K))
    ll = 0.0
    gam_all, X_all = [], []
    for x, w in zip(seqs, weights):
        if family == "gaussian":
            B = gaussian_densities(x, params[2], params[3], covariance_type)
        elif family == "poisson":
            lam = params[2]
            B = np.exp(x @ np.log(lam).T - lam.sum(1) - gammaln(x + 1).sum(1)[:, None])
        else:
            B = params[2].T[x]
        g, xi, l = forward_backward(pi, A, B)
        n0 += w * g[0]
        nA += w * xi
        ll += w * l
        gam_all.append(w * g)
        X_all.append(x)
    R = np.concatenate(gam_all)
    X = np.concatenate(X_all)
    Nk = R.sum(0)
    new_pi = n0 / n0.sum()
    new_A = nA / nA.sum(1, keepdims=True)
    if family == "gaussian":
        D = X.shape[1]
        mu = (R.T @ X) / Nk[:, None]
        full = np.stack([((X - mu[k]).T * R[:, k]) @ (X - mu[k]) / Nk[k] for k in range(K)])
        if covariance_type == "full":
            cov = full + reg_covar * np.eye(D)
        elif covariance_type == "diag":
            cov = np.stack([np.diag(c) for c in full]) + reg_covar
        elif covariance_type == "spherical":
            cov = np.stack([np.diag(c).mean() for c in full]) + reg_covar
        else:
            cov = np.einsum("k,kde->de", Nk, full) / Nk.sum() + reg_covar * np.eye(D)
        return (new_pi, new_A, mu, cov), ll
    if family == "poisson":
        return (new_pi, new_A, (R.T @ X) / Nk[:, None]), ll
    C = params[2].shape[1]
    counts = R.T @ np.eye(C)[X]
    return (new_pi, new_A, counts / counts.sum(1, keepdims=True)), ll
