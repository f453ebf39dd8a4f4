"""`formats`: HF tf_model.h5 / flax_model.msgpack / pytorch_model.bin readers and writers, checked against the
HF-written fixtures read independently (h5py, msgpack) and, where installed, against flax itself."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from helpers import HF_FIXTURES, LOAD_MEMORY_SLACK, peak_rss_added
from twinformers.checkpoints import flax_msgpack
from twinformers.checkpoints.files import CheckpointError, bfloat16_dtype, numpy_dtype
from twinformers.checkpoints.flax_msgpack import MsgpackFile, write_flax_msgpack
from twinformers.checkpoints.keras_h5 import H5File, keras_model_name, write_tf_h5
from twinformers.checkpoints.safetensors import SafetensorsFile
from twinformers.checkpoints.sharding import ShardedFiles
from twinformers.checkpoints.torch_bin import TorchBinFile, write_pytorch_bin

h5py = pytest.importorskip("h5py")
msgpack = pytest.importorskip("msgpack")


def fixture(name: str, file: str) -> str:
    return os.path.join(HF_FIXTURES, name, file)


def independent_h5(path: str) -> dict[str, np.ndarray]:
    """Every dataset of an unsharded Keras-2 file by its variable name without the model name (plain h5py)."""
    out = {}
    with h5py.File(path, "r") as f:
        for layer in f.attrs["layer_names"]:
            for weight_name in f[layer].attrs["weight_names"]:
                out[weight_name.split("/", 1)[1]] = f[layer][weight_name][()]
    return out


def independent_msgpack(data: bytes) -> dict[str, np.ndarray]:
    """Decode a flax msgpack the way flax.serialization does, with the msgpack package alone."""

    def ext_hook(code, payload):
        shape, dtype, buffer = msgpack.unpackb(payload, raw=True)
        return np.frombuffer(buffer, numpy_dtype(dtype.decode())).reshape(shape)

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict) and value.get("__msgpack_chunked_array__"):
                shape = tuple(value["shape"][str(i)] for i in range(len(value["shape"])))
                chunks = [value["chunks"][str(i)] for i in range(len(value["chunks"]))]
                yield prefix + key, np.concatenate(chunks).reshape(shape)
            elif isinstance(value, dict):
                yield from flat(value, prefix + key + "/")
            else:
                yield prefix + key, value

    return dict(flat(msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False)))


# --------------------------------------------------------------------------------------------- h5
@pytest.mark.parametrize("name", ["gpt2-tf-causal_lm", "gpt2-tf-seq_cls", "gptj-tf-causal_lm", "gptj-tf-qa"])
def test_h5_reader_matches_h5py(name):
    reader = H5File(fixture(name, "tf_model.h5"))
    expected = independent_h5(fixture(name, "tf_model.h5"))
    assert sorted(reader) == sorted(expected)
    for key, value in expected.items():
        assert reader.shape(key) == value.shape and np.array_equal(reader[key], value), key


def test_h5_shard_layout():
    reader = H5File(fixture("gpt2-tf-causal_lm-sharded", "tf_model-00001-of-00008.h5"))
    assert list(reader) == ["transformer/wte/embeddings:0"]
    assert reader["transformer/wte/embeddings:0"].shape == (100, 32)


def test_h5_writer_reproduces_hugging_face_layout(tmp_path):
    source = fixture("gptj-tf-causal_lm", "tf_model.h5")
    arrays = independent_h5(source)
    specs = {k: (v.dtype, v.shape) for k, v in arrays.items()}
    write_tf_h5(tmp_path / "tf_model.h5", specs, arrays.__getitem__, model_name="tfgptj_for_causal_lm")

    def layout(path):
        items = {}
        with h5py.File(path, "r") as f:
            items["/"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
            f.visititems(lambda n, o: items.__setitem__(n, (
                {k: np.asarray(v).tolist() for k, v in o.attrs.items()},
                (o.shape, str(o.dtype)) if isinstance(o, h5py.Dataset) else None,
            )))
        return items

    assert layout(tmp_path / "tf_model.h5") == layout(source)
    with h5py.File(tmp_path / "tf_model.h5", "r") as f:
        assert all(isinstance(n, str) for n in f.attrs["layer_names"])  # variable-length strings, as tf_keras


def test_h5_shard_writer(tmp_path):
    arrays = {"transformer/wte/embeddings:0": np.arange(6, dtype=np.float32).reshape(2, 3)}
    write_tf_h5(tmp_path / "s.h5", {k: (v.dtype, v.shape) for k, v in arrays.items()}, arrays.__getitem__,
                        model_name="m", shard=True)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert list(f.attrs["layer_names"]) == ["transformer/wte/embeddings:0"]
        assert "backend" not in f.attrs
        assert np.array_equal(f["transformer/wte/embeddings:0"][()], arrays["transformer/wte/embeddings:0"])


def test_h5_refuses_bfloat16(tmp_path):
    with pytest.raises(ValueError, match="bfloat16"):
        write_tf_h5(tmp_path / "x.h5", {"a:0": (bfloat16_dtype(), (2,))}, lambda n: None, model_name="m")
    assert not os.path.exists(tmp_path / "x.h5")


def test_truncated_h5(tmp_path):
    data = open(fixture("gpt2-tf-causal_lm", "tf_model.h5"), "rb").read()
    (tmp_path / "tf_model.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="tf_model.h5"):
        reader = H5File(tmp_path / "tf_model.h5")
        for key in reader:
            reader[key]


H5_FILES = [os.path.join(root, name) for root, _, names in sorted(os.walk(HF_FIXTURES)) for name in sorted(names)
            if name.endswith(".h5")]


def h5py_index(path, monkeypatch) -> dict[str, tuple]:
    """(dtype, shape, data offset) of every tensor as the h5py path of `H5File` finds them."""
    from twinformers.checkpoints import keras_h5

    with monkeypatch.context() as patch:
        patch.setattr(keras_h5, "keras_weights", lambda path: None)
        reader = H5File(path)
    assert reader._datasets, "the h5py path was not taken"
    return {key: (reader.dtype(key), reader.shape(key), reader._offsets.get(key)) for key in reader}


@pytest.mark.parametrize("path", H5_FILES, ids=lambda p: os.path.relpath(p, HF_FIXTURES))
def test_h5_index_without_h5py_matches_h5py(path, monkeypatch):
    """Every Hugging Face file (unsharded and shards) is indexed by `hdf5.keras_weights`, exactly as h5py does."""
    from twinformers.checkpoints.hdf5 import keras_weights

    assert keras_weights(path) == h5py_index(path, monkeypatch)


def test_h5_index_without_h5py_reads_our_files(tmp_path, monkeypatch):
    """Our writer's variable-length string attributes, both layouts; values read with plain file reads."""
    from twinformers.checkpoints.hdf5 import keras_weights

    arrays = {"transformer/wte/weight:0": np.arange(120, dtype=np.float32).reshape(40, 3),
              "transformer/h_._0/ln_1/gamma:0": np.arange(3, dtype=np.float16),
              "transformer/h_._0/attn/c_attn/bias:0": np.float64(7.5)}
    specs = {k: (v.dtype, v.shape) for k, v in arrays.items()}
    for shard in (False, True):
        path = tmp_path / f"shard-{shard}.h5"
        write_tf_h5(path, specs, arrays.__getitem__, model_name="tfgpt2_model", shard=shard)
        assert keras_weights(path) == h5py_index(path, monkeypatch)
        reader = H5File(path)
        for key, value in arrays.items():
            out = np.empty_like(value)
            reader.read_into(key, out)
            assert np.array_equal(out, value) and np.array_equal(reader[key], value), key
        rows = reader.read_rows("transformer/wte/weight:0", 37, 45)  # past the end: to the end, as NumPy
        assert np.array_equal(rows, arrays["transformer/wte/weight:0"][37:])


def test_h5_chunked_and_compressed_datasets_fall_back_to_h5py(tmp_path):
    """Outside h5py's default layout (here gzip-compressed chunks, and a file of the newest format) the file is
    opened with h5py and read the same."""
    from twinformers.checkpoints.hdf5 import keras_weights

    value = np.arange(600, dtype=np.float32).reshape(200, 3)
    for libver, options in (("earliest", {"chunks": (50, 3), "compression": "gzip"}), ("latest", {})):
        path = tmp_path / f"{libver}.h5"
        with h5py.File(path, "w", libver=libver) as f:
            f.attrs["layer_names"] = [b"transformer"]
            group = f.create_group("transformer")
            group.attrs["weight_names"] = [b"m/transformer/wte/weight:0"]
            group.create_dataset("m/transformer/wte/weight:0", data=value, **options)
        assert keras_weights(path) is None
        reader = H5File(path)
        assert reader._datasets and np.array_equal(reader["transformer/wte/weight:0"], value)
        assert np.array_equal(reader.read_rows("transformer/wte/weight:0", 10, 12), value[10:12])


def test_h5_read_holds_no_copy_and_no_h5py(tmp_path):
    """Reading a `tf_model.h5` into the caller's arrays adds their bytes and nothing else. Importing h5py and
    opening the file with it kept 11.6 MiB more resident here (~15 MB in a PyTorch process), and reading each
    dataset into an array of its own before copying it would hold one more tensor (4 MiB): the bound, the tensors
    (16 MiB) plus 2 MiB, is under either."""
    tensors = {f"transformer/h_._{i}/mlp/c_fc/weight:0": np.full((1024, 1024), i, np.float32) for i in range(4)}
    write_tf_h5(tmp_path / "tf_model.h5", {k: (v.dtype, v.shape) for k, v in tensors.items()}, tensors.__getitem__,
                model_name="tfgpt2_model")
    setup = "import numpy as np\nfrom twinformers.checkpoints.keras_h5 import H5File"
    body = f"""reader = H5File({str(tmp_path / "tf_model.h5")!r})
arrays = [np.empty(reader.shape(key), reader.dtype(key)) for key in reader]
for key, out in zip(reader, arrays):
    reader.read_into(key, out)
assert [float(out[7, 7]) for out in arrays] == [0.0, 1.0, 2.0, 3.0]
assert "h5py" not in sys.modules"""
    added = peak_rss_added(setup, body)
    total = sum(v.nbytes for v in tensors.values())
    assert added <= total + 2 * 2**20, f"{(added - total) / 2**20:.1f} MiB above the tensors"


def test_keras_model_names():
    assert keras_model_name("TFGPT2LMHeadModel") == "tfgpt2lm_head_model"
    assert keras_model_name("TFGPT2Model") == "tfgpt2_model"
    assert keras_model_name("TFGPT2DoubleHeadsModel") == "tfgpt2_double_heads_model"
    assert keras_model_name("TFGPTJForCausalLM") == "tfgptj_for_causal_lm"
    assert keras_model_name("TFGPTJForSequenceClassification") == "tfgptj_for_sequence_classification"


# --------------------------------------------------------------------------------------------- msgpack
@pytest.mark.parametrize("name", ["gpt2-flax-causal_lm", "gptj-flax-base", "gpt_neo-flax-causal_lm"])
def test_msgpack_reader_matches_msgpack_package(name):
    path = fixture(name, "flax_model.msgpack")
    reader = MsgpackFile(path)
    expected = independent_msgpack(open(path, "rb").read())
    assert sorted(reader) == sorted(expected)
    for key, value in expected.items():
        got = reader[key]
        assert got.dtype == value.dtype and np.array_equal(got, value), key
        assert not got.flags.owndata  # a view of the memory map


def test_msgpack_writer_round_trip_with_chunking(tmp_path, monkeypatch):
    monkeypatch.setattr(flax_msgpack, "MAX_CHUNK_SIZE", 64)  # chunk anything above 64 bytes, as flax does above 1 GiB
    rng = np.random.default_rng(0)
    arrays = {
        "transformer/h/0/attn/c_attn/kernel": rng.standard_normal((9, 5)).astype(np.float32),  # 180 B: 3 chunks
        "transformer/h/0/attn/c_attn/bias": rng.standard_normal(9).astype(np.float32),
        "lm_head/bias": rng.standard_normal(3).astype(bfloat16_dtype()),
        "wte/embedding": rng.standard_normal((300,)).astype(np.float16),
    }
    specs = {k: (v.dtype, v.shape) for k, v in arrays.items()}
    write_flax_msgpack(tmp_path / "flax_model.msgpack", specs, arrays.__getitem__)
    data = (tmp_path / "flax_model.msgpack").read_bytes()
    raw = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=lambda c, p: msgpack.ExtType(c, p))
    kernel = raw["transformer"]["h"]["0"]["attn"]["c_attn"]["kernel"]
    assert kernel["__msgpack_chunked_array__"] is True and kernel["shape"] == {"0": 9, "1": 5}
    assert len(kernel["chunks"]) == 3
    for reader in (MsgpackFile(tmp_path / "flax_model.msgpack"), independent_msgpack(data)):
        assert sorted(reader) == sorted(arrays)
        for key, value in arrays.items():
            assert reader[key].dtype == value.dtype and np.array_equal(reader[key], value), key


def test_msgpack_written_file_restores_in_flax(tmp_path):
    serialization = pytest.importorskip("flax.serialization")
    arrays = MsgpackFile(fixture("gpt2-flax-causal_lm", "flax_model.msgpack"))
    specs = {k: (arrays.dtype(k), arrays.shape(k)) for k in arrays}
    write_flax_msgpack(tmp_path / "flax_model.msgpack", specs, arrays.__getitem__)
    ours = serialization.msgpack_restore((tmp_path / "flax_model.msgpack").read_bytes())
    theirs = serialization.msgpack_restore(open(fixture("gpt2-flax-causal_lm", "flax_model.msgpack"), "rb").read())
    flat_ours, flat_theirs = dict(_flat(ours)), dict(_flat(theirs))
    assert sorted(flat_ours) == sorted(flat_theirs)
    for key in flat_theirs:
        assert np.array_equal(flat_ours[key], flat_theirs[key]), key


def _flat(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, prefix + key + "/")
        else:
            yield prefix + key, value


def test_truncated_msgpack(tmp_path):
    data = open(fixture("gpt2-flax-causal_lm", "flax_model.msgpack"), "rb").read()
    (tmp_path / "flax_model.msgpack").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        MsgpackFile(tmp_path / "flax_model.msgpack")
    (tmp_path / "flax_model.msgpack").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="flax msgpack"):
        MsgpackFile(tmp_path / "flax_model.msgpack")


# --------------------------------------------------------------------------------------------- shards, bin
def test_sharded_files_follow_the_index():
    sharded = ShardedFiles(fixture("gptj-flax-causal_lm-sharded", "flax_model.msgpack.index.json"),
                                   MsgpackFile)
    whole = MsgpackFile(fixture("gptj-flax-causal_lm", "flax_model.msgpack"))
    assert sorted(sharded) == sorted(whole)
    for key in whole:
        assert np.array_equal(sharded[key], whole[key])


def test_tf_safetensors_index_keys_carry_the_model_name():
    # FORMATS.md §8: the index says `tfgpt2lm_head_model_3/...`, the shards store the stripped names.
    index = json.load(open(fixture("gpt2-tf-causal_lm-sharded-safetensors", "model.safetensors.index.json")))
    prefix = next(iter(index["weight_map"])).split("/", 1)[0] + "/"
    sharded = ShardedFiles(fixture("gpt2-tf-causal_lm-sharded-safetensors", "model.safetensors.index.json"),
                                   SafetensorsFile, index_key=lambda key: prefix + key)
    assert "transformer/wte/embeddings:0" in sharded and len(sharded) == 28


def test_pytorch_bin_writer_keeps_tied_storage(tmp_path):
    torch = pytest.importorskip("torch")
    wte = np.arange(6, dtype=np.float32).reshape(3, 2)
    arrays = {"transformer.wte.weight": wte, "lm_head.weight": wte, "b": np.ones(2, bfloat16_dtype())}
    specs = {k: (v.dtype, v.shape) for k, v in arrays.items()}
    write_pytorch_bin(tmp_path / "pytorch_model.bin", specs, arrays.__getitem__,
                              aliases={"lm_head.weight": "transformer.wte.weight"})
    state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert list(state) == list(arrays)
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    assert state["b"].dtype == torch.bfloat16
    reread = TorchBinFile(tmp_path / "pytorch_model.bin")
    assert np.array_equal(reread["lm_head.weight"], wte) and reread["b"].dtype == bfloat16_dtype()


def test_pytorch_bin_writer_holds_one_tensor_at_a_time(tmp_path):
    """The `.bin` writer streams: the peak memory it adds is about its largest tensor (16 MiB) plus the usual
    slack, not the file (16 x 16 MiB); a writer holding the whole dict, as torch.save does, adds 256 MiB."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    tensor_bytes = 4096 * 1024 * 4
    added = peak_rss_added(
        # a first small write in the setup, so the writer's code pages are not counted
        "import numpy as np, torch\nfrom twinformers.checkpoints.torch_bin import write_pytorch_bin\n"
        f"write_pytorch_bin({str(tmp_path / 'warm-up.bin')!r}, {{'w': (np.dtype(np.float32), (4, 4))}}, "
        "lambda name: np.ones((4, 4), np.float32))",
        f"""specs = {{f"t{{i}}": (np.dtype(np.float32), (4096, 1024)) for i in range(16)}}
write_pytorch_bin({str(path)!r}, specs, lambda name: np.full((4096, 1024), int(name[1:]), np.float32))""",
    )
    assert added < tensor_bytes + LOAD_MEMORY_SLACK, f"{added / 2**20:.1f} MiB added writing 16 tensors of 16 MiB"
    state = torch.load(path, weights_only=True, mmap=True)
    assert [float(state[f"t{i}"][7, 7]) for i in range(16)] == list(range(16))


