"""Greedy generation gives the same token ids in every backend, for every family (left-padded prompts)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from equivalence_suite import (  # noqa: E402
    BACKENDS,
    CASE_BY_NAME,
    GENERATION_CASE,
    SPEC_BY_ID,
    greedy_margin,
    greedy_tokens,
)

LM_SPECS = [SPEC_BY_ID[f"{family}-causal_lm"] for family in ("gpt2", "gptj", "gpt_neo")]


@pytest.mark.parametrize("spec", LM_SPECS, ids=lambda spec: spec.family)
def test_greedy_generation_is_identical_across_backends(suite, spec):
    # Well-conditioned inputs: no step has two candidates closer than float32 rounding could swap.
    assert greedy_margin(suite, spec) > 1e-4
    tokens = {backend: greedy_tokens(suite, spec, backend) for backend in BACKENDS}
    prompts = suite.calls(spec, CASE_BY_NAME[GENERATION_CASE])[0].kwargs["input_ids"]
    np.testing.assert_array_equal(tokens["pt"][:, : prompts.shape[1]], prompts)  # the prompts come back first
    for backend in ("tf", "flax"):
        np.testing.assert_array_equal(tokens[backend], tokens["pt"], err_msg=f"{spec.id}: {backend} vs pt")
