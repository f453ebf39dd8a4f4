"""Behaviour of every PyTorch model class on tiny random models: shapes, tuple order, attentions and hidden
states, eager == sdpa, cache continuation == full forward, padding, head_mask."""

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from pt_testing import (  # noqa: E402
    BATCH,
    CACHED_KINDS,
    CHOICES,
    CLASS_IDS,
    CLASSES,
    FAMILIES,
    LM_CLASSES,
    PAD,
    SEQ,
    logits_of,
    make_model,
    model_inputs,
    random_ids,
)

from helpers import assert_close  # noqa: E402
from twinformers.model_math import positions_from_mask  # noqa: E402

HIDDEN, HEADS, LAYERS, VOCAB = 24, 3, 2, 97


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
def test_shapes_and_tuple_order(family, name, kind):
    model = make_model(name)
    inputs = model_inputs(kind)
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True, output_attentions=True)
        as_tuple = model(**inputs, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert tuple(logits_of(kind, output).shape) == expected_shape(kind)
    assert isinstance(as_tuple, tuple)
    assert [type(v) for v in as_tuple] == [type(v) for v in output.to_tuple()]
    assert_close(as_tuple, output.to_tuple(), name="return_dict=False")

    rows = BATCH * CHOICES if kind == "double_heads" else BATCH
    assert len(output.hidden_states) == LAYERS + 1
    assert len(output.attentions) == LAYERS
    for attn in output.attentions:
        assert tuple(attn.shape) == (rows, HEADS, SEQ, SEQ)
        np.testing.assert_allclose(attn.sum(-1).numpy(), 1.0, atol=1e-5)
        assert float(attn.triu(1).abs().max()) == 0.0, "attention to future positions"
    if kind in CACHED_KINDS:
        assert len(output.past_key_values) == LAYERS
        for key, value in output.past_key_values:
            assert tuple(key.shape) == tuple(value.shape) == (rows, HEADS, SEQ, HIDDEN // HEADS)
    if kind == "base":
        assert_close(output.hidden_states[-1], output.last_hidden_state, name="hidden_states[-1]")


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=CLASS_IDS)
def test_eager_equals_sdpa_with_padding(family, name, kind):
    model = make_model(name)
    inputs = model_inputs(kind)
    mask = torch.ones(inputs["input_ids"].shape, dtype=torch.long)
    mask[..., 0, :2] = 0  # left padding in the first row
    mask[..., 1, -3:] = 0  # right padding in the second
    if kind == "double_heads":
        mask = torch.ones_like(inputs["input_ids"])
        mask[0, :, :2] = 0
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model.config._attn_implementation = implementation
        with torch.no_grad():
            outputs[implementation] = logits_of(kind, model(**inputs, attention_mask=mask))
    valid = mask.bool().numpy() if kind not in ("seq_cls",) else None
    assert torch.isfinite(outputs["sdpa"]).all()
    assert_close(outputs["sdpa"], outputs["eager"], name=f"{name} sdpa vs eager", where=valid)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_cached_continuation_equals_full_forward(family, implementation):
    model = make_model(LM_CLASSES[family], attn_implementation=implementation)
    input_ids = random_ids((BATCH, 11))
    with torch.no_grad():
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
    assert_close(torch.cat(pieces, dim=1), full, name=f"{family} cached logits")


@pytest.mark.parametrize("family", FAMILIES)
def test_left_and_right_padding_match_unpadded_rows(family):
    """Each row padded left or right gives the logits of that row run alone, at every real token; with a cache
    continuing after left padding too (positions derived from the mask, as generate does)."""
    model = make_model(LM_CLASSES[family])
    lengths = [7, 4, 5]
    rows = [random_ids((1, n), seed=10 + i) for i, n in enumerate(lengths)]
    with torch.no_grad():
        alone = [model(r).logits[0] for r in rows]
    for side in ("left", "right"):
        ids = torch.full((3, 7), PAD, dtype=torch.long)
        mask = torch.zeros((3, 7), dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(7 - r.shape[1], 7) if side == "left" else slice(0, r.shape[1])
            ids[i, span], mask[i, span] = r[0], 1
        position_ids = torch.from_numpy(positions_from_mask(mask.numpy()))
        with torch.no_grad():
            padded = model(ids, attention_mask=mask, position_ids=position_ids).logits
        for i, r in enumerate(rows):
            span = slice(7 - r.shape[1], 7) if side == "left" else slice(0, r.shape[1])
            assert_close(padded[i, span], alone[i], name=f"{family} {side}-padded row {i}")

    # Left-padded prefix, then two cached steps.
    ids = torch.full((3, 9), PAD, dtype=torch.long)
    mask = torch.zeros((3, 9), dtype=torch.long)
    tails = random_ids((3, 2), seed=99)
    for i, r in enumerate(rows):
        ids[i, 7 - r.shape[1] : 7], mask[i, 7 - r.shape[1] : 7] = r[0], 1
    ids[:, 7:], mask[:, 7:] = tails, 1
    positions = torch.from_numpy(positions_from_mask(mask.numpy()))
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=positions).logits
        out = model(ids[:, :7], attention_mask=mask[:, :7], position_ids=positions[:, :7], use_cache=True)
        step = model(ids[:, 7:8], attention_mask=mask[:, :8], position_ids=positions[:, 7:8],
                     past_key_values=out.past_key_values, use_cache=True)
        last = model(ids[:, 8:9], attention_mask=mask, position_ids=positions[:, 8:9],
                     past_key_values=step.past_key_values)
    cached = torch.cat((out.logits, step.logits, last.logits), dim=1)
    assert_close(cached, full, name=f"{family} left-padded cache", where=mask.bool().numpy())


def _zero_head_output(model, family: str, layer: int, head: int) -> None:
    """Zero the output projection's inputs that carry one head (what masking that head must equal)."""
    head_dim = HIDDEN // HEADS
    span = slice(head * head_dim, (head + 1) * head_dim)
    block = model.transformer.h[layer] if hasattr(model, "transformer") else model.h[layer]
    with torch.no_grad():
        if family == "gpt2":
            block.attn.c_proj.weight[span, :] = 0  # Conv1D (in, out)
        elif family == "gptj":
            block.attn.out_proj.weight[:, span] = 0  # Linear (out, in)
        else:
            block.attn.attention.out_proj.weight[:, span] = 0


@pytest.mark.parametrize("family,name,kind", CLASSES, ids=CLASS_IDS)
def test_head_mask(family, name, kind):
    model = make_model(name)
    inputs = model_inputs(kind)
    with torch.no_grad():
        plain = logits_of(kind, model(**inputs))
        ones = logits_of(kind, model(**inputs, head_mask=torch.ones(HEADS)))
        per_layer = torch.ones(LAYERS, HEADS)
        per_layer[1, 2] = 0
        masked = model(**inputs, head_mask=per_layer, output_attentions=True)
    assert_close(ones, plain, name="head_mask of ones")
    assert float(masked.attentions[1][:, 2].abs().max()) == 0.0
    _zero_head_output(model, family, layer=1, head=2)
    with torch.no_grad():
        reference = logits_of(kind, model(**inputs))
    assert_close(logits_of(kind, masked), reference, name="head_mask (L, H)")
    assert not torch.allclose(reference, plain, atol=1e-4), "masking a head changed nothing"


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_match_base_model(family):
    """The LM head's logits are the base model's last hidden state times the head matrix."""
    model = make_model(LM_CLASSES[family])
    input_ids = random_ids((BATCH, SEQ))
    with torch.no_grad():
        output = model(input_ids, output_hidden_states=True)
        base = model.transformer(input_ids).last_hidden_state
    assert_close(output.hidden_states[-1], base, name="hidden_states[-1]")
    expected = base @ model.lm_head.weight.T + (model.lm_head.bias if model.lm_head.bias is not None else 0)
    assert_close(output.logits, expected, name="logits")


@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_embeds_equal_input_ids(family):
    model = make_model(LM_CLASSES[family])
    input_ids = random_ids((BATCH, SEQ))
    with torch.no_grad():
        from_ids = model(input_ids).logits
        from_embeds = model(inputs_embeds=model.transformer.wte(input_ids)).logits
    assert_close(from_embeds, from_ids, name="inputs_embeds")


@pytest.mark.parametrize("family", FAMILIES)
def test_token_type_ids_use_the_token_embedding(family):
    model = make_model(LM_CLASSES[family])
    input_ids, token_types = random_ids((BATCH, SEQ)), random_ids((BATCH, SEQ), seed=5)
    with torch.no_grad():
        with_types = model(input_ids, token_type_ids=token_types).logits
        embeds = model.transformer.wte(input_ids) + model.transformer.wte(token_types)
        expected = model(inputs_embeds=embeds).logits
    assert_close(with_types, expected, name="token_type_ids")


def test_gptj_rotary_dim_none_rotates_whole_head():
    model = make_model("GPTJForCausalLM", rotary_dim=None, attn_implementation="eager")
    input_ids = random_ids((BATCH, 9))
    with torch.no_grad():
        full = model(input_ids).logits
        out = model(input_ids[:, :5], use_cache=True)
        rest = model(input_ids[:, 5:], past_key_values=out.past_key_values).logits
    assert_close(torch.cat((out.logits, rest), 1), full, name="rotary_dim=None cache")
    assert model.transformer.h[0].attn.rotary_dim == HIDDEN // HEADS


def test_gpt_neo_local_layer_sees_only_its_window():
    model = make_model("GPTNeoModel", attn_implementation="eager")
    with torch.no_grad():
        attentions = model(random_ids((1, 12)), output_attentions=True).attentions
    window = model.config.window_size
    distance = torch.arange(12)[:, None] - torch.arange(12)[None, :]
    outside = (distance >= window) | (distance < 0)
    assert model.config.attention_layers == ["global", "local"]
    assert float(attentions[1][..., outside].abs().max()) == 0.0
    assert float(attentions[0][..., distance >= window].abs().min()) > 0.0  # the global layer sees further
