"""`conversion`: reading every Hugging Face checkpoint layout canonically, and the per-family tables."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import zipfile

import numpy as np
import pytest

from helpers import HF_FIXTURES
from twinformers.checkpoint import CheckpointError, SafetensorsFile, bfloat16_dtype, write_safetensors
from twinformers.conversion import open_checkpoint


def fixture(name: str) -> str:
    return os.path.join(HF_FIXTURES, name)


def stored(name: str) -> dict[str, np.ndarray]:
    """The tensors of an HF-written PT `model.safetensors`, read independently of `open_checkpoint`."""
    file = SafetensorsFile(os.path.join(fixture(name), "model.safetensors"))
    return {key: np.array(file[key]) for key in file}


def assert_same_tensors(checkpoint, expected: dict[str, np.ndarray]) -> None:
    assert sorted(checkpoint) == sorted(expected)
    for key, value in expected.items():
        got = checkpoint[key]
        assert got.dtype == value.dtype and got.shape == value.shape, key
        assert np.array_equal(got, value), key
        assert checkpoint.shape(key) == value.shape and checkpoint.dtype(key) == value.dtype


# --------------------------------------------------------------------------------------------- PT layouts
@pytest.mark.parametrize("family", ["gpt2", "gptj", "gpt_neo"])
def test_pt_safetensors_single_and_sharded(family):
    expected = stored(f"{family}-pt-causal_lm")
    single = open_checkpoint(fixture(f"{family}-pt-causal_lm"))
    assert (single.source_format, single.weights_name, single.family) == ("pt", "model.safetensors", family)
    assert_same_tensors(single, expected)
    sharded = open_checkpoint(fixture(f"{family}-pt-causal_lm-sharded"))
    assert sharded.weights_name == "model.safetensors.index.json"
    assert len(sharded.files) == 9 and sharded.files[0].endswith("model.safetensors.index.json")
    assert_same_tensors(sharded, expected)


def test_safetensors_arrays_are_zero_copy_views():
    checkpoint = open_checkpoint(fixture("gpt2-pt-causal_lm"))
    array = checkpoint["transformer.wte.weight"]
    assert not array.flags.owndata and not array.flags.writeable


@pytest.mark.parametrize("name", ["gpt2-pt-causal_lm", "gpt2-pt-causal_lm-sharded"])
def test_read_into(name):
    checkpoint = open_checkpoint(fixture(name))
    expected = stored("gpt2-pt-causal_lm")
    for key in ("transformer.h.0.attn.c_attn.bias", "transformer.wpe.weight"):
        out = np.empty(checkpoint.shape(key), checkpoint.dtype(key))
        checkpoint.read_into(key, out)
        assert np.array_equal(out, expected[key])
    with pytest.raises(ValueError, match="transformer.wpe.weight"):
        checkpoint.read_into("transformer.wpe.weight", np.empty((3, 3), np.float32))


@pytest.mark.parametrize("family,head", [("gpt2", "causal_lm"), ("gptj", "seq_cls"), ("gpt_neo", "token_cls"),
                                         ("gpt2", "double_heads")])
def test_pytorch_bin_single_and_sharded(family, head):
    pytest.importorskip("torch")
    expected = stored(f"{family}-pt-{head}")
    checkpoint = open_checkpoint(fixture(f"{family}-pt-{head}-bin"))
    assert checkpoint.weights_name == "pytorch_model.bin" and checkpoint.source_format == "pt"
    tied = head in ("causal_lm", "double_heads") and family != "gptj"
    # The .bin keeps the tied `lm_head.weight` that safetensors leaves out (FORMATS.md §4).
    assert sorted(checkpoint) == sorted([*expected, *(["lm_head.weight"] if tied else [])])
    for key, value in expected.items():
        assert np.array_equal(checkpoint[key], value), key
    if tied:
        assert np.array_equal(checkpoint["lm_head.weight"], expected["transformer.wte.weight"])
    if head == "causal_lm":
        sharded = open_checkpoint(fixture(f"{family}-pt-causal_lm-sharded-bin"))
        assert sharded.weights_name == "pytorch_model.bin.index.json"
        for key in checkpoint:
            assert np.array_equal(sharded[key], checkpoint[key]), key


def test_prefer_picks_a_kind_first(tmp_path):
    pytest.importorskip("torch")
    both = tmp_path / "both"
    shutil.copytree(fixture("gpt2-pt-causal_lm"), both)
    shutil.copy(os.path.join(fixture("gpt2-pt-causal_lm-bin"), "pytorch_model.bin"), both)
    assert open_checkpoint(both).weights_name == "model.safetensors"  # Hugging Face's order
    assert open_checkpoint(both, prefer="bin").weights_name == "pytorch_model.bin"
    with pytest.raises(ValueError, match="prefer"):
        open_checkpoint(both, prefer="onnx")


def test_bf16_safetensors_come_back_as_ml_dtypes_bfloat16(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_safetensors(tmp_path / "model.safetensors", {"w": values.astype(bfloat16_dtype())}, {"format": "pt"})
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint.family is None and checkpoint.config is None
    assert checkpoint.dtype("w") == bfloat16_dtype()
    assert np.array_equal(checkpoint["w"].astype(np.float32), values)


def test_bf16_bin(tmp_path):
    torch = pytest.importorskip("torch")
    values = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save({"w": values.to(torch.bfloat16)}, tmp_path / "pytorch_model.bin")
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint["w"].dtype == bfloat16_dtype()
    assert np.array_equal(checkpoint["w"].astype(np.float32), values.numpy())


# --------------------------------------------------------------------------------------------- bad input
def test_no_weights(tmp_path):
    shutil.copy(os.path.join(fixture("gpt2-pt-causal_lm"), "config.json"), tmp_path)
    with pytest.raises(CheckpointError, match="holds no weights.*model.safetensors"):
        open_checkpoint(tmp_path)


def test_not_a_directory_nor_repo_id(tmp_path):
    with pytest.raises(OSError, match="neither an existing directory"):
        open_checkpoint(str(tmp_path / "no" / ".." / "such dir"))


def test_unknown_model_type(tmp_path):
    shutil.copytree(fixture("gpt2-pt-causal_lm"), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model_type"] = "llama"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="llama"):
        open_checkpoint(tmp_path / "m")


def test_truncated_safetensors(tmp_path):
    source = os.path.join(fixture("gpt2-pt-causal_lm"), "model.safetensors")
    data = open(source, "rb").read()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        open_checkpoint(tmp_path)


def test_index_naming_a_missing_shard(tmp_path):
    shutil.copytree(fixture("gpt2-pt-causal_lm-sharded"), tmp_path / "m")
    os.remove(tmp_path / "m" / "model-00003-of-00008.safetensors")
    with pytest.raises(CheckpointError, match="model-00003-of-00008.safetensors"):
        open_checkpoint(tmp_path / "m")


def test_index_disagreeing_with_its_shards(tmp_path):
    shutil.copytree(fixture("gpt2-pt-causal_lm-sharded"), tmp_path / "m")
    index_path = tmp_path / "m" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["transformer.wte.weight"] = "model-00001-of-00008.safetensors"
    index["weight_map"]["transformer.h.9.ln_1.weight"] = "model-00001-of-00008.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="transformer.h.9.ln_1.weight"):
        open_checkpoint(tmp_path / "m")


def test_bin_pickle_needing_more_than_weights_is_refused(tmp_path):
    torch = pytest.importorskip("torch")

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"w": torch.zeros(2), "extra": Evil()}, tmp_path / "pytorch_model.bin", pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights only"):
        open_checkpoint(tmp_path)


def test_bin_holding_something_else_than_a_dict_of_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2), "step": 3}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="plain dict of named tensors"):
        open_checkpoint(tmp_path)


def test_corrupt_bin(tmp_path):
    pytest.importorskip("torch")
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", b"not a pickle")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        open_checkpoint(tmp_path)


def test_bin_without_torch_names_the_extra(tmp_path, monkeypatch):
    shutil.copy(os.path.join(fixture("gpt2-pt-causal_lm-bin"), "pytorch_model.bin"), tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"twinformers\[pt\]"):
        open_checkpoint(tmp_path)
