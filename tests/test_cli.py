"""`twinformers convert` / `twinformers inspect` through a real subprocess (`python -m twinformers`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers import HF_FIXTURES
from twinformers.checkpoints.canonical import open_checkpoint
from twinformers.checkpoints.safetensors import SafetensorsFile


def fixture(name: str) -> str:
    return os.path.join(HF_FIXTURES, name)


def twinformers(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "twinformers", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_convert_quiet_success(tmp_path):
    result = twinformers("convert", fixture("gptj-tf-causal_lm"), tmp_path / "out", "--to", "flax", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    converted, reference = open_checkpoint(tmp_path / "out"), open_checkpoint(fixture("gptj-pt-causal_lm"))
    assert converted.weights_name == "flax_model.msgpack"
    assert sorted(converted) == sorted(reference)
    assert all(np.array_equal(converted[k], reference[k]) for k in reference)


def test_convert_prints_a_summary_and_shards(tmp_path):
    result = twinformers("convert", fixture("gpt2-pt-causal_lm"), tmp_path / "out", "--to", "tf", "--format",
                         "safetensors", "--max-shard-size", "20KB", "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    assert "wrote 28 tensors" in result.stdout and "model.safetensors.index.json" in result.stdout
    converted = open_checkpoint(tmp_path / "out")
    assert converted.source_format == "tf" and len(converted.files) == 5  # float16 halves 8 fp32 shards
    assert {converted.dtype(k).name for k in converted} == {"float16"}


@pytest.mark.parametrize("args,needle", [
    (["--to", "flax"], "already exists"),
    (["--to", "tf", "--format", "msgpack"], "not 'msgpack'"),
])
def test_convert_errors_are_one_line_with_non_zero_exit(tmp_path, args, needle):
    (tmp_path / "out").mkdir()
    result = twinformers("convert", fixture("gpt2-pt-base"), tmp_path / "out", *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("twinformers convert: error:")
    assert needle in result.stderr
    assert os.listdir(tmp_path / "out") == []


def test_convert_reports_shape_mismatch_on_one_line(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(fixture("gpt_neo-pt-base"), src)
    config = (src / "config.json").read_text().replace('"vocab_size": 100', '"vocab_size": 128')
    (src / "config.json").write_text(config)
    result = twinformers("convert", src, tmp_path / "out")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "wte.weight: checkpoint (100, 32) vs expected (128, 32)" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_convert_missing_source_and_bad_choice(tmp_path):
    result = twinformers("convert", tmp_path / "nowhere here", tmp_path / "out")
    assert result.returncode == 1 and "neither an existing directory" in result.stderr
    result = twinformers("convert", fixture("gpt2-pt-base"), tmp_path / "out", "--to", "onnx")
    assert result.returncode == 2 and "invalid choice" in result.stderr  # argparse usage error


def test_inspect(tmp_path):
    result = twinformers("inspect", fixture("gpt2-pt-causal_lm-sharded"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    file = SafetensorsFile(os.path.join(fixture("gpt2-pt-causal_lm"), "model.safetensors"))
    parameters = sum(int(np.prod(file.shape(k))) for k in file)
    assert "family: gpt2   head: causal_lm (GPT2LMHeadModel)" in lines
    assert f"parameters: {parameters:,} in 28 tensors (0.1 MB)" in lines
    assert "dtypes: float32 ×28" in lines
    assert "files: 9 (index + 8 shards)" in lines
    assert "tied weights: lm_head.weight = transformer.wte.weight" in lines
    assert "weights match config: yes" in lines
    assert any(line.startswith("loads in twinformers.pt: ") for line in lines)
    assert "config: layers 2, hidden 32, heads 4, vocab 100, positions 64" in lines


def test_inspect_tf_layout_and_errors(tmp_path):
    result = twinformers("inspect", fixture("gptj-tf-seq_cls"))
    assert result.returncode == 0, result.stderr
    assert "format: tf_model.h5 (tf layout)" in result.stdout and "tied weights: none" in result.stdout
    assert "rotary_dim 4" in result.stdout
    bad = twinformers("inspect", tmp_path)
    assert bad.returncode == 1 and "holds no weights" in bad.stderr and bad.stderr.count("\n") == 1


def test_verify_through_the_cli(tmp_path):
    pytest.importorskip("torch")
    result = twinformers("convert", fixture("gptj-pt-causal_lm"), tmp_path / "out", "--to", "tf", "--verify")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("verify ")]
    assert any(line.startswith("verify pt   logits") for line in rows)
    for line in rows:
        assert float(line.split("= ")[1].split()[0]) <= 1e-5, line


# A conversion that pauses after its first shard, so a test can kill it mid-way.
SLOW_CONVERSION = """
import sys, time
from twinformers.checkpoints import flax_msgpack
from twinformers.cli import main as cli
real = flax_msgpack.write_flax_msgpack
def slow(path, *args, **kwargs):
    real(path, *args, **kwargs)
    print("WROTE", path, flush=True)
    time.sleep(120)
flax_msgpack.write_flax_msgpack = slow
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killed_conversion_leaves_no_output(tmp_path, signum):
    dst = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CONVERSION, "convert", fixture("gpt2-pt-causal_lm"), str(dst), "--to", "flax",
         "--max-shard-size", "20KB", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("WROTE"), process.stderr.read()
        assert os.path.exists(line.split()[1])  # a shard is on disk, in the staging directory
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == (128 + signum if signum == signal.SIGTERM else -signum)
    assert not os.path.exists(dst)
    leftovers = os.listdir(tmp_path)
    if signum == signal.SIGTERM:
        assert leftovers == []  # a terminated conversion also removes its staging directory
    else:  # SIGKILL cannot be caught: only the hidden staging directory may remain, never `out`
        assert all(name.startswith(".out.") and name.endswith(".partial") for name in leftovers)
