"""Run an exported artifact the way a server would: in a fresh Python process where twinformers cannot be
imported. The child runs in isolated mode (`-I`: no PYTHONPATH, no user site, no script directory) and a
meta-path hook refuses `twinformers` even where it is installed into the environment (tox's editable install);
the child checks that `import twinformers` fails before it runs anything else."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

_PROLOGUE = '''
import importlib.abc, sys

class _NoTwinformers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "twinformers":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden from this serving process)")
        return None

sys.meta_path.insert(0, _NoTwinformers())
try:
    import twinformers  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("twinformers is importable in the serving process")
assert not any(name.split(".")[0] == "twinformers" for name in sys.modules)
'''


def run_isolated(body: str, workdir: str, inputs: dict[str, np.ndarray] | None = None,
                 timeout: int = 300) -> dict[str, np.ndarray]:
    """Run `body` (Python source) without twinformers; it reads `inputs` from `inputs.npz` in `workdir`
    (np.load) and saves its results with `np.savez("outputs.npz", ...)`. Returns those results."""
    if inputs is not None:
        np.savez(os.path.join(workdir, "inputs.npz"), **inputs)
    script = os.path.join(workdir, "serve.py")
    with open(script, "w") as f:
        f.write(_PROLOGUE + textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    result = subprocess.run([sys.executable, "-I", script], cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"serving process failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    with np.load(os.path.join(workdir, "outputs.npz")) as outputs:
        return dict(outputs)
