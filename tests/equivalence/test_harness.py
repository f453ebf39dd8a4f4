"""The suite can fail: a tiny weight error or a dropped attention mask in one backend is caught, and every
comparison looks at real positions (a vacuous `where` would make every test pass)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from equivalence_suite import CASE_BY_NAME, SPEC_BY_ID, assert_equivalent, run_calls, suite_items  # noqa: E402

SPEC = SPEC_BY_ID["gpt2-causal_lm"]


def test_a_small_weight_error_in_one_backend_is_caught(suite):
    """1e-3 on one bias of Flax's second block (about 1 / 100 of its spread) must fail the 1e-5 bound."""
    import jax

    case = CASE_BY_NAME["left_padding_positions"]
    model = suite.model(SPEC, "flax")
    params = jax.tree_util.tree_map(lambda x: x, model.params)  # a new tree, the same leaves
    block = params["transformer"]["h"]["1"]["attn"]["c_proj"]
    block["bias"] = block["bias"].at[5].add(1e-3)
    calls = suite.calls(SPEC, case)
    perturbed = run_calls("flax", model, calls, params=params)
    with pytest.raises(AssertionError, match=r"max \|Δ\|"):
        assert_equivalent(perturbed, suite.run(SPEC, case, "pt"), calls)


def test_a_dropped_attention_mask_is_caught(suite):
    """With left padding, real tokens attend to the padding unless the mask is applied."""
    case = CASE_BY_NAME["left_padding"]
    calls = suite.calls(SPEC, case)
    unmasked = [dataclasses.replace(call, kwargs={k: v for k, v in call.kwargs.items() if k != "attention_mask"})
                for call in calls]
    outputs = run_calls("tf", suite.model(SPEC, "tf"), unmasked)
    with pytest.raises(AssertionError, match=r"max \|Δ\|"):
        assert_equivalent(outputs, suite.run(SPEC, case, "pt"), calls)


def test_every_comparison_covers_real_positions(suite):
    """Each call of each case compares at least one position of every row."""
    for spec, case in suite_items():
        for call in suite.calls(spec, case):
            for mask in (call.valid, call.key_valid):
                if mask is not None:
                    rows = mask.reshape(-1, mask.shape[-1])
                    assert rows.any(axis=-1).all(), f"{spec.id} {case.name}: a row with nothing to compare"
