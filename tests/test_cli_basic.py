import subprocess
import sys

import twinformers


def test_version():
    result = subprocess.run([sys.executable, "-m", "twinformers", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"twinformers {twinformers.__version__}"


def test_help_lists_usage():
    result = subprocess.run([sys.executable, "-m", "twinformers", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: twinformers" in result.stdout


def test_unknown_command_fails():
    result = subprocess.run([sys.executable, "-m", "twinformers", "frobnicate"], capture_output=True, text=True)
    assert result.returncode != 0 and "invalid choice" in result.stderr
