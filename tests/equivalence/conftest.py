"""Shared fixtures of the equivalence suite: one `Suite` per session builds each model once per backend and
runs each case once per backend; every parametrized comparison reads those cached outputs."""

from __future__ import annotations

import pytest
from equivalence_suite import Suite


@pytest.fixture(scope="session")
def suite() -> Suite:
    for module in ("torch", "tensorflow", "jax", "flax"):
        pytest.importorskip(module)
    return Suite()
