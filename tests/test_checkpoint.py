import json
import os
import struct

import numpy as np
import pytest

from helpers import HF_FIXTURES
from twinformers.checkpoints.files import (
    SAFE_WEIGHTS_NAME,
    CheckpointError,
    atomic_output,
    atomic_write_text,
    bfloat16_dtype,
    resolve_file,
)
from twinformers.checkpoints.safetensors import (
    SafetensorsFile,
    ShardedSafetensors,
    open_safetensors,
    write_safetensors,
)
from twinformers.checkpoints.sharding import parse_size, plan_shards, save_sharded, write_index


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "b.weight": rng.standard_normal((5, 3)).astype(np.float32),
        "a.bias": rng.standard_normal(7).astype(np.float16),
        "c.ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "d.empty": np.zeros((0, 4), np.float32),
    }


def test_write_matches_hf_header_layout(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, _tensors(), {"format": "pt"})
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    assert header_len % 8 == 0
    header_text = raw[8:8 + header_len].decode()
    assert header_text.startswith('{"__metadata__":{"format":"pt"},"a.bias":')  # metadata first, names sorted
    header = json.loads(header_text)
    assert [k for k in header if k != "__metadata__"] == sorted(_tensors())
    assert header["a.bias"] == {"dtype": "F16", "shape": [7], "data_offsets": [0, 14]}


def test_round_trip_and_safetensors_library_agrees(tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = _tensors()
    ours = tmp_path / "ours.safetensors"
    write_safetensors(ours, tensors, {"format": "pt"})
    theirs = load_file(str(ours))  # the reference library reads our file
    for name, value in tensors.items():
        np.testing.assert_array_equal(theirs[name], value)
    ref = tmp_path / "ref.safetensors"
    save_file(tensors, str(ref), metadata={"format": "pt"})
    f = SafetensorsFile(ref)  # we read the reference library's file
    assert f.format == "pt" and set(f) == set(tensors)
    for name, value in tensors.items():
        np.testing.assert_array_equal(f[name], value)
        assert f.shape(name) == value.shape and f.dtype(name) == value.dtype
        out = np.empty_like(value)
        f.read_into(name, out)
        np.testing.assert_array_equal(out, value)


def test_bfloat16(tmp_path):
    bf16 = bfloat16_dtype()
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32).astype(bf16)
    write_safetensors(tmp_path / "m.safetensors", {"x": values})
    f = SafetensorsFile(tmp_path / "m.safetensors")
    assert f.dtype("x") == bf16
    np.testing.assert_array_equal(f["x"].astype(np.float32), [1.0, -2.5, 3.140625])


def test_reads_hf_fixture():
    f = open_safetensors(os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm"))
    assert f.format == "pt" and len(f) == 28 and "lm_head.weight" not in f
    assert f.shape("transformer.h.0.attn.c_attn.weight") == (32, 96)
    tf = open_safetensors(os.path.join(HF_FIXTURES, "gpt2-tf-causal_lm-safetensors"))
    assert tf.format == "tf"
    flax = open_safetensors(os.path.join(HF_FIXTURES, "gpt2-flax-causal_lm-safetensors"))
    assert flax.format == "flax"


def test_hf_sharded_fixture_equals_single_file():
    single = open_safetensors(os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm"))
    sharded = open_safetensors(os.path.join(HF_FIXTURES, "gpt2-pt-causal_lm-sharded"))
    assert isinstance(sharded, ShardedSafetensors) and len(sharded.shards) == 8
    assert set(single) == set(sharded)
    for name in single:
        np.testing.assert_array_equal(single[name], sharded[name])


@pytest.mark.parametrize("size, expected", [("20KB", 20_000), ("5GB", 5 * 10**9), ("2GiB", 2 * 2**30), (123, 123),
                                            ("1.5MB", 1_500_000)])
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["5 parsecs", "", -1, 0])
def test_parse_size_rejects(size):
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size(size)


def test_plan_shards_follows_hf_rule():
    plan = plan_shards([("a", 6), ("b", 5), ("c", 30), ("d", 1), ("e", 9)], 10)
    assert plan == [["a"], ["b"], ["c"], ["d", "e"]]  # an oversized tensor gets its own shard


def test_sharded_round_trip_and_index(tmp_path):
    tensors = {f"h.{i}.w": np.full((100,), i, np.float32) for i in range(5)}  # 400 bytes each

    def write_shard(path, names):
        write_safetensors(path, {n: tensors[n] for n in names}, {"format": "pt"})

    files = save_sharded(tmp_path, [(n, v.nbytes) for n, v in tensors.items()], write_shard,
                            SAFE_WEIGHTS_NAME, max_shard_size=900)
    assert files == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                     "model-00003-of-00003.safetensors", "model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"] == {"total_size": 2000}
    assert index["weight_map"]["h.4.w"] == "model-00003-of-00003.safetensors"
    loaded = open_safetensors(tmp_path)
    for name, value in tensors.items():
        np.testing.assert_array_equal(loaded[name], value)
    # Saving again unsharded removes the stale shards and index.
    files = save_sharded(tmp_path, [(n, v.nbytes) for n, v in tensors.items()], write_shard, SAFE_WEIGHTS_NAME)
    assert files == ["model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_truncated_file_names_path(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, _tensors())
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"model.safetensors is truncated or corrupt: tensor 'd.empty'|"
                                              r"model.safetensors is truncated or corrupt"):
        SafetensorsFile(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="shorter than 8 bytes"):
        SafetensorsFile(path)
    path.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(CheckpointError, match="header of 1000000000 bytes"):
        SafetensorsFile(path)
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        SafetensorsFile(path)
    with pytest.raises(CheckpointError, match="not found"):
        SafetensorsFile(tmp_path / "nope.safetensors")


def test_index_errors(tmp_path):
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(CheckpointError, match="do not exist: model-00001-of-00002.safetensors, model-00002"):
        open_safetensors(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{bad")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        open_safetensors(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no valid 'weight_map'"):
        open_safetensors(tmp_path)


def test_index_key_missing_from_shard(tmp_path):
    write_safetensors(tmp_path / "model-00001-of-00001.safetensors", {"a": np.zeros(2, np.float32)})
    write_index(tmp_path / "model.safetensors.index.json", {"a": "model-00001-of-00001.safetensors",
                                                               "b": "model-00001-of-00001.safetensors"}, 8)
    with pytest.raises(CheckpointError, match="disagrees with its shards: b is in no shard"):
        open_safetensors(tmp_path)


def test_failed_write_leaves_nothing_behind(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"old": np.ones(3, np.float32)})
    before = path.read_bytes()

    def exploding_fetch(name):
        if name == "b":
            raise OSError("No space left on device")
        return np.zeros(4, np.float32)

    specs = {"a": (np.dtype(np.float32), (4,)), "b": (np.dtype(np.float32), (4,))}
    with pytest.raises(OSError, match="No space left"):
        write_safetensors(path, specs=specs, fetch=exploding_fetch)
    assert path.read_bytes() == before  # the old file is untouched
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temp file left


def test_fetch_shape_mismatch_is_reported(tmp_path):
    specs = {"a": (np.dtype(np.float32), (4,))}
    with pytest.raises(ValueError, match=r"tensor 'a' is float32\[3\], expected float32\[4\]"):
        write_safetensors(tmp_path / "m.safetensors", specs=specs, fetch=lambda n: np.zeros(3, np.float32))
    assert not os.listdir(tmp_path)


def test_resolve_file_local_and_errors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_file(tmp_path, "config.json") == str(tmp_path / "config.json")
    assert resolve_file(tmp_path, "missing.json", required=False) is None
    with pytest.raises(CheckpointError, match="has no file named missing.json"):
        resolve_file(tmp_path, "missing.json")
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_file(tmp_path / "config.json", "config.json")


def test_resolve_file_offline_hub_id(tmp_path, monkeypatch):
    """A Hub id with no network and nothing cached gives a clear error (never a download in tests)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="twinformers-test/does-not-exist"):
        resolve_file("twinformers-test/does-not-exist", "config.json", cache_dir=tmp_path, local_files_only=True)
    # An optional file: None only for a repository the cache holds; an unknown name is still an error.
    with pytest.raises(CheckpointError, match="neither a local directory nor reachable on the Hub"):
        resolve_file("twinformers-test/does-not-exist", "config.json", cache_dir=tmp_path, local_files_only=True,
                     required=False)
    (tmp_path / "models--twinformers-test--cached" / "snapshots").mkdir(parents=True)
    assert resolve_file("twinformers-test/cached", "config.json", cache_dir=tmp_path,
                           local_files_only=True, required=False) is None


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a.json", "hello")
    assert (tmp_path / "a.json").read_text() == "hello"
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "a.json", "w") as f:
            f.write("partial")
            raise RuntimeError("interrupted")
    assert (tmp_path / "a.json").read_text() == "hello"
    assert os.listdir(tmp_path) == ["a.json"]
