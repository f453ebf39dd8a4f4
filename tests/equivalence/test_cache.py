"""Incremental decoding equals the full forward in every backend: a prefix plus continuations fed through the
backend's own cache give the full forward's per-token outputs and its cache (Flax's static cache too)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from equivalence_suite import (  # noqa: E402
    BACKENDS,
    CASE_BY_NAME,
    SPECS,
    STATIC_CASE,
    STATIC_SPECS,
    cache_consistency,
    cases_for,
    flax_static_cache_pairs,
)

from helpers import assert_close  # noqa: E402

CACHE_CASES = ("cache", "cache_left_padding")
CACHE_ITEMS = [(spec, CASE_BY_NAME[name]) for spec in SPECS for name in CACHE_CASES
               if CASE_BY_NAME[name] in cases_for(spec)]
ITEM_IDS = [f"{spec.id}-{case.name}" for spec, case in CACHE_ITEMS]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("spec", "case"), CACHE_ITEMS, ids=ITEM_IDS)
def test_incremental_decoding_equals_full_forward(suite, spec, case, backend):
    outputs = suite.run(spec, case, backend)
    for name, from_steps, from_full, where in cache_consistency(outputs, suite.calls(spec, case)):
        assert_close(from_steps, from_full, f"{backend} {name}", where=where)


STATIC_ITEMS = [(spec, case) for spec, case in CACHE_ITEMS if spec in STATIC_SPECS and case.name == STATIC_CASE]


@pytest.mark.parametrize(("spec", "case"), STATIC_ITEMS, ids=[f"{s.id}-{c.name}" for s, c in STATIC_ITEMS])
def test_flax_static_cache_equals_full_forward(suite, spec, case):
    """A prefix, then one token at a time through `init_cache`'s fixed-size cache (one compiled step)."""
    for name, from_steps, from_full, where in flax_static_cache_pairs(suite, spec, case):
        assert_close(from_steps, from_full, f"flax {name}", where=where)
