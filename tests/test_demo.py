"""The embedded tiny GPT-2, the demo's building blocks, and `twinformers demo` (full run only with all three
backends; a degraded run with PyTorch alone)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from twinformers.checkpoints.files import staged_directory
from twinformers.cli.main import main
from twinformers.configuration import AutoConfig
from twinformers.demo import embedded
from twinformers.demo import run as demo_run
from twinformers.demo.embedded import (
    EMBEDDED_SETTINGS,
    embedded_model_path,
    split_blocks,
    stdlib_texts,
    token_blocks,
    train_tokenizer,
)
from twinformers.demo.run import DemoResult, DemoSettings, format_summary, format_table, run_demo
from twinformers.tokenization.gpt2 import GPT2Tokenizer
from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast

HAS = {name: importlib.util.find_spec(module) is not None
       for name, module in (("pt", "torch"), ("tf", "tensorflow"), ("flax", "flax"))}
SAMPLE = 'def parse(text):\n    """Split on commas — naïvely."""\n    return [x.strip() for x in text.split(",")]\n'


# --------------------------------------------------------------------------------------------- the embedded model
def test_embedded_model_files_and_config():
    path = embedded_model_path()
    names = set(os.listdir(path))
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt",
            "tokenizer_config.json", "generation_config.json"} <= names
    assert sum(os.path.getsize(os.path.join(path, n)) for n in names) < 2_000_000  # small enough to ship
    config = AutoConfig.from_pretrained(path)
    settings = EMBEDDED_SETTINGS
    assert (config.model_type, config.n_layer, config.n_embd, config.n_head, config.n_positions) == (
        "gpt2", settings.n_layer, settings.n_embd, settings.n_head, settings.n_positions)
    assert config.vocab_size == settings.vocab_size
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["architectures"] == ["GPT2LMHeadModel"]


def test_embedded_tokenizer_slow_and_fast_agree_and_round_trip():
    path = embedded_model_path()
    fast = GPT2TokenizerFast.from_pretrained(path)
    slow = GPT2Tokenizer.from_pretrained(path)
    assert len(fast) == len(slow) == EMBEDDED_SETTINGS.vocab_size
    assert fast.eos_token == "<|endoftext|>" and fast.eos_token_id == len(fast) - 1  # last id, as in GPT-2
    texts = stdlib_texts(20_000, package="json")
    assert fast(texts)["input_ids"] == slow(texts)["input_ids"]
    ids = fast(SAMPLE)["input_ids"]
    assert fast.decode(ids) == SAMPLE
    assert len(ids) < len(SAMPLE.encode("utf-8")) / 2  # the merges compress Python source


def test_embedded_path_missing_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "DATA_DIR", str(tmp_path))
    with pytest.raises(OSError, match="train_embedded_model.py"):
        embedded_model_path()


@pytest.mark.skipif(not HAS["pt"], reason="needs torch")
def test_embedded_model_has_learned_python():
    """Loss on a standard-library package it never saw, against a uniform guess (ln 1024 = 6.93)."""
    import torch

    from twinformers.pt import GPT2LMHeadModel

    path = embedded_model_path()
    tokenizer = GPT2TokenizerFast.from_pretrained(path)
    model = GPT2LMHeadModel.from_pretrained(path).eval()
    blocks = token_blocks(tokenizer, stdlib_texts(30_000, package="json"), 128)[:8]
    ids = torch.from_numpy(blocks.astype(np.int64))
    with torch.no_grad():
        loss = float(model(ids, labels=ids).loss)
    assert loss < 0.7 * np.log(len(tokenizer)), loss  # untrained: about ln(V); the shipped model: about 4.4


# --------------------------------------------------------------------------------------------- building blocks
def test_stdlib_texts_is_sorted_and_bounded():
    texts = stdlib_texts(50_000, package="json")
    stdlib_json = os.path.join(os.path.dirname(os.__file__), "json")
    first = sorted(n for n in os.listdir(stdlib_json) if n.endswith(".py"))[0]
    with open(os.path.join(stdlib_json, first), encoding="utf-8") as f:
        assert texts[0] == f.read()[:50_000]
    assert sum(map(len, texts)) <= 50_000
    assert sum(map(len, stdlib_texts(1_000))) == 1_000


def test_stdlib_texts_without_sources(tmp_path, monkeypatch):
    (tmp_path / "emptypkg").mkdir()
    monkeypatch.setattr(embedded, "STDLIB_DIR", str(tmp_path))
    with pytest.raises(OSError, match="without its stdlib sources"):
        stdlib_texts(100, package="emptypkg")


def test_train_tokenizer_is_byte_level_bpe_of_the_requested_size():
    tokenizer = train_tokenizer(stdlib_texts(60_000), vocab_size=300)
    assert len(tokenizer) == 300
    vocab = tokenizer.get_vocab()
    assert vocab["<|endoftext|>"] == 299 and tokenizer.eos_token_id == 299
    # every byte has a token, so any text (here non-ASCII and an emoji) survives a round trip
    text = "ünïcödé ✓ 🐍\n\tx = 1"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert len(tokenizer(SAMPLE)["input_ids"]) < len(SAMPLE.encode("utf-8"))


def test_token_blocks_joins_with_eos_and_drops_the_tail():
    tokenizer = GPT2TokenizerFast.from_pretrained(embedded_model_path())
    texts = ["a = 1\n", "b = 2\n", "c = 3\n"]
    pieces = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    stream = [i for piece in pieces for i in piece]
    blocks = token_blocks(tokenizer, texts, 4)
    assert blocks.dtype == np.int32 and blocks.shape == (len(stream) // 4, 4)
    np.testing.assert_array_equal(blocks.reshape(-1), stream[: blocks.size])
    with pytest.raises(ValueError, match="too few for two blocks of 512"):
        token_blocks(tokenizer, texts, 512)


def test_split_blocks_keeps_one_row_to_train():
    blocks = np.arange(12).reshape(6, 2)
    train, validation = split_blocks(blocks, validation_blocks=2)
    np.testing.assert_array_equal(validation, blocks[:2])
    np.testing.assert_array_equal(train, blocks[2:])
    train, validation = split_blocks(blocks[:2], validation_blocks=5)
    assert len(train) == 1 and len(validation) == 1


def test_format_table_aligns_text_left_and_numbers_right():
    table = format_table(("twin", "max |Δ|"), [("PyTorch", 3.5e-07), ("TensorFlow", 0.0), ("Flax", 12.0)])
    lines = table.split("\n")
    assert lines[0].startswith("twin ") and set(lines[1]) == {"-", " "}
    assert lines[2] == "PyTorch     3.50e-07"
    assert lines[3] == "TensorFlow         0"
    assert lines[4] == "Flax           12.00"
    assert format_table(None, [("a", "b")]) == "a  b"


def test_staged_directory_is_all_or_nothing(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (tmp_path / "x").touch()
        open(os.path.join(staging, "new.txt"), "w").close()
        raise RuntimeError("interrupted")
    assert os.listdir(target) == ["old.txt"]
    with staged_directory(target) as staging:
        open(os.path.join(staging, "new.txt"), "w").close()
    assert os.listdir(target) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model", "x"]  # no staging or backup left behind


# --------------------------------------------------------------------------------------------- the command
def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinformers", "demo", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_cli_help_and_bad_arguments():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--short", "--retrain", "--prompt", "--max-new-tokens", "--steps", "--output-dir", "--quiet"):
        assert flag in result.stdout
    result = run_cli("--steps", "0")
    assert result.returncode == 2 and "--steps must be at least 1" in result.stderr


@pytest.mark.skipif(not HAS["pt"], reason="needs torch")
def test_demo_degrades_to_the_installed_backends(monkeypatch, tmp_path):
    """With only PyTorch usable: no Keras fine-tuning, the embedded weights are converted and run in PyTorch,
    and the skipped backends are named with their pip extra."""
    monkeypatch.setattr(demo_run, "missing_backends", lambda: {
        "tf": "tensorflow is not installed: pip install 'twinformers[tf]'",
        "flax": "jax and msgpack are not installed: pip install 'twinformers[flax]'",
    })
    notes = []
    settings = DemoSettings.short(max_new_tokens=3, progress=False, output_dir=str(tmp_path / "out"))
    result = run_demo(settings, log=notes.append)
    assert result.fine_tune is None and result.model_source == embedded_model_path()
    assert result.checkpoints["tf"] == embedded_model_path()  # converted as shipped
    assert "model.safetensors" in os.listdir(result.checkpoints["pt"])
    assert "flax" not in result.checkpoints  # not converted: writing flax_model.msgpack needs msgpack
    assert any(note.strip().startswith("Flax") and "skipped" in note for note in notes)
    assert list(result.logits_diff) == ["pt"] and result.logits_diff["pt"] == 0.0 and result.ok
    assert [g.backend for g in result.generations] == ["pt"] and len(result.generations[0].token_ids) == 3
    summary = format_summary(result, settings)
    assert "pip install 'twinformers[tf]'" in summary and "pip install 'twinformers[flax]'" in summary
    assert any("TensorFlow twin skipped" in note for note in notes)
    # the converted checkpoints hold the embedded weights
    from twinformers.checkpoints.safetensors import open_safetensors

    embedded = open_safetensors(os.path.join(embedded_model_path(), "model.safetensors"))
    converted = open_safetensors(os.path.join(result.checkpoints["pt"], "model.safetensors"))
    assert sorted(embedded) == sorted(converted)
    for key in embedded:
        np.testing.assert_array_equal(converted[key], embedded[key], err_msg=key)


# A `[pt]`-only install, simulated in a fresh interpreter: these modules are neither found nor importable.
HIDE_MODULES = """
import importlib.abc, importlib.util, sys
HIDDEN = {"tensorflow", "keras", "h5py", "jax", "flax", "optax", "msgpack"}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.partition(".")[0] in HIDDEN else _find_spec(name, package))
from twinformers.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run_pt_only(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE_MODULES, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not HAS["pt"], reason="needs torch")
def test_demo_short_on_a_pt_only_install(tmp_path):
    result = run_pt_only("demo", "--short", "--max-new-tokens", "3", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "TensorFlow twin  skipped — tensorflow, keras and h5py are not installed: pip install 'twinformers[tf]'" \
        in result.stdout
    assert "optax and msgpack are not installed: pip install 'twinformers[flax]'" in result.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["pt"]  # nothing converted for the skipped twins


def test_convert_to_flax_without_msgpack_names_the_extra(tmp_path):
    from helpers import HF_FIXTURES

    result = run_pt_only("convert", os.path.join(HF_FIXTURES, "gpt2-pt-base"), str(tmp_path / "out"), "--to", "flax")
    assert result.returncode == 1
    assert result.stderr == ("twinformers convert: error: writing flax_model.msgpack needs msgpack, which is not "
                             "installed: pip install 'twinformers[flax]'\n")
    assert not (tmp_path / "out").exists()


def test_retrain_without_tensorflow_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_run, "missing_backends", lambda: {"tf": "tensorflow is not installed: pip install "
                                                                  "'twinformers[tf]'"})
    with pytest.raises(ImportError, match=r"--retrain trains with Keras.*twinformers\[tf\]"):
        run_demo(DemoSettings.short(retrain=True, progress=False, output_dir=str(tmp_path)),
                      log=lambda _: None)


@pytest.mark.skipif(not all(HAS.values()), reason="the full demo needs PyTorch, TensorFlow and Flax")
def test_full_demo_fine_tunes_converts_and_agrees(tmp_path):
    settings = DemoSettings.short(fine_tune_steps=3, max_new_tokens=5, progress=False,
                                       output_dir=str(tmp_path / "out"))
    result = run_demo(settings, log=lambda _: None)
    assert result.skipped == {}
    assert "tf_model.h5" in os.listdir(result.checkpoints["tf"])
    assert "model.safetensors" in os.listdir(result.checkpoints["pt"])
    assert "flax_model.msgpack" in os.listdir(result.checkpoints["flax"])
    before, after = result.fine_tune
    assert np.isfinite(before) and np.isfinite(after)
    # independently of the demo's own comparison: each twin loaded from its converted checkpoint
    import torch

    import twinformers.flax
    import twinformers.pt
    import twinformers.tf

    ids = token_blocks(GPT2TokenizerFast.from_pretrained(result.checkpoints["tf"]),
                            stdlib_texts(5_000, package="json"), 32)[:2]
    tf_logits = np.asarray(twinformers.tf.GPT2LMHeadModel.from_pretrained(result.checkpoints["tf"])(ids).logits)
    with torch.no_grad():
        pt_logits = twinformers.pt.GPT2LMHeadModel.from_pretrained(result.checkpoints["pt"])(
            torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    flax_logits = np.asarray(twinformers.flax.GPT2LMHeadModel.from_pretrained(result.checkpoints["flax"])(ids).logits)
    # fp32 rounding grows with the values: 1e-5 on unit-scale logits (see LOGITS_TOLERANCE)
    bound = 1e-5 * max(1.0, float(np.abs(tf_logits).max()))
    assert np.abs(pt_logits - tf_logits).max() <= bound
    assert np.abs(flax_logits - tf_logits).max() <= bound
    assert result.ok and max(result.logits_diff.values()) <= result.logits_tolerance <= 1e-5 * 50
    # fine-tuning changed the weights
    embedded = twinformers.pt.GPT2LMHeadModel.from_pretrained(embedded_model_path())
    with torch.no_grad():
        assert np.abs(embedded(torch.from_numpy(ids.astype(np.int64))).logits.numpy() - pt_logits).max() > 1e-3
    generated = [g for g in result.generations if not g.note]
    assert generated and all(g.token_ids == generated[0].token_ids for g in generated)
    assert all(len(g.token_ids) == 5 for g in generated)


@pytest.mark.skipif(not HAS["pt"], reason="needs torch")
def test_generate_without_a_model_uses_the_embedded_one(capsys):
    pass

    assert main(["generate", "import os\n", "--max-new-tokens", "6"]) == 0
    streamed = capsys.readouterr().out
    assert streamed.startswith("import os\n") and len(streamed) > len("import os\n")
    # the same as greedy generate() of the embedded model, run here directly
    import torch

    from twinformers.pt import GPT2LMHeadModel

    path = embedded_model_path()
    tokenizer = GPT2TokenizerFast.from_pretrained(path)
    ids = torch.tensor([tokenizer.encode("import os\n")])
    tokens = GPT2LMHeadModel.from_pretrained(path).generate(ids, max_new_tokens=6, do_sample=False,
                                                            pad_token_id=tokenizer.eos_token_id)
    assert streamed.rstrip("\n") == tokenizer.decode(tokens[0]).rstrip("\n")


def test_logits_bound_scales_with_the_logits_but_not_below_1e_5():
    result = DemoResult(logits_diff={"tf": 0.0, "pt": 9e-6}, reference="tf")
    assert result.logits_tolerance == 1e-5 and result.ok
    result.logits_diff["flax"] = 1.1e-5
    assert not result.ok
    result.logits_tolerance = 1e-5 * 16  # what run_demo sets for logits up to 16
    assert result.ok
    result.logits_diff["flax"] = 2e-4
    assert not result.ok
