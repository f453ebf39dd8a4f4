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


@pytest.mark.parametrize("family", ["gpt2", "gptj", "gpt_neo"])
def test_generation_keys_move_to_generation_config_in_every_backend(family, tmp_path):
    """Hugging Face's save rule, the same in every twin: generation keys the model config holds at a non-default
    value leave config.json for generation_config.json (with a warning); the live config keeps them."""
    import json

    import twinformers.flax as fx
    import twinformers.pt as pt
    import twinformers.tf as tft
    from helpers import LM_CLASSES, tiny_config
    from twinformers.configuration import COMPATIBLE_TRANSFORMERS_VERSION

    written = {}
    for backend, package in (("pt", pt), ("tf", tft), ("flax", fx)):
        config = tiny_config(family, max_length=50, do_sample=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = getattr(package, LM_CLASSES[family])(config)
        with pytest.warns(UserWarning, match="Moving the following attributes"):
            model.save_pretrained(tmp_path / backend)
        assert model.config.max_length == 50 and model.config.do_sample is True, backend
        saved_config = json.loads((tmp_path / backend / "config.json").read_text())
        assert saved_config["max_length"] is None and saved_config["do_sample"] is None, backend
        written[backend] = (tmp_path / backend / "generation_config.json").read_text()
    assert json.loads(written["pt"]) == {
        "_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "max_length": 50,
        "do_sample": True, "transformers_version": COMPATIBLE_TRANSFORMERS_VERSION,
    }
    assert written["tf"] == written["pt"] and written["flax"] == written["pt"]
