"""Checkpoints written by Hugging Face transformers (PyTorch, TF and Flax layouts; safetensors, .bin, h5,
msgpack; single and sharded) load into the TF twin and reproduce the recorded PyTorch outputs to 1e-5; our
variable names are exactly the names in Hugging Face's `tf_model.h5` files. save_pretrained / from_pretrained:
round trips of every class through PyTorch-layout safetensors and Hugging Face's `tf_model.h5`, sharding, the
exact files Hugging Face writes, base <-> head loading, errors."""

import json
import os

import pytest

tf = pytest.importorskip("tensorflow")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from tf_testing import (  # noqa: E402
    CLASS_IDS,
    CLASSES,
    canonical_weights,
    make_model,
    numpy_gpt2,
    perturb,
    random_ids,
)

import twinformers.tf as tft  # noqa: E402
from helpers import HF_FIXTURES, assert_close, reference_outputs, require_reader  # noqa: E402
from twinformers.checkpoints.canonical import open_checkpoint  # noqa: E402
from twinformers.checkpoints.files import bfloat16_dtype  # noqa: E402
from twinformers.checkpoints.safetensors import SafetensorsFile, write_safetensors  # noqa: E402
from twinformers.conversion.tables import expected_shapes  # noqa: E402

CLASS_OF = {
    ("gpt2", "base"): "GPT2Model", ("gpt2", "causal_lm"): "GPT2LMHeadModel",
    ("gpt2", "double_heads"): "GPT2DoubleHeadsModel", ("gpt2", "seq_cls"): "GPT2ForSequenceClassification",
    ("gpt2", "token_cls"): "GPT2ForTokenClassification", ("gpt2", "qa"): "GPT2ForQuestionAnswering",
    ("gptj", "base"): "GPTJModel", ("gptj", "causal_lm"): "GPTJForCausalLM",
    ("gptj", "seq_cls"): "GPTJForSequenceClassification", ("gptj", "qa"): "GPTJForQuestionAnswering",
    ("gpt_neo", "base"): "GPTNeoModel", ("gpt_neo", "causal_lm"): "GPTNeoForCausalLM",
    ("gpt_neo", "seq_cls"): "GPTNeoForSequenceClassification", ("gpt_neo", "token_cls"): "GPTNeoForTokenClassification",
    ("gpt_neo", "qa"): "GPTNeoForQuestionAnswering",
}
# `<family>-<framework>-<head>[-variant]` directories; the cross-attention checkpoint has no recorded outputs
# (it is checked against NumPy below).
FIXTURE_DIRS = sorted(
    d for d in os.listdir(HF_FIXTURES)
    if os.path.isdir(os.path.join(HF_FIXTURES, d)) and d.count("-") >= 2 and not d.startswith("tokenizer")
    and "cross_attention" not in d
)
_LOADED: dict[str, tft.PreTrainedModel] = {}


def _parse(directory: str) -> tuple[str, str]:
    family, _, rest = directory.split("-", 2)
    return family, rest.split("-")[0]


def _load(directory: str) -> tuple[tft.PreTrainedModel, dict]:
    """`from_pretrained` the first directory of each class; later directories of that class reload the same
    (already built) model through the same path, which keeps the suite fast."""
    family, head = _parse(directory)
    name = CLASS_OF[(family, head)]
    path = os.path.join(HF_FIXTURES, directory)
    if name not in _LOADED:
        model, info = getattr(tft, name).from_pretrained(path, output_loading_info=True)
        _LOADED[name] = model
        return model, info
    model = _LOADED[name]
    return model, model._load_weights(open_checkpoint(path))


def test_every_fixture_directory_is_covered():
    layouts = {d.split("-", 2)[1] for d in FIXTURE_DIRS}
    assert layouts == {"pt", "tf", "flax"} and len(FIXTURE_DIRS) >= 70
    assert {_parse(d) for d in FIXTURE_DIRS} == set(CLASS_OF)


@pytest.mark.parametrize("directory", FIXTURE_DIRS)
def test_hugging_face_checkpoint_reproduces_recorded_outputs(directory):
    require_reader(directory)
    family, head = _parse(directory)
    model, info = _load(directory)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
    reference = reference_outputs(family, head)
    inputs = {k.removeprefix("input."): v for k, v in reference.items() if k.startswith("input.")}
    output = model(**inputs)
    expected = {k.removeprefix("pt."): v for k, v in reference.items() if k.startswith("pt.")}
    assert expected
    for field, value in expected.items():
        assert_close(output[field], value, name=f"{directory} {field}")


@pytest.mark.parametrize("directory", sorted(d for d in FIXTURE_DIRS if "-tf-" in d and "safetensors" not in d
                                             and "sharded" not in d))
def test_variable_names_equal_hugging_face_h5_names(directory):
    """Our variable paths minus the model name are the `weight_names` of Hugging Face's `tf_model.h5` minus its
    model name and `:0` (shapes differ only for the Conv1D biases, (n,) here and (1, n) there)."""
    model, _ = _load(directory)
    with h5py.File(os.path.join(HF_FIXTURES, directory, "tf_model.h5"), "r") as f:
        stored = {}
        for layer in f.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            for full in f[layer].attrs["weight_names"]:
                full = full.decode() if isinstance(full, bytes) else full
                stored[full.split("/", 1)[1].removesuffix(":0")] = f[layer][full].shape
    ours = {v.path.split("/", 1)[1]: tuple(v.shape) for v in model.weights}
    assert set(ours) == set(stored)
    for name, shape in ours.items():
        conv1d_bias = name.endswith("/bias") and stored[name] == (1, *shape)
        assert shape == stored[name] or conv1d_bias, (name, shape, stored[name])


def test_cross_attention_checkpoint_matches_numpy():
    path = os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm-cross_attention")
    model, info = tft.GPT2LMHeadModel.from_pretrained(path, output_loading_info=True)
    assert model.config.add_cross_attention and info["missing_keys"] == [] and info["unexpected_keys"] == []
    rng = np.random.default_rng(0)
    input_ids = rng.integers(0, model.config.vocab_size, (2, 6)).astype(np.int32)
    encoder_hidden_states = rng.standard_normal((2, 5, model.config.n_embd)).astype(np.float32)
    output = model(input_ids, encoder_hidden_states=encoder_hidden_states, output_attentions=True)
    weights = {k.removeprefix("transformer."): v for k, v in canonical_weights(model).items()}
    hidden = numpy_gpt2(weights, model.config, input_ids, encoder_hidden_states)
    assert_close(output.logits, hidden @ weights["wte.weight"].astype(np.float64).T, name="cross-attention logits")
    assert len(output.cross_attentions) == 2 and tuple(output.cross_attentions[0].shape) == (2, 4, 6, 5)


# --------------------------------------------------------------------------------- save_pretrained / from_pretrained
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
