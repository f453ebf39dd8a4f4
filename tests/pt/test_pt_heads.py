"""Heads and losses against independent NumPy math, GPT-2's attention flags and cross-attention against a
NumPy reference forward."""

import os

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from pt_testing import BATCH, CHOICES, PAD, SEQ, make_model, random_ids  # noqa: E402

import twinformers.pt as pt  # noqa: E402
from helpers import HF_FIXTURES, assert_close, to_numpy  # noqa: E402


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore: int = -100) -> float:
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = labels != ignore
    return float(-log_softmax(logits[keep])[np.arange(keep.sum()), labels[keep]].mean())


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "GPTJForCausalLM", "GPTNeoForCausalLM"])
def test_causal_lm_loss_is_shifted_and_ignores_minus_100(name):
    model = make_model(name)
    input_ids = random_ids((BATCH, SEQ))
    labels = input_ids.clone()
    labels[0, 3] = labels[2, -1] = -100
    with torch.no_grad():
        output = model(input_ids, labels=labels)
    logits = output.logits.numpy()
    expected = np_cross_entropy(logits[:, :-1], labels[:, 1:].numpy())
    assert output.loss.shape == ()
    np.testing.assert_allclose(float(output.loss), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["GPT2ForSequenceClassification", "GPTJForSequenceClassification",
                                  "GPTNeoForSequenceClassification"])
def test_sequence_classification_pools_last_real_token_and_losses(name):
    model = make_model(name, num_labels=3)
    input_ids = random_ids((BATCH, SEQ))
    input_ids[0, 5:] = PAD  # right padding: last real token at 4
    input_ids[1, :2] = PAD  # left padding: last real token at 6
    with torch.no_grad():
        hidden = model.transformer(input_ids).last_hidden_state.numpy()
        output = model(input_ids)
    token_logits = hidden @ model.score.weight.detach().numpy().T
    expected = token_logits[[0, 1, 2], [4, 6, 6]]
    assert_close(output.logits, expected, name="pooled logits")

    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        single = model(input_ids, labels=labels).loss
    np.testing.assert_allclose(float(single), np_cross_entropy(expected, labels.numpy()), atol=1e-5)

    multi_labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    with torch.no_grad():
        multi = model(input_ids, labels=multi_labels).loss
    p = 1 / (1 + np.exp(-expected.astype(np.float64)))
    bce = -(multi_labels.numpy() * np.log(p) + (1 - multi_labels.numpy()) * np.log(1 - p)).mean()
    np.testing.assert_allclose(float(multi), bce, atol=1e-5)

    model.config.problem_type = "regression"
    targets = torch.randn(BATCH, 3)
    with torch.no_grad():
        mse = model(input_ids, labels=targets).loss
    np.testing.assert_allclose(float(mse), ((expected - targets.numpy()) ** 2).mean(), atol=1e-5)


def test_sequence_classification_regression_with_one_label():
    model = make_model("GPT2ForSequenceClassification", num_labels=1)
    input_ids = random_ids((BATCH, SEQ))
    targets = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        output = model(input_ids, labels=targets)
    np.testing.assert_allclose(float(output.loss), ((output.logits[:, 0] - targets) ** 2).mean(), atol=1e-6)


@pytest.mark.parametrize("name", ["GPT2ForTokenClassification", "GPTJForTokenClassification",
                                  "GPTNeoForTokenClassification"])
def test_token_classification_loss(name):
    model = make_model(name)
    input_ids = random_ids((BATCH, SEQ))
    labels = torch.from_numpy(np.random.default_rng(3).integers(0, 2, (BATCH, SEQ)))
    labels[1, :3] = -100
    with torch.no_grad():
        output = model(input_ids, labels=labels)
        hidden = model.transformer(input_ids).last_hidden_state
    assert_close(output.logits, model.classifier(hidden), name="token logits")
    np.testing.assert_allclose(float(output.loss), np_cross_entropy(output.logits.numpy(), labels.numpy()), atol=1e-5)


@pytest.mark.parametrize("name", ["GPT2ForQuestionAnswering", "GPTJForQuestionAnswering",
                                  "GPTNeoForQuestionAnswering"])
def test_question_answering_loss_clamps_positions(name):
    model = make_model(name)
    input_ids = random_ids((BATCH, SEQ))
    start, end = torch.tensor([1, 3, 50]), torch.tensor([2, 100, 6])  # 50 and 100 clamp to T (ignored)
    with torch.no_grad():
        output = model(input_ids, start_positions=start, end_positions=end)
        hidden = model.transformer(input_ids).last_hidden_state
    both = model.qa_outputs(hidden)
    assert_close(output.start_logits, both[..., 0], name="start_logits")
    assert_close(output.end_logits, both[..., 1], name="end_logits")
    s, e = output.start_logits.numpy(), output.end_logits.numpy()
    expected = (np_cross_entropy(s[:2], start[:2].numpy()) + np_cross_entropy(e[[0, 2]], end[[0, 2]].numpy())) / 2
    np.testing.assert_allclose(float(output.loss), expected, atol=1e-5)


@pytest.mark.parametrize("summary_type", ["cls_index", "last", "first", "mean"])
def test_double_heads_summary_types(summary_type):
    model = make_model("GPT2DoubleHeadsModel", summary_type=summary_type, summary_activation="tanh")
    assert model.config.num_labels == 1
    input_ids = random_ids((BATCH, CHOICES, SEQ))
    mc_token_ids = torch.tensor([[6, 3], [0, 5], [2, 2]])
    labels = input_ids.clone()
    mc_labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        output = model(input_ids, mc_token_ids=mc_token_ids, labels=labels, mc_labels=mc_labels)
        hidden = model.transformer(input_ids).last_hidden_state.numpy()  # (B, C, T, H*D)
    pooled = {
        "cls_index": np.take_along_axis(hidden, mc_token_ids.numpy()[..., None, None], axis=2)[:, :, 0],
        "last": hidden[:, :, -1],
        "first": hidden[:, :, 0],
        "mean": hidden.mean(2),
    }[summary_type]
    summary = model.multiple_choice_head.summary
    expected = np.tanh(pooled @ summary.weight.detach().numpy().T + summary.bias.detach().numpy())[..., 0]
    assert tuple(output.mc_logits.shape) == (BATCH, CHOICES)
    assert_close(output.mc_logits, expected, name=f"mc_logits ({summary_type})")
    np.testing.assert_allclose(float(output.mc_loss), np_cross_entropy(expected, mc_labels.numpy()), atol=1e-5)
    lm = output.logits.numpy()
    np.testing.assert_allclose(float(output.loss), np_cross_entropy(lm[..., :-1, :], labels[..., 1:].numpy()),
                               atol=1e-5)
    assert [k for k in output.keys()] == ["loss", "mc_loss", "logits", "mc_logits", "past_key_values"]


def test_sequence_classification_without_pad_token():
    model = make_model("GPT2ForSequenceClassification", pad_token_id=None)
    with pytest.raises(ValueError, match="batch sizes > 1"):
        model(random_ids((2, SEQ)))
    with torch.no_grad():
        one = model(random_ids((1, SEQ)))
        hidden = model.transformer(random_ids((1, SEQ))).last_hidden_state
    assert_close(one.logits, model.score(hidden[:, -1]), name="last position when pad_token_id is None")


def test_sequence_classification_with_inputs_embeds_warns(caplog):
    model = make_model("GPTNeoForSequenceClassification")
    embeds = model.transformer.wte(random_ids((BATCH, SEQ))).detach()
    with caplog.at_level("WARNING"), torch.no_grad():
        model(inputs_embeds=embeds)
    assert "will not detect padding tokens in `inputs_embeds`" in caplog.text


# --------------------------------------------------------------------------------------------- NumPy GPT-2
def _layer_norm(x, sd, name, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _gelu_new(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _heads(x, n):  # (B, T, H*D) -> (B, H, T, D)
    b, t, d = x.shape
    return x.reshape(b, t, n, d // n).transpose(0, 2, 1, 3)


def _attend(q, k, v, scale, causal):
    scores = q @ k.transpose(0, 1, 3, 2) * scale
    if causal:
        t = scores.shape[-1]
        scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = p @ v  # (B, H, T, D)
    b, h, t, d = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def numpy_gpt2(sd, config, input_ids, encoder_hidden_states=None):
    """GPT-2's forward in float64 NumPy, written from the paper/HF description, honouring the scale flags."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    n, d = config.n_head, config.n_embd
    t = input_ids.shape[1]
    h = sd["wte.weight"][input_ids] + sd["wpe.weight"][np.arange(t)]
    for i in range(config.n_layer):
        p = f"h.{i}."
        scale = (1 / np.sqrt(d // n)) if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scale /= i + 1
        x = _layer_norm(h, sd, p + "ln_1")
        qkv = x @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, k, v = (_heads(a, n) for a in np.split(qkv, 3, axis=-1))
        a = _attend(q, k, v, scale, causal=True)
        h = h + a @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        if encoder_hidden_states is not None:
            x = _layer_norm(h, sd, p + "ln_cross_attn")
            q = _heads(x @ sd[p + "crossattention.q_attn.weight"] + sd[p + "crossattention.q_attn.bias"], n)
            kv = encoder_hidden_states @ sd[p + "crossattention.c_attn.weight"] + sd[p + "crossattention.c_attn.bias"]
            k, v = (_heads(a, n) for a in np.split(kv, 2, axis=-1))
            a = _attend(q, k, v, scale, causal=False)
            h = h + a @ sd[p + "crossattention.c_proj.weight"] + sd[p + "crossattention.c_proj.bias"]
        x = _layer_norm(h, sd, p + "ln_2")
        m = _gelu_new(x @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"])
        h = h + m @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
    return _layer_norm(h, sd, "ln_f")


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
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_gpt2_attention_flags_match_numpy(flags, implementation):
    model = make_model("GPT2Model", attn_implementation=implementation, **flags)
    input_ids = random_ids((BATCH, SEQ))
    with torch.no_grad():
        output = model(input_ids).last_hidden_state
    expected = numpy_gpt2(to_numpy(model.state_dict()), model.config, input_ids.numpy())
    assert_close(output, expected, name=f"GPT-2 {flags}")


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_gpt2_cross_attention_fixture_matches_numpy(implementation):
    path = os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm-cross_attention")
    model, info = pt.GPT2LMHeadModel.from_pretrained(path, attn_implementation=implementation,
                                                     output_loading_info=True)
    assert not any(info.values()), info
    assert model.config.add_cross_attention
    input_ids = random_ids((2, 6), high=100)
    encoder_hidden_states = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = model(input_ids, encoder_hidden_states=encoder_hidden_states, output_attentions=True)
    sd = {k.removeprefix("transformer."): v for k, v in to_numpy(model.state_dict()).items()}
    hidden = numpy_gpt2(sd, model.config, input_ids.numpy(), encoder_hidden_states.numpy().astype(np.float64))
    assert_close(output.logits, hidden @ sd["lm_head.weight"].T, name="cross-attention logits")
    assert len(output.cross_attentions) == 2 and tuple(output.cross_attentions[0].shape) == (2, 4, 6, 5)


def test_gpt2_cross_attention_with_encoder_mask_and_cache():
    model = make_model("GPT2LMHeadModel", add_cross_attention=True)
    input_ids = random_ids((BATCH, 8))
    encoder = torch.randn(BATCH, 5, 24)
    encoder_mask = torch.ones(BATCH, 5, dtype=torch.long)
    encoder_mask[0, 3:] = 0
    with torch.no_grad():
        full = model(input_ids, encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask).logits
        trimmed = model(input_ids[:1], encoder_hidden_states=encoder[:1, :3]).logits
        out = model(input_ids[:, :5], encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask,
                    use_cache=True)
        rest = model(input_ids[:, 5:], past_key_values=out.past_key_values, encoder_hidden_states=encoder,
                     encoder_attention_mask=encoder_mask).logits
    assert_close(full[:1], trimmed, name="encoder_attention_mask")
    assert_close(torch.cat((out.logits, rest), 1), full, name="cross-attention cache")
