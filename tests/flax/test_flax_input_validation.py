"""Bad model inputs are InputErrors naming the argument and the shapes (shared checks, lib/inputs.py), also inside
`jax.jit` and the train step."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

import twinformers.flax as backend  # noqa: E402
from helpers import tiny_config  # noqa: E402
from twinformers.errors import InputError  # noqa: E402
from twinformers.flax.training import create_train_state, make_train_step  # noqa: E402


def ZEROS(shape):  # noqa: N802 - reads like a constant in the case table
    return np.zeros(shape, dtype=np.int32)


def ONES(shape):  # noqa: N802
    return np.ones(shape, dtype=np.int32)


def lm_model():
    return backend.GPT2LMHeadModel(tiny_config("gpt2"))


def double_heads_model():
    return backend.GPT2DoubleHeadsModel(tiny_config("gpt2"))


# (extra inputs for (2, 3) input_ids, the argument the message must name)
BAD_INPUTS = {
    "attention_mask transposed": ({"attention_mask": ONES((3, 2))}, "attention_mask has shape \\(3, 2\\)"),
    "position_ids transposed": ({"position_ids": ZEROS((3, 2))}, "position_ids has shape \\(3, 2\\)"),
    "token_type_ids too long": ({"token_type_ids": ZEROS((2, 4))}, "token_type_ids has shape \\(2, 4\\)"),
    "labels too long": ({"labels": ZEROS((2, 4))}, "labels has shape \\(2, 4\\)"),
    "empty sequence": ({"input_ids": ZEROS((1, 0))}, "input_ids is empty"),
    "id out of range": ({"input_ids": ZEROS((2, 3)) + 500}, "input_ids contains 500"),
    "negative id": ({"input_ids": ZEROS((2, 3)) - 1}, "input_ids contains -1"),
    "head_mask of other heads": ({"head_mask": ONES((5,))}, "head_mask has shape \\(5,\\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_an_input_error_naming_the_argument(case):
    extra, message = BAD_INPUTS[case]
    model = lm_model()
    with pytest.raises(InputError, match=message):
        model(**{"input_ids": ZEROS((2, 3)) + 1, **extra})


def test_double_heads_inputs_checked():
    model = double_heads_model()
    ids = ZEROS((2, 3, 4)) + 1
    with pytest.raises(InputError, match="mc_token_ids has shape \\(2,\\), expected \\(2, 3\\)"):
        model(ids, mc_token_ids=ZEROS((2,)))
    with pytest.raises(InputError, match="mc_labels has shape"):
        model(ids, mc_token_ids=ZEROS((2, 3)), mc_labels=ZEROS((2, 3)))
    with pytest.raises(InputError, match="mc_token_ids contains 4, outside \\[0, seq_len=4\\)"):  # on the host
        model(ids, mc_token_ids=ZEROS((2, 3)) + 4)


def test_ids_checked_inside_jax_jit():
    model = lm_model()
    logits = jax.jit(lambda params, ids: model(ids, params=params).logits)
    assert logits(model.params, ZEROS((2, 3)) + 1).shape == (2, 3, 97)
    # The in-graph check runs a host callback only when an id is out of range; JAX re-raises it at dispatch.
    with pytest.raises(Exception, match="input_ids contains 500, outside \\[0, vocab_size=97\\)"):
        logits(model.params, ZEROS((2, 3)) + 500).block_until_ready()


def test_train_step_refuses_out_of_range_ids_before_dispatch():
    model = lm_model()
    state = create_train_state(model, optax.sgd(0.1))
    train_step = make_train_step(model)
    state, loss, rng = train_step(state, {"input_ids": ZEROS((2, 3)) + 1}, jax.random.PRNGKey(0))
    assert np.isfinite(loss)
    with pytest.raises(InputError, match="input_ids contains 500"):
        train_step(state, {"input_ids": ZEROS((2, 3)) + 500}, rng)
    with pytest.raises(InputError, match="labels has shape \\(2, 4\\)"):
        train_step(state, {"input_ids": ZEROS((2, 3)) + 1, "labels": ZEROS((2, 4))}, rng)


@pytest.mark.parametrize("problem_type,labels_shape,message", [
    ("single_label_classification", (2, 3), "labels has shape \\(2, 3\\), expected \\(2,\\) or \\(2, 1\\)"),
    ("multi_label_classification", (2,), "labels has shape \\(2,\\), expected \\(2, 3\\)"),
])
def test_sequence_classification_labels_checked(problem_type, labels_shape, message):
    model = backend.GPT2ForSequenceClassification(tiny_config("gpt2", num_labels=3, pad_token_id=0,
                                                                problem_type=problem_type))
    with pytest.raises(InputError, match=message):
        model(ZEROS((2, 4)) + 1, labels=ZEROS(labels_shape))
