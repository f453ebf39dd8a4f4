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

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, bfloat16_dtype, read_index

__all__ = [
    "TensorFile",
    "TorchBinFile",
    "ShardedFiles",
    "numpy_dtype",
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
class ShardedFiles(Mapping):
    """The shards named by a `*.index.json`, as one lazy mapping over the tensors the shards hold.

    Every shard is opened (lazily: headers or memory maps only) when the index is, so an index naming a
    missing shard or a tensor in the wrong shard fails here. Keys are the shard files' own tensor names; the
    index's weight_map
    keys only locate shards (TF indexes carry an instance-specific model name the shards do not, so
    `index_key` turns a shard's tensor name into its index key).

    Args:
        index_path: the `*.index.json` file.
        open_shard: opens one shard file (e.g. `TorchBinFile`).
        shard_paths: shard file name → local path (Hub downloads); default: beside the index.
        index_key: shard tensor name → weight_map key (identity by default).
    """

    def __init__(
        self,
        index_path: str | os.PathLike,
        open_shard: Callable[[str], Mapping],
        shard_paths: Mapping[str, str] | None = None,
        index_key: Callable[[str], str] | None = None,
    ) -> None:
        self.path = os.fspath(index_path)
        self.weight_map, self.index_metadata = read_index(self.path, check_files=shard_paths is None)
        directory = os.path.dirname(self.path)
        self.shard_names = sorted(set(self.weight_map.values()))
        self.shard_paths = {
            name: shard_paths[name] if shard_paths else os.path.join(directory, name) for name in self.shard_names
        }
        self.shards = {name: open_shard(path) for name, path in self.shard_paths.items()}
        self._where: dict[str, str] = {}
        to_index = index_key or (lambda key: key)
        wrong = []
        for name, shard in self.shards.items():
            for key in shard:
                if self.weight_map.get(to_index(key)) != name:
                    wrong.append(f"{key} in {name}")
                self._where[key] = name
        listed = {to_index(k) for k in self._where}
        absent = sorted(k for k in self.weight_map if k not in listed)
        if wrong or absent:
            raise CheckpointError(
                f"{self.path} disagrees with its shards: "
                + "; ".join([*(f"{k} is not where the index says" for k in wrong[:10]),
                             *(f"{k} is in no shard" for k in absent[:10])])
            )

    def _file(self, key: str) -> Any:
        if key not in self._where:
            raise KeyError(f"{self.path} has no tensor {key!r}")
        return self.shards[self._where[key]]

    def __getitem__(self, key: str) -> np.ndarray:
        return self._file(key)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._file(key).shape(key)

    def dtype(self, key: str) -> np.dtype:
        return self._file(key).dtype(key)

    def nbytes(self, key: str) -> int:
        return self._file(key).nbytes(key)

    def read_into(self, key: str, out: np.ndarray) -> None:
        shard = self._file(key)
        if hasattr(shard, "read_into"):
            shard.read_into(key, out)
        else:
            np.copyto(out, shard[key])
