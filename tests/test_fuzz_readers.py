"""Property-based fuzzing of every reader: random and mutated files either read, or raise a documented error
(docs/errors.md): a `TwinformersError` (`CheckpointError`, `ConfigError`, `InputError`) or a `ValueError` about the
content. Any other exception fails the test; a crash or a hang fails the run.

Bounded for CI (`FUZZ_EXAMPLES`, default 25 per reader); `scripts/fuzz.py` runs the same properties for long.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinformers.checkpoints.flax_msgpack import MsgpackFile, write_flax_msgpack
from twinformers.checkpoints.safetensors import SafetensorsFile, open_safetensors, write_safetensors
from twinformers.configuration import AutoConfig
from twinformers.errors import TwinformersError
from twinformers.tokenization.gpt2 import GPT2Tokenizer
from twinformers.tokenization.gpt2_fast import GPT2TokenizerFast

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 25,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DOCUMENTED = (TwinformersError, ValueError)

TENSORS = {"transformer.wte.weight": np.arange(12, dtype=np.float32).reshape(4, 3),
           "transformer.h.0.ln_1.bias": np.arange(3, dtype=np.float16)}


def json_values(max_leaves: int = 12) -> st.SearchStrategy:
    leaves = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=8)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4),
                        max_leaves=max_leaves)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """`valid` with random bytes overwritten, a random cut, or random bytes appended."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=8))


def file_of(data: bytes, name: str) -> str:
    directory = tempfile.mkdtemp(prefix="fuzz-")
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def read_every_tensor(tensors) -> None:
    for key in list(tensors):
        np.asarray(tensors[key]).sum()


def only_documented_errors(read, path: str) -> None:
    try:
        read(path)
    except DOCUMENTED:
        pass


def valid_bytes(write, name: str) -> bytes:
    path = os.path.join(tempfile.mkdtemp(prefix="fuzz-valid-"), name)
    write(path)
    with open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------------------------- configs
CONFIG_KEYS = ("model_type", "vocab_size", "n_layer", "n_head", "n_embd", "n_positions", "num_layers", "num_heads",
               "hidden_size", "attention_types", "rotary_dim", "resid_pdrop", "use_cache", "eos_token_id",
               "id2label", "label2id", "num_labels", "window_size", "activation_function")


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values(6), max_size=6),
       model_type=st.sampled_from(["gpt2", "gptj", "gpt_neo"]))
def test_config_json_fields(fields, model_type):
    path = file_of(json.dumps({"model_type": model_type, **fields}).encode(), "config.json")
    only_documented_errors(lambda p: AutoConfig.from_pretrained(os.path.dirname(p)), path)


@FUZZ
@given(data=mutated(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 8}).encode())
       | st.binary(max_size=64))
def test_config_json_bytes(data):
    only_documented_errors(lambda p: AutoConfig.from_pretrained(os.path.dirname(p)), file_of(data, "config.json"))


# --------------------------------------------------------------------------------------------- safetensors
VALID_SAFETENSORS = valid_bytes(lambda p: write_safetensors(p, TENSORS, metadata={"format": "pt"}),
                                "model.safetensors")


def read_safetensors(path: str) -> None:
    read_every_tensor(SafetensorsFile(path))


@FUZZ
@given(data=mutated(VALID_SAFETENSORS))
def test_safetensors_bytes(data):
    only_documented_errors(read_safetensors, file_of(data, "model.safetensors"))


@FUZZ
@given(header=st.dictionaries(st.text(max_size=6), json_values(6), max_size=4), body=st.binary(max_size=64))
def test_safetensors_header(header, body):
    raw = json.dumps(header).encode()
    data = len(raw).to_bytes(8, "little") + raw + body
    only_documented_errors(read_safetensors, file_of(data, "model.safetensors"))


@FUZZ
@given(index=json_values(10) | st.fixed_dictionaries(
    {"weight_map": st.dictionaries(st.sampled_from(list(TENSORS) + ["x"]), st.sampled_from(
        ["model-00001-of-00002.safetensors", "model.safetensors", "../model.safetensors", "", "missing"]))}))
def test_shard_index(index):
    path = file_of(json.dumps(index).encode(), "model.safetensors.index.json")
    with open(os.path.join(os.path.dirname(path), "model-00001-of-00002.safetensors"), "wb") as f:
        f.write(VALID_SAFETENSORS)
    only_documented_errors(lambda p: read_every_tensor(open_safetensors(os.path.dirname(p))), path)


# --------------------------------------------------------------------------------------------- flax msgpack
VALID_MSGPACK = valid_bytes(lambda p: write_flax_msgpack(
    p, {"transformer/wte/embedding": (np.dtype(np.float32), (4, 3))}, lambda name: TENSORS["transformer.wte.weight"]),
    "flax_model.msgpack")


@FUZZ
@given(data=mutated(VALID_MSGPACK) | st.binary(max_size=64))
def test_flax_msgpack_bytes(data):
    only_documented_errors(lambda p: read_every_tensor(MsgpackFile(p)), file_of(data, "flax_model.msgpack"))


# --------------------------------------------------------------------------------------------- tf_model.h5
@FUZZ
@given(data=st.data())
def test_tf_model_h5_bytes(data):
    pytest.importorskip("h5py")
    from twinformers.checkpoints.keras_h5 import H5File, write_tf_h5

    valid = _valid_h5(write_tf_h5)
    payload = data.draw(mutated(valid) | st.binary(max_size=64))
    only_documented_errors(lambda p: read_every_tensor(H5File(p)), file_of(payload, "tf_model.h5"))


@FUZZ
@given(data=st.data())
def test_tf_model_h5_index_without_h5py_agrees_with_h5py(data):
    """Where `hdf5.keras_weights` reads a (mutated) file without h5py, h5py reads it too and finds the same
    tensors at the same offsets; anything else is left to h5py (None), so a damaged file keeps h5py's errors."""
    pytest.importorskip("h5py")
    from twinformers.checkpoints import keras_h5
    from twinformers.checkpoints.hdf5 import keras_weights
    from twinformers.checkpoints.keras_h5 import H5File, write_tf_h5

    path = file_of(data.draw(mutated(_valid_h5(write_tf_h5))), "tf_model.h5")
    found = keras_weights(path)
    if found is None:
        return
    original, keras_h5.keras_weights = keras_h5.keras_weights, lambda path: None  # the h5py path
    try:
        reader = H5File(path)
    finally:
        keras_h5.keras_weights = original
    assert found == {key: (reader.dtype(key), reader.shape(key), reader._offsets.get(key)) for key in reader}


_H5: list[bytes] = []


def _valid_h5(write_tf_h5) -> bytes:
    if not _H5:
        specs = {"transformer/wte/weight:0": (np.dtype(np.float32), (4, 3))}
        _H5.append(valid_bytes(lambda p: write_tf_h5(p, specs, lambda name: TENSORS["transformer.wte.weight"],
                                                     model_name="tfgp_t2model"), "tf_model.h5"))
    return _H5[0]


# --------------------------------------------------------------------------------------------- pytorch_model.bin
@FUZZ
@given(data=st.data())
def test_pytorch_model_bin_bytes(data):
    torch = pytest.importorskip("torch")
    from twinformers.checkpoints.torch_bin import TorchBinFile

    if not _BIN:
        path = os.path.join(tempfile.mkdtemp(prefix="fuzz-valid-"), "pytorch_model.bin")
        torch.save({k: torch.from_numpy(v) for k, v in TENSORS.items()}, path)
        with open(path, "rb") as f:
            _BIN.append(f.read())
    payload = data.draw(mutated(_BIN[0]) | st.binary(max_size=64))
    only_documented_errors(lambda p: read_every_tensor(TorchBinFile(p)), file_of(payload, "pytorch_model.bin"))


_BIN: list[bytes] = []


# --------------------------------------------------------------------------------------------- tokenizer files
VOCAB = {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3, "Ġ": 4, "Ġa": 5}
MERGES = "#version: 0.2\na b\nĠ a\n"


def tokenize_with(vocab: bytes, merges: bytes) -> None:
    vocab_path = file_of(vocab, "vocab.json")
    merges_path = os.path.join(os.path.dirname(vocab_path), "merges.txt")
    with open(merges_path, "wb") as f:
        f.write(merges)
    tokenizer = GPT2Tokenizer(vocab_path, merges_path)
    tokenizer.decode(tokenizer("ab a ba")["input_ids"])


@FUZZ
@given(vocab=mutated(json.dumps(VOCAB).encode()) | st.builds(lambda d: json.dumps(d).encode(), json_values(8)),
       merges=mutated(MERGES.encode()) | st.binary(max_size=32))
def test_vocab_json_and_merges_txt(vocab, merges):
    try:
        tokenize_with(vocab, merges)
    except DOCUMENTED:
        pass


@FUZZ
@given(data=st.data())
def test_tokenizer_json(data):
    from twinformers.demo.embedded import embedded_model_path

    if not _TOKENIZER_JSON:
        with open(os.path.join(embedded_model_path(), "tokenizer.json"), "rb") as f:
            _TOKENIZER_JSON.append(f.read()[:4096])  # cut: a mutation must land in the parts that matter
    payload = data.draw(mutated(_TOKENIZER_JSON[0]) | st.builds(lambda d: json.dumps(d).encode(), json_values(8)))
    path = file_of(payload, "tokenizer.json")
    try:
        tokenizer = GPT2TokenizerFast(tokenizer_file=path)
        tokenizer.decode(tokenizer("def f(): pass")["input_ids"])
    except DOCUMENTED:
        pass


_TOKENIZER_JSON: list[bytes] = []
