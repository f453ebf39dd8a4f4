"""`.keras` files: every TensorFlow class saves with `model.save("x.keras")` and loads with
`keras.models.load_model` to the same outputs; `get_config`/`from_config` round-trip the model config."""

import json
import os

import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tf_testing import CLASS_IDS, CLASSES, logits_of, make_model, model_inputs  # noqa: E402

import twinformers.tf as tft  # noqa: E402
from helpers import assert_close, tiny_config  # noqa: E402


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=CLASS_IDS)
def test_keras_file_round_trip(family, name, kind, tmp_path):
    model = make_model(name)  # perturbed weights: a fresh init would not show that the file's weights loaded
    inputs = model_inputs(kind)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.config.to_dict() == model.config.to_dict()
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{name}: {a.path}")
    assert_close(logits_of(kind, loaded(**inputs)), logits_of(kind, model(**inputs)), name=f"{name} logits")


def test_get_config_from_config_round_trip():
    config = tiny_config("gpt2", pad_token_id=0, id2label={0: "neg", 1: "pos", 2: "neutral"}, n_inner=40)
    model = tft.GPT2ForSequenceClassification(config, name="classifier")
    keras_config = model.get_config()
    # What `.keras` stores is JSON: the config survives a JSON round trip, integer label ids included.
    restored = tft.GPT2ForSequenceClassification.from_config(json.loads(json.dumps(keras_config)))
    assert restored.name == "classifier"
    assert restored.config.to_dict() == config.to_dict()
    assert restored.config.id2label == {0: "neg", 1: "pos", 2: "neutral"}
    assert restored.built


def test_keras_registered_names():
    for _, name, _ in CLASSES:
        assert keras.saving.get_registered_object(f"twinformers>{name}") is getattr(tft, name)


def test_cli_keras_format(tmp_path, capsys):
    from twinformers.cli.main import main
    from twinformers.demo.embedded import embedded_model_path

    out = tmp_path / "out"
    assert main(["export", embedded_model_path(), str(out), "--format", "keras"]) == 0, capsys.readouterr().err
    assert os.listdir(out) == ["model.keras"]
    loaded = keras.models.load_model(out / "model.keras")
    model = tft.GPT2LMHeadModel.from_pretrained(embedded_model_path())
    ids = np.array([[5, 6, 7, 8]], np.int32)
    assert_close(loaded(ids).logits.numpy(), model(ids).logits.numpy(), name="logits")
    assert main(["export", embedded_model_path(), str(out), "--format", "keras", "--dtype", "float16",
                 "--force"]) == 1
    assert "exports float32 only" in capsys.readouterr().err
