"""save_pretrained / from_pretrained: round trips of every class through PyTorch-layout safetensors and Hugging
Face's `tf_model.h5`, sharding, the exact files Hugging Face writes, base ↔ head loading, errors."""

import json
import os

import pytest

tf = pytest.importorskip("tensorflow")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from tf_testing import CLASS_IDS, CLASSES, canonical_weights, make_model, perturb, random_ids  # noqa: E402

import twinformers.tf as tft  # noqa: E402
from helpers import HF_FIXTURES, assert_close  # noqa: E402
from twinformers.checkpoints.canonical import open_checkpoint  # noqa: E402
from twinformers.checkpoints.files import bfloat16_dtype  # noqa: E402
from twinformers.checkpoints.safetensors import SafetensorsFile, write_safetensors  # noqa: E402
from twinformers.conversion.tables import expected_shapes  # noqa: E402


def _h5_datasets(path: str) -> dict[str, np.ndarray]:
    """Every dataset of an h5 file by its path in the file."""
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


def _assert_same_weights(loaded, original, label: str) -> None:
    assert [v.path.split("/", 1)[1] for v in loaded.weights] == [v.path.split("/", 1)[1] for v in original.weights]
    for a, b in zip(loaded.weights, original.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{label}: {a.path}")


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=CLASS_IDS)
def test_round_trip_safetensors_and_h5(family, name, kind, tmp_path):
    model = make_model(name)
    model.save_pretrained(tmp_path / "st")
    model.save_pretrained(tmp_path / "h5", safe_serialization=False)

    assert sorted(os.listdir(tmp_path / "st")) == sorted(
        ["config.json", "model.safetensors"] + (["generation_config.json"] if model.can_generate() else []))
    config = json.loads((tmp_path / "st" / "config.json").read_text())
    assert config["architectures"] == [name] and config["model_type"] == family
    weights = SafetensorsFile(str(tmp_path / "st" / "model.safetensors"))
    assert weights.format == "pt"
    expected = expected_shapes(model.config, kind)
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)  # tied: stored once, as Hugging Face's PyTorch save does
    assert {k: tuple(weights.shape(k)) for k in weights} == expected
    assert os.path.exists(tmp_path / "h5" / "tf_model.h5")

    loaded, info = getattr(tft, name).from_pretrained(tmp_path / "st", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
    _assert_same_weights(loaded, model, f"{name} via safetensors")
    # The h5 file into the same (already built) model, after scrambling it, through the same loading path.
    perturb(loaded, seed=123)
    info = loaded._load_weights(open_checkpoint(tmp_path / "h5"))
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
    _assert_same_weights(loaded, model, f"{name} via tf_model.h5")


@pytest.mark.parametrize("directory", ["gpt2-tf-causal_lm", "gpt2-tf-double_heads", "gpt2-tf-base",
                                       "gptj-tf-causal_lm", "gptj-tf-qa", "gpt2-tf-seq_cls"])
def test_h5_save_reproduces_hugging_faces_file(directory, tmp_path):
    """Loading Hugging Face's tf_model.h5 and saving it again gives the same layer groups, variable names (with
    Hugging Face's Keras-2 model name), shapes and values."""
    fixture = os.path.join(HF_FIXTURES, directory)
    config = json.loads(open(os.path.join(fixture, "config.json")).read())
    model = getattr(tft, config["architectures"][0]).from_pretrained(fixture)
    model.save_pretrained(tmp_path, safe_serialization=False)
    ours, theirs = _h5_datasets(str(tmp_path / "tf_model.h5")), _h5_datasets(os.path.join(fixture, "tf_model.h5"))
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
    with h5py.File(tmp_path / "tf_model.h5", "r") as a, h5py.File(os.path.join(fixture, "tf_model.h5"), "r") as b:
        # The same groups; their order follows variable creation, which differs only for GPT-2's classifier
        # (Hugging Face creates `score` before `transformer`) and does not matter to any loader.
        assert sorted(a.attrs["layer_names"]) == sorted(b.attrs["layer_names"])
        for layer in b.attrs["layer_names"]:
            assert list(a[layer].attrs["weight_names"]) == list(b[layer].attrs["weight_names"])


def test_safetensors_save_reproduces_hugging_faces_pytorch_file(tmp_path):
    fixture = os.path.join(HF_FIXTURES, "gptj-pt-causal_lm")
    tft.GPTJForCausalLM.from_pretrained(fixture).save_pretrained(tmp_path)
    ours, theirs = SafetensorsFile(str(tmp_path / "model.safetensors")), SafetensorsFile(f"{fixture}/model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "h5"])
def test_sharded_round_trip(safe, tmp_path):
    model = make_model("GPT2LMHeadModel")
    model.save_pretrained(tmp_path, safe_serialization=safe, max_shard_size="20KB")
    index_name = "model.safetensors.index.json" if safe else "tf_model.h5.index.json"
    index = json.loads((tmp_path / index_name).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(os.path.exists(tmp_path / s) for s in shards)
    if not safe:  # Hugging Face's TF index keys carry the Keras model name and `:0`
        assert all(k.startswith("tfgpt2lm_head_model/transformer/") and k.endswith(":0") for k in index["weight_map"])
    _assert_same_weights(tft.GPT2LMHeadModel.from_pretrained(tmp_path), model, "sharded")


def test_base_and_head_checkpoints_load_into_each_other(tmp_path):
    base = make_model("GPT2Model")
    base.save_pretrained(tmp_path / "base")
    lm, info = tft.GPT2LMHeadModel.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []  # the tied head needs nothing more
    ids = random_ids((2, 5))
    assert_close(lm.transformer(ids).last_hidden_state, base(ids).last_hidden_state, name="base into head")

    cls_model, info = tft.GPT2ForSequenceClassification.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] == ["score.weight"]

    gptj = make_model("GPTJForCausalLM")
    gptj.save_pretrained(tmp_path / "gptj")
    gptj_base, info = tft.GPTJModel.from_pretrained(tmp_path / "gptj", output_loading_info=True)
    assert info["unexpected_keys"] == ["lm_head.bias", "lm_head.weight"] and info["missing_keys"] == []
    assert_close(gptj_base(ids).last_hidden_state, gptj.transformer(ids).last_hidden_state, name="head into base")


def test_bfloat16_checkpoint_loads_into_float32_variables(tmp_path):
    model = make_model("GPTNeoForCausalLM")
    model.save_pretrained(tmp_path)
    path = str(tmp_path / "model.safetensors")
    halved = {k: v.astype(bfloat16_dtype()) for k, v in canonical_weights(model).items()}
    write_safetensors(path, halved, metadata={"format": "pt"})
    loaded = tft.GPTNeoForCausalLM.from_pretrained(tmp_path)
    assert all(v.dtype == "float32" for v in loaded.weights)
    for key, value in canonical_weights(loaded).items():
        np.testing.assert_array_equal(value, halved[key].astype(np.float32), err_msg=key)


def test_loading_errors(tmp_path):
    model = make_model("GPT2LMHeadModel")
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"transformer.wte.weight: checkpoint \(97, 24\) vs expected \(50, 24\)"):
        tft.GPT2LMHeadModel.from_pretrained(tmp_path / "ckpt", vocab_size=50)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        tft.GPT2LMHeadModel.from_pretrained(tmp_path / "ckpt", not_a_config_key=1)
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text((tmp_path / "ckpt" / "config.json").read_text())
    with pytest.raises(OSError, match="holds no weights"):
        tft.GPT2LMHeadModel.from_pretrained(tmp_path / "empty")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, expected a directory"):
        model.save_pretrained(tmp_path / "file")


def test_auto_classes_pick_the_family(tmp_path):
    make_model("GPTJForSequenceClassification").save_pretrained(tmp_path)
    model = tft.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(model) is tft.GPTJForSequenceClassification
    assert type(tft.AutoModelForCausalLM.from_config(make_model("GPTNeoModel").config)) is tft.GPTNeoForCausalLM
    with pytest.raises(ValueError, match="Unrecognized model_type"):
        tft.AutoModel.from_config(type("C", (), {"model_type": "bert"})())
