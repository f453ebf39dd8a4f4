"""`twinformers._backends`: install hints, the triton-after-TensorFlow guard and the quiet TensorFlow import,
each in a fresh interpreter with stand-in `tensorflow` / `triton` packages (no framework needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from twinformers._backends import install_hint


def run_python(code: str, packages: dict[str, str], tmp_path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `code` with stand-in packages (name → __init__.py source) first on sys.path."""
    for name, source in packages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}", **(env or {})})


FAKE_TRITON = {"triton": "LOADED = True\n", "tensorflow": "import os\nos.write(2, b'C++ start-up line\\n')\n"}


def test_triton_imports_before_tensorflow(tmp_path):
    result = run_python("""
        from twinformers._backends import guard_triton_after_tensorflow
        guard_triton_after_tensorflow()
        import triton, tensorflow
        print(triton.LOADED)
    """, FAKE_TRITON, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True\n"


def test_triton_after_tensorflow_is_an_import_error_not_a_crash(tmp_path):
    result = run_python("""
        import importlib.util
        from twinformers._backends import guard_triton_after_tensorflow
        guard_triton_after_tensorflow()
        guard_triton_after_tensorflow()  # idempotent
        import tensorflow
        assert importlib.util.find_spec("triton") is not None  # still "installed" for find_spec callers
        try:
            import triton
        except ImportError as err:
            print(err)
    """, FAKE_TRITON, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "TensorFlow is already loaded" in result.stdout and "import triton" in result.stdout


def test_guard_keeps_a_missing_triton_missing(tmp_path):
    result = run_python("""
        from twinformers._backends import guard_triton_after_tensorflow
        guard_triton_after_tensorflow()
        import tensorflow
        import importlib.util
        print(importlib.util.find_spec("triton"))
    """, {"tensorflow": ""}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "None\n"


@pytest.mark.parametrize("level,shown", [(None, False), ("0", True)])
def test_quiet_tensorflow_hides_import_time_cxx_lines_unless_asked(tmp_path, level, shown):
    env = {} if level is None else {"TF_CPP_MIN_LOG_LEVEL": level}
    result = run_python("""
        import os, sys
        from twinformers._backends import quiet_tensorflow
        quiet_tensorflow()
        import tensorflow
        print("after", file=sys.stderr)
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    """, FAKE_TRITON, tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert ("C++ start-up line" in result.stderr) is shown
    assert "after" in result.stderr  # stderr is restored after the import
    assert result.stdout == f"{level or 3}\n"


def test_install_hint_grammar():
    assert install_hint("flax", ["msgpack"]) == "msgpack is not installed: pip install 'twinformers[flax]'"
    assert install_hint("tf", ["tensorflow", "keras", "h5py"]) == (
        "tensorflow, keras and h5py are not installed: pip install 'twinformers[tf]'")
