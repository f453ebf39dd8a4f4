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
from twinformers._backends import missing_modules
from twinformers.checkpoints.canonical import open_checkpoint
from twinformers.checkpoints.safetensors import SafetensorsFile


def fixture(name: str) -> str:
    return os.path.join(HF_FIXTURES, name)


# As a user runs it: TF_CPP_MIN_LOG_LEVEL unset (the CLI keeps TensorFlow's C++ logging quiet itself).
ENV = {**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, "HF_HUB_OFFLINE": "1"}


def twinformers(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinformers", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


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
    assert f"parameters: {parameters:,} in 28 tensors ({parameters * 4 / 1e3:.1f} kB)" in lines
    shard = os.path.join(fixture("gpt2-pt-causal_lm-sharded"), "model-00001-of-00008.safetensors")
    assert f"  model-00001-of-00008.safetensors  {os.path.getsize(shard) / 1e3:.1f} kB" in lines
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
    for line in rows:  # verify pt   logits   max |Δ| = 1.234e-07  (bound 1.0e-05)
        diff, bound = float(line.split("= ")[1].split()[0]), float(line.split("(bound ")[1].rstrip(")"))
        assert diff <= bound and bound >= 1e-5, line
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"verified: {tmp_path / 'out'} gives the source's outputs in pt")


# --verify with every comparison failing: the conversion is not kept, and the message says so.
FAILING_VERIFY = """
import sys
from twinformers.conversion import converter
from twinformers.cli import main as cli
converter._max_diff = lambda actual, expected, valid: 1.0
sys.exit(cli.main(sys.argv[1:]))
"""


def test_failed_verify_keeps_nothing_and_says_so(tmp_path):
    pytest.importorskip("torch")
    dst = tmp_path / "out"
    command = [sys.executable, "-c", FAILING_VERIFY, "convert", fixture("gpt2-pt-base"), str(dst), "--to", "tf",
               "--verify", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 1 and result.stderr.count("\n") == 1  # no TensorFlow C++ lines either
    assert "verification failed" in result.stderr
    assert result.stderr.endswith(f"the conversion was not kept ({dst} was not created)\n")
    assert os.listdir(tmp_path) == []
    dst.mkdir()
    (dst / "previous.txt").write_text("kept")
    result = subprocess.run(command + ["--force"], capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 1
    assert result.stderr.endswith(f"the conversion was not kept (the previous {dst} is unchanged)\n")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(dst) == ["previous.txt"]


def test_convert_refuses_a_destination_overlapping_the_source(tmp_path):
    src = tmp_path / "models" / "src"
    shutil.copytree(fixture("gpt2-pt-base"), src)
    before = sorted(os.listdir(src))
    for dst, needle in ((src, "is the source checkpoint"), (src / "tf", "lies inside the source checkpoint"),
                        (tmp_path / "models", "contains the source checkpoint")):
        result = twinformers("convert", src, dst, "--to", "tf", "--force")
        assert result.returncode == 1 and needle in result.stderr, result.stderr
    assert sorted(os.listdir(src)) == before and os.listdir(tmp_path / "models") == ["src"]


def test_overwrite_error_names_the_cli_flag(tmp_path):
    (tmp_path / "out").mkdir()
    result = twinformers("convert", fixture("gpt2-pt-base"), tmp_path / "out")
    assert result.stderr == (f"twinformers convert: error: {tmp_path / 'out'} already exists; pass --force to "
                             "replace it\n")


def test_inspect_without_config_says_no_twin_loads_it(tmp_path):
    shutil.copy(os.path.join(fixture("gpt2-pt-causal_lm"), "model.safetensors"), tmp_path)
    result = twinformers("inspect", tmp_path)
    assert result.returncode == 0, result.stderr
    for backend in ("pt", "tf", "flax"):
        assert f"loads in twinformers.{backend}: no (no config.json: the twins build the model from it)" \
            in result.stdout.splitlines()


# --------------------------------------------------------------------------------------------- mistyped paths
def test_mistyped_path_fails_in_seconds_offline(tmp_path):
    for args in (["inspect", "no-such-dir"], ["convert", "no-such-dir", tmp_path / "out"],
                 ["generate", "no-such-dir", "hi"]):
        result = twinformers(*args, timeout=60)  # HF_HUB_OFFLINE=1
        assert result.returncode == 1
        assert "no-such-dir is neither a local directory nor reachable on the Hub: HF_HUB_OFFLINE is set" \
            in result.stderr, result.stderr
    result = twinformers("inspect", "no-such-dir", "--local-files-only", timeout=60)
    assert "local_files_only is set (--local-files-only)" in result.stderr


# The Hub cannot be reached (simulated: the network is never used): every request is counted.
UNREACHABLE_HUB = """
import sys, huggingface_hub
from huggingface_hub.utils import LocalEntryNotFoundError
calls = {"probe": 0, "download": 0, "cache": 0}
def probe(url, **kwargs):
    calls["probe"] += 1
    raise ConnectionError("Name or service not known")
def download(repo_id, filename, local_files_only=False, **kwargs):
    calls["cache" if local_files_only else "download"] += 1
    raise LocalEntryNotFoundError(f"{filename} is not in the cache")
huggingface_hub.get_hf_file_metadata = probe
huggingface_hub.hf_hub_download = download
from twinformers.cli import main as cli
status = cli.main(sys.argv[1:])
print(calls)
sys.exit(status)
"""


def test_unreachable_hub_is_asked_once_without_retries(tmp_path):
    env = {**ENV, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", UNREACHABLE_HUB, "inspect", "no-such-dir"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert result.stdout == "{'probe': 1, 'download': 0, 'cache': 1}\n"
    assert result.stderr.startswith("twinformers inspect: error: no-such-dir is neither a local directory nor "
                                    "reachable on the Hub: the Hub could not be reached (ConnectionError: Name or "
                                    "service not known)")


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


def test_an_in_process_command_leaves_the_sigterm_handler_as_it_was(tmp_path):
    # convert and export turn SIGTERM into an exit only while they run (tests, notebooks run them in-process).
    from twinformers.cli import main as cli

    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["convert", fixture("gptj-tf-causal_lm"), str(tmp_path / "out"), "--to", "flax", "--quiet"])
    assert code == 0
    assert signal.getsignal(signal.SIGTERM) is before


# torch is not installed (simulated in a fresh interpreter): `.bin` files are read without it.
HIDE_TORCH = """
import importlib.abc, importlib.util, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.partition(".")[0] == "torch" else _find_spec(name, package))
from twinformers.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_inspect_bin_without_torch_says_the_other_twins_load_it():
    result = subprocess.run([sys.executable, "-c", HIDE_TORCH, "inspect", fixture("gpt2-pt-causal_lm-sharded-bin")],
                            capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "format: pytorch_model.bin.index.json (pt layout)" in lines
    assert "weights match config: yes" in lines
    assert any(line.startswith("loads in twinformers.pt: no (") and "torch" in line for line in lines), lines
    for backend in ("tf", "flax"):  # the envs install one twin, or all
        verdict = next(line for line in lines if line.startswith(f"loads in twinformers.{backend}: "))
        if not missing_modules(backend):  # (not find_spec("flax"): tests/flax would answer it)
            assert verdict == f"loads in twinformers.{backend}: yes", lines
        else:
            assert "not installed" in verdict and "torch" not in verdict, lines
