"""SIGKILL a child process in the middle of a save, for the atomic-save tests of every backend.

The child counts its file-system steps (`os.replace`, `os.fsync`, `os.link`, and the directory swap itself) once
`arm()` is called, and kills itself with SIGKILL (no `finally`, no cleanup) at step `KILL_AT`. A run with
`KILL_AT=0` is never killed and prints how many steps the save took, so tests can spread the kill moments over
the whole save.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np

PREAMBLE = """
import os, signal, sys
import twinformers.checkpoints.files as _files
_kill_at, _steps, _armed = int(os.environ["KILL_AT"]), [0], [False]

def _step():
    if _armed[0]:
        _steps[0] += 1
        if _steps[0] == _kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

def _counted(function, after=False):
    def counted(*args, **kwargs):
        _step()
        result = function(*args, **kwargs)
        if after:
            _step()
        return result
    return counted

for _name in ("replace", "fsync", "link"):
    setattr(os, _name, _counted(getattr(os, _name)))
_files._exchange = _counted(_files._exchange, after=True)  # a step just before the swap and one just after

def arm():
    _armed[0] = True
"""


def run_child(body: str, kill_at: int, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run PREAMBLE + `body` in a fresh interpreter; `body` calls `arm()` right before the save under test."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, KILL_AT=str(kill_at))
    env["PYTHONPATH"] = os.pathsep.join([tests_dir, env.get("PYTHONPATH", "")])
    code = PREAMBLE + textwrap.dedent(body) + "\nprint('STEPS', _steps[0])\n"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def kill_during_save(body: str, target: str, old: str, new: str, count: int = 3) -> list[str]:
    """Save over the checkpoint `old` (copied to `target`, beside an unrelated `notes.txt`) in a child running
    `body`, killed at `count` moments spread over the save: the first step, evenly spaced ones, the last before
    the swap and the last of all. After each kill `target` must be exactly `old` or exactly `new` and still hold
    `notes.txt`. Returns which of the two each kill left."""

    def reset() -> None:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(old, target)
        with open(os.path.join(target, "notes.txt"), "w") as f:
            f.write("not part of the checkpoint")

    reset()
    done = run_child(body, 0)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = int(done.stdout.split("STEPS")[-1])
    assert steps >= 4, f"the save took only {steps} file-system steps"
    assert assert_old_or_new(target, old, new) == "new"
    moments = sorted({1, *(round(i * steps / (count - 1)) for i in range(1, count - 1)), steps - 2, steps})
    outcomes = []
    for kill_at in moments:
        reset()
        result = run_child(body, kill_at)
        assert result.returncode == -signal.SIGKILL, (kill_at, result.returncode, result.stderr[-3000:])
        outcomes.append(assert_old_or_new(target, old, new))
        with open(os.path.join(target, "notes.txt")) as f:
            assert f.read() == "not part of the checkpoint", f"notes.txt lost by a kill at step {kill_at}"
    return outcomes


def checkpoint_state(directory: str) -> tuple[dict, dict[str, np.ndarray]]:
    """config.json and every canonical tensor of a checkpoint directory (framework-free reader)."""
    from twinformers.checkpoints.canonical import open_checkpoint

    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    weights = open_checkpoint(directory)
    return config, {key: np.asarray(weights[key]) for key in weights}


def assert_old_or_new(target: str, old: str, new: str) -> str:
    """`target` is exactly the checkpoint in `old` or exactly the one in `new`; returns "old" or "new"."""
    config, tensors = checkpoint_state(target)
    for name, reference in (("old", old), ("new", new)):
        ref_config, ref_tensors = checkpoint_state(reference)
        if config.get("vocab_size") == ref_config.get("vocab_size"):
            assert config == ref_config, f"config.json of {target} is neither the old nor the new one"
            assert tensors.keys() == ref_tensors.keys(), f"{target} holds the {name} config with other tensors"
            for key, value in tensors.items():
                np.testing.assert_array_equal(value, ref_tensors[key], err_msg=f"{key} after the kill")
            return name
    raise AssertionError(f"{target} has vocab_size {config.get('vocab_size')}, neither the old nor the new one")
