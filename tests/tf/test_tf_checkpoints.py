"""Checkpoints written by Hugging Face transformers (PyTorch, TF and Flax layouts; safetensors, .bin, h5,
msgpack; single and sharded) load into the TF twin and reproduce the recorded PyTorch outputs to 1e-5; our
variable names are exactly the names in Hugging Face's `tf_model.h5` files."""

import os

import pytest

tf = pytest.importorskip("tensorflow")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from tf_testing import canonical_weights, numpy_gpt2  # noqa: E402

import twinformers.tf as tft  # noqa: E402
from helpers import HF_FIXTURES, assert_close, reference_outputs, require_reader  # noqa: E402
from twinformers.checkpoints.canonical import open_checkpoint  # noqa: E402

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
