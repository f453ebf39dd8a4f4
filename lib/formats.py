"""Readers and writers for Hugging Face's non-safetensors weight files, with NumPy arrays on our side.

- `pytorch_model.bin`: a `torch.save` zip of a plain dict of tensors (read with `weights_only=True` and
  memory-mapped; needs torch).
- `tf_model.h5`: Keras-2 `save_weights` HDF5, unsharded and sharded layouts (needs h5py).
- `flax_model.msgpack`: `flax.serialization.to_bytes(params)`; parsed and written here with the `msgpack`
  package and NumPy only, leaves read straight out of a memory map.

Every reader is a lazy read-only `Mapping` from the file's own tensor names to NumPy arrays with
`shape(key)`, `dtype(key)` and `nbytes(key)`, like `checkpoint.SafetensorsFile`. Writers take
`specs` (name → (dtype, shape)) and a `fetch(name)` callback, so a converter streams one tensor at a time,
and write atomically (temporary file renamed into place).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, ShardedFiles, atomic_output, bfloat16_dtype, iter_blocks

__all__ = [
    "TensorFile",
    "TorchBinFile",
    "H5File",
    "MsgpackFile",
    "ShardedFiles",
    "numpy_dtype",
    "write_pytorch_bin",
    "write_tf_h5",
    "write_flax_msgpack",
    "keras_model_name",
    "KERAS_H5_VERSION",
]

Specs = Mapping[str, tuple[np.dtype, tuple[int, ...]]]
Fetch = Callable[[str], np.ndarray]


def numpy_dtype(name: str) -> np.dtype:
    """`"float32"` → np.float32; `"bfloat16"` → ml_dtypes' bfloat16 (JAX's and TF's NumPy bfloat16)."""
    if name == "bfloat16":
        return bfloat16_dtype()
    try:
        return np.dtype(name)
    except TypeError as err:
        raise ValueError(f"unknown dtype {name!r}") from err


class TensorFile(Mapping):
    """Base of the lazy readers: subclasses fill `self._specs` (name → (dtype, shape)) and define `_read`."""

    path: str
    _specs: dict[str, tuple[np.dtype, tuple[int, ...]]]

    def _read(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._specs:
            raise KeyError(f"{self.path} has no tensor {key!r}")
        return self._read(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._specs[key][1]

    def dtype(self, key: str) -> np.dtype:
        return self._specs[key][0]

    def nbytes(self, key: str) -> int:
        dtype, shape = self._specs[key]
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    def read_into(self, key: str, out: np.ndarray) -> None:
        """Copy tensor `key` into `out` (same dtype and shape). Readers that can use plain file reads
        override this, so converting a big file does not leave its memory map resident."""
        self._check_out(key, out)
        np.copyto(out, self[key])

    def _check_out(self, key: str, out: np.ndarray) -> None:
        if key not in self._specs:
            raise KeyError(f"{self.path} has no tensor {key!r}")
        dtype, shape = self._specs[key]
        if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(
                f"{self.path}: cannot read {key!r} {dtype}{list(shape)} into a {out.dtype}{list(out.shape)} array"
            )


# --------------------------------------------------------------------------------------------- pytorch_model.bin
class TorchBinFile(TensorFile):
    """`pytorch_model.bin` read with `torch.load(weights_only=True, mmap=True)`; values are NumPy views.

    Tied entries (`lm_head.weight` sharing `transformer.wte.weight`'s storage) are kept, as in the file.

    Raises:
        ImportError: torch is not installed (install `twinformers[pt]` or convert the file first).
        CheckpointError: the file is corrupt, or its pickle needs more than tensors in a dict.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            import torch
        except ImportError as err:
            raise ImportError(
                f"reading {self.path} needs PyTorch (pytorch_model.bin is a torch pickle): "
                "pip install 'twinformers[pt]', or use a safetensors checkpoint"
            ) from err
        if not os.path.isfile(self.path):
            raise CheckpointError(f"checkpoint file not found: {self.path}")
        try:
            try:
                state_dict = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                # Pre-1.6 (non-zip) torch files cannot be memory-mapped; read them whole.
                state_dict = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError for non-weight pickles, RuntimeError for corrupt zips
            raise CheckpointError(
                f"cannot read {self.path} as weights only (torch.load(weights_only=True) failed; the file is "
                f"corrupt or its pickle needs more than tensors): {str(err).splitlines()[0]}"
            ) from err
        if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
        ):
            raise CheckpointError(f"{self.path} does not hold a plain dict of named tensors")
        self._torch = torch
        self._tensors = state_dict
        self._specs = {k: (_torch_numpy_dtype(v.dtype, self.path, k), tuple(v.shape)) for k, v in state_dict.items()}

    def _read(self, key: str) -> np.ndarray:
        tensor = self._tensors[key].detach()
        if tensor.dtype == self._torch.bfloat16:
            # NumPy has no bfloat16 of its own: reinterpret the same bits as ml_dtypes.bfloat16 (no copy).
            return tensor.view(self._torch.int16).numpy().view(bfloat16_dtype())
        return tensor.numpy()


def _torch_numpy_dtype(dtype: Any, path: str, key: str) -> np.dtype:
    name = str(dtype).removeprefix("torch.")
    if name not in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"):
        raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {name}")
    return numpy_dtype(name)


# --------------------------------------------------------------------------------------------- sharded files
def _write_via(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Run `write(file_object)` on a temporary file beside `path`, renamed into place only on success."""
    with atomic_output(path, mode) as f:
        write(f)


def _check_specs(specs: Specs, fetch: Fetch, name: str) -> np.ndarray:
    """The whole tensor (blocks are joined: for writers that need it at once)."""
    blocks = list(iter_blocks(specs, fetch, name))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def write_pytorch_bin(path: str | os.PathLike, specs: Specs, fetch: Fetch, aliases: Mapping[str, str] = {}) -> None:  # noqa: B006
    """Write `pytorch_model.bin` (`torch.save` of a dict of tensors, as Hugging Face does).

    Unlike the other writers this holds every tensor of the file at once (torch.save pickles one dict), so
    write it in shards to bound memory.

    Args:
        aliases: key → key it shares storage with (the tied `lm_head.weight` → `transformer.wte.weight`);
            stored once, as torch.save does for tied parameters.
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError("writing pytorch_model.bin needs PyTorch: pip install 'twinformers[pt]'") from err
    tensors: dict[str, Any] = {}
    for name in specs:
        if name in aliases:
            continue
        array = np.ascontiguousarray(_check_specs(specs, fetch, name))
        if array.dtype == bfloat16_dtype():
            tensors[name] = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
        else:
            tensors[name] = torch.from_numpy(array.copy())
    state_dict = {}
    for name in specs:  # keep the caller's order, tied copies included
        state_dict[name] = tensors[aliases[name]] if name in aliases else tensors[name]
    _write_via(path, lambda f: torch.save(state_dict, f))


# --------------------------------------------------------------------------------------------- tf_model.h5
# The Keras version Hugging Face's reference files record; Keras only acts on it for Keras-1 files.
KERAS_H5_VERSION = "2.21.0"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as err:
        raise ImportError("tf_model.h5 files need h5py: pip install h5py (or 'twinformers[tf]')") from err
    return h5py


def _attr_strings(value: Any) -> list[str]:
    if value is None:
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]


class H5File(TensorFile):
    """Hugging Face `tf_model.h5`, unsharded (Keras-2 `save_weights` layout) or one shard of a sharded save.

    Keys are TF variable names without the Keras model name, `:0` kept (`transformer/h_._0/ln_1/gamma:0`),
    i.e. the "tf_h5" names of `conversion`. Contiguous datasets (Hugging Face never chunks or compresses)
    are memory-mapped; others are read with h5py.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        h5py = _h5py()
        if not os.path.isfile(self.path):
            raise CheckpointError(f"checkpoint file not found: {self.path}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise CheckpointError(f"{self.path} is not a readable HDF5 file (truncated or corrupt?): {err}") from err
        layer_names = _attr_strings(self._file.attrs.get("layer_names"))
        if not layer_names:
            raise CheckpointError(f"{self.path} is not a Keras weights file: its root has no 'layer_names'")
        self._datasets: dict[str, Any] = {}
        for layer in layer_names:
            node = self._file.get(layer)
            if isinstance(node, h5py.Dataset):  # sharded layout: layer_names are the variable names (FORMATS.md §8)
                self._datasets[layer] = node
            elif isinstance(node, h5py.Group):
                for weight_name in _attr_strings(node.attrs.get("weight_names")):
                    dataset = node.get(weight_name)
                    if not isinstance(dataset, h5py.Dataset):
                        raise CheckpointError(f"{self.path}: layer {layer!r} lists {weight_name!r}, which is missing")
                    # Drop the Keras model name (instance-dependent: `tfgpt2lm_head_model_3`).
                    self._datasets[weight_name.split("/", 1)[-1]] = dataset
            else:
                raise CheckpointError(f"{self.path}: layer {layer!r} named in layer_names is missing")
        size = os.path.getsize(self.path)
        self._specs = {}
        self._offsets: dict[str, int] = {}
        for key, dataset in self._datasets.items():
            dtype, shape = np.dtype(dataset.dtype), tuple(dataset.shape)
            self._specs[key] = (dtype, shape)
            offset = dataset.id.get_offset() if dataset.chunks is None and dataset.compression is None else None
            if offset is not None:
                if offset + self.nbytes(key) > size:
                    raise CheckpointError(f"{self.path} is truncated: {key!r} lies beyond the end of the file")
                self._offsets[key] = offset

    def _read(self, key: str) -> np.ndarray:
        dtype, shape = self._specs[key]
        if key in self._offsets and self.nbytes(key):
            return np.memmap(self.path, dtype=dtype, mode="r", offset=self._offsets[key], shape=shape)
        try:
            return self._datasets[key][()]
        except OSError as err:
            raise CheckpointError(f"{self.path}: cannot read {key!r} (truncated or corrupt?): {err}") from err

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` of `key`, read by h5py (file reads, no memory map)."""
        try:
            return self._datasets[key][start:stop]
        except OSError as err:
            raise CheckpointError(f"{self.path}: cannot read {key!r} (truncated or corrupt?): {err}") from err

    def read_into(self, key: str, out: np.ndarray) -> None:
        self._check_out(key, out)
        if out.size:
            try:
                self._datasets[key].read_direct(out)
            except OSError as err:
                raise CheckpointError(f"{self.path}: cannot read {key!r} (truncated or corrupt?): {err}") from err


def write_tf_h5(
    path: str | os.PathLike, specs: Specs, fetch: Fetch, *, model_name: str, shard: bool = False
) -> None:
    """Write Hugging Face's `tf_model.h5` (or one shard of a sharded save) from "tf_h5" names.

    Unsharded: root attrs `backend`, `keras_version`, `layer_names` (the top-level layers), one group per
    layer with `weight_names` = full variable names (`<model_name>/<name>`), datasets at
    `<layer>/<model_name>/<name>`, and tf_keras' empty `top_level_model_weights` group. A shard: root
    `layer_names` = the names themselves, datasets at those paths (FORMATS.md §5, §8).
    """
    h5py = _h5py()
    for name, (dtype, _) in specs.items():
        if np.dtype(dtype) == bfloat16_dtype():
            raise ValueError(f"tf_model.h5 cannot hold bfloat16 ({name!r}); cast to float16 or float32")
    strings = h5py.string_dtype()

    def write_dataset(group: Any, path: str, name: str) -> None:
        dtype, shape = specs[name]
        dataset = group.create_dataset(path, shape=tuple(shape), dtype=np.dtype(dtype))
        row = 0
        for block in iter_blocks(specs, fetch, name):
            if block.ndim == 0:
                dataset[()] = block
            elif block.size:
                dataset[row:row + block.shape[0]] = block
            row += block.shape[0] if block.ndim else 0

    def write(f: Any) -> None:
        with h5py.File(f, "w") as h5:
            if shard:
                h5.attrs.create("layer_names", np.array(list(specs), dtype=object), dtype=strings)
                for name in specs:
                    write_dataset(h5, name, name)
                return
            layers: dict[str, list[str]] = {}
            for name in specs:
                layers.setdefault(name.split("/", 1)[0], []).append(name)
            h5.attrs["backend"] = "tensorflow"
            h5.attrs["keras_version"] = KERAS_H5_VERSION
            h5.attrs.create("layer_names", np.array(list(layers), dtype=object), dtype=strings)
            for layer, names in layers.items():
                group = h5.create_group(layer)
                full_names = [f"{model_name}/{name}" for name in names]
                group.attrs.create("weight_names", np.array(full_names, dtype=object), dtype=strings)
                for name, full_name in zip(names, full_names):
                    write_dataset(group, full_name, name)
            h5.create_group("top_level_model_weights").attrs["weight_names"] = np.array([])

    _write_via(path, write, "w+b")


def keras_model_name(class_name: str) -> str:
    """Keras' automatic name of a model class: "TFGPT2LMHeadModel" → "tfgpt2lm_head_model"."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# --------------------------------------------------------------------------------------------- flax_model.msgpack
# flax.serialization: ndarray leaves are ExtType 1 (numpy scalars 3) holding packb((shape, dtype name, bytes));
# arrays above MAX_CHUNK_SIZE bytes become {"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}.
MSGPACK_NDARRAY, MSGPACK_NPSCALAR = 1, 3
MAX_CHUNK_SIZE = 2**30
_CHUNKED = "__msgpack_chunked_array__"


@dataclasses.dataclass
class _Ext:
    code: int
    start: int
    length: int


@dataclasses.dataclass
class _Bin:
    start: int
    length: int


class _MsgpackReader:
    """Just enough of msgpack to walk a flax state dict inside a memory map without copying leaf payloads.

    The `msgpack` package would hand every ExtType payload over as a bytes copy (and buffers whole objects),
    so the framing is parsed here; only headers are touched and leaf data stay in the map.
    """

    def __init__(self, buffer: Any, path: str) -> None:
        self.buffer = buffer
        self.path = path

    def _require(self, end: int) -> None:
        if end > len(self.buffer):
            raise CheckpointError(f"{self.path} is truncated (msgpack data ends at byte {len(self.buffer)})")

    def _take(self, pos: int, n: int) -> bytes:
        self._require(pos + n)
        return bytes(self.buffer[pos:pos + n])

    def _uint(self, pos: int, n: int) -> int:
        return int.from_bytes(self._take(pos, n), "big")

    def value(self, pos: int) -> tuple[Any, int]:
        tag = self._take(pos, 1)[0]
        pos += 1
        if tag <= 0x7F:
            return tag, pos
        if tag >= 0xE0:
            return tag - 0x100, pos
        if 0x80 <= tag <= 0x8F:
            return self._map(tag & 0x0F, pos)
        if 0x90 <= tag <= 0x9F:
            return self._array(tag & 0x0F, pos)
        if 0xA0 <= tag <= 0xBF:
            return self._str(tag & 0x1F, pos)
        fixed = {0xC0: None, 0xC2: False, 0xC3: True}
        if tag in fixed:
            return fixed[tag], pos
        sizes = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xC7: 1, 0xC8: 2, 0xC9: 4, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
                 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD9: 1, 0xDA: 2, 0xDB: 4, 0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}
        if 0xD4 <= tag <= 0xD8:  # fixext 1, 2, 4, 8, 16
            return self._ext(1 << (tag - 0xD4), pos)
        if tag not in sizes:
            raise CheckpointError(f"{self.path} is not a flax msgpack file (unsupported msgpack type 0x{tag:02x})")
        n = sizes[tag]
        if 0xD0 <= tag <= 0xD3:
            return int.from_bytes(self._take(pos, n), "big", signed=True), pos + n
        count, pos = self._uint(pos, n), pos + n
        if 0xCC <= tag <= 0xCF:
            return count, pos
        if tag in (0xC4, 0xC5, 0xC6):
            self._require(pos + count)
            return _Bin(pos, count), pos + count
        if tag in (0xC7, 0xC8, 0xC9):
            return self._ext(count, pos)
        if tag in (0xD9, 0xDA, 0xDB):
            return self._str(count, pos)
        if tag in (0xDC, 0xDD):
            return self._array(count, pos)
        return self._map(count, pos)

    def _str(self, n: int, pos: int) -> tuple[str, int]:
        return self._take(pos, n).decode("utf-8"), pos + n

    def _ext(self, n: int, pos: int) -> tuple[_Ext, int]:
        code = int.from_bytes(self._take(pos, 1), "big", signed=True)
        self._require(pos + 1 + n)
        return _Ext(code, pos + 1, n), pos + 1 + n

    def _array(self, n: int, pos: int) -> tuple[list, int]:
        items = []
        for _ in range(n):
            item, pos = self.value(pos)
            items.append(item)
        return items, pos

    def _map(self, n: int, pos: int) -> tuple[dict, int]:
        items = {}
        for _ in range(n):
            key, pos = self.value(pos)
            items[str(key)], pos = self.value(pos)
        return items, pos

    def ndarray(self, ext: _Ext) -> tuple[np.dtype, tuple[int, ...], int]:
        """An ndarray ExtType → (dtype, shape, byte offset of its data)."""
        payload, end = self.value(ext.start)
        well_formed = isinstance(payload, list) and len(payload) == 3 and isinstance(payload[2], _Bin)
        if not well_formed or end > ext.start + ext.length or ext.code not in (MSGPACK_NDARRAY, MSGPACK_NPSCALAR):
            raise CheckpointError(f"{self.path}: a leaf is not a flax ndarray (ExtType {ext.code})")
        shape, name, data = payload
        dtype = numpy_dtype(name.decode() if isinstance(name, bytes) else name)
        shape = tuple(int(d) for d in shape)
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != data.length:
            raise CheckpointError(f"{self.path}: a leaf of shape {shape} {dtype} holds {data.length} bytes")
        return dtype, shape, data.start


class MsgpackFile(TensorFile):
    """Hugging Face `flax_model.msgpack` (`flax.serialization.to_bytes(params)`), memory-mapped.

    Keys are `/`-joined param paths (`transformer/h/0/attn/c_attn/kernel`); arrays are views of the map,
    except chunked (>1 GiB) ones, which are joined into one array when read.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise CheckpointError(f"checkpoint file not found: {self.path}")
        size = os.path.getsize(self.path)
        self._buffer = np.memmap(self.path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        reader = _MsgpackReader(self._buffer, self.path)
        tree, end = reader.value(0)
        if not isinstance(tree, dict):
            raise CheckpointError(f"{self.path} is not a flax msgpack file (its top level is not a map)")
        if end != size:
            raise CheckpointError(f"{self.path} has {size - end} stray bytes after the msgpack data")
        self._specs = {}
        self._leaves: dict[str, list[tuple[int, int]]] = {}  # key → [(offset, nbytes) per chunk]
        for key, node in _flatten(tree, self.path):
            if isinstance(node, _Ext):
                dtype, shape, offset = reader.ndarray(node)
                chunks = [(offset, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)]
            else:  # chunked
                shape = tuple(int(node["shape"][str(i)]) for i in range(len(node["shape"])))
                parts = [reader.ndarray(node["chunks"][str(i)]) for i in range(len(node["chunks"]))]
                dtype = parts[0][0]
                chunks = [(offset, int(np.prod(s, dtype=np.int64)) * dtype.itemsize) for _, s, offset in parts]
                if sum(n for _, n in chunks) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                    raise CheckpointError(f"{self.path}: the chunks of {key!r} do not add up to shape {shape}")
            self._specs[key] = (dtype, shape)
            self._leaves[key] = chunks

    def _read(self, key: str) -> np.ndarray:
        dtype, shape = self._specs[key]
        parts = [self._buffer[offset:offset + n] for offset, n in self._leaves[key]]
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return data.view(dtype).reshape(shape)

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` of `key` with plain file reads (see `checkpoint.SafetensorsFile.read_rows`)."""
        dtype, shape = self._specs[key]
        if len(self._leaves[key]) > 1:  # a chunked (>1 GiB) leaf: its chunks need not align with rows
            return np.array(self[key][start:stop])
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        out = np.empty((stop - start, *shape[1:]), dtype)
        with open(self.path, "rb") as f:
            f.seek(self._leaves[key][0][0] + start * row_bytes)
            if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise CheckpointError(f"{self.path} ended while reading {key!r}")
        return out

    def read_into(self, key: str, out: np.ndarray) -> None:
        self._check_out(key, out)
        flat = out.reshape(-1).view(np.uint8)
        position = 0
        with open(self.path, "rb") as f:
            for offset, n in self._leaves[key]:
                f.seek(offset)
                if f.readinto(flat[position:position + n]) != n:
                    raise CheckpointError(f"{self.path} ended while reading {key!r}")
                position += n


def _flatten(tree: dict, path: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, node in tree.items():
        key = f"{prefix}{name}"
        if isinstance(node, _Ext):
            yield key, node
        elif isinstance(node, dict) and node.get(_CHUNKED) is True:
            yield key, node
        elif isinstance(node, dict):
            yield from _flatten(node, path, key + "/")
        else:
            raise CheckpointError(f"{path}: {key!r} is neither an array nor a sub-tree")


def _ext_header(length: int, code: int) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if length in fixed:
        return bytes([fixed[length], code])
    if length < 2**8:
        return bytes([0xC7, length, code])
    if length < 2**16:
        return b"\xc8" + length.to_bytes(2, "big") + bytes([code])
    return b"\xc9" + length.to_bytes(4, "big") + bytes([code])


def _bin_header(length: int) -> bytes:
    if length < 2**8:
        return bytes([0xC4, length])
    if length < 2**16:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


def write_flax_msgpack(path: str | os.PathLike, specs: Specs, fetch: Fetch) -> None:
    """Write `flax_model.msgpack` from `/`-joined param paths, one tensor at a time, byte-compatible with
    `flax.serialization.from_bytes` (ExtType 1 leaves, arrays over 1 GiB chunked as flax does)."""
    import msgpack

    packer = msgpack.Packer(use_bin_type=True)
    tree: dict[str, Any] = {}
    for name in specs:
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"flax path {name!r} runs through the array {part!r}")
        if parts[-1] in node:
            raise ValueError(f"flax path {name!r} is both an array and a sub-tree")
        node[parts[-1]] = name

    def leaf(f: Any, shape: tuple[int, ...], dtype: np.dtype, blocks: Any) -> None:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        head = packer.pack_array_header(3) + packer.pack(list(shape)) + packer.pack(dtype.name)
        head += _bin_header(nbytes)
        f.write(_ext_header(len(head) + nbytes, MSGPACK_NDARRAY) + head)
        for block in blocks:
            f.write(np.ascontiguousarray(block).reshape(-1).view(np.uint8).data)

    def write_tree(f: Any, node: dict) -> None:
        f.write(packer.pack_map_header(len(node)))
        for key in sorted(node):
            f.write(packer.pack(key))
            if isinstance(node[key], dict):
                write_tree(f, node[key])
                continue
            dtype, shape = np.dtype(specs[node[key]][0]), tuple(specs[node[key]][1])
            if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize <= MAX_CHUNK_SIZE:
                leaf(f, shape, dtype, iter_blocks(specs, fetch, node[key]))
                continue
            array = _check_specs(specs, fetch, node[key])
            flat = np.ascontiguousarray(array).reshape(-1)
            step = max(1, MAX_CHUNK_SIZE // array.dtype.itemsize)
            starts = range(0, flat.size, step)
            f.write(packer.pack_map_header(3) + packer.pack(_CHUNKED) + packer.pack(True) + packer.pack("shape"))
            f.write(packer.pack({str(i): int(d) for i, d in enumerate(array.shape)}) + packer.pack("chunks"))
            f.write(packer.pack_map_header(len(starts)))
            for i, start in enumerate(starts):
                f.write(packer.pack(str(i)))
                chunk = flat[start:start + step]
                leaf(f, chunk.shape, chunk.dtype, [chunk])

    _write_via(path, lambda f: write_tree(f, tree))
