"""The documentation site: `mkdocs build --strict` succeeds (every page in the nav, every API
reference resolved from the docstrings, no broken link), and every ```python block of docs/*.md runs
as written in a fresh interpreter (all of them in one, each in its own namespace and directory: one
JAX start-up instead of one per block). A block identical to one of README.md's is run by
tests/test_readme.py and not again here; a block that needs a process of its own (XLA_FLAGS,
jax.distributed) runs alone.
"""

import os
import subprocess
import sys

import pytest

from blocks import ROOT, python_blocks, run_block, run_blocks

README = {code for code, _ in python_blocks(ROOT / "README.md")}
PAGES = sorted((ROOT / "docs").glob("*.md"))
ALL = [(code, i) for page in PAGES for code, i in python_blocks(page)]
OWN = [(code, i) for code, i in ALL if code not in README]
ALONE = lambda code: "XLA_FLAGS" in code or "jax.distributed" in code


def _have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def test_the_docs_have_guides_with_code():
    names = {p.stem for p in PAGES}
    assert {"index", "concepts", "batching", "differentiation", "generalized-em", "selection",
            "hmm", "scale-out", "sklearn", "persistence"} <= names
    assert len(ALL) >= 15 and OWN


@pytest.mark.slow  # ~22 s of CI's 10-minute budget; the README blocks (most guides' code) run in CI
def test_docs_blocks_run_as_written(tmp_path):
    blocks = OWN
    if not _have("orbax.checkpoint"):  # optional extra (the test extra installs it)
        blocks = [(c, i) for c, i in blocks if "import orbax" not in c]
    shared = [(c, i) for c, i in blocks if not ALONE(c)]
    out = run_blocks(shared, tmp_path)
    assert out.count("=== ") == len(shared)
    for n, (code, _) in enumerate(b for b in blocks if ALONE(b[0])):
        (tmp_path / f"alone{n}").mkdir()
        run_block(code, tmp_path / f"alone{n}")


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings_handlers.python",
                        reason="mkdocstrings-python is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[docs]')")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ,
                                                       "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "selection" / "index.html").read_text()
    assert "n_components_range" in api  # the reference is generated from the docstrings
