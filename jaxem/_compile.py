"""How jaxem compiles its own programs: lighter XLA options for top-level calls on CPU.

XLA's CPU backend spends most of a compile in its fusion emitters and LLVM optimisation. For jaxem's
programs (GEMMs, Cholesky factors and short elementwise fusions inside loops) these options halve
the compile time and cut the compiler's peak memory from ~300 MB to ~70 MB (measured: init + fit,
N=100k, D=16, K=16, float64: 2.0 s -> 0.85 s), at 0-10% of the time per iteration.
XLA also compiles the program's kernels as 32 separate LLVM modules in parallel, each with a fixed
cost; on a machine with few cores, two modules per core are as parallel and cheaper (2 cores:
0.96 s -> 0.84-0.88 s of compile for the same init + fit, median of 7-8 runs; CPU time -0.1 s).

Small problems (at most `SMALL_PROBLEM` array elements among a call's arguments, e.g. iris: 750)
compile with XLA's backend optimisation off (``xla_backend_optimization_level=0``): a third less
compile time for a program that then runs each EM iteration in tens of microseconds. Measured on
2 cores (float64, full covariances): the scikit-learn estimator's first fit on iris 0.60-0.74 s ->
0.38-0.47 s; a fit with N=1,000, D=4, K=3 runs 0.095 -> 0.17 ms per iteration, so the 0.2-0.3 s
saved is worth ~3,000 iterations; at N=4,096, D=K=16 (65k elements, above the bound) an unoptimised
iteration would cost 3.6 ms more, more than the compile it saves. The two levels round differently
in the last digits (contractions into fused multiply-adds), both IEEE arithmetic of the same
expressions; a given shape always gets the same program. Unoptimised, XLA also need not recompute a
value bit for bit where it appears in two kernels, so nothing may rely on such equality: a max's
JVP does (it finds the maximum by equality), so jaxem's max-shifts are `stop_gradient`-ed (the HMM
forward-backward's was not, and its derivative in X came out NaN at level 0; tests/test_hmm.py
runs that JVP at level 0).

They apply where jaxem itself is the outermost `jax.jit`: eager calls of `jaxem.fit`,
``model.init``, `jaxem.batched`, `jaxem.select_n_components` and the scikit-learn estimator. Inside
your own `jax.jit` XLA's defaults apply; pass ``compiler_options=jaxem.COMPILER_OPTIONS`` to your
`jax.jit` to get them there too. The global JAX/XLA configuration is never touched. Such calls
also pause Python's garbage collector while they trace and compile (`gc_paused`), restoring it as
it was when they return.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import gc
import math
import os
import threading
import types

import jax

from ._validate import is_concrete


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


COMPILER_OPTIONS = types.MappingProxyType({
    "xla_cpu_use_fusion_emitters": False,
    "xla_backend_optimization_level": 1,
    "xla_cpu_parallel_codegen_split_count": min(32, 2 * _cores()),  # XLA's default: 32
})


# Array elements among a call's arguments up to which it compiles unoptimised (see above).
SMALL_PROBLEM = 1 << 13
_SMALL_OPTIONS = types.MappingProxyType({"xla_backend_optimization_level": 0})

_rejected = set()  # option sets this process's XLA refused ("No such compile option")


def _reject(opts) -> None:
    """Remember that this process's XLA refused ``opts``: later calls use the plain jit (with or
    without the small-problem option: which one was unknown is not told)."""
    _rejected.add(frozenset(opts))
    _rejected.add(frozenset(COMPILER_OPTIONS))
    _rejected.add(frozenset({**COMPILER_OPTIONS, **_SMALL_OPTIONS}))


def n_elements(tree) -> int:
    """Elements of the arrays (and `jax.ShapeDtypeStruct`s) among the leaves of ``tree``."""
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(math.prod(a.shape) for a in leaves if hasattr(a, "shape") and hasattr(a, "dtype"))


def light_options(size: int | None = None) -> dict | None:
    """`COMPILER_OPTIONS` if the default backend is a CPU and its XLA has not rejected them; for a
    call whose arguments hold at most `SMALL_PROBLEM` elements (``size``), with XLA's backend
    optimisation off as well."""
    opts = dict(COMPILER_OPTIONS)
    if size is not None and size <= SMALL_PROBLEM:
        opts.update(_SMALL_OPTIONS)
    if jax.default_backend() != "cpu" or frozenset(opts) in _rejected:
        return None
    return opts


def _unknown_option(err: Exception) -> bool:
    return isinstance(err, jax.errors.JaxRuntimeError) and "compile option" in str(err)


_gc_lock = threading.Lock()
_gc_state = {"depth": 0, "was_enabled": False}


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector paused for the duration (nesting- and thread-safe), then
    restored as it was.

    Tracing and lowering allocate hundreds of thousands of short-lived objects, which set off
    dozens of collections, one of them a full pass over every object of the process (JAX, NumPy and
    the user's) that finds almost nothing: 0.1-0.2 s of a cold Gaussian-mixture fit (N=100k,
    D=16, K=16; about half of it is work saved, half a full pass that runs later). Reference
    counting still frees everything acyclic at once; cycles wait for the next collection.
    """
    with _gc_lock:
        if _gc_state["depth"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
            gc.disable()
        _gc_state["depth"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["depth"] -= 1
            if _gc_state["depth"] == 0 and _gc_state["was_enabled"]:
                gc.enable()


def compiled(fun=None, *, static_argnames=()):
    """``functools.partial(jax.jit, static_argnames=...)(fun)``, except that a top-level call (no
    tracer among the arguments) compiles with `light_options`. Nested jits cannot carry compiler
    options, so calls under a caller's jit/vmap/grad use the plain jit (and are inlined there).
    An XLA that does not know an option (an older or newer jaxlib) gets its defaults: the first
    compile reports it and every later call goes straight to the plain jit. Eager calls trace and
    compile with the garbage collector paused (`gc_paused`)."""
    if fun is None:
        return functools.partial(compiled, static_argnames=static_argnames)
    plain = jax.jit(fun, static_argnames=static_argnames)
    light = {}

    def pick(args, kwargs):
        """The jit an eager call uses and its options, or (plain jit, None); and whether the call
        is eager (no tracer among the arguments)."""
        eager = is_concrete(args, kwargs)
        opts = light_options(n_elements((args, kwargs))) if eager else None
        if opts is None:
            return plain, None, eager
        key = frozenset(opts.items())
        if key not in light:
            light[key] = jax.jit(fun, static_argnames=static_argnames, compiler_options=opts)
        return light[key], opts, eager

    def or_plain(opts, attempt, use_plain):
        """``attempt()``, the collector paused; if XLA rejects ``opts``, remember that and
        ``use_plain()`` instead."""
        with gc_paused():
            try:
                return attempt()
            except Exception as err:
                if opts is None or not _unknown_option(err):
                    raise
                _reject(opts)
                return use_plain()

    def with_fallback(use, args, kwargs):
        """``use(jit)`` with the jit an eager call picks (the collector paused); on an XLA that
        rejects the options, remember that and ``use(plain)``."""
        jit, opts, eager = pick(args, kwargs)
        if not eager:
            return use(jit)
        return or_plain(opts, lambda: use(jit), lambda: use(plain))

    @functools.wraps(fun)
    def call(*args, **kwargs):
        return with_fallback(lambda jit: jit(*args, **kwargs), args, kwargs)

    def precompile(*args, **kwargs) -> None:
        """Compile what ``call(*args, **kwargs)`` would run (arguments may be
        `jax.ShapeDtypeStruct`), without running it: the call then finds it compiled. Inside
        `precompile_concurrently`, trace and lower here and leave the compile to its threads."""
        queue = getattr(_pipeline, "compiles", None)
        if queue is None:
            with_fallback(lambda jit: jit.lower(*args, **kwargs).compile(), args, kwargs)
            return
        jit, opts, _ = pick(args, kwargs)
        with gc_paused():
            lowered = jit.lower(*args, **kwargs)
        queue.append(lambda: or_plain(opts, lowered.compile,
                                      lambda: plain.lower(*args, **kwargs).compile()))

    call.precompile = precompile
    call._cache_size = lambda: plain._cache_size() + sum(j._cache_size() for j in light.values())
    return call


_pipeline = threading.local()  # .compiles: where `precompile` leaves its compiles, if set


def precompile_concurrently(thunks) -> None:
    """Compile the programs of ``thunks`` (each one or more ``f.precompile(...)`` of `compiled`
    functions), largest first as given, as a pipeline: this thread traces and lowers one program
    after another (Python work, holding the GIL) while one thread per core compiles those already
    lowered (XLA releases the GIL, and on 2 cores a compile keeps about one core busy). The calls
    that follow find them compiled. Tracing all programs in threads side by side made them take
    turns at the GIL, so the first compile started only when every program was traced (iris,
    the estimator's start and fit: 0.41 s -> 0.32-0.37 s). The caller's `jax.enable_x64` (a
    thread-local context) is passed on to the threads."""
    thunks = list(thunks)
    n = min(_cores(), len(thunks))
    if n <= 1:
        for t in thunks:
            t()
        return
    x64 = bool(jax.config.jax_enable_x64)

    def run(finish):
        with jax.enable_x64(x64):
            finish()

    futures = []
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        try:
            for t in thunks:
                _pipeline.compiles = compiles = []
                try:
                    t()
                finally:
                    _pipeline.compiles = None
                futures += [pool.submit(run, f) for f in compiles]
        finally:
            for f in futures:
                f.result()
