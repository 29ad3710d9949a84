"""Every ```python block of README.md runs as written, each in a fresh interpreter (a block is a
self-contained script: it may set XLA_FLAGS before importing jax, as the multi-device recipe does)."""

import pytest

from blocks import ROOT, python_blocks, run_block

BLOCKS = [pytest.param(code, id=i) for code, i in python_blocks(ROOT / "README.md")]


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("code", BLOCKS)
def test_readme_block_runs_as_written(code, tmp_path):
    run_block(code, tmp_path)
