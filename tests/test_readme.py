"""Every ```python block of README.md runs as written.

Blocks run in a few fresh interpreters, several blocks per interpreter, each in its own namespace
and working directory with JAX's default precision restored before it (`blocks.run_blocks`: one
JAX start-up per group instead of one per block). A block that changes process-wide state that
cannot be undone (environment variables such as XLA_FLAGS, read once when JAX starts;
jax.distributed; the persistent compilation cache) runs alone in an interpreter of its own.
"""

import pytest

from blocks import ROOT, python_blocks, run_block, run_blocks

BLOCKS = python_blocks(ROOT / "README.md")
ALONE = lambda code: any(s in code for s in ("os.environ", "jax.distributed", "compilation_cache"))
SHARED = [(code, i) for code, i in BLOCKS if not ALONE(code)]
GROUPS = 4


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 8 and len(SHARED) >= GROUPS


@pytest.mark.parametrize("group", range(GROUPS))
def test_readme_blocks_run_as_written(group, tmp_path):
    blocks = SHARED[group::GROUPS]
    out = run_blocks(blocks, tmp_path)
    assert out.count("=== ") == len(blocks)


@pytest.mark.parametrize("code", [pytest.param(c, id=i) for c, i in BLOCKS if ALONE(c)])
def test_readme_block_runs_alone_as_written(code, tmp_path):
    run_block(code, tmp_path)
