"""Every family × head class × case × backend pair: the same weights give the same outputs within 1e-5 (fp32)
on every valid position, in every output (logits, hidden states, attentions, caches, losses)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from equivalence_suite import PAIRS, suite_items  # noqa: E402


@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
@pytest.mark.parametrize(("spec", "case"), suite_items(), ids=[f"{s.id}-{c.name}" for s, c in suite_items()])
def test_outputs_match(suite, spec, case, pair):
    suite.compare(spec, case, pair)
