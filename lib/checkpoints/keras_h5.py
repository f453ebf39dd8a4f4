"""`tf_model.h5`: Keras-2 `save_weights` HDF5 files, unsharded and sharded layouts (needs h5py).
"""


import os
import re
from typing import Any

import numpy as np

from .files import (
    CheckpointError,
    Fetch,
    Specs,
    TensorFile,
    _write_via,
    bfloat16_dtype,
    iter_blocks,
)
from .hdf5 import keras_weights

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
    i.e. the "tf_h5" names of `conversion`. Files in h5py's default layout (every Hugging Face file) are
    indexed without h5py (`hdf5.keras_weights`: importing h5py and opening the file keep ~13 MB resident);
    others are opened with h5py, which also reports what is wrong with a damaged file. Contiguous datasets
    (Hugging Face never chunks or compresses) are read with plain file reads or memory-mapped; others are
    read with h5py.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        weights = keras_weights(self.path) if os.path.isfile(self.path) else None
        if weights is not None:
            self._datasets: dict[str, Any] = {}  # h5py datasets: none needed
            self._specs = {key: (dtype, shape) for key, (dtype, shape, _) in weights.items()}
            self._offsets = {key: offset for key, (_, _, offset) in weights.items()}
            return
        h5py = _h5py()
        if not os.path.isfile(self.path):
            raise CheckpointError(f"checkpoint file not found: {self.path}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise CheckpointError(f"{self.path} is not a readable HDF5 file (truncated or corrupt?): {err}") from err
        try:
            self._index(h5py)
        except CheckpointError:
            raise
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as err:  # h5py on a damaged file
            raise CheckpointError(f"{self.path} is not a readable Keras weights file (truncated or corrupt?): "
                                  f"{err}") from err

    def _index(self, h5py: Any) -> None:
        """Find every weight dataset and its offset (for memory maps); CheckpointError on a bad layout."""
        layer_names = _attr_strings(self._file.attrs.get("layer_names"))
        if not layer_names:
            raise CheckpointError(f"{self.path} is not a Keras weights file: its root has no 'layer_names'")
        self._datasets = {}
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
        """Rows `start:stop` of `key` with plain file reads (no memory map)."""
        dtype, shape = self._specs[key]
        if key in self._offsets:
            start, stop, _ = slice(start, stop).indices(shape[0])
            out = np.empty((max(stop - start, 0), *shape[1:]), dtype)
            self._read_bytes(key, start * (self.nbytes(key) // shape[0]) if shape[0] else 0, out)
            return out
        try:
            return self._datasets[key][start:stop]
        except OSError as err:
            raise CheckpointError(f"{self.path}: cannot read {key!r} (truncated or corrupt?): {err}") from err

    def read_into(self, key: str, out: np.ndarray) -> None:
        """Read tensor `key` straight into the C-contiguous array `out` (same dtype and shape): plain file reads
        for contiguous datasets (as `SafetensorsFile.read_into`), h5py for others."""
        self._check_out(key, out)
        if not out.size:
            return
        if key in self._offsets:
            self._read_bytes(key, 0, out)
            return
        try:
            self._datasets[key].read_direct(out)
        except OSError as err:
            raise CheckpointError(f"{self.path}: cannot read {key!r} (truncated or corrupt?): {err}") from err

    def _read_bytes(self, key: str, skip: int, out: np.ndarray) -> None:
        """Fill `out` with the bytes of contiguous dataset `key` from byte `skip` of its data on."""
        with open(self.path, "rb") as f:
            f.seek(self._offsets[key] + skip)
            if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise CheckpointError(f"{self.path} ended while reading {key!r}")


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
