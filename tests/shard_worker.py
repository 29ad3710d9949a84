"""Sharded-vs-unsharded checks run in a subprocess of tests/test_shard.py (XLA must be told the
number of simulated CPU devices before JAX starts). Prints one JSON object on its last line.

Usage: python shard_worker.py devices   (XLA_FLAGS=--xla_force_host_platform_device_count=4)
"""

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

jax.config.update("jax_enable_x64", True)
import jaxem  # noqa: E402

N, MAX_ITER = 512, 8
OPTS = dict(jaxem.COMPILER_OPTIONS)
# init compared for one family per init route (k-means + labels M-step of each kind, moments)
INIT_CHECKED = ("gmm-full", "gmm-spherical", "ppca", "bernoulli", "mfa")


def max_diff(a, b):
    """Largest absolute difference of two pytrees (fetched to the host: replicated results)."""
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def collectives(hlo: str) -> dict:
    """Collectives of a compiled program: the N-row all-gathers, and the all-reduces inside while
    bodies (computations named *region*/*body*) with their operand sizes."""
    gathers, reduces = [], []
    comp = ""
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and "{" in line:
            comp = line.split()[0]
        m = re.search(r"= (\(?[^=]*?\)?) (all-gather|all-reduce)(-start)?\(", line)
        if m:
            shapes = [[int(d) for d in dims.split(",") if d]
                      for dims in re.findall(r"\w+\[([\d,]*)\]", m.group(1))]
            (gathers if m.group(2) == "all-gather" else reduces).append(
                dict(shapes=shapes, loop=("region" in comp or "body" in comp)))
    return dict(gathers=gathers, reduces=reduces)


def data(rng):
    base = np.concatenate([rng.normal(size=(N // 2, 3)) + 3.0, rng.normal(size=(N // 2, 3))])
    rng.shuffle(base)
    counts = rng.poisson(np.exp(0.3 * base))
    binary = (base > 1.0).astype(np.float64)
    return base, counts.astype(np.float64), binary


def families(base, counts, binary):
    # chunk_size: several row blocks per device, so the streamed scan runs inside the map.
    c = dict(chunk_size=48)
    return [
        ("gmm-full", jaxem.GaussianMixture(3, "full", **c), base),
        ("gmm-diag", jaxem.GaussianMixture(3, "diag", **c), base),
        ("gmm-spherical", jaxem.GaussianMixture(3, "spherical", **c), base),
        ("gmm-tied", jaxem.GaussianMixture(3, "tied", **c), base),
        ("ppca", jaxem.PPCA(2), base),
        ("fa", jaxem.FactorAnalysis(2), base),
        ("bernoulli", jaxem.BernoulliMixture(2), binary),
        ("poisson", jaxem.PoissonMixture(2), counts),
        ("mfa", jaxem.MixtureOfFactorAnalyzers(2, 1, **c), base),
    ]


def devices():
    out = {}
    rng = np.random.default_rng(0)
    base, counts, binary = data(rng)
    w_host = rng.uniform(0.5, 1.5, N)
    auto = jax.make_mesh((4,), ("rows",), axis_types=(AxisType.Auto,))
    expl = jax.make_mesh((4,), ("batch",), axis_types=(AxisType.Explicit,))
    put = lambda a, mesh, ax: jax.device_put(
        a, NamedSharding(mesh, P(ax, *([None] * (a.ndim - 1)))))
    key = jax.random.key(1)
    for name, model, X in families(base, counts, binary):
        rec = {}
        p0 = model.init(key, X, w_host)
        ref = jaxem.fit(model, p0, X, weights=w_host, tol=0, max_iter=MAX_ITER)
        Xa, wa = put(X, auto, "rows"), put(w_host, auto, "rows")
        Xe, we = put(X, expl, "batch"), put(w_host, expl, "batch")
        if name in INIT_CHECKED:  # the same draws (k-means++ two-level draw), to rounding
            rec["init"] = max_diff(model.init(key, Xa, wa), p0)
        # eager fits (sharded weights, and host weights placed by jaxem)
        r = jaxem.fit(model, p0, Xa, weights=wa, tol=0, max_iter=MAX_ITER)
        rec["eager"] = max_diff(r.params, ref.params)
        rec["eager_ll"] = abs(float(r.log_likelihood - ref.log_likelihood))
        rec["eager_replicated"] = all(l.sharding.is_fully_replicated
                                      for l in jax.tree_util.tree_leaves(r.params))
        rec["eager_host_w"] = max_diff(
            jaxem.fit(model, p0, Xa, weights=w_host, tol=0, max_iter=MAX_ITER).params, ref.params)
        # under the caller's jit, explicit-axis mesh (the spec is in the type): data-parallel
        f = jax.jit(lambda p, X, w: jaxem.fit(model, p, X, weights=w, tol=0, max_iter=MAX_ITER),
                    compiler_options=OPTS)
        fc = f.lower(p0, Xe, we).compile()
        rec["jit_explicit"] = max_diff(fc(p0, Xe, we).params, ref.params)
        rec["hlo_jit_explicit"] = collectives(fc.as_text())
        if name in ("gmm-full", "ppca"):
            # under the caller's jit, auto mesh: XLA's partitioner (correct)
            rec["jit_auto"] = max_diff(f(p0, Xa, wa).params, ref.params)
            gi = jax.jit(lambda k, X, w: model.init(k, X, w), compiler_options=OPTS)
            gc = gi.lower(key, Xe, we).compile()
            rec["init_jit_explicit"] = max_diff(gc(key, Xe, we), p0)
            rec["hlo_init_jit_explicit"] = collectives(gc.as_text())
        rec["stats_size"] = sum(np.size(l) for l in jax.tree_util.tree_leaves(
            model.sufficient_statistics(p0, X, w_host)))
        if name == "gmm-full":  # bad data: ValueError eagerly, a status flag under jit
            Xbad = np.array(X)
            Xbad[5, 1] = np.nan
            try:
                jaxem.fit(model, p0, put(Xbad, auto, "rows"), max_iter=2)
                rec["nan_eager"] = "accepted"
            except ValueError as err:
                rec["nan_eager"] = str(err)
            rec["nan_jit_status"] = int(fc(p0, put(Xbad, expl, "batch"), we).status)
            # partial labels and fixed fields (row-aligned labels sharded like X), eagerly
            lab = np.where(np.arange(N) % 8 == 0, (X[:, 0] > 1.5).astype(np.int32), -1)
            kw = dict(fixed=("weights",), tol=0, max_iter=MAX_ITER)
            rec["labels_fixed"] = max_diff(
                jaxem.fit(model, p0, Xa, weights=wa, labels=put(lab, auto, "rows"), **kw).params,
                jaxem.fit(model, p0, X, weights=w_host, labels=lab, **kw).params)
        if name in ("gmm-full", "ppca"):  # the streamed public methods, eagerly, either mesh
            rec["methods"] = max(max_diff(
                (model.sufficient_statistics(p0, Xs, ws), model.log_likelihood(p0, Xs, ws),
                 model.score_samples(p0, Xs)),
                (model.sufficient_statistics(p0, X, w_host), model.log_likelihood(p0, X, w_host),
                 model.score_samples(p0, X))) for Xs, ws in ((Xa, wa), (Xe, we)))
        if name in ("gmm-full", "poisson"):
            # by hand: the user's shard_map (check_vma on), psum of the statistics, maximize
            step = jax.jit(jax.shard_map(
                lambda p, X, w: model.maximize(
                    jax.lax.psum(model.sufficient_statistics(p, X, w), "rows"), p),
                mesh=auto, in_specs=(P(), P("rows"), P("rows")), out_specs=P()))
            hand = p0
            for _ in range(3):
                hand = step(hand, Xa, wa)
            want = p0
            for _ in range(3):
                want = model.maximize(model.sufficient_statistics(want, X, w_host), want)
            rec["by_hand"] = max_diff(hand, want)
        out[name] = rec

    # A Gaussian HMM with its sequences split over the devices (jit, explicit mesh)
    hmm = jaxem.GaussianHMM(2, "full")
    seqs = base[: 8 * 40].reshape(8, 40, 3)
    ph = hmm.init(key, seqs)
    hf = jax.jit(lambda p, X: jaxem.fit(hmm, p, X, tol=0, max_iter=MAX_ITER), compiler_options=OPTS)
    out["hmm"] = dict(jit_explicit=max_diff(
        hf(ph, put(seqs, expl, "batch")).params,
        jaxem.fit(hmm, ph, seqs, tol=0, max_iter=MAX_ITER).params))

    # GradientMStep on sharded data (a MixtureModel in unconstrained coordinates)
    def log_joint(p, x):
        return jax.nn.log_softmax(p["logits"]) - 0.5 * jnp.sum((x - p["means"]) ** 2, -1)

    mm = jaxem.MixtureModel(log_joint, 2)
    gm = jaxem.GradientMStep(optax.adam(0.05), num_steps=5)
    pg = {"logits": jnp.zeros(2), "means": jnp.asarray(base[:2])}
    g = jax.jit(lambda p, X: jaxem.fit(mm, p, X, m_step=gm, tol=0, max_iter=MAX_ITER),
                compiler_options=OPTS)
    ref = jaxem.fit(mm, pg, base, m_step=gm, tol=0, max_iter=MAX_ITER)
    Xe = put(base, expl, "batch")
    gc = g.lower(pg, Xe).compile()
    out["gradient"] = dict(
        eager=max_diff(jaxem.fit(mm, pg, put(base, auto, "rows"), m_step=gm, tol=0,
                                 max_iter=MAX_ITER).params, ref.params),
        jit_explicit=max_diff(gc(pg, Xe).params, ref.params),
        hlo_jit_explicit=collectives(gc.as_text()))
    return out


def processes(rank: str, n_proc: str, port: str):
    """One of ``n_proc`` processes (``jax.distributed`` on 127.0.0.1:``port``, CPU collectives):
    each holds its own block of rows of a global X; init and fit, eager and jitted, against the
    single-process result computed here on the whole X."""
    rank, n_proc = int(rank), int(n_proc)
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=n_proc, process_id=rank)
    rng = np.random.default_rng(0)
    base, _, _ = data(rng)
    w_host = rng.uniform(0.5, 1.5, N)
    model = jaxem.GaussianMixture(3, chunk_size=48)
    key = jax.random.key(1)
    local = jax.local_devices()[0]
    p0 = model.init(key, jax.device_put(base, local), jax.device_put(w_host, local))
    ref = jaxem.fit(model, p0, jax.device_put(base, local), weights=jax.device_put(w_host, local),
                    tol=0, max_iter=MAX_ITER)
    mesh = jax.make_mesh((jax.device_count(),), ("hosts",), axis_types=(AxisType.Auto,))
    rows = slice(rank * N // n_proc, (rank + 1) * N // n_proc)  # this process's rows
    X = jax.make_array_from_process_local_data(NamedSharding(mesh, P("hosts", None)), base[rows])
    w = jax.make_array_from_process_local_data(NamedSharding(mesh, P("hosts")), w_host[rows])
    out = dict(rank=rank, addressable=X.is_fully_addressable)
    pi = model.init(key, X, w)
    out["init"] = max_diff(pi, p0)
    r = jaxem.fit(model, p0, X, weights=w, tol=0, max_iter=MAX_ITER)
    out["eager"] = max_diff(r.params, ref.params)
    out["eager_ll"] = abs(float(r.log_likelihood) - float(ref.log_likelihood))
    f = jax.jit(lambda p, X, w: jaxem.fit(model, p, X, weights=w, tol=0, max_iter=MAX_ITER),
                compiler_options=OPTS)
    out["jit"] = max_diff(f(pi, X, w).params, ref.params)  # pi: replicated over the processes
    try:  # bad data is refused without copying X to the host
        bad = jax.make_array_from_process_local_data(
            NamedSharding(mesh, P("hosts")), -w_host[rows])
        jaxem.fit(model, p0, X, weights=bad, max_iter=2)
        out["bad_weights"] = "accepted"
    except ValueError as err:
        out["bad_weights"] = str(err)
    return out


if __name__ == "__main__":
    print(json.dumps({"devices": devices, "processes": processes}[sys.argv[1]](*sys.argv[2:])))
