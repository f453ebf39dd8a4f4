"""Equivalence through files: a model saved by one backend (safetensors, `pytorch_model.bin`, `tf_model.h5`,
`flax_model.msgpack`) and loaded by another gives the saving model's outputs within 1e-5."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from equivalence_suite import (  # noqa: E402
    CASE_BY_NAME,
    FILE_CASE,
    FILE_SPECS,
    assert_equivalent,
    load_and_run,
    round_trips,
    save,
)

ITEMS = [(spec, writer, fmt, reader) for spec in FILE_SPECS for writer, fmt, reader in round_trips(spec)]


@pytest.fixture(scope="session")
def saved(suite, tmp_path_factory):
    """Each (spec, writer, format) saved once; returns its directory."""
    directories: dict[tuple[str, str, str], str] = {}

    def get(spec, writer: str, fmt: str) -> str:
        key = (spec.id, writer, fmt)
        if key not in directories:
            directories[key] = str(tmp_path_factory.mktemp(f"{spec.id}-{writer}-{fmt}"))
            save(suite, spec, writer, fmt, directories[key])
        return directories[key]

    return get


@pytest.mark.parametrize(("spec", "writer", "fmt", "reader"), ITEMS,
                         ids=[f"{s.id}-{w}-{f}-to-{r}" for s, w, f, r in ITEMS])
def test_saved_by_one_backend_loaded_by_another(suite, saved, spec, writer, fmt, reader):
    case = CASE_BY_NAME[FILE_CASE]
    actual = load_and_run(suite, spec, reader, saved(spec, writer, fmt))
    assert_equivalent(actual, suite.run(spec, case, writer), suite.calls(spec, case))
