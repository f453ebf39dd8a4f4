"""`conversion`: reading every Hugging Face checkpoint layout canonically, and the per-family tables."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import zipfile

import numpy as np
import pytest

from helpers import FIXTURES, HF_FIXTURES, tiny_config
from twinformers.checkpoints.canonical import open_checkpoint
from twinformers.checkpoints.files import CheckpointError, bfloat16_dtype
from twinformers.checkpoints.safetensors import SafetensorsFile, write_safetensors
from twinformers.checkpoints.torch_bin import TorchBinFile
from twinformers.configuration import AutoConfig
from twinformers.conversion.tables import (
    BACKENDS,
    TABLES,
    TRANSFORMS,
    _canonical_rule,
    _rules,
    canonical_to_backend_name,
    expected_shapes,
    family_of,
    from_backend,
    head_of,
    infer_head,
    plan_to_backend,
    tie_word_embeddings,
    to_backend,
    transform_for,
)


def fixture(name: str) -> str:
    return os.path.join(HF_FIXTURES, name)


def stored(name: str) -> dict[str, np.ndarray]:
    """The tensors of an HF-written PT `model.safetensors`, read independently of `open_checkpoint`."""
    file = SafetensorsFile(os.path.join(fixture(name), "model.safetensors"))
    return {key: np.array(file[key]) for key in file}


def assert_same_tensors(checkpoint, expected: dict[str, np.ndarray]) -> None:
    assert sorted(checkpoint) == sorted(expected)
    for key, value in expected.items():
        got = checkpoint[key]
        assert got.dtype == value.dtype and got.shape == value.shape, key
        assert np.array_equal(got, value), key
        assert checkpoint.shape(key) == value.shape and checkpoint.dtype(key) == value.dtype


# --------------------------------------------------------------------------------------------- PT layouts
@pytest.mark.parametrize("family", ["gpt2", "gptj", "gpt_neo"])
def test_pt_safetensors_single_and_sharded(family):
    expected = stored(f"{family}-pt-causal_lm")
    single = open_checkpoint(fixture(f"{family}-pt-causal_lm"))
    assert (single.source_format, single.weights_name, single.family) == ("pt", "model.safetensors", family)
    assert_same_tensors(single, expected)
    sharded = open_checkpoint(fixture(f"{family}-pt-causal_lm-sharded"))
    assert sharded.weights_name == "model.safetensors.index.json"
    assert len(sharded.files) == 9 and sharded.files[0].endswith("model.safetensors.index.json")
    assert_same_tensors(sharded, expected)


def test_safetensors_arrays_are_zero_copy_views():
    checkpoint = open_checkpoint(fixture("gpt2-pt-causal_lm"))
    array = checkpoint["transformer.wte.weight"]
    assert not array.flags.owndata and not array.flags.writeable


@pytest.mark.parametrize("name", ["gpt2-pt-causal_lm", "gpt2-pt-causal_lm-sharded"])
def test_read_into(name):
    checkpoint = open_checkpoint(fixture(name))
    expected = stored("gpt2-pt-causal_lm")
    for key in ("transformer.h.0.attn.c_attn.bias", "transformer.wpe.weight"):
        out = np.empty(checkpoint.shape(key), checkpoint.dtype(key))
        checkpoint.read_into(key, out)
        assert np.array_equal(out, expected[key])
    with pytest.raises(ValueError, match="transformer.wpe.weight"):
        checkpoint.read_into("transformer.wpe.weight", np.empty((3, 3), np.float32))


@pytest.mark.parametrize("family,head", [("gpt2", "causal_lm"), ("gptj", "seq_cls"), ("gpt_neo", "token_cls"),
                                         ("gpt2", "double_heads")])
def test_pytorch_bin_single_and_sharded(family, head):
    pytest.importorskip("torch")
    expected = stored(f"{family}-pt-{head}")
    checkpoint = open_checkpoint(fixture(f"{family}-pt-{head}-bin"))
    assert checkpoint.weights_name == "pytorch_model.bin" and checkpoint.source_format == "pt"
    tied = head in ("causal_lm", "double_heads") and family != "gptj"
    # The .bin keeps the tied `lm_head.weight` that safetensors leaves out (FORMATS.md §4).
    assert sorted(checkpoint) == sorted([*expected, *(["lm_head.weight"] if tied else [])])
    for key, value in expected.items():
        assert np.array_equal(checkpoint[key], value), key
    if tied:
        assert np.array_equal(checkpoint["lm_head.weight"], expected["transformer.wte.weight"])
    if head == "causal_lm":
        sharded = open_checkpoint(fixture(f"{family}-pt-causal_lm-sharded-bin"))
        assert sharded.weights_name == "pytorch_model.bin.index.json"
        for key in checkpoint:
            assert np.array_equal(sharded[key], checkpoint[key]), key


def test_prefer_picks_a_kind_first(tmp_path):
    pytest.importorskip("torch")
    both = tmp_path / "both"
    shutil.copytree(fixture("gpt2-pt-causal_lm"), both)
    shutil.copy(os.path.join(fixture("gpt2-pt-causal_lm-bin"), "pytorch_model.bin"), both)
    assert open_checkpoint(both).weights_name == "model.safetensors"  # Hugging Face's order
    assert open_checkpoint(both, prefer="bin").weights_name == "pytorch_model.bin"
    with pytest.raises(ValueError, match="prefer"):
        open_checkpoint(both, prefer="onnx")


def test_bf16_safetensors_come_back_as_ml_dtypes_bfloat16(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_safetensors(tmp_path / "model.safetensors", {"w": values.astype(bfloat16_dtype())}, {"format": "pt"})
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint.family is None and checkpoint.config is None
    assert checkpoint.dtype("w") == bfloat16_dtype()
    assert np.array_equal(checkpoint["w"].astype(np.float32), values)


def test_bf16_bin(tmp_path):
    torch = pytest.importorskip("torch")
    values = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save({"w": values.to(torch.bfloat16)}, tmp_path / "pytorch_model.bin")
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint["w"].dtype == bfloat16_dtype()
    assert np.array_equal(checkpoint["w"].astype(np.float32), values.numpy())


# --------------------------------------------------------------------------------------------- bad input
def test_no_weights(tmp_path):
    shutil.copy(os.path.join(fixture("gpt2-pt-causal_lm"), "config.json"), tmp_path)
    with pytest.raises(CheckpointError, match="holds no weights.*model.safetensors"):
        open_checkpoint(tmp_path)


def test_not_a_directory_nor_repo_id(tmp_path):
    with pytest.raises(OSError, match="neither an existing directory"):
        open_checkpoint(str(tmp_path / "no" / ".." / "such dir"))


def test_unknown_model_type(tmp_path):
    shutil.copytree(fixture("gpt2-pt-causal_lm"), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model_type"] = "llama"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="llama"):
        open_checkpoint(tmp_path / "m")


def test_truncated_safetensors(tmp_path):
    source = os.path.join(fixture("gpt2-pt-causal_lm"), "model.safetensors")
    data = open(source, "rb").read()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        open_checkpoint(tmp_path)


def test_index_naming_a_missing_shard(tmp_path):
    shutil.copytree(fixture("gpt2-pt-causal_lm-sharded"), tmp_path / "m")
    os.remove(tmp_path / "m" / "model-00003-of-00008.safetensors")
    with pytest.raises(CheckpointError, match="model-00003-of-00008.safetensors"):
        open_checkpoint(tmp_path / "m")


def test_index_disagreeing_with_its_shards(tmp_path):
    shutil.copytree(fixture("gpt2-pt-causal_lm-sharded"), tmp_path / "m")
    index_path = tmp_path / "m" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["transformer.wte.weight"] = "model-00001-of-00008.safetensors"
    index["weight_map"]["transformer.h.9.ln_1.weight"] = "model-00001-of-00008.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="transformer.h.9.ln_1.weight"):
        open_checkpoint(tmp_path / "m")


def test_bin_pickle_needing_more_than_weights_is_refused(tmp_path):
    torch = pytest.importorskip("torch")

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"w": torch.zeros(2), "extra": Evil()}, tmp_path / "pytorch_model.bin", pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights only"):
        open_checkpoint(tmp_path)


def test_bin_holding_something_else_than_a_dict_of_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2), "step": 3}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="plain dict of named tensors"):
        open_checkpoint(tmp_path)


def test_corrupt_bin(tmp_path):
    pytest.importorskip("torch")
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", b"not a pickle")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        open_checkpoint(tmp_path)


def test_bin_reads_without_torch_and_names_the_extra_where_it_cannot(tmp_path, monkeypatch):
    """A plain dict of contiguous tensors is read without torch (importing it is ~230 MB); a file only torch
    can read (here: not a pickle at all) says which extra to install."""
    torch = pytest.importorskip("torch")
    path = os.path.join(fixture("gpt2-pt-causal_lm-bin"), "pytorch_model.bin")
    expected = {key: tensor.numpy() for key, tensor in torch.load(path, weights_only=True).items()}
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    read = TorchBinFile(path)
    assert set(read) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(read[key], value)
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", b"not a pickle")
    with pytest.raises(ImportError, match=r"twinformers\[pt\]"):
        open_checkpoint(tmp_path)


# --------------------------------------------------------------------------------------------- every HF layout
def hf_layout_fixtures() -> list[str]:
    names = []
    for name in sorted(os.listdir(HF_FIXTURES)):
        parts = name.split("-")
        if len(parts) >= 3 and parts[1] in ("tf", "flax") and os.path.isdir(fixture(name)):
            names.append(name)
    return names


@pytest.mark.parametrize("name", hf_layout_fixtures())
def test_tf_and_flax_fixtures_read_as_the_pt_fixture(name):
    # Hugging Face converted the same PT weights into every TF / Flax fixture (FORMATS.md §12), so reading
    # any of them canonically must give the PT safetensors bit for bit.
    family, framework, head = name.split("-")[:3]
    checkpoint = open_checkpoint(fixture(name))
    assert checkpoint.source_format == framework and checkpoint.family == family
    assert_same_tensors(checkpoint, stored(f"{family}-pt-{head}"))


# --------------------------------------------------------------------------------------------- the tables
def hf_conversion_records() -> list[str]:
    return sorted(os.listdir(os.path.join(HF_FIXTURES, "conversion")))


def load_config(family: str, head: str):
    return AutoConfig.from_pretrained(os.path.join(FIXTURES, "config-examples", f"{family}-{head}.config.json"))


@pytest.mark.parametrize("record", hf_conversion_records())
def test_table_reproduces_hugging_face_names_and_shapes(record):
    # Each record is one row per PT key as transformers 4.47.1 measured it: PT shape, the TF variable and
    # Flax param it became, and their shapes.
    with open(os.path.join(HF_FIXTURES, "conversion", record), encoding="utf-8") as f:
        data = json.load(f)
    family, head = data["family"], data["head"]
    shapes = expected_shapes(load_config(family, head), head)
    assert list(shapes) == [row["pt_key"] for row in data["rows"]]  # state_dict order too
    for row in data["rows"]:
        key, pt_shape = row["pt_key"], tuple(row["pt_shape"])
        assert shapes[key] == pt_shape, key
        for backend, info, name_field, shape_field in (
            ("tf_h5", row.get("tf"), "tf_name_without_model_prefix", "tf_shape"),
            ("flax", row.get("flax"), "flax_path", "flax_shape"),
        ):
            if not info:
                continue
            assert canonical_to_backend_name(family, backend, key) == info[name_field], key
            transform = transform_for(family, backend, key)
            assert transform.backend_shape(pt_shape) == tuple(info[shape_field]), key


def random_canonical(config, head: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(config, head).items()}


def family_heads():
    return [(family, head) for family, table in TABLES.items() for head in table.heads]


@pytest.mark.parametrize("backend", ["pt", "tf", "tf_h5", "flax"])
@pytest.mark.parametrize("family,head", family_heads())
def test_round_trip_is_bit_exact(family, head, backend):
    overrides = {"add_cross_attention": True} if family == "gpt2" and head == "causal_lm" else {}
    config = tiny_config(family, **overrides)
    canonical = random_canonical(config, head)
    converted = to_backend(family, backend, canonical, head=head, config=config)
    plan = plan_to_backend(family, backend, canonical, head=head, config=config)
    for key, (name, transform) in plan.items():
        assert converted[name].shape == transform.backend_shape(canonical[key].shape)
    back = from_backend(family, backend, converted, head=head, config=config)
    tied = tie_word_embeddings(family, config) and "lm_head.weight" in canonical
    assert sorted(back) == sorted(k for k in canonical if not (tied and k == "lm_head.weight"))
    for key, value in back.items():
        assert value.dtype == canonical[key].dtype and np.array_equal(value, canonical[key]), key


@pytest.mark.parametrize("family,head", family_heads())
def test_table_covers_exactly_the_expected_parameters(family, head):
    # Every parameter of every head has exactly one rule, each rule's target is distinct, and nothing else.
    for overrides in ({}, {"add_cross_attention": True}, {"summary_use_proj": False}, {"tie_word_embeddings": False}):
        if family != "gpt2" and set(overrides) - {"tie_word_embeddings"}:
            continue
        config = tiny_config(family, **overrides)
        shapes = expected_shapes(config, head)
        for backend in BACKENDS:
            plan = plan_to_backend(family, backend, shapes, head=head, config=config)
            names = [name for name, _ in plan.values()]
            assert len(set(names)) == len(names)
            dropped = set(shapes) - set(plan)
            tied = "lm_head.weight" in shapes and config.tie_word_embeddings
            assert dropped == ({"lm_head.weight"} if tied else set())


def test_every_rule_is_used_by_some_head():
    for family, table in TABLES.items():
        used = set()
        for head in table.heads:
            for overrides in ({}, {"add_cross_attention": True}):
                if family != "gpt2" and overrides:
                    continue
                for key in expected_shapes(tiny_config(family, **overrides), head):
                    used.add(_canonical_rule(family, key)[0].template)
        assert used == set(_rules(family)), family


def test_names_of_both_kinds_of_model():
    name = canonical_to_backend_name
    assert name("gpt2", "tf", "transformer.h.0.attn.c_attn.weight") == "transformer/h_._0/attn/c_attn/weight"
    assert name("gpt2", "tf", "h.0.attn.c_attn.weight") == "transformer/h_._0/attn/c_attn/weight"
    assert name("gpt2", "tf_h5", "wte.weight") == "transformer/wte/embeddings:0"
    assert name("gptj", "tf", "transformer.wte.weight") == "transformer/wte/weight"
    assert name("gpt2", "flax", "h.11.mlp.c_proj.bias") == "h/11/mlp/c_proj/bias"
    assert name("gpt2", "flax", "transformer.h.11.mlp.c_proj.bias") == "transformer/h/11/mlp/c_proj/bias"
    assert name("gpt2", "flax", "transformer.wte.weight", head="base") == "wte/embedding"
    assert name("gpt2", "flax", "wte.weight", head="causal_lm") == "transformer/wte/embedding"
    assert name("gpt_neo", "flax", "transformer.h.0.attn.attention.out_proj.weight") == (
        "transformer/h/0/attn/attention/out_proj/kernel"
    )
    assert name("gpt2", "tf", "multiple_choice_head.summary.weight") == "multiple_choice_head/summary/kernel"
    assert name("gpt2", "tf", "score.weight") == "score/kernel"
    with pytest.raises(ValueError, match="transformer.score.weight"):
        name("gpt2", "tf", "transformer.score.weight")
    with pytest.raises(ValueError, match="backend"):
        name("gpt2", "onnx", "wte.weight")


def test_transforms_are_named_and_invertible():
    assert transform_for("gpt2", "tf", "h.0.attn.c_attn.weight").name == "identity"
    assert transform_for("gpt2", "flax", "h.0.attn.c_attn.weight").name == "transpose"
    assert transform_for("gpt2", "tf_h5", "h.0.attn.c_attn.bias").name == "reshape_row"
    assert transform_for("gpt2", "tf", "h.0.attn.c_attn.bias").name == "identity"
    assert transform_for("gptj", "tf", "h.0.attn.q_proj.weight").name == "transpose"
    assert transform_for("gpt_neo", "flax", "h.0.mlp.c_fc.weight").name == "transpose"
    row = TRANSFORMS["reshape_row"]
    assert row.to_backend(np.arange(3.0)).shape == (1, 3)
    with pytest.raises(ValueError, match="reshape_row"):
        row.canonical_shape((2, 3))


def test_strict_mapping_lists_every_unknown_key():
    canonical = random_canonical(tiny_config("gpt2"), "causal_lm")
    canonical["transformer.h.0.attn.c_attn.extra"] = np.zeros(3, np.float32)
    canonical["pooler.weight"] = np.zeros(3, np.float32)
    canonical["transformer.h.0.attn.bias"] = np.zeros((1, 1, 19, 19), bool)  # ignorable buffer: dropped
    with pytest.raises(ValueError) as info:
        to_backend("gpt2", "flax", canonical)
    message = str(info.value)
    assert "2 canonical name(s)" in message
    assert "transformer.h.0.attn.c_attn.extra" in message and "pooler.weight" in message


def test_two_keys_for_one_target_is_an_error():
    value = np.zeros((97, 24), np.float32)
    with pytest.raises(ValueError, match="transformer/wte/embeddings"):
        to_backend("gpt2", "tf", {"wte.weight": value, "transformer.wte.weight": value})
    with pytest.raises(ValueError, match="ln_f"):
        from_backend("gpt2", "pt", {"ln_f.gamma": np.ones(3), "ln_f.weight": np.ones(3)})


def test_legacy_names_convert():
    back = to_backend("gpt2", "tf", {"h.0.ln_1.gamma": np.ones(4), "h.0.ln_1.beta": np.zeros(4)})
    assert sorted(back) == ["transformer/h_._0/ln_1/beta", "transformer/h_._0/ln_1/gamma"]


def test_shapes_checked_against_the_config_all_at_once():
    config = tiny_config("gptj")
    canonical = random_canonical(config, "causal_lm")
    canonical["lm_head.bias"] = np.zeros(5, np.float32)
    canonical["transformer.h.1.mlp.fc_in.weight"] = np.zeros((24, 96), np.float32)
    with pytest.raises(ValueError) as info:
        to_backend("gptj", "tf", canonical, config=config)
    message = str(info.value)
    assert "lm_head.bias: checkpoint (5,) vs expected (97,)" in message
    assert "transformer.h.1.mlp.fc_in.weight: checkpoint (24, 96) vs expected (96, 24)" in message
    canonical = random_canonical(config, "causal_lm")
    canonical["transformer.h.2.ln_1.weight"] = np.ones(24, np.float32)  # a third block in a 2-layer config
    with pytest.raises(ValueError, match="no parameter.*transformer.h.2.ln_1.weight"):
        to_backend("gptj", "tf", canonical, config=config)


def test_impossible_layouts_are_reported():
    with pytest.raises(ValueError, match="transpose needs a 2-D"):
        to_backend("gptj", "flax", {"lm_head.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="impossible layout.*c_attn/bias"):
        from_backend("gpt2", "tf_h5", {"transformer/h_._0/attn/c_attn/bias:0": np.zeros((2, 3))})


def test_tied_head_is_dropped_only_when_tied():
    config = tiny_config("gpt2")
    canonical = random_canonical(config, "causal_lm")
    assert "lm_head/kernel" not in to_backend("gpt2", "flax", canonical, config=config)
    untied = tiny_config("gpt2", tie_word_embeddings=False)
    out = to_backend("gpt2", "flax", canonical, config=untied)
    assert np.array_equal(out["lm_head/kernel"], canonical["lm_head.weight"].T)
    gptj = to_backend("gptj", "tf", random_canonical(tiny_config("gptj"), "causal_lm"))
    assert "lm_head/kernel" in gptj and "lm_head/bias" in gptj


def test_family_and_head_helpers():
    assert family_of("gpt_neo") == "gpt_neo"
    assert family_of(tiny_config("gptj")) == "gptj"
    assert family_of({"model_type": "gpt2"}) == "gpt2"
    with pytest.raises(ValueError, match="llama"):
        family_of("llama")
    assert head_of(load_config("gpt2", "double_heads")) == "double_heads"
    assert head_of(load_config("gptj", "base")) == "base"
    assert head_of(tiny_config("gpt2", architectures=["TFGPT2ForSequenceClassification"])) == "seq_cls"
    assert head_of(tiny_config("gpt2")) is None
    infer = infer_head
    assert infer("gpt2", ["transformer.wte.weight", "multiple_choice_head.summary.weight", "lm_head.weight"]) == (
        "double_heads"
    )
    assert infer("gptj", ["transformer.wte.weight", "qa_outputs.weight"]) == "qa"
    assert infer("gptj", ["wte.weight"]) == "base"
    assert infer("gpt2", ["transformer.wte.weight"]) == "causal_lm"


def test_pt_twin_parameters_are_exactly_the_table():
    # A renamed layer in the PyTorch twin breaks this test: its state_dict must be the table's keys and shapes.
    pytest.importorskip("torch")
    import twinformers.pt as pt

    for family, table in TABLES.items():
        for head, class_name in table.classes.items():
            config = tiny_config(family)
            model = getattr(pt, class_name)(config)
            state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            assert state == expected_shapes(config, head), class_name
