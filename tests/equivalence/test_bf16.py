"""The bf16 row: every backend holding bf16 weights and computing in bf16 agrees with the others within
`TOLERANCES["bfloat16"]` (each rounds its own intermediate results, so only a looser bound can hold)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from equivalence_suite import BF16_CASES, BF16_SPECS, CASE_BY_NAME, PAIRS  # noqa: E402

ITEMS = [(spec, CASE_BY_NAME[name]) for spec in BF16_SPECS for name in BF16_CASES]


@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
@pytest.mark.parametrize(("spec", "case"), ITEMS, ids=[f"{s.id}-{c.name}" for s, c in ITEMS])
def test_bf16_outputs_match(suite, spec, case, pair):
    suite.compare(spec, case, pair, dtype="bfloat16")
