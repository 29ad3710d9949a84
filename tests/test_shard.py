"""Data-parallel EM (jaxem._shard): X split by rows over devices and processes gives the
single-device result, with the statistics all-reduced once per iteration and X never gathered.

Each check runs in a subprocess (tests/shard_worker.py): XLA's number of simulated CPU devices is
fixed before JAX starts, and jax.distributed needs processes of its own.
"""

import json
import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxem
from jaxem import _shard

WORKER = os.path.join(os.path.dirname(__file__), "shard_worker.py")
TREE = os.path.dirname(os.path.dirname(os.path.abspath(jaxem.__file__)))  # the tree under test
FAMILIES = ["gmm-full", "gmm-diag", "gmm-spherical", "gmm-tied", "ppca", "fa", "bernoulli",
            "poisson", "mfa"]
N_ROWS, N_DEVICES = 512, 4  # as in the worker
TOL = 1e-10  # float64: the sharded sums differ from the unsharded ones by rounding only


def _env(devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=TREE, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    return env


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sharded():
    """All families, fitted and initialised on X split over 4 simulated devices (one process)."""
    run = subprocess.run([sys.executable, WORKER, "devices"], env=_env(N_DEVICES),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return _last_json(run.stdout)


@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_fit_equals_unsharded(sharded, family):
    """Eager (sharded or host weights) and under the caller's jit (explicit-axis mesh, and auto
    mesh where XLA partitions): the same parameters and log-likelihood, replicated."""
    r = sharded[family]
    assert r["eager"] < TOL and r["eager_host_w"] < TOL and r["jit_explicit"] < TOL, r
    assert r["eager_ll"] < TOL
    assert r["eager_replicated"]
    if "jit_auto" in r:
        assert r["jit_auto"] < TOL


@pytest.mark.parametrize("family", ["gmm-full", "ppca"])
def test_sharded_public_methods(sharded, family):
    """sufficient_statistics, log_likelihood and score_samples called eagerly on sharded X (auto
    and explicit meshes): each device streams its own rows (one psum; score_samples stays split)."""
    assert sharded[family]["methods"] < TOL


def test_sharded_bad_data(sharded):
    """NaN in a sharded X: ValueError eagerly (checked on the devices), INVALID_INPUT under jit."""
    r = sharded["gmm-full"]
    assert "NaN" in r["nan_eager"]
    assert r["nan_jit_status"] & int(jaxem.Status.INVALID_INPUT)


def test_sharded_hmm_fit(sharded):
    """GaussianHMM with its sequences row-sharded (the scans' carries vary over the mesh axis)."""
    assert sharded["hmm"]["jit_explicit"] < TOL


def test_sharded_partial_labels_and_fixed_fields(sharded):
    """fit(labels=, fixed=) on row-sharded X with labels sharded like it: the unsharded fit."""
    assert sharded["gmm-full"]["labels_fixed"] < TOL


@pytest.mark.parametrize("family",
                         ["gmm-full", "gmm-spherical", "ppca", "bernoulli", "mfa"])
def test_sharded_init_same_draws(sharded, family):
    """model.init on sharded X: k-means++ draws the same rows (two-level inversion of the CDF),
    Lloyd's sweeps and the M-step are sums over rows: the same parameters to rounding."""
    r = sharded[family]
    assert r["init"] < TOL, r
    if "init_jit_explicit" in r:
        assert r["init_jit_explicit"] < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_fit_one_all_reduce_no_gather(sharded, family):
    """The compiled fit (caller's jit, explicit mesh): no all-gather at all; inside the EM loop
    exactly one all-reduce, of the statistics' size (not of X's)."""
    hlo = sharded[family]["hlo_jit_explicit"]
    assert hlo["gathers"] == []
    in_loop = [r for r in hlo["reduces"] if r["loop"]]
    assert len(in_loop) == 1, hlo
    size = sum(int(np.prod(s)) for s in in_loop[0]["shapes"])
    assert size == sharded[family]["stats_size"]


@pytest.mark.parametrize("family", ["gmm-full", "ppca"])
def test_compiled_init_never_gathers_rows(sharded, family):
    """k-means++ / k-means (and PPCA's moments) move statistics, never rows: no all-gather, and
    every all-reduce is smaller than one device's rows."""
    hlo = sharded[family]["hlo_init_jit_explicit"]
    assert hlo["gathers"] == [], hlo
    assert all(int(np.prod(s)) < N_ROWS // N_DEVICES for r in hlo["reduces"] for s in r["shapes"])


@pytest.mark.parametrize("family", ["gmm-full", "poisson"])
def test_shard_map_by_hand(sharded, family):
    """The README recipe: psum(model.sufficient_statistics(...)) in the user's jax.shard_map (with
    its default check_vma, the streamed block scan inside), then model.maximize."""
    assert sharded[family]["by_hand"] < TOL


def test_gradient_mstep_sharded(sharded):
    """GradientMStep: Q and its gradient are sums over rows, partitioned by XLA: the same fit,
    nothing gathered."""
    r = sharded["gradient"]
    assert r["eager"] < TOL and r["jit_explicit"] < TOL
    assert r["hlo_jit_explicit"]["gathers"] == []


def test_two_processes():
    """jax.distributed on 127.0.0.1, 2 CPU processes (gloo), X built with
    jax.make_array_from_process_local_data: init and fit, eager and jitted, equal the
    single-process result; bad weights raise without copying X to the host."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, WORKER, "processes", str(rank), "2", str(port)],
                              env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank in range(2)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-4000:]
            outs.append(_last_json(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r in outs:
        assert r["addressable"] is False  # each process holds only its rows
        assert max(r["init"], r["eager"], r["eager_ll"], r["jit"]) < TOL, r
        assert "non-negative" in r["bad_weights"]


def test_unsharded_arrays_are_not_split():
    """One device, host data, tracers of an auto mesh: no row sharding, the usual program."""
    X = jnp.ones((8, 2))
    assert _shard.row_sharding(X) is None
    assert _shard.row_sharding(np.ones((8, 2))) is None
    assert _shard.current() is None
