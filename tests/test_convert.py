"""`convert`: every HF fixture into every format, byte-for-byte against Hugging Face's own files where they
exist, dtype casting, auxiliary files, atomicity and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from helpers import HF_FIXTURES
from twinformers.checkpoints import flax_msgpack, keras_h5
from twinformers.checkpoints import safetensors as safetensors_files
from twinformers.checkpoints.canonical import open_checkpoint
from twinformers.checkpoints.files import CheckpointError, numpy_dtype
from twinformers.checkpoints.safetensors import SafetensorsFile, write_safetensors
from twinformers.conversion import converter
from twinformers.conversion.converter import convert, verify_conversion

TARGETS = [("pt", "safetensors"), ("pt", "bin"), ("tf", "h5"), ("tf", "safetensors"), ("flax", "msgpack"),
           ("flax", "safetensors")]


def fixture(name: str) -> str:
    return os.path.join(HF_FIXTURES, name)


def pt_fixtures() -> list[str]:
    return sorted(n for n in os.listdir(HF_FIXTURES) if n.count("-") == 2 and n.split("-")[1] == "pt")


def other_fixtures() -> list[str]:
    return sorted(n for n in os.listdir(HF_FIXTURES) if "-tf-" in n or "-flax-" in n)


def canonical(name: str) -> dict[str, np.ndarray]:
    source = open_checkpoint(fixture(name))
    return {k: np.array(source[k]) for k in source}


def assert_weights(path: str, expected: dict[str, np.ndarray], tied_copy: bool = False) -> None:
    got = open_checkpoint(path)
    # A .bin keeps the tied lm_head.weight (= wte) that safetensors files leave out.
    tied = tied_copy and "lm_head.weight" in got and "lm_head.weight" not in expected
    if tied:
        assert np.array_equal(got["lm_head.weight"], expected["transformer.wte.weight"])
    assert sorted(k for k in got if not (tied and k == "lm_head.weight")) == sorted(expected)
    for key, value in expected.items():
        assert got.dtype(key) == value.dtype and np.array_equal(got[key], value), key


def needs_torch(to: str, fmt: str) -> None:
    if fmt == "bin":
        pytest.importorskip("torch")


@pytest.mark.parametrize("to,fmt", TARGETS)
@pytest.mark.parametrize("name", pt_fixtures())
def test_every_pt_fixture_into_every_format(name, to, fmt, tmp_path):
    needs_torch(to, fmt)
    family, _, head = name.split("-")
    for shard_size in ("5GB", "20KB"):
        if to == "flax" and fmt == "safetensors" and shard_size == "20KB":
            continue
        dst = tmp_path / f"out-{shard_size}"
        result = convert(fixture(name), dst, to=to, fmt=fmt, max_shard_size=shard_size, progress=False)
        assert (result.family, result.head) == (family, head)
        assert_weights(dst, canonical(name), tied_copy=fmt == "bin")
        expected_files = {"config.json"} | ({"generation_config.json"} if os.path.exists(
            os.path.join(fixture(name), "generation_config.json")) else set())
        assert expected_files <= set(os.listdir(dst))
        if shard_size == "20KB":
            assert any(f.endswith(".index.json") for f in os.listdir(dst))


@pytest.mark.parametrize("name", other_fixtures())
def test_tf_and_flax_fixtures_into_pt_and_back(name, tmp_path):
    family, framework, head = name.split("-")[:3]
    expected = canonical(f"{family}-pt-{head}")
    convert(fixture(name), tmp_path / "pt", to="pt", progress=False)
    # Hugging Face's own PT file of these weights, byte for byte.
    ours = (tmp_path / "pt" / "model.safetensors").read_bytes()
    assert ours == open(os.path.join(fixture(f"{family}-pt-{head}"), "model.safetensors"), "rb").read()
    fmt = "h5" if framework == "tf" else "msgpack"
    convert(tmp_path / "pt", tmp_path / "back", to=framework, fmt=fmt, progress=False)
    assert_weights(tmp_path / "back", expected)


# Hugging Face wrote each of these files from the same weights: our output must equal theirs exactly.
BYTE_EXACT = [
    ("{f}-pt-{h}", "pt", "safetensors", "{f}-pt-{h}", "model.safetensors"),
    ("{f}-pt-{h}", "tf", "safetensors", "{f}-tf-{h}-safetensors", "model.safetensors"),
    ("{f}-pt-{h}", "flax", "safetensors", "{f}-flax-{h}-safetensors", "model.safetensors"),
    ("{f}-pt-{h}", "flax", "msgpack", "{f}-flax-{h}", "flax_model.msgpack"),
]


def byte_exact_cases() -> list[tuple[str, str, str, str, str]]:
    """Every (source, to, format, HF reference dir, file) for which Hugging Face wrote the reference file."""
    cases = []
    for name in pt_fixtures():
        family, _, head = name.split("-")
        for source, to, fmt, reference, file in BYTE_EXACT:
            reference = reference.format(f=family, h=head)
            if os.path.isdir(fixture(reference)):
                cases.append((source.format(f=family, h=head), to, fmt, reference, file))
    return cases


@pytest.mark.parametrize("source,to,fmt,reference,file", byte_exact_cases())
def test_output_is_byte_identical_to_hugging_face(source, to, fmt, reference, file, tmp_path):
    convert(fixture(source), tmp_path / "out", to=to, fmt=fmt, progress=False)
    assert (tmp_path / "out" / file).read_bytes() == open(os.path.join(fixture(reference), file), "rb").read()


SHARDED = [("pt", "safetensors", "pt-causal_lm-sharded"), ("pt", "bin", "pt-causal_lm-sharded-bin"),
           ("tf", "h5", "tf-causal_lm-sharded"), ("tf", "safetensors", "tf-causal_lm-sharded-safetensors"),
           ("flax", "msgpack", "flax-causal_lm-sharded")]


@pytest.mark.parametrize("family,to,fmt,reference", [
    (family, to, fmt, reference) for family in ("gpt2", "gptj", "gpt_neo") for to, fmt, reference in SHARDED
    if os.path.isdir(fixture(f"{family}-{reference}"))  # Hugging Face has no TF GPT-Neo
])
def test_sharding_matches_hugging_face(family, to, fmt, reference, tmp_path):
    needs_torch(to, fmt)
    reference = fixture(f"{family}-{reference}")
    convert(fixture(f"{family}-pt-causal_lm"), tmp_path / "out", to=to, fmt=fmt, max_shard_size="20KB",
                    progress=False)
    index_name = next(n for n in os.listdir(reference) if n.endswith(".index.json"))
    ours = json.loads((tmp_path / "out" / index_name).read_text())
    theirs = json.load(open(os.path.join(reference, index_name)))

    def strip(weight_map):  # TF indexes carry the instance-specific Keras model name (`..._3`)
        return {(k.split("/", 1)[1] if to == "tf" else k): v for k, v in weight_map.items()}

    assert ours["metadata"] == theirs["metadata"]
    assert strip(ours["weight_map"]) == strip(theirs["weight_map"])
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(reference))


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(HF_FIXTURES) if n.count("-") == 2 and "-tf-" in n))
def test_tf_h5_output_has_hugging_face_layout(name, tmp_path):
    h5py = pytest.importorskip("h5py")
    family, _, head = name.split("-")
    convert(fixture(f"{family}-pt-{head}"), tmp_path / "out", to="tf", progress=False)

    def layout(path):
        with h5py.File(path, "r") as f:
            names = {n: np.asarray(f.attrs[n]).tolist() for n in f.attrs}
            groups = {g: list(f[g].attrs["weight_names"]) for g in f}
            shapes = {}
            f.visititems(lambda n, o: shapes.__setitem__(n, o.shape) if isinstance(o, h5py.Dataset) else None)
        return names, groups, shapes

    assert layout(tmp_path / "out" / "tf_model.h5") == layout(os.path.join(fixture(name), "tf_model.h5"))


# --------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("to,fmt", [("pt", "safetensors"), ("flax", "msgpack"), ("tf", "safetensors")])
def test_dtype_casting(dtype, to, fmt, tmp_path):
    convert(fixture("gptj-pt-causal_lm"), tmp_path / "out", to=to, fmt=fmt, dtype=dtype, progress=False)
    expected = {k: v.astype(numpy_dtype(dtype)) for k, v in canonical("gptj-pt-causal_lm").items()}
    assert_weights(tmp_path / "out", expected)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == dtype
    # Back to float32: every value of a 16-bit file is exactly representable.
    convert(tmp_path / "out", tmp_path / "f32", dtype="float32", progress=False)
    assert_weights(tmp_path / "f32", {k: v.astype(np.float32) for k, v in expected.items()})


def test_h5_refuses_bfloat16_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="bfloat16"):
        convert(fixture("gpt2-pt-base"), tmp_path / "out", to="tf", dtype="bfloat16", progress=False)
    assert os.listdir(tmp_path) == []


def test_config_generation_config_and_tokenizer_files_are_copied(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(fixture("gpt2-pt-causal_lm"), source)
    for name in os.listdir(fixture("tokenizer-gpt2-fast")):
        shutil.copy(os.path.join(fixture("tokenizer-gpt2-fast"), name), source)
    convert(source, tmp_path / "out", to="flax", progress=False)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.json", "merges.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (source / name).read_bytes(), name


def test_force_replaces_and_refusal_keeps(tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists; pass force=True to replace it"):
        convert(fixture("gpt2-pt-base"), dst, progress=False)
    assert os.listdir(dst) == ["keep.txt"]
    convert(fixture("gpt2-pt-base"), dst, force=True, progress=False)
    assert "keep.txt" not in os.listdir(dst) and "model.safetensors" in os.listdir(dst)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging or backup directory left behind


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="msgpack"):
        convert(fixture("gpt2-pt-base"), tmp_path / "o", to="tf", fmt="msgpack")
    with pytest.raises(ValueError, match="to must be one of"):
        convert(fixture("gpt2-pt-base"), tmp_path / "o", to="onnx")
    with pytest.raises(ValueError, match="dtype"):
        convert(fixture("gpt2-pt-base"), tmp_path / "o", dtype="int8")
    with pytest.raises(ValueError, match="max_shard_size"):
        convert(fixture("gpt2-pt-base"), tmp_path / "o", max_shard_size="lots")
    with pytest.raises(ValueError, match="cannot be sharded"):
        convert(fixture("gpt2-pt-base"), tmp_path / "o", to="flax", fmt="safetensors", max_shard_size="1KB")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------- bad input
def copy_fixture(name: str, tmp_path) -> str:
    path = tmp_path / "src"
    shutil.copytree(fixture(name), path)
    return str(path)


def test_unknown_model_type(tmp_path):
    src = copy_fixture("gpt2-pt-base", tmp_path)
    config = json.load(open(os.path.join(src, "config.json")))
    config["model_type"] = "bert"
    json.dump(config, open(os.path.join(src, "config.json"), "w"))
    with pytest.raises(ValueError, match="bert"):
        convert(src, tmp_path / "out", progress=False)


def test_checkpoint_not_matching_its_config(tmp_path):
    src = copy_fixture("gpt2-pt-seq_cls", tmp_path)
    config = json.load(open(os.path.join(src, "config.json")))
    config.update(n_embd=48, id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2})
    json.dump(config, open(os.path.join(src, "config.json"), "w"))
    with pytest.raises(ValueError) as info:
        convert(src, tmp_path / "out", to="flax", progress=False)
    message = str(info.value)
    assert "score.weight: checkpoint (2, 32) vs expected (3, 48)" in message
    assert "transformer.wte.weight: checkpoint (100, 32) vs expected (100, 48)" in message
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("name,file", [("gpt2-pt-base", "model.safetensors"), ("gpt2-tf-base", "tf_model.h5"),
                                       ("gpt2-flax-base", "flax_model.msgpack")])
def test_truncated_files(name, file, tmp_path):
    src = copy_fixture(name, tmp_path)
    data = open(os.path.join(src, file), "rb").read()
    open(os.path.join(src, file), "wb").write(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match=file):
        convert(src, tmp_path / "out", progress=False)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("name", ["gpt2-pt-causal_lm-sharded", "gptj-tf-causal_lm-sharded",
                                  "gpt_neo-flax-causal_lm-sharded"])
def test_index_naming_missing_shards(name, tmp_path):
    src = copy_fixture(name, tmp_path)
    shard = sorted(n for n in os.listdir(src) if "-00002-of-" in n)[0]
    os.remove(os.path.join(src, shard))
    with pytest.raises(CheckpointError, match=shard):
        convert(src, tmp_path / "out", progress=False)


def test_no_config(tmp_path):
    src = copy_fixture("gpt2-pt-base", tmp_path)
    os.remove(os.path.join(src, "config.json"))
    with pytest.raises(CheckpointError, match="config.json"):
        convert(src, tmp_path / "out", progress=False)


@pytest.mark.parametrize("to,fmt,writer", [
    ("pt", "safetensors", (safetensors_files, "write_safetensors")), ("tf", "h5", (keras_h5, "write_tf_h5")),
    ("flax", "msgpack", (flax_msgpack, "write_flax_msgpack")),
])
def test_disk_full_mid_write_leaves_nothing(to, fmt, writer, tmp_path, monkeypatch):
    module, name = writer
    real = getattr(module, name)
    calls = []

    def failing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 4:  # half-way through the 8 shards
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, failing)
    with pytest.raises(OSError, match="No space left"):
        convert(fixture("gpt2-pt-causal_lm"), tmp_path / "out", to=to, fmt=fmt, max_shard_size="20KB",
                        progress=False)
    assert len(calls) == 4
    assert os.listdir(tmp_path) == []  # neither the destination nor the staging directory


def test_conversion_needs_no_deep_learning_framework(tmp_path):
    # PT safetensors → Flax msgpack / TF h5 with NumPy, safetensors, msgpack and h5py only.
    code = (
        "import sys; from twinformers.conversion.converter import convert; "
        f"convert({fixture('gptj-pt-causal_lm')!r}, {str(tmp_path / 'a')!r}, to='flax', progress=False); "
        f"convert({fixture('gptj-pt-causal_lm')!r}, {str(tmp_path / 'b')!r}, to='tf', progress=False); "
        "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'flax', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------- verification
def test_verify_compares_installed_twins(tmp_path):
    pytest.importorskip("torch")
    notes = []
    result = convert(fixture("gpt_neo-pt-causal_lm"), tmp_path / "out", to="flax", verify=True,
                             progress=False, log=notes.append)
    assert result.verification
    assert {name for _, name, _, _ in result.verification} >= {"logits", "hidden_states[0]"}
    assert all(diff <= limit for _, _, diff, limit in result.verification)


def test_verify_catches_different_weights(tmp_path):
    pytest.importorskip("torch")
    convert(fixture("gpt2-pt-base"), tmp_path / "out", progress=False)
    weights = dict(SafetensorsFile(tmp_path / "out" / "model.safetensors"))
    weights = {k: np.array(v) for k, v in weights.items()}
    weights["h.1.mlp.c_fc.bias"] += 1e-3
    write_safetensors(tmp_path / "out" / "model.safetensors", weights, {"format": "pt"})
    with pytest.raises(ValueError, match="verification failed"):
        verify_conversion(fixture("gpt2-pt-base"), tmp_path / "out", log=lambda message: None)


def test_verify_bound_scales_with_the_outputs(tmp_path, monkeypatch):
    """fp32 rounding grows with the values: 1e-5 × max(1, max |reference output|) per output. Twins are
    stand-ins returning fixed outputs, so the bound alone is tested (no framework needed)."""
    convert(fixture("gpt_neo-pt-causal_lm"), tmp_path / "out", progress=False)
    logits = np.full((2, 7, 100), -7.0)  # GPT-Neo-like logits of ±7
    logits[0, 0, 0] = 7.0
    outputs = {"pt": {"logits": logits, "hidden_states[0]": np.full((2, 7, 32), 0.5)}}
    outputs["flax"] = {"logits": logits + 1.18e-5, "hidden_states[0]": outputs["pt"]["hidden_states[0]"] + 9e-6}

    def twin_module(name):  # twinformers.pt / .flax: a "class" that is the backend's name; no TF twin
        backend = name.rpartition(".")[2]
        if backend not in outputs:
            raise ImportError(f"no {backend} twin here")
        return types.SimpleNamespace(GPTNeoForCausalLM=backend)

    monkeypatch.setattr(converter.importlib, "import_module", twin_module)
    monkeypatch.setattr(converter, "_run_twin", lambda backend, model_class, path, batch, hub: outputs[backend])
    rows = verify_conversion(fixture("gpt_neo-pt-causal_lm"), tmp_path / "out", log=lambda message: None)
    bounds = {(backend, name): bound for backend, name, _, bound in rows}
    assert bounds[("flax", "logits")] == pytest.approx(7e-5) and bounds[("flax", "hidden_states[0]")] == 1e-5
    outputs["flax"]["hidden_states[0]"] = outputs["pt"]["hidden_states[0]"] + 1.1e-5  # unit scale: 1e-5 holds
    with pytest.raises(ValueError, match=r"flax hidden_states\[0\] 1\.100e-05 > 1\.0e-05"):
        verify_conversion(fixture("gpt_neo-pt-causal_lm"), tmp_path / "out", log=lambda message: None)


@pytest.mark.parametrize("to,fmt", TARGETS)
@pytest.mark.parametrize("source", ["gpt2-pt-causal_lm-sharded", "gptj-tf-causal_lm", "gpt_neo-flax-causal_lm"])
def test_streaming_in_row_blocks(source, to, fmt, tmp_path, monkeypatch):
    # Tiny blocks force every big-tensor path (read_rows → block writers) on the tiny fixtures.
    needs_torch(to, fmt)
    monkeypatch.setattr(converter, "STREAM_BLOCK_BYTES", 1000)
    family, _, head = source.split("-")[:3]
    expected = canonical(f"{family}-pt-{head}")
    convert(fixture(source), tmp_path / "out", to=to, fmt=fmt, progress=False)
    assert_weights(tmp_path / "out", expected, tied_copy=fmt == "bin")
    shard_size = "5GB" if (to, fmt) == ("flax", "safetensors") else "20KB"  # HF reads Flax safetensors whole
    convert(fixture(source), tmp_path / "half", to=to, fmt=fmt, dtype="float16", max_shard_size=shard_size,
                    progress=False)
    assert_weights(tmp_path / "half", {k: v.astype(np.float16) for k, v in expected.items()}, tied_copy=fmt == "bin")
    reference = {("pt", "safetensors"): f"{family}-pt-{head}", ("flax", "msgpack"): f"{family}-flax-{head}"}
    if (to, fmt) in reference:
        file = "model.safetensors" if fmt == "safetensors" else "flax_model.msgpack"
        assert (tmp_path / "out" / file).read_bytes() == open(os.path.join(fixture(reference[(to, fmt)]), file),
                                                              "rb").read()


# --------------------------------------------------------------------------------------------- memory
# One fresh process converts a float32 GPT-J whose two 50400 x 128 tables (25.8 MB each) dominate its 52 MB: into
# each format and back, each conversion's peak resident set growth printed (baseline: after the imports).
MEMORY_CONVERSIONS = """
import json, os, sys
from twinformers.conversion import converter
import h5py, msgpack, torch, tqdm  # every writer's imports, in the baseline
converter.STREAM_BLOCK_BYTES = 2**20  # blocks well under the tables
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
root = sys.argv[1]
for name, src, to, fmt in [("bin", "src", "pt", "bin"), ("h5", "src", "tf", "h5"),
                           ("msgpack", "src", "flax", "msgpack"), ("bin-back", "bin", "pt", "safetensors"),
                           ("h5-back", "h5", "pt", "safetensors"), ("msgpack-back", "msgpack", "pt", "safetensors")]:
    open("/proc/self/clear_refs", "w").write("5")
    baseline = status("VmRSS")
    converter.convert(os.path.join(root, src), os.path.join(root, name), to=to, fmt=fmt, progress=True,
                      log=lambda message: None)
    print(json.dumps([name, status("VmHWM") - baseline]))
"""


def test_conversion_memory_is_one_tensor_at_most(tmp_path):
    """Every writer streams row blocks, except `.bin` (one torch record per tensor: the tensor, filled block by
    block); a transposed table (GPT-J's lm_head for TF and Flax) is held once, its layout written in blocks."""
    pytest.importorskip("torch")
    from twinformers.configuration import GPTJConfig
    from twinformers.conversion.tables import expected_shapes

    config = GPTJConfig(n_layer=1, n_embd=128, n_head=4, rotary_dim=8, vocab_size=50400, n_positions=32,
                        architectures=["GPTJForCausalLM"])
    config.save_pretrained(tmp_path / "src")
    shapes = expected_shapes(config, "causal_lm")
    rng = np.random.default_rng(0)
    write_safetensors(tmp_path / "src" / "model.safetensors", metadata={"format": "pt"},
                      specs={k: (np.dtype(np.float32), s) for k, s in shapes.items()},
                      fetch=lambda k: rng.standard_normal(shapes[k], dtype=np.float32))
    table = 50400 * 128 * 4
    result = subprocess.run([sys.executable, "-c", MEMORY_CONVERSIONS, str(tmp_path)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "converting" in result.stderr  # the progress bars
    added = dict(json.loads(line) for line in result.stdout.splitlines())
    print(added)
    assert set(added) == {"bin", "h5", "msgpack", "bin-back", "h5-back", "msgpack-back"}
    slack = 20 * 2**20  # blocks, the writers' buffers, torch's pickling machinery (~8 MB for `.bin`)
    for name in ("bin", "h5", "msgpack", "h5-back", "msgpack-back"):  # one table whole, never two
        assert added[name] <= table + slack, (name, added)
    assert added["bin-back"] <= slack, added  # nothing to transpose: row blocks only
