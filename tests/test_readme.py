"""Every ```python block of README.md runs as written, each in a fresh interpreter (a block is a
self-contained script: it may set XLA_FLAGS before importing jax, as the multi-device recipe does)."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import jaxem

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _blocks():
    text = README.read_text()
    blocks = []
    for m in re.finditer(r"^( *)```python\n(.*?)^\1```", text, re.S | re.M):
        line = text[: m.start()].count("\n") + 1
        heading = [h for h in re.findall(r"^#+ (.*)$", text[: m.start()], re.M)][-1:]
        blocks.append(pytest.param(textwrap.dedent(m.group(2)), id=f"L{line}-{(heading or ['top'])[0][:30]}"))
    return blocks


BLOCKS = _blocks()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("code", BLOCKS)
def test_readme_block_runs_as_written(code, tmp_path):
    env = dict(os.environ)
    # The jaxem under test, whichever tree it is in (CI's clone or a worktree).
    env["PYTHONPATH"] = os.pathsep.join(
        [str(pathlib.Path(jaxem.__file__).parent.parent), env.get("PYTHONPATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    if "jax.distributed.initialize" in code:  # the multi-host recipe: one copy per process
        (tmp_path / "hosts.py").write_text(code)
        procs = [subprocess.Popen([sys.executable, "hosts.py", str(rank)], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for rank in (0, 1)]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, f"block failed:\n{code}\n--- stderr ---\n{err[-3000:]}"
        return
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"block failed:\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"
