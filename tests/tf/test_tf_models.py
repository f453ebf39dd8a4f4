"""Behaviour of every TensorFlow model class on tiny random models: variable paths, shapes, tuple order,
attentions and hidden states, cache continuation == full forward, padding, head_mask, XLA tracing, input
formats and bad input."""

import os
import subprocess
import sys

import pytest

tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402
from tf_testing import (  # noqa: E402
    BATCH,
    CACHED_KINDS,
    CHOICES,
    CLASS_IDS,
    CLASSES,
    FAMILIES,
    HEADS,
    HIDDEN,
    LAYERS,
    LM_CLASSES,
    PAD,
    SEQ,
    VOCAB,
    logits_of,
    make_model,
    model_inputs,
    random_ids,
)

import twinformers.tf as tft  # noqa: E402
from helpers import assert_close, tiny_config  # noqa: E402
from twinformers.conversion.tables import expected_shapes, family_of, plan_from_backend  # noqa: E402
from twinformers.model_math import positions_from_mask  # noqa: E402


def expected_shape(kind: str) -> tuple[int, ...]:
    return {
        "base": (BATCH, SEQ, HIDDEN),
        "causal_lm": (BATCH, SEQ, VOCAB),
        "double_heads": (BATCH, CHOICES, SEQ, VOCAB),
        "seq_cls": (BATCH, 2),
        "token_cls": (BATCH, SEQ, 2),
        "qa": (BATCH, SEQ, 2),
    }[kind]


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=CLASS_IDS)
def test_variable_paths_are_hugging_face_tf_names(family, name, kind):
    """Every variable's path minus the model's name is a TF name of the conversion table, and together they
    are exactly the parameters the PyTorch layout has (less the tied `lm_head.weight`), in the same shapes."""
    model = make_model(name)
    names = {v.path.split("/", 1)[1]: v for v in model.weights}
    assert all(v.path.split("/", 1)[0] == model.name for v in model.weights)
    assert all(n.startswith(("transformer/", "lm_head/", "score/", "classifier/", "qa_outputs/",
                             "multiple_choice_head/")) for n in names), sorted(names)
    plan = plan_from_backend(family, "tf", names, head=kind)
    canonical = {key: transform.canonical_shape(tuple(names[n].shape)) for n, (key, transform) in plan.items()}
    expected = expected_shapes(model.config, kind)
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    assert canonical == expected
    assert len(model.weights) == len(names)  # no duplicated path


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=CLASS_IDS)
def test_shapes_and_tuple_order(family, name, kind):
    model = make_model(name)
    inputs = model_inputs(kind)
    output = model(**inputs, output_hidden_states=True, output_attentions=True)
    as_tuple = model(**inputs, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert logits_of(kind, output).shape == expected_shape(kind)
    assert isinstance(as_tuple, tuple)
    assert [type(v) for v in as_tuple] == [type(v) for v in output.to_tuple()]
    assert_close(as_tuple, output.to_tuple(), name="return_dict=False")

    rows = BATCH * CHOICES if kind == "double_heads" else BATCH
    assert len(output.hidden_states) == LAYERS + 1
    assert len(output.attentions) == LAYERS
    for attn in output.attentions:
        assert tuple(attn.shape) == (rows, HEADS, SEQ, SEQ)
        np.testing.assert_allclose(attn.numpy().sum(-1), 1.0, atol=1e-5)
        assert float(np.abs(np.triu(attn.numpy(), 1)).max()) == 0.0, "attention to future positions"
    if kind in CACHED_KINDS:
        assert len(output.past_key_values) == LAYERS
        for key, value in output.past_key_values:
            assert tuple(key.shape) == tuple(value.shape) == (rows, HEADS, SEQ, HIDDEN // HEADS)
    if kind == "base":
        assert_close(output.hidden_states[-1], output.last_hidden_state, name="hidden_states[-1]")


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_continuation_equals_full_forward(family):
    model = make_model(LM_CLASSES[family])
    input_ids = random_ids((BATCH, 11))
    full = model(input_ids).logits
    # a 6-token prefix, then 3 tokens at once, then one token at a time
    out = model(input_ids[:, :6], use_cache=True)
    pieces = [out.logits]
    out = model(input_ids[:, 6:9], past_key_values=out.past_key_values, use_cache=True)
    pieces.append(out.logits)
    for t in (9, 10):
        out = model(input_ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
        pieces.append(out.logits)
    assert out.past_key_values[0][0].shape[-2] == 11
    assert_close(tf.concat(pieces, axis=1), full, name=f"{family} cached logits")


@pytest.mark.parametrize("name", ["GPT2DoubleHeadsModel", "GPTJForSequenceClassification"])
def test_cached_continuation_of_other_cached_heads(name):
    model = make_model(name)
    kind = "double_heads" if name == "GPT2DoubleHeadsModel" else "seq_cls"
    input_ids = model_inputs(kind, seq=9)["input_ids"]
    full = model(input_ids)
    prefix = model(input_ids[..., :5], use_cache=True)
    rest = model(input_ids[..., 5:], past_key_values=prefix.past_key_values)
    if kind == "double_heads":
        assert_close(tf.concat((prefix.logits, rest.logits), axis=2), full.logits, name="double-heads logits")
        assert_close(rest.mc_logits, full.mc_logits, name="mc_logits of the last token")
    else:
        assert_close(rest.logits, full.logits, name="pooled logits after the cache")


@pytest.mark.parametrize("family", FAMILIES)
def test_left_and_right_padding_match_unpadded_rows(family):
    """Each row padded left or right gives the logits of that row run alone, at every real token; with a cache
    continuing after left padding too (positions derived from the mask, as generate does)."""
    model = make_model(LM_CLASSES[family])
    lengths = [7, 4, 5]
    rows = [random_ids((1, n), seed=10 + i) for i, n in enumerate(lengths)]
    alone = [model(r).logits[0] for r in rows]
    for side in ("left", "right"):
        ids = np.full((3, 7), PAD, dtype=np.int32)
        mask = np.zeros((3, 7), dtype=np.int32)
        for i, r in enumerate(rows):
            span = slice(7 - r.shape[1], 7) if side == "left" else slice(0, r.shape[1])
            ids[i, span], mask[i, span] = r[0], 1
        position_ids = positions_from_mask(mask)
        padded = model(ids, attention_mask=mask, position_ids=position_ids).logits
        for i, r in enumerate(rows):
            span = slice(7 - r.shape[1], 7) if side == "left" else slice(0, r.shape[1])
            assert_close(padded[i, span], alone[i], name=f"{family} {side}-padded row {i}")

    # Left-padded prefix, then two cached steps.
    ids = np.full((3, 9), PAD, dtype=np.int32)
    mask = np.zeros((3, 9), dtype=np.int32)
    tails = random_ids((3, 2), seed=99)
    for i, r in enumerate(rows):
        ids[i, 7 - r.shape[1] : 7], mask[i, 7 - r.shape[1] : 7] = r[0], 1
    ids[:, 7:], mask[:, 7:] = tails, 1
    positions = positions_from_mask(mask)
    full = model(ids, attention_mask=mask, position_ids=positions).logits
    out = model(ids[:, :7], attention_mask=mask[:, :7], position_ids=positions[:, :7], use_cache=True)
    step = model(ids[:, 7:8], attention_mask=mask[:, :8], position_ids=positions[:, 7:8],
                 past_key_values=out.past_key_values, use_cache=True)
    last = model(ids[:, 8:9], attention_mask=mask, position_ids=positions[:, 8:9],
                 past_key_values=step.past_key_values)
    cached = tf.concat((out.logits, step.logits, last.logits), axis=1)
    assert_close(cached, full, name=f"{family} left-padded cache", where=mask.astype(bool))


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=CLASS_IDS)
def test_xla_traced_forward_equals_eager(family, name, kind):
    """The whole call compiles with XLA (static shapes) and computes what the eager call does, padding and
    explicit positions included."""
    model = make_model(name)
    inputs = model_inputs(kind)
    mask = np.ones(inputs["input_ids"].shape, np.int32)
    mask[..., 0, :2] = 0  # left padding in the first row (first choice row for double heads)
    inputs["attention_mask"] = mask
    if kind != "double_heads":
        inputs["position_ids"] = positions_from_mask(mask)
    eager = model(**inputs)
    compiled = tf.function(lambda x: model(x, training=False), jit_compile=True)
    traced = compiled({k: tf.constant(v) for k, v in inputs.items()})
    where = mask.astype(bool) if kind not in ("seq_cls",) else None
    assert_close(logits_of(kind, traced), logits_of(kind, eager), name=f"{name} under XLA", where=where)


def _head_output_projection(model, family: str, layer: int):
    """The output projection's (in, out) matrix of a layer (Conv1D weight or Dense kernel)."""
    block = model.base_model.h[layer]
    return {"gpt2": lambda: block.attn.c_proj.weight, "gptj": lambda: block.attn.out_proj.kernel,
            "gpt_neo": lambda: block.attn.attention.out_proj.kernel}[family]()


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=CLASS_IDS)
def test_head_mask(family, name, kind):
    model = make_model(name)
    inputs = model_inputs(kind)
    plain = logits_of(kind, model(**inputs))
    ones = logits_of(kind, model(**inputs, head_mask=np.ones(HEADS, np.float32)))
    per_layer = np.ones((LAYERS, HEADS), np.float32)
    per_layer[1, 2] = 0
    masked = model(**inputs, head_mask=per_layer, output_attentions=True)
    assert_close(ones, plain, name="head_mask of ones")
    assert float(np.abs(masked.attentions[1][:, 2].numpy()).max()) == 0.0
    # Masking a head must equal zeroing the output projection's input rows that carry it.
    projection = _head_output_projection(model, family, layer=1)
    original = projection.numpy()
    head_dim = HIDDEN // HEADS
    zeroed = original.copy()
    zeroed[2 * head_dim : 3 * head_dim, :] = 0
    projection.assign(zeroed)
    try:
        reference = logits_of(kind, model(**inputs))
    finally:
        projection.assign(original)  # the model is shared with other tests
    assert_close(logits_of(kind, masked), reference, name="head_mask (L, H)")
    assert not np.allclose(reference, plain, atol=1e-4), "masking a head changed nothing"


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_match_base_model_and_lm_head(family):
    """The LM head's logits are the base model's last hidden state times the head matrix (the token
    embedding's transpose when tied)."""
    model = make_model(LM_CLASSES[family])
    input_ids = random_ids((BATCH, SEQ))
    output = model(input_ids, output_hidden_states=True)
    base = model.transformer(input_ids).last_hidden_state.numpy()
    assert_close(output.hidden_states[-1], base, name="hidden_states[-1]")
    head = model.lm_head
    if model.config.tie_word_embeddings:
        assert not head.weights or head.weights == [model.transformer.wte.embeddings]
        expected = base @ model.transformer.wte.embeddings.numpy().T
    else:
        expected = base @ head.kernel.numpy() + head.bias.numpy()
    assert_close(output.logits, expected, name="logits")


@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_embeds_and_token_type_ids(family):
    model = make_model(LM_CLASSES[family])
    input_ids, token_types = random_ids((BATCH, SEQ)), random_ids((BATCH, SEQ), seed=5)
    from_ids = model(input_ids).logits
    embeds = model.transformer.wte(input_ids)
    assert_close(model(inputs_embeds=embeds).logits, from_ids, name="inputs_embeds")
    with_types = model(input_ids, token_type_ids=token_types).logits
    expected = model(inputs_embeds=embeds + model.transformer.wte(token_types)).logits
    assert_close(with_types, expected, name="token_type_ids")


def test_gptj_rotary_dim_none_rotates_whole_head():
    model = make_model("GPTJForCausalLM", rotary_dim=None)
    input_ids = random_ids((BATCH, 9))
    full = model(input_ids).logits
    out = model(input_ids[:, :5], use_cache=True)
    rest = model(input_ids[:, 5:], past_key_values=out.past_key_values).logits
    assert_close(tf.concat((out.logits, rest), 1), full, name="rotary_dim=None cache")
    assert model.transformer.h[0].attn.rotary_dim == HIDDEN // HEADS


def test_gpt_neo_local_layer_sees_only_its_window():
    model = make_model("GPTNeoModel")
    attentions = model(random_ids((1, 12)), output_attentions=True).attentions
    window = model.config.window_size
    distance = np.arange(12)[:, None] - np.arange(12)[None, :]
    outside = (distance >= window) | (distance < 0)
    assert model.config.attention_layers == ["global", "local"]
    assert float(np.abs(attentions[1].numpy()[..., outside]).max()) == 0.0
    assert float(np.abs(attentions[0].numpy()[..., distance >= window]).min()) > 0.0  # global sees further


def test_input_formats_agree():
    """Keyword arguments, one tensor, a list in call order, a dict by name; NumPy or tf.Tensor."""
    model = make_model("GPT2LMHeadModel")
    input_ids = random_ids((BATCH, SEQ))
    mask = np.ones_like(input_ids)
    mask[0, :3] = 0
    reference = model(input_ids=input_ids, attention_mask=mask).logits
    variants = {
        "positional tensor": model(tf.constant(input_ids), attention_mask=tf.constant(mask)),
        "positional args": model(input_ids, None, mask),
        "list": model([input_ids, None, mask]),
        "dict": model({"input_ids": input_ids, "attention_mask": mask}),
        "dict of tensors": model({"input_ids": tf.constant(input_ids), "attention_mask": tf.constant(mask)}),
    }
    for label, output in variants.items():
        assert_close(output.logits, reference, name=label)
    assert_close(model(input_ids).logits, model(input_ids=input_ids).logits, name="single tensor")


def test_bad_inputs_raise_clear_errors():
    model = make_model("GPT2LMHeadModel")
    ids = random_ids((BATCH, SEQ))
    with pytest.raises(ValueError, match="input_ids contains 97"):
        model(np.full((1, 3), VOCAB, np.int32))
    with pytest.raises(ValueError, match="input_ids contains -1"):
        model(np.full((1, 3), -1, np.int32))
    with pytest.raises(ValueError, match="exceeds the model's maximum of 19 positions"):
        model(random_ids((1, 20)))
    with pytest.raises(ValueError, match="both input_ids and inputs_embeds"):
        model(ids, inputs_embeds=np.zeros((BATCH, SEQ, HIDDEN), np.float32))
    with pytest.raises(ValueError, match="either input_ids or inputs_embeds"):
        model(attention_mask=np.ones((BATCH, SEQ), np.int32))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 5\)"):
        model(ids, attention_mask=np.ones((BATCH, 5), np.int32))
    with pytest.raises(ValueError, match="position_ids contains 19"):
        model(ids, position_ids=np.full((BATCH, SEQ), 19, np.int32))
    with pytest.raises(ValueError, match=r"unknown inputs \['input_idz'\]"):
        model({"input_idz": ids})
    with pytest.raises(ValueError, match="head_mask has shape"):
        model(ids, head_mask=np.ones((4,), np.float32))
    with pytest.raises(ValueError, match="past_key_values has 1 entries"):
        model(ids, past_key_values=model(ids).past_key_values[:1])
    with pytest.raises(TypeError, match="multiple values for input 'input_ids'"):
        model(ids, input_ids=ids)
    with pytest.raises(ValueError, match="needs a GPT2Config"):
        tft.GPT2Model(make_model("GPTJModel").config)


def test_out_of_range_ids_fail_inside_a_graph_too():
    """Traced, the values are unknown until run time: the graph's assertion (or, on CPU, the lookup itself,
    which may run first) raises InvalidArgumentError naming the bound."""
    model = make_model("GPT2LMHeadModel")
    traced = tf.function(lambda ids: model(ids).logits)
    bound = r"input_ids contains an id >= vocab_size=97|not in \[0, 97\)"
    with pytest.raises(tf.errors.InvalidArgumentError, match=bound):
        traced(tf.constant(np.full((1, 3), VOCAB, np.int32)))


def test_base_model_variables_keep_the_transformer_scope():
    """A base model on its own names its variables `<model>/transformer/...` as Hugging Face's TF does; inside a
    head it is the head's `transformer` sublayer."""
    base = make_model("GPT2Model")
    head = make_model("GPT2LMHeadModel")
    assert base.weights[0].path == f"{base.name}/transformer/wte/embeddings"
    assert head.weights[0].path == f"{head.name}/transformer/wte/embeddings"
    assert head.transformer.name == "transformer" and head.base_model is head.transformer


@pytest.mark.parametrize("family", FAMILIES)
def test_build_creates_every_variable_without_a_forward(family):
    """Building traces `call` symbolically: every variable exists (HF-initialized: unit LayerNorm, zero biases)
    before any real input was seen."""
    config = make_model(LM_CLASSES[family]).config
    model = getattr(tft, LM_CLASSES[family])(config)
    assert not model.weights
    model.build()
    assert model.built and len(model.weights) == len(make_model(LM_CLASSES[family]).weights)
    assert family_of(model) == family
    gammas = [v for v in model.weights if v.path.endswith("gamma")]
    assert gammas and all(np.all(v.numpy() == 1.0) for v in gammas)


def test_importing_with_another_keras_backend_is_refused():
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", "import twinformers.tf"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "twinformers.tf needs Keras on its TensorFlow backend, but KERAS_BACKEND='jax'" in result.stderr


def test_training_flag_turns_dropout_on():
    model = tft.GPT2LMHeadModel(tiny_config("gpt2", resid_pdrop=0.3, embd_pdrop=0.3, attn_pdrop=0.3))
    ids = random_ids((BATCH, SEQ))
    assert_close(model(ids, training=False).logits, model(ids).logits, name="inference is deterministic")
    assert not np.allclose(model(ids, training=True).logits.numpy(), model(ids).logits.numpy(), atol=1e-4)
