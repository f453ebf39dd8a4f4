"""Heads and losses against independent NumPy math; GPT-2's attention flags against a NumPy forward."""

import pytest

tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402
from tf_testing import BATCH, CHOICES, PAD, SEQ, canonical_weights, make_model, numpy_gpt2, random_ids  # noqa: E402

from helpers import assert_close  # noqa: E402


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore: int = -100) -> float:
    logits, labels = np.asarray(logits).reshape(-1, np.shape(logits)[-1]), np.asarray(labels).reshape(-1)
    keep = labels != ignore
    return float(-log_softmax(logits[keep])[np.arange(keep.sum()), labels[keep]].mean())


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "GPTJForCausalLM", "GPTNeoForCausalLM"])
def test_causal_lm_loss_is_a_shifted_scalar_mean_ignoring_minus_100(name):
    model = make_model(name)
    input_ids = random_ids((BATCH, SEQ))
    labels = input_ids.copy()
    labels[0, 3] = labels[2, -1] = -100
    output = model(input_ids, labels=labels)
    expected = np_cross_entropy(output.logits.numpy()[:, :-1], labels[:, 1:])
    assert output.loss.shape == () and output.loss.dtype == tf.float32
    np.testing.assert_allclose(float(output.loss), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["GPT2ForSequenceClassification", "GPTJForSequenceClassification",
                                  "GPTNeoForSequenceClassification"])
def test_sequence_classification_pools_last_real_token_and_losses(name):
    model = make_model(name, num_labels=3)
    input_ids = random_ids((BATCH, SEQ))
    input_ids[0, 5:] = PAD  # right padding: last real token at 4
    input_ids[1, :2] = PAD  # left padding: last real token at 6
    hidden = model.transformer(input_ids).last_hidden_state.numpy()
    output = model(input_ids)
    token_logits = hidden @ model.score.kernel.numpy()
    expected = token_logits[[0, 1, 2], [4, 6, 6]]
    assert_close(output.logits, expected, name="pooled logits")

    labels = np.array([2, 0, 1])
    single = model(input_ids, labels=labels).loss
    np.testing.assert_allclose(float(single), np_cross_entropy(expected, labels), atol=1e-5)

    multi_labels = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], np.float32)
    multi = model(input_ids, labels=multi_labels).loss
    p = 1 / (1 + np.exp(-expected.astype(np.float64)))
    bce = -(multi_labels * np.log(p) + (1 - multi_labels) * np.log(1 - p)).mean()
    np.testing.assert_allclose(float(multi), bce, atol=1e-5)

    model.config.problem_type = "regression"
    try:
        targets = np.random.default_rng(4).standard_normal((BATCH, 3)).astype(np.float32)
        mse = model(input_ids, labels=targets).loss
    finally:
        model.config.problem_type = None  # the model is shared
    np.testing.assert_allclose(float(mse), ((expected - targets) ** 2).mean(), atol=1e-5)


def test_sequence_classification_regression_with_one_label():
    model = make_model("GPT2ForSequenceClassification", num_labels=1)
    input_ids = random_ids((BATCH, SEQ))
    targets = np.array([0.5, -1.0, 2.0], np.float32)
    output = model(input_ids, labels=targets)
    np.testing.assert_allclose(float(output.loss), ((output.logits.numpy()[:, 0] - targets) ** 2).mean(), atol=1e-6)


@pytest.mark.parametrize("name", ["GPT2ForTokenClassification", "GPTJForTokenClassification",
                                  "GPTNeoForTokenClassification"])
def test_token_classification_loss(name):
    model = make_model(name)
    input_ids = random_ids((BATCH, SEQ))
    labels = np.random.default_rng(3).integers(0, 2, (BATCH, SEQ))
    labels[1, :3] = -100
    output = model(input_ids, labels=labels)
    hidden = model.transformer(input_ids).last_hidden_state.numpy()
    expected = hidden @ model.classifier.kernel.numpy() + model.classifier.bias.numpy()
    assert_close(output.logits, expected, name="token logits")
    np.testing.assert_allclose(float(output.loss), np_cross_entropy(output.logits.numpy(), labels), atol=1e-5)


@pytest.mark.parametrize("name", ["GPT2ForQuestionAnswering", "GPTJForQuestionAnswering",
                                  "GPTNeoForQuestionAnswering"])
def test_question_answering_loss_clamps_positions(name):
    model = make_model(name)
    input_ids = random_ids((BATCH, SEQ))
    start, end = np.array([1, 3, 50]), np.array([2, 100, 6])  # 50 and 100 clamp to T (ignored)
    output = model(input_ids, start_positions=start, end_positions=end)
    hidden = model.transformer(input_ids).last_hidden_state.numpy()
    both = hidden @ model.qa_outputs.kernel.numpy() + model.qa_outputs.bias.numpy()
    assert_close(output.start_logits, both[..., 0], name="start_logits")
    assert_close(output.end_logits, both[..., 1], name="end_logits")
    s, e = output.start_logits.numpy(), output.end_logits.numpy()
    expected = (np_cross_entropy(s[:2], start[:2]) + np_cross_entropy(e[[0, 2]], end[[0, 2]])) / 2
    np.testing.assert_allclose(float(output.loss), expected, atol=1e-5)


@pytest.mark.parametrize("summary_type", ["cls_index", "last", "first", "mean"])
def test_double_heads_summary_types(summary_type):
    model = make_model("GPT2DoubleHeadsModel", summary_type=summary_type, summary_activation="tanh")
    assert model.config.num_labels == 1
    input_ids = random_ids((BATCH, CHOICES, SEQ))
    mc_token_ids = np.array([[6, 3], [0, 5], [2, 2]])
    labels = input_ids.copy()
    mc_labels = np.array([1, 0, 1])
    output = model(input_ids, mc_token_ids=mc_token_ids, labels=labels, mc_labels=mc_labels)
    hidden = model.transformer(input_ids).last_hidden_state.numpy()  # (B, C, T, H*D)
    pooled = {
        "cls_index": np.take_along_axis(hidden, mc_token_ids[..., None, None], axis=2)[:, :, 0],
        "last": hidden[:, :, -1],
        "first": hidden[:, :, 0],
        "mean": hidden.mean(2),
    }[summary_type]
    summary = model.multiple_choice_head.summary
    expected = np.tanh(pooled @ summary.kernel.numpy() + summary.bias.numpy())[..., 0]
    assert tuple(output.mc_logits.shape) == (BATCH, CHOICES)
    assert_close(output.mc_logits, expected, name=f"mc_logits ({summary_type})")
    np.testing.assert_allclose(float(output.mc_loss), np_cross_entropy(expected, mc_labels), atol=1e-5)
    lm = output.logits.numpy()
    np.testing.assert_allclose(float(output.loss), np_cross_entropy(lm[..., :-1, :], labels[..., 1:]), atol=1e-5)
    assert list(output.keys()) == ["loss", "mc_loss", "logits", "mc_logits", "past_key_values"]


def test_double_heads_rejects_mc_token_ids_past_the_sequence():
    model = make_model("GPT2DoubleHeadsModel")
    with pytest.raises(ValueError, match="mc_token_ids contains 7"):
        model(random_ids((BATCH, CHOICES, SEQ)), mc_token_ids=np.full((BATCH, CHOICES), SEQ))


def test_sequence_classification_without_pad_token():
    model = make_model("GPT2ForSequenceClassification", pad_token_id=None)
    with pytest.raises(ValueError, match="batch sizes > 1"):
        model(random_ids((2, SEQ)))
    ids = random_ids((1, SEQ))
    one = model(ids)
    hidden = model.transformer(ids).last_hidden_state.numpy()
    assert_close(one.logits, hidden[:, -1] @ model.score.kernel.numpy(), name="last position without pad_token_id")


def test_sequence_classification_with_inputs_embeds_warns(caplog):
    model = make_model("GPTNeoForSequenceClassification")
    embeds = model.transformer.wte(random_ids((BATCH, SEQ)))
    with caplog.at_level("WARNING"):
        model(inputs_embeds=embeds)
    assert "will not detect padding tokens in `inputs_embeds`" in caplog.text


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"scale_attn_weights": False},
        {"scale_attn_by_inverse_layer_idx": True},
        {"reorder_and_upcast_attn": True, "scale_attn_by_inverse_layer_idx": True},
    ],
    ids=["default", "no_scale", "inverse_layer_idx", "reorder_and_upcast"],
)
def test_gpt2_attention_flags_match_numpy(flags):
    """Hugging Face's TF GPT-2 ignored the last two flags; the twin honours them."""
    model = make_model("GPT2Model", **flags)
    input_ids = random_ids((BATCH, SEQ))
    output = model(input_ids).last_hidden_state
    expected = numpy_gpt2(canonical_weights(model), model.config, input_ids)
    assert_close(output, expected, name=f"GPT-2 {flags}")
