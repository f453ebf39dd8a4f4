"""Flax models on tiny configs: parameter trees, output shapes, losses, caches, padding, jit, grad, flags, errors."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from flax_testing import (  # noqa: E402
    BATCH,
    CHOICES,
    CLASS_IDS,
    FAMILIES,
    FAMILY,
    KIND,
    LM_CLASSES,
    PAD,
    SEQ,
    make_model,
    model_inputs,
    random_ids,
)

import twinformers.flax as fx  # noqa: E402
from helpers import assert_close, tiny_config  # noqa: E402
from twinformers.conversion.tables import canonical_to_backend_name, expected_shapes, transform_for  # noqa: E402
from twinformers.flax.modeling_utils import flatten_params  # noqa: E402
from twinformers.model_math import positions_from_mask  # noqa: E402


# --------------------------------------------------------------------------------------------- NumPy references
def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore: int = -100) -> float:
    logits, labels = np.asarray(logits).reshape(-1, np.shape(logits)[-1]), np.asarray(labels).reshape(-1)
    keep = labels != ignore
    picked = np_log_softmax(logits[keep])[np.arange(keep.sum()), labels[keep]]
    return float(-picked.mean())


def np_gpt2(params: dict, config, input_ids: np.ndarray) -> np.ndarray:
    """GPT-2's forward in float64 NumPy, from Hugging Face's Flax param tree, honouring the three attention
    flags; an independent reference for the flags HF's own Flax ignored."""
    p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
    batch, seq = input_ids.shape
    heads, dim = config.n_head, config.n_embd // config.n_head

    def layer_norm(x, w):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config.layer_norm_epsilon) * w["scale"] + w["bias"]

    def conv1d(x, w):  # Flax stores GPT-2's Conv1D kernel (out, in)
        return x @ w["kernel"].T + w["bias"]

    def heads_first(x):
        return x.reshape(batch, seq, heads, dim).transpose(0, 2, 1, 3)

    x = p["wte"]["embedding"][input_ids] + p["wpe"]["embedding"][np.arange(seq)]
    causal = np.tril(np.ones((seq, seq), bool))
    for i in range(config.n_layer):
        block = p["h"][str(i)]
        qkv = conv1d(layer_norm(x, block["ln_1"]), block["attn"]["c_attn"])
        q, k, v = (heads_first(t) for t in np.split(qkv, 3, -1))
        scores = q @ k.swapaxes(-1, -2)
        if config.scale_attn_weights:
            scores = scores / np.sqrt(dim)
        if config.scale_attn_by_inverse_layer_idx:
            scores = scores / (i + 1)
        scores = np.where(causal, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs = probs / probs.sum(-1, keepdims=True)
        attn = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, heads * dim)
        x = x + conv1d(attn, block["attn"]["c_proj"])
        h = conv1d(layer_norm(x, block["ln_2"]), block["mlp"]["c_fc"])
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
        x = x + conv1d(h, block["mlp"]["c_proj"])
    return layer_norm(x, p["ln_f"])


# --------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name", CLASS_IDS)
def test_param_tree_is_hugging_face_flax_tree(name):
    """Paths and shapes equal what the conversion table derives from the PyTorch keys (Flax names, Flax layouts,
    no lm_head when tied, base models without `transformer/`)."""
    model = make_model(name)
    kind = KIND[name]
    expected = {}
    for key, shape in expected_shapes(model.config, kind).items():
        if key == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        path = canonical_to_backend_name(FAMILY[name], "flax", key, head=kind)
        expected[path] = transform_for(FAMILY[name], "flax", key).backend_shape(shape)
    found = {path: tuple(leaf.shape) for path, leaf in flatten_params(model.params).items()}
    assert found == expected


def test_gpt2_conv1d_kernels_are_out_by_in():
    params = flatten_params(make_model("GPT2Model").params)
    assert params["h/0/attn/c_attn/kernel"].shape == (72, 24)
    assert params["h/0/mlp/c_proj/kernel"].shape == (24, 96)
    assert "lm_head/kernel" not in flatten_params(make_model("GPT2LMHeadModel").params)


# --------------------------------------------------------------------------------------------- one run per LM
@pytest.fixture(scope="module")
def lm_runs():
    """Per family: the LM model, its inputs and one full forward with every output switched on. The other
    tests compare against it, so each family compiles few programs."""
    runs = {}

    def get(family):
        if family not in runs:
            model = make_model(LM_CLASSES[family])
            ids = random_ids((BATCH, SEQ))
            labels = ids.copy()
            labels[:, ::3] = -100
            out = model(ids, labels=labels, output_attentions=True, output_hidden_states=True)
            runs[family] = (model, ids, labels, out)
        return runs[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_lm_outputs_loss_attentions_and_hidden_states(lm_runs, family):
    model, ids, labels, out = lm_runs(family)
    config = model.config
    assert out.logits.shape == (BATCH, SEQ, config.vocab_size)
    np.testing.assert_allclose(float(out.loss), np_cross_entropy(out.logits[:, :-1], labels[:, 1:]), rtol=1e-5)
    assert len(out.past_key_values) == config.num_hidden_layers  # use_cache defaults to the config's True
    assert out.past_key_values[0][0].shape == (BATCH, config.num_attention_heads, SEQ, 8)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (BATCH, SEQ, config.hidden_size) for h in out.hidden_states)
    assert len(out.attentions) == config.num_hidden_layers
    for layer, probs in enumerate(out.attentions):
        probs = np.asarray(probs)
        assert probs.shape == (BATCH, config.num_attention_heads, SEQ, SEQ)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        query, key = np.indices((SEQ, SEQ))
        allowed = key <= query
        if family == "gpt_neo" and config.attention_layers[layer] == "local":
            allowed &= query - key < config.window_size  # window 5 < 7 tokens: the local layer is exercised
        assert np.all(probs[..., ~allowed] == 0), f"layer {layer} attends outside its causal/local window"
        assert np.all(probs[..., allowed] > 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_tuple_output_and_use_cache_off(lm_runs, family):
    model, ids, labels, out = lm_runs(family)
    as_tuple = model(ids, labels=labels, return_dict=False, use_cache=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2  # (loss, logits): None fields are left out
    assert_close(as_tuple[1], out.logits)
    assert_close(as_tuple[0], out.loss)


# --------------------------------------------------------------------------------------------- heads
def _head_inputs(kind: str, rng: np.random.Generator) -> dict:
    inputs = model_inputs(kind)
    if kind == "double_heads":
        labels = np.array(inputs["input_ids"])
        labels.reshape(-1)[::3] = -100
        inputs.update(labels=labels, mc_token_ids=rng.integers(0, SEQ, size=(BATCH, CHOICES)).astype(np.int32),
                      mc_labels=rng.integers(0, CHOICES, size=(BATCH,)).astype(np.int32))
    elif kind == "seq_cls":
        # Rows end at different lengths, padded with PAD on the right; row 2 is left-padded.
        ids = inputs["input_ids"]
        ids[1, 4:] = PAD
        ids[2, :2] = PAD
        inputs.update(attention_mask=(ids != PAD).astype(np.int32),
                      labels=rng.integers(0, 2, size=(BATCH,)).astype(np.int32))
    elif kind == "token_cls":
        labels = rng.integers(0, 2, size=(BATCH, SEQ)).astype(np.int32)
        labels[:, 0] = -100
        inputs["labels"] = labels
    elif kind == "qa":
        inputs.update(start_positions=np.array([0, 3, 99], np.int32), end_positions=np.array([6, 4, 2], np.int32))
    return inputs


@pytest.mark.parametrize("name", [n for n in CLASS_IDS if KIND[n] not in ("causal_lm",)])
def test_head_outputs_and_loss(name):
    model, kind = make_model(name), KIND[name]
    config = model.config
    inputs = _head_inputs(kind, np.random.default_rng(0))
    out = model(**inputs, output_hidden_states=True)
    hidden = np.asarray(out.hidden_states[-1], np.float64)
    flat = flatten_params(model.params)
    if kind == "base":
        assert out.last_hidden_state.shape == (BATCH, SEQ, config.hidden_size)
        assert_close(out.last_hidden_state, hidden)
        return
    if kind == "double_heads":
        assert out.logits.shape == (BATCH, CHOICES, SEQ, config.vocab_size)
        np.testing.assert_allclose(
            float(out.loss), np_cross_entropy(out.logits[..., :-1, :], inputs["labels"][..., 1:]), rtol=1e-5
        )
        # mc_logits: the summary projection of the hidden state at mc_token_ids (tied LM head: wte^T).
        picked = np.take_along_axis(hidden, inputs["mc_token_ids"][..., None, None], axis=-2)[..., 0, :]
        summary = picked @ np.asarray(flat["multiple_choice_head/summary/kernel"]) + np.asarray(
            flat["multiple_choice_head/summary/bias"])
        assert_close(out.mc_logits, summary[..., 0], name="mc_logits")
        assert_close(out.logits, hidden @ np.asarray(flat["transformer/wte/embedding"]).T, name="tied logits")
        np.testing.assert_allclose(float(out.mc_loss), np_cross_entropy(out.mc_logits, inputs["mc_labels"]), rtol=1e-5)
        return
    if kind == "seq_cls":
        assert out.logits.shape == (BATCH, config.num_labels)
        last = [SEQ - 1, 3, SEQ - 1]  # the last non-PAD token of each row
        expected = hidden[np.arange(BATCH), last] @ np.asarray(flat["score/kernel"])
        assert_close(out.logits, expected, name="pooled logits")
        np.testing.assert_allclose(float(out.loss), np_cross_entropy(out.logits, inputs["labels"]), rtol=1e-5)
        return
    if kind == "token_cls":
        expected = hidden @ np.asarray(flat["classifier/kernel"]) + np.asarray(flat["classifier/bias"])
        assert_close(out.logits, expected, name="token logits")
        np.testing.assert_allclose(float(out.loss), np_cross_entropy(out.logits, inputs["labels"]), rtol=1e-5)
        return
    logits = hidden @ np.asarray(flat["qa_outputs/kernel"]) + np.asarray(flat["qa_outputs/bias"])
    assert_close(out.start_logits, logits[..., 0], name="start_logits")
    assert_close(out.end_logits, logits[..., 1], name="end_logits")
    start, end = (np.clip(inputs[k], 0, SEQ) for k in ("start_positions", "end_positions"))  # 99 → T: ignored
    expected = (np_cross_entropy(out.start_logits, start, SEQ) + np_cross_entropy(out.end_logits, end, SEQ)) / 2
    np.testing.assert_allclose(float(out.loss), expected, rtol=1e-5)


def test_regression_and_multi_label_losses():
    model = make_model("GPT2ForSequenceClassification")
    ids = random_ids((1, SEQ))
    targets = np.random.default_rng(0).random((1, 2)).astype(np.float32)
    y = (targets > 0.5).astype(np.float32)
    out = model(ids, labels=y)  # float labels → multi-label BCE
    logits = np.asarray(out.logits, np.float64)
    bce = np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits))))
    np.testing.assert_allclose(float(out.loss), bce, rtol=1e-5)
    regression = make_model("GPT2ForSequenceClassification", num_labels=1)
    out = regression(ids, labels=targets[:, 0])
    np.testing.assert_allclose(float(out.loss), np.mean((np.asarray(out.logits)[:, 0] - targets[:, 0]) ** 2), rtol=1e-5)


# --------------------------------------------------------------------------------------------- cache
@pytest.mark.parametrize("family", FAMILIES)
def test_tuple_cache_continuation_equals_full_forward(lm_runs, family):
    model, ids, _, full = lm_runs(family)
    first = model(ids[:, :4])
    second = model(ids[:, 4:], past_key_values=first.past_key_values)
    assert second.past_key_values[0][0].shape == (BATCH, 3, SEQ, 8)
    assert_close(jnp.concatenate([first.logits, second.logits], 1), full.logits, name="tuple cache")
    for layer in range(model.config.num_hidden_layers):
        assert_close(second.past_key_values[layer], full.past_key_values[layer], name=f"present {layer}")


@pytest.mark.parametrize("family", FAMILIES)
def test_static_cache_one_token_at_a_time_with_left_padding(lm_runs, family):
    """Generation-style: init_cache, a prompt, then one token per call (one compiled step); row 1 is the same
    tokens left-padded by 3 with positions from the mask, and must give the same logits."""
    model, ids, _, full = lm_runs(family)
    tokens, mask = ids.copy(), np.ones_like(ids)
    tokens[1, 3:], tokens[1, :3], mask[1, :3] = ids[1, :4], PAD, 0
    positions = positions_from_mask(mask)
    cache = model.init_cache(BATCH, 12)
    prompt = 4
    out = model(tokens[:, :prompt], attention_mask=mask[:, :prompt], position_ids=positions[:, :prompt],
                past_key_values=cache)
    steps = [out.logits]
    for t in range(prompt, SEQ):
        out = model(tokens[:, t : t + 1], attention_mask=mask[:, : t + 1], position_ids=positions[:, t : t + 1],
                    past_key_values=out.past_key_values)
        steps.append(out.logits)
    assert isinstance(out.past_key_values, fx.StaticCache) and int(out.past_key_values.index) == SEQ
    assert out.past_key_values[0][0].shape == (BATCH, 3, 12, 8)
    logits = jnp.concatenate(steps, 1)
    assert_close(logits[0::2], full.logits[0::2], name="unpadded rows")
    assert_close(logits[1, 3:], full.logits[1, :4], name="left-padded row")


# --------------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("family", FAMILIES)
def test_right_and_left_padding(lm_runs, family):
    """Row 0 right-padded, row 1 left-padded (positions from the mask), row 2 untouched: every valid position
    equals the unpadded run."""
    model, ids, _, full = lm_runs(family)
    length = 4
    tokens, mask = ids.copy(), np.ones_like(ids)
    tokens[0, length:], mask[0, length:] = PAD, 0
    tokens[1, SEQ - length :], tokens[1, : SEQ - length], mask[1, : SEQ - length] = ids[1, :length], PAD, 0
    out = model(tokens, attention_mask=mask, position_ids=positions_from_mask(mask))
    assert_close(out.logits[0, :length], full.logits[0, :length], name="right padding")
    assert_close(out.logits[1, SEQ - length :], full.logits[1, :length], name="left padding")
    assert_close(out.logits[2], full.logits[2], name="unpadded row")


# --------------------------------------------------------------------------------------------- jax transforms
@pytest.mark.parametrize("family", FAMILIES)
def test_jit_of_the_call_returns_the_same_pytree(lm_runs, family):
    model, ids, labels, eager = lm_runs(family)

    @jax.jit
    def run(params, input_ids):
        return model(input_ids, params=params, labels=labels, output_attentions=True, output_hidden_states=True)

    jitted = run(model.params, ids)
    assert type(jitted) is type(eager)
    assert_close(jitted, eager)


@pytest.mark.parametrize("family", FAMILIES)
def test_grad_of_the_loss_matches_a_finite_difference(lm_runs, family):
    model, ids, labels, _ = lm_runs(family)
    value_and_grad = jax.jit(jax.value_and_grad(lambda params: model(ids, params=params, labels=labels).loss))
    loss, grads = value_and_grad(model.params)
    flat = flatten_params(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in flat.values())
    assert all(float(jnp.abs(g).max()) > 0 for g in flat.values()), "every parameter influences the loss"
    norm = jnp.sqrt(sum(jnp.sum(g**2) for g in flat.values()))
    step = 1e-2
    plus, _ = value_and_grad(jax.tree_util.tree_map(lambda p, g: p + step * g / norm, model.params, grads))
    minus, _ = value_and_grad(jax.tree_util.tree_map(lambda p, g: p - step * g / norm, model.params, grads))
    # The directional derivative along the gradient is its norm.
    np.testing.assert_allclose(float(plus - minus) / (2 * step), float(norm), rtol=2e-2)


def test_dropout_only_in_training_and_reproducible():
    model = make_model("GPT2LMHeadModel", resid_pdrop=0.2, attn_pdrop=0.2, embd_pdrop=0.2)
    ids = random_ids((BATCH, SEQ))
    rng = jax.random.PRNGKey(3)
    train_a = model(ids, dropout_rng=rng, train=True).logits
    train_b = model(ids, dropout_rng=rng, train=True).logits
    assert_close(train_a, train_b, name="same dropout key")
    other = model(ids, dropout_rng=jax.random.PRNGKey(4), train=True).logits
    assert float(jnp.abs(train_a - other).max()) > 1e-3
    eval_logits = model(ids).logits
    assert_close(eval_logits, make_model("GPT2LMHeadModel")(ids).logits, name="eval ignores the dropout rates")
    with pytest.raises(ValueError, match="dropout_rng"):
        model(ids, train=True)


# --------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("family", FAMILIES)
def test_head_mask(lm_runs, family):
    model, ids, labels, plain = lm_runs(family)
    config = model.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    kwargs = dict(labels=labels, output_attentions=True, output_hidden_states=True)
    ones = model(ids, head_mask=np.ones((layers, heads), np.float32), **kwargs)
    assert_close(ones, plain, name="all-ones head_mask")
    head_mask = np.ones((layers, heads), np.float32)
    head_mask[0, 1] = 0.0
    masked = model(ids, head_mask=head_mask, **kwargs)
    assert float(jnp.abs(masked.attentions[0][:, 1]).max()) == 0.0
    assert float(jnp.abs(masked.attentions[0][:, 0]).max()) > 0.0
    assert float(jnp.abs(masked.logits - plain.logits).max()) > 1e-4


@pytest.mark.parametrize(
    ("flags", "implementation"),
    [
        ({}, "eager"),
        ({}, "sdpa"),
        ({"scale_attn_by_inverse_layer_idx": True}, "sdpa"),
        ({"reorder_and_upcast_attn": True}, "eager"),
        ({"scale_attn_weights": False, "reorder_and_upcast_attn": True, "scale_attn_by_inverse_layer_idx": True},
         "sdpa"),
    ],
    ids=["default-eager", "default-sdpa", "inverse_layer_idx-sdpa", "reorder_and_upcast-eager", "all_flags-sdpa"],
)
def test_gpt2_attention_flags_match_numpy(flags, implementation):
    """The three GPT-2 flags Hugging Face's Flax ignored, against independent float64 NumPy math."""
    config = tiny_config("gpt2", **flags)
    config._attn_implementation = implementation
    model = fx.GPT2Model(config)
    model.params = make_model("GPT2Model").params
    ids = random_ids((BATCH, SEQ))
    assert_close(model(ids).last_hidden_state, np_gpt2(model.params, config, ids), name=str(flags))


def test_gpt2_cross_attention():
    model = make_model("GPT2LMHeadModel", add_cross_attention=True)
    paths = flatten_params(model.params)
    assert paths["transformer/h/0/crossattention/c_attn/kernel"].shape == (48, 24)
    assert paths["transformer/h/0/crossattention/q_attn/kernel"].shape == (24, 24)
    ids = random_ids((BATCH, SEQ))
    encoder = np.random.default_rng(0).normal(size=(BATCH, 5, 24)).astype(np.float32)
    encoder_mask = np.ones((BATCH, 5), np.int32)
    encoder_mask[1, 3:] = 0
    out = model(ids, encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask, output_attentions=True)
    assert out.cross_attentions[0].shape == (BATCH, 3, SEQ, 5)
    assert float(jnp.abs(out.cross_attentions[0][1, :, :, 3:]).max()) == 0.0
    changed = encoder.copy()
    changed[1, 3:] += 5.0  # masked encoder positions must not matter
    again = model(ids, encoder_hidden_states=changed, encoder_attention_mask=encoder_mask)
    assert_close(again.logits[1], out.logits[1], name="masked encoder positions")


# --------------------------------------------------------------------------------------------- dtypes
def test_bf16_computation_and_param_casts(lm_runs):
    model, ids, _, full = lm_runs("gptj")
    fp32 = full.logits
    bf16_model = fx.GPTJForCausalLM(model.config, dtype=jnp.bfloat16, _do_init=False)
    bf16_params = bf16_model.to_bf16(model.params)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(bf16_params)} == {jnp.dtype(jnp.bfloat16)}
    logits = bf16_model(ids, params=bf16_params).logits
    assert logits.dtype == jnp.bfloat16
    assert_close(logits, fp32, dtype="bfloat16", atol=0.15)  # bf16 keeps ~3 significant digits of |logits| ~ 5
    back = bf16_model.to_fp32(bf16_params)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(back)} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(model.to_fp16(model.params))} == {jnp.dtype(jnp.float16)}


def test_do_init_false_holds_only_shapes():
    config = tiny_config("gpt_neo")
    model = fx.GPTNeoForCausalLM(config, _do_init=False)
    with pytest.raises(ValueError, match="_do_init=False"):
        model.params  # noqa: B018
    shapes = flatten_params(model.params_shape_tree)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in shapes.values())
    reference = make_model("GPTNeoForCausalLM")
    ids = random_ids((BATCH, SEQ))
    assert_close(model(ids, params=reference.params).logits, reference(ids).logits)


# --------------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    model = make_model("GPT2LMHeadModel")
    ids = random_ids((BATCH, SEQ))
    with pytest.raises(ValueError, match="input_ids contains 97"):
        model(np.full((1, 3), 97))
    with pytest.raises(ValueError, match="input_ids contains -1"):
        model(np.full((1, 3), -1))
    with pytest.raises(ValueError, match="exceeds the model's maximum of 19 positions"):
        model(random_ids((1, 20)))
    with pytest.raises(ValueError, match="both input_ids and inputs_embeds"):
        model(ids, inputs_embeds=np.zeros((BATCH, SEQ, 24), np.float32))
    with pytest.raises(ValueError, match="either input_ids or inputs_embeds"):
        model()
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 5\), expected"):
        model(ids, attention_mask=np.ones((BATCH, 5)))
    with pytest.raises(ValueError, match="position_ids contains 19"):
        model(ids, position_ids=np.full((BATCH, SEQ), 19))
    with pytest.raises(TypeError, match="does not take start_positions"):
        model(ids, start_positions=np.zeros(BATCH, np.int32))
    with pytest.raises(ValueError, match="past_key_values has 1 entries"):
        model(ids, past_key_values=model(ids).past_key_values[:1])
    with pytest.raises(ValueError, match="cannot handle batch sizes > 1"):
        fx.GPT2ForSequenceClassification(tiny_config("gpt2"))(ids)


def test_params_that_do_not_fit_the_config_are_named():
    model = make_model("GPT2LMHeadModel")
    params = jax.tree_util.tree_map(lambda x: x, model.params)
    params["transformer"]["wpe"]["embedding"] = jnp.zeros((7, 24))
    del params["transformer"]["ln_f"]["bias"]
    with pytest.raises(ValueError) as err:
        model(random_ids((1, 3)), params=params)
    assert "transformer/wpe/embedding: shape (7, 24) vs expected (19, 24)" in str(err.value)
    assert "missing transformer/ln_f/bias (24,)" in str(err.value)
    with pytest.raises(ValueError, match="transformer/wpe/embedding"):
        model.params = params


def test_static_cache_limits():
    model = make_model("GPTJForCausalLM")
    with pytest.raises(ValueError, match="max_length=20"):
        model.init_cache(1, 20)
    cache = model.init_cache(1, 5)
    out = model(random_ids((1, 4)), past_key_values=cache)
    with pytest.raises(ValueError, match="holds 5 positions: 4 are filled and 2 more do not fit"):
        model(random_ids((1, 2)), past_key_values=out.past_key_values)
