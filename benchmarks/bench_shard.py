"""Data-parallel EM on simulated CPU devices: communication, per-device memory, time per iteration.

    python benchmarks/bench_shard.py [devices=4] [N=200000]

For a Gaussian mixture (full covariances) fitted on X split by rows over ``devices`` simulated CPU
devices (``--xla_force_host_platform_device_count``), against the same fit on one device, it
prints from the compiled programs (``jax.jit(...).lower(...).compile()``):

- the bytes all-reduced inside the EM loop per iteration (the operands of the loop's all-reduces:
  the statistics) and any all-gather, against the size of X;
- per-device memory from ``compiled.memory_analysis()`` (arguments + temporaries), against
  X's bytes / devices;
- seconds per iteration (best of 3 runs of ``max_iter`` iterations with ``tol=0``).

Rows: "jaxem sharded" (an explicit-axis mesh: jaxem's data-parallel program), "XLA partitioner"
(an auto mesh under the caller's jit, where jaxem cannot see the split and XLA partitions the
program it gets), "one device". Simulated devices share the machine's cores: on a 2-core machine
the sharded fit is not faster; the point is what moves between devices and what each one holds.
"""

import os
import sys

DEVICES = int(sys.argv[1]) if len(sys.argv) > 1 else 4
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={DEVICES}")

import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxem  # noqa: E402

D, K, MAX_ITER = 16, 8, 10
BYTES = {"f32": 4, "f64": 8, "s32": 4, "pred": 1, "u32": 4, "s64": 8}


def collectives(hlo: str):
    """(bytes all-reduced inside while loops per loop trip, bytes all-gathered anywhere)."""
    loop_reduce = gather = 0
    comp = ""
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and "{" in line:
            comp = line.split()[0]
        m = re.search(r"= (\(?[^=]*?\)?) (all-gather|all-reduce)(-start)?\(", line)
        if not m:
            continue
        size = sum(BYTES.get(t, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
                   for t, dims in re.findall(r"(\w+)\[([\d,]*)\]", m.group(1)))
        if m.group(2) == "all-gather":
            gather += size
        elif "region" in comp or "body" in comp:
            loop_reduce += size
    return loop_reduce, gather


def timed(fn, *args):
    fn(*args).params.means.block_until_ready()  # warm
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        fn(*args).params.means.block_until_ready()
        best = min(best, time.perf_counter() - t)
    return best / MAX_ITER


def main():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(N, D)) + 3.0 * rng.integers(0, K, size=(N, 1))).astype(np.float32)
    model = jaxem.GaussianMixture(K)
    p0 = model.init(jax.random.key(0), X[:20_000])
    fit = lambda p, X: jaxem.fit(model, p, X, tol=0.0, max_iter=MAX_ITER)
    opts = dict(jaxem.COMPILER_OPTIONS)
    rows = []
    explicit = jax.make_mesh((DEVICES,), ("data",), axis_types=(AxisType.Explicit,))
    auto = jax.make_mesh((DEVICES,), ("data",), axis_types=(AxisType.Auto,))
    cases = [("jaxem sharded", jax.device_put(X, NamedSharding(explicit, P("data", None))),
              DEVICES),
             ("XLA partitioner", jax.device_put(X, NamedSharding(auto, P("data", None))),
              DEVICES),
             ("one device", jax.device_put(X, jax.devices()[0]), 1)]
    for name, Xd, n_dev in cases:
        compiled = jax.jit(fit, compiler_options=opts).lower(p0, Xd).compile()
        loop_reduce, gather = collectives(compiled.as_text())
        mem = compiled.memory_analysis()
        per_device = mem.argument_size_in_bytes + mem.temp_size_in_bytes
        rows.append((name, n_dev, loop_reduce, gather, per_device, timed(compiled, p0, Xd)))
    mb = X.nbytes / 2**20
    print(f"GaussianMixture(K={K}, full), N={N:,}, D={D}, float32: X = {mb:.1f} MB; "
          f"{MAX_ITER} iterations; {os.cpu_count()} CPU cores")
    print(f"| program | devices | all-reduce per iteration | all-gather | per-device memory "
          f"(args + temp) | X / devices | s per iteration |")
    print("|---|---|---|---|---|---|---|")
    for name, n_dev, red, gat, mem, sec in rows:
        print(f"| {name} | {n_dev} | {red:,} B | {gat / 2**20:.1f} MB | {mem / 2**20:.1f} MB | "
              f"{mb / n_dev:.1f} MB | {sec * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
