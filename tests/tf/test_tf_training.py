"""Keras training: `fit` on the model's own loss (labels in the inputs or as `y`), compiled Keras losses and
metrics, mixed precision, and `prepare_tf_dataset`."""

import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tf_testing import make_model, random_ids  # noqa: E402

import twinformers.tf as tft  # noqa: E402
from helpers import TOLERANCES, assert_close, tiny_config  # noqa: E402


def _pattern_ids(rows: int = 24, length: int = 8) -> np.ndarray:
    """Sequences whose odd tokens follow from the even ones, so a tiny LM can learn them."""
    ids = np.random.default_rng(0).integers(1, 97, (rows, length)).astype(np.int32)
    ids[:, 1::2] = ids[:, ::2] % 50 + 1
    return ids


def _fresh(name: str, **overrides) -> tft.PreTrainedModel:
    family = {"GPT2": "gpt2", "GPTJ": "gptj", "GPTN": "gpt_neo"}[name[:4]]
    model = getattr(tft, name)(tiny_config(family, pad_token_id=0, **overrides))
    model.build()
    return model


def test_fit_lowers_the_loss_with_labels_in_the_inputs_or_as_y():
    """`compile` without a loss: `fit` trains on the model's own (shifted) loss, whether the labels come inside a
    `prepare_tf_dataset` batch or as `fit(x, y)`; both runs give the same validation losses and weights."""
    ids = _pattern_ids()
    dataset = tft.prepare_tf_dataset({"input_ids": ids.tolist()}, batch_size=8, shuffle=False,
                                     labels_from_input_ids=True)
    models = [_fresh("GPTNeoForCausalLM") for _ in range(2)]
    models[1].set_weights(models[0].get_weights())
    for model in models:
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
    from_dataset = models[0].fit(dataset, epochs=4, validation_data=dataset, verbose=0).history
    from_xy = models[1].fit(ids, ids, epochs=4, batch_size=8, shuffle=False, validation_data=(ids, ids),
                            verbose=0).history
    losses = from_dataset["val_loss"]
    assert all(np.isfinite(losses)) and all(np.diff(losses) < 0) and losses[-1] < losses[0] - 0.3, losses
    np.testing.assert_allclose(from_xy["val_loss"], from_dataset["val_loss"], atol=1e-3)
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


def test_fit_question_answering_with_a_dict_of_targets():
    ids = _pattern_ids(rows=8)
    qa = _fresh("GPTJForQuestionAnswering")
    qa.compile(optimizer="adam")
    positions = {"start_positions": ids[:, 0] % 8, "end_positions": ids[:, 1] % 8}
    history = qa.fit(ids, positions, epochs=2, batch_size=4, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[1] < history[0]


def test_double_heads_train_on_both_losses():
    model = make_model("GPT2DoubleHeadsModel")
    choices = random_ids((4, 2, 7))
    mc_labels = np.array([0, 1, 1, 0])
    output = model(choices, labels=choices, mc_labels=mc_labels)
    total = model.compute_loss(y_pred=output)
    np.testing.assert_allclose(float(total), float(output.loss) + float(output.mc_loss), atol=1e-6)
    x, y, _ = model._labels_as_inputs(({"input_ids": choices}, {"labels": choices, "mc_labels": mc_labels}))
    assert set(x) == {"input_ids", "labels", "mc_labels"} and set(y) == {"labels", "mc_labels"}


def test_compiled_keras_loss_and_metrics_get_the_logits():
    model = make_model("GPT2ForSequenceClassification")
    ids = random_ids((6, 7))
    labels = np.array([0, 1, 1, 0, 1, 0])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    result = model.evaluate(ids, labels, batch_size=6, verbose=0, return_dict=True)
    own_loss = float(model(ids, labels=labels).loss)
    np.testing.assert_allclose(result["loss"], own_loss, atol=1e-5)
    accuracy = float(np.mean(np.argmax(model(ids).logits.numpy(), -1) == labels))
    np.testing.assert_allclose(result["accuracy"], accuracy, atol=1e-6)


def test_fit_without_labels_or_loss_explains_what_is_missing():
    model = make_model("GPT2LMHeadModel")
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="compiled without a loss.*needs labels"):
        model.evaluate(random_ids((2, 5)), verbose=0)


def test_predict_returns_the_output_dataclass():
    model = make_model("GPTJForCausalLM")
    ids = random_ids((5, 6))
    predicted = model.predict(ids, batch_size=2, verbose=0)
    assert type(predicted).__name__ == "CausalLMOutputWithPast"
    assert_close(predicted.logits, model(ids).logits, name="predict logits")


def test_mixed_bfloat16_policy():
    """Under `mixed_bfloat16` variables stay float32, activations run in bfloat16, attention softmax and the
    loss in float32; outputs stay within the bfloat16 tolerance of float32 and `fit` trains."""
    reference = _fresh("GPT2LMHeadModel")
    ids = _pattern_ids(rows=8)
    expected = reference(ids, labels=ids)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _fresh("GPT2LMHeadModel")
        model.set_weights(reference.get_weights())
        output = model(ids, labels=ids, output_attentions=True)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = model.fit(ids, ids, epochs=1, batch_size=4, verbose=0).history["loss"]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(v.dtype == "float32" for v in model.weights)
    assert output.logits.dtype == tf.bfloat16 and output.loss.dtype == tf.float32
    np.testing.assert_allclose(output.attentions[0].numpy().astype(np.float32).sum(-1), 1.0, atol=1e-2)
    assert_close(output.logits, expected.logits, dtype="bfloat16")
    np.testing.assert_allclose(float(output.loss), float(expected.loss), atol=TOLERANCES["bfloat16"])
    assert np.all(np.isfinite(history))


def test_prepare_tf_dataset_pads_and_batches():
    examples = [
        {"input_ids": [5, 6, 7], "labels": 1},
        {"input_ids": [8], "labels": 0},
        {"input_ids": [9, 10], "labels": 1},
    ]
    batches = list(tft.prepare_tf_dataset(examples, batch_size=2, shuffle=False, pad_token_id=3))
    assert len(batches) == 2
    first = {k: v.numpy().tolist() for k, v in batches[0].items()}
    assert first == {"input_ids": [[5, 6, 7], [8, 3, 3]], "labels": [1, 0], "attention_mask": [[1, 1, 1], [1, 0, 0]]}

    lm = list(tft.prepare_tf_dataset({"input_ids": [[1, 2], [3]]}, shuffle=False, labels_from_input_ids=True))
    assert lm[0]["labels"].numpy().tolist() == [[1, 2], [3, -100]]

    shuffled = [b["input_ids"].numpy()[:, 0].tolist()
                for b in tft.prepare_tf_dataset({"input_ids": [[i] for i in range(1, 9)]}, batch_size=8, seed=0)]
    assert sorted(shuffled[0]) == list(range(1, 9))

    with pytest.raises(ValueError, match="needs an 'input_ids' column"):
        tft.prepare_tf_dataset({"labels": [1]})
    with pytest.raises(ValueError, match="column 'token_type_ids' has rows whose lengths differ"):
        tft.prepare_tf_dataset({"input_ids": [[1, 2]], "token_type_ids": [[0]]})
