"""The ```python blocks of a markdown file, and running one as a script in a fresh interpreter
(shared by tests/test_readme.py and tests/test_docs.py)."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jaxem

ROOT = pathlib.Path(__file__).resolve().parent.parent


def python_blocks(path):
    """``[(code, id)]`` for every ```python block of ``path`` (dedented; id = line and heading)."""
    text = pathlib.Path(path).read_text()
    blocks = []
    for m in re.finditer(r"^( *)```python\n(.*?)^\1```", text, re.S | re.M):
        line = text[: m.start()].count("\n") + 1
        heading = [h for h in re.findall(r"^#+ (.*)$", text[: m.start()], re.M)][-1:]
        blocks.append((textwrap.dedent(m.group(2)),
                       f"{pathlib.Path(path).stem}-L{line}-{(heading or ['top'])[0][:30]}"))
    return blocks


def run_block(code, tmp_path):
    """Run ``code`` as a script with the jaxem under test; assert it exits 0. A block that calls
    ``jax.distributed.initialize`` is the multi-host recipe: two copies run, ranks 0 and 1."""
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


_DRIVER = r'''
import json, os, sys, traceback
blocks = json.load(open(sys.argv[1]))
for i, (code, name) in enumerate(blocks):
    os.makedirs(f"b{i}", exist_ok=True)
    os.chdir(f"b{i}")
    import time; t0, c0 = time.time(), time.process_time()
    print(f"=== {name}", flush=True)
    if "jax" in sys.modules:  # JAX's default precision for every block, as in a fresh interpreter
        sys.modules["jax"].config.update("jax_enable_x64", False)
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        print(f"FAILED {name}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"    {time.time() - t0:.1f} s wall, {time.process_time() - c0:.1f} s cpu", flush=True)
    os.chdir("..")
'''


def run_blocks(blocks, tmp_path):
    """Run ``[(code, name)]`` one after another in ONE fresh interpreter, each block in its own
    namespace and working directory (one JAX start-up for all: blocks that need a process of their
    own, such as those setting XLA_FLAGS, go through `run_block`)."""
    import json

    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "driver.py").write_text(_DRIVER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(pathlib.Path(jaxem.__file__).parent.parent), env.get("PYTHONPATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run([sys.executable, "driver.py", "blocks.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (f"a block failed:\n--- stdout ---\n{proc.stdout[-2000:]}\n"
                                  f"--- stderr ---\n{proc.stderr[-4000:]}")
    return proc.stdout
