"""Every ``>>>`` example in jaxem's docstrings runs and prints what it shows (`doctest`).

The examples are collected from every module of the package (public names and the modules they are
defined in), so an example that goes stale fails here. The session runs with x64 on (conftest); the
examples print rounded values, so their output does not depend on the precision.

Each example compiles its own programs (~0.3-2 s each on 2 cores); those that compile the most
(HMMs, restarts, model selection, streaming: ~20 s together) run with ``-m slow``, the others
(~10 s) in every run.
"""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import jaxem

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
SLOW = {"models.hmm.poisson.PoissonHMM", "models.hmm.generic.HMM", "models.hmm.gaussian.GaussianHMM",
        "models.hmm.categorical.CategoricalHMM", "_batch.batched", "_restarts.fit_restarts",
        "models.poisson_mixture.PoissonMixture", "_select.select_n_components",
        "_stream.fit_stream", "_fisher.fisher_score", "_online.fit_online"}


def _modules():
    names = [m.name for m in pkgutil.walk_packages(jaxem.__path__, "jaxem.")]
    return [importlib.import_module(n) for n in ["jaxem", *sorted(names)]]


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = {}
    for module in _modules():
        for t in finder.find(module):
            if t.examples and t.name not in tests:
                tests[t.name] = t
    params = []
    for t in tests.values():
        name = t.name.removeprefix("jaxem.")
        marks = [pytest.mark.slow] if name in SLOW else []
        params.append(pytest.param(t, id=name, marks=marks))
    return params


DOCTESTS = _doctests()


def test_docstring_examples_are_collected():
    names = {p.id for p in DOCTESTS}
    assert len(names) >= 20
    for expected in ("_fit.fit", "models.gaussian_mixture.GaussianMixture", "_elbo.elbo"):
        assert expected in names, sorted(names)


@pytest.mark.parametrize("test", DOCTESTS)
def test_docstring_example(test):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out = []
    result = runner.run(test, out=out.append, clear_globs=True)
    assert result.failed == 0, "".join(out)


def test_every_public_function_and_model_has_an_example():
    """Public functions and model classes of ``jaxem`` carry a runnable Example (NamedTuples of
    parameters and statistics, enums and constants are data, not behaviour)."""
    missing = []
    for name in dir(jaxem):
        obj = getattr(jaxem, name)
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        is_data = isinstance(obj, type) and (issubclass(obj, (tuple, Exception))
                                             or hasattr(obj, "__members__"))
        if (inspect.isfunction(obj) or isinstance(obj, type)) and not is_data:
            if ">>>" not in (inspect.getdoc(obj) or ""):
                missing.append(name)
    assert not missing, f"public names without a >>> example: {missing}"
