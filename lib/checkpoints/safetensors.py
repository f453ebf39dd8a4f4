"""Safetensors files: memory-mapped reading tensor by tensor, sharded `model.safetensors.index.json` checkpoints,
and a streaming writer byte-compatible with Hugging Face's headers.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .files import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    CheckpointError,
    TensorFile,
    atomic_output,
    bfloat16_dtype,
    iter_blocks,
)
from .sharding import ShardedFiles

_ST_DTYPES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def _np_dtype(tag: str, path: str, key: str) -> np.dtype:
    if tag not in _ST_DTYPES:
        raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {tag!r}")
    name = _ST_DTYPES[tag]
    return bfloat16_dtype() if name == "bfloat16" else np.dtype(name)


def _st_tag(dtype: np.dtype) -> str:
    name = np.dtype(dtype).name
    if name not in _ST_NAMES:
        raise ValueError(f"cannot store dtype {name} in safetensors")
    return _ST_NAMES[name]




# --------------------------------------------------------------------------------------------- reading
class SafetensorsFile(TensorFile):
    """A memory-mapped safetensors file: a read-only mapping from tensor name to NumPy array.

    Arrays are views of the mapped file (no copy until you write to them or cast them). The header is
    validated on open, so a truncated or corrupt file fails here with its path in the message.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise CheckpointError(f"{self.path} is not a safetensors file (shorter than 8 bytes)")
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > size - 8:
                    raise CheckpointError(
                        f"{self.path} is truncated or not a safetensors file: header of {header_len} bytes "
                        f"but the file has {size} bytes"
                    )
                header = json.loads(f.read(header_len))
        except FileNotFoundError as err:
            raise CheckpointError(f"checkpoint file not found: {self.path}") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{self.path} has a corrupt safetensors header: {err}") from err
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path} has a corrupt safetensors header (not a JSON object)")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_len
        data_len = size - self._data_start
        self._specs = {}
        self._offsets: dict[str, tuple[int, int]] = {}  # name -> (start, end) in the data section
        for key, info in header.items():
            try:
                dtype = _np_dtype(info["dtype"], self.path, key)
                shape = tuple(int(d) for d in info["shape"])
                start, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(f"{self.path}: malformed header entry for {key!r}: {info!r}") from err
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if end - start != expected or end > data_len or start < 0:
                raise CheckpointError(
                    f"{self.path} is truncated or corrupt: tensor {key!r} {shape} {info['dtype']} needs bytes "
                    f"{start}..{end} ({expected} bytes) of a {data_len}-byte data section"
                )
            self._specs[key] = (dtype, shape)
            self._offsets[key] = (start, end)
        self._mmap: np.memmap | None = None

    @property
    def format(self) -> str:
        """The `__metadata__["format"]` tag: "pt", "tf", "flax" or "mlx" ("pt" when absent)."""
        return self.metadata.get("format", "pt")

    def _buffer(self) -> np.memmap:
        if self._mmap is None:
            if os.path.getsize(self.path) == self._data_start:
                self._mmap = np.zeros(0, dtype=np.uint8)  # np.memmap cannot map an empty region
            else:
                self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._data_start)
        return self._mmap

    def _read(self, key: str) -> np.ndarray:
        dtype, shape = self._specs[key]
        start, end = self._offsets[key]
        return self._buffer()[start:end].view(dtype).reshape(shape)

    def read_into(self, key: str, out: np.ndarray) -> None:
        """Read tensor `key` straight into the C-contiguous array `out` (same dtype and shape) with plain
        file reads: no memory map stays resident, so loading needs ~1× the checkpoint in memory."""
        self._check_out(key, out)
        start, end = self._offsets[key]
        with open(self.path, "rb") as f:
            f.seek(self._data_start + start)
            if f.readinto(out.reshape(-1).view(np.uint8)) != end - start:
                raise CheckpointError(f"{self.path} ended while reading {key!r}")

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` (first axis) of tensor `key`, read with plain file reads, so a converter can
        stream a tensor larger than the memory it wants to use."""
        dtype, shape = self._specs[key]
        begin, _ = self._offsets[key]
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        out = np.empty((stop - start, *shape[1:]), dtype)
        with open(self.path, "rb") as f:
            f.seek(self._data_start + begin + start * row_bytes)
            if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise CheckpointError(f"{self.path} ended while reading {key!r}")
        return out




class ShardedSafetensors(ShardedFiles):
    """The shards of a `*.safetensors.index.json` checkpoint, seen as one lazy mapping."""

    def __init__(self, index_path: str | os.PathLike, shard_paths: Mapping[str, str] | None = None) -> None:
        super().__init__(index_path, SafetensorsFile, shard_paths)

    @property
    def metadata(self) -> dict[str, str]:
        return next(iter(self.shards.values())).metadata if self.shards else {}

    @property
    def format(self) -> str:
        return self.metadata.get("format", "pt")


def open_safetensors(path: str | os.PathLike) -> SafetensorsFile | ShardedSafetensors:
    """Open `model.safetensors` or `model.safetensors.index.json` (a file path, or a directory holding one)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME):
            if os.path.isfile(os.path.join(path, name)):
                return open_safetensors(os.path.join(path, name))
        raise CheckpointError(f"{path} has neither {SAFE_WEIGHTS_NAME} nor {SAFE_WEIGHTS_INDEX_NAME}")
    if path.endswith(".index.json"):
        return ShardedSafetensors(path)
    return SafetensorsFile(path)




def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray] | None = None,
    metadata: Mapping[str, str] | None = None,
    *,
    specs: Mapping[str, tuple[np.dtype, tuple[int, ...]]] | None = None,
    fetch: Callable[[str], np.ndarray] | None = None,
) -> None:
    """Write a safetensors file the way Hugging Face does: metadata first, tensors sorted by name, header
    padded with spaces to a multiple of 8. Written to a temporary file and renamed into place.

    Either pass `tensors`, or (to stream a large checkpoint) `specs` name → (dtype, shape) and `fetch`,
    called once per tensor while writing; `fetch` may also return an iterator of arrays whose concatenation
    along the first axis is the tensor, which are written one by one (a tensor never wholly in memory).
    """
    if tensors is not None:
        specs = {k: (np.asarray(v).dtype, tuple(np.shape(v))) for k, v in tensors.items()}
        fetch = tensors.__getitem__
    if specs is None or fetch is None:
        raise ValueError("write_safetensors needs `tensors`, or both `specs` and `fetch`")
    if metadata is not None and any(not isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"safetensors metadata values must be strings, got {dict(metadata)}")
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    names = sorted(specs)
    for name in names:
        dtype, shape = specs[name]
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _st_tag(dtype), "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    with atomic_output(path) as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name in names:
            for block in iter_blocks(specs, fetch, name):
                f.write(block.reshape(-1).view(np.uint8).data)
