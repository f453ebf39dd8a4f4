"""`twinformers export`: argument errors that need no framework (each backend's tests export through the CLI)."""

import os

import pytest

from twinformers.cli.main import main
from twinformers.demo.embedded import embedded_model_path
from twinformers.export import ExportError, staged_output


def test_existing_out_needs_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", embedded_model_path(), str(out), "--format", "jax"]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert os.listdir(out) == ["keep.txt"]


def test_unknown_format_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", embedded_model_path(), str(tmp_path / "out"), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_staged_output_is_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out) as stage:
            open(os.path.join(stage, "half.bin"), "w").close()
            raise RuntimeError("export failed midway")
    assert os.listdir(tmp_path) == []  # neither OUT nor the staging directory
    with staged_output(out) as stage:
        open(os.path.join(stage, "a.txt"), "w").close()
    with staged_output(out, force=True) as stage:
        open(os.path.join(stage, "b.txt"), "w").close()
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == ["b.txt"]
    with pytest.raises(ExportError, match="already exists"):
        with staged_output(out):
            pass
