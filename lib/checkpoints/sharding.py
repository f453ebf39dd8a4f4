"""Sharded checkpoints of any format: the lazy reader over a `*.index.json`, shard planning, shard file names
and index files, exactly as Hugging Face writes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import InputError
from .files import CheckpointError, atomic_write_text, staged_directory


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

    def can_read_rows(self, key: str) -> bool:
        return hasattr(self._file(key), "read_rows")

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        return self._file(key).read_rows(key, start, stop)

    def read_into(self, key: str, out: np.ndarray) -> None:
        shard = self._file(key)
        if hasattr(shard, "read_into"):
            shard.read_into(key, out)
        else:
            np.copyto(out, shard[key])




# --------------------------------------------------------------------------------------------- shards
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """`"5GB"` → 5·10⁹ bytes (decimal, as Hugging Face); `"2GiB"` → 2·2³⁰; ints pass through.

    Raises:
        InputError: not a positive size (the message names `max_shard_size`).
    """
    if isinstance(size, int) and not isinstance(size, bool):
        nbytes = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", str(size).upper())
        if not isinstance(size, str) or not match:
            raise InputError(f"max_shard_size {size!r} is not a size such as '5GB', '500MB' or an int")
        nbytes = int(float(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"])
    if nbytes <= 0:
        raise InputError(f"max_shard_size must be positive, got {size!r}")
    return nbytes


def plan_shards(sizes: Iterable[tuple[str, int]], max_shard_size: int | str) -> list[list[str]]:
    """Split names into shards in order; a new shard starts when the next tensor would overflow the limit.
    A tensor larger than the limit gets a shard of its own."""
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    used = 0
    for name, nbytes in sizes:
        if shards[-1] and used + nbytes > limit:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards


def shard_file_name(weights_name: str, index: int, total: int) -> str:
    """`model.safetensors`, 1, 8 → `model-00001-of-00008.safetensors`."""
    stem, ext = weights_name.split(".", 1)
    return f"{stem}-{index:05d}-of-{total:05d}.{ext}"


def is_weights_file(name: str, weights_name: str) -> bool:
    """Whether a file `name` belongs to a checkpoint saved as `weights_name`: the file itself, its shards or its
    index. A new save replaces these and keeps every other file of the directory."""
    stem, ext = weights_name.split(".", 1)
    shard = re.fullmatch(rf"{re.escape(stem)}-\d{{5}}-of-\d{{5}}\.{re.escape(ext)}", name)
    return shard is not None or name in (weights_name, f"{weights_name}.index.json")


def staged_checkpoint(save_directory: str | os.PathLike, weights_name: str) -> contextlib.AbstractContextManager[str]:
    """`staged_directory` for a model save: the new directory keeps every file of the old one except the old
    checkpoint of the same format (`is_weights_file`), as Hugging Face's `save_pretrained` does."""
    return staged_directory(save_directory, keep=lambda name: not is_weights_file(name, weights_name))


def read_index(index_path: str | os.PathLike, check_files: bool = True) -> tuple[dict[str, str], dict[str, Any]]:
    """Parse a `*.index.json` file; returns (weight_map, metadata). Missing shard files are an error."""
    index_path = os.fspath(index_path)
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError as err:
        raise CheckpointError(f"index file not found: {index_path}") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{index_path} is not valid JSON: {err}") from err
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path} has no valid 'weight_map' object")
    if check_files:
        directory = os.path.dirname(index_path)
        missing = sorted({s for s in weight_map.values() if not os.path.isfile(os.path.join(directory, s))})
        if missing:
            raise CheckpointError(f"{index_path} names shard files that do not exist: {', '.join(missing)}")
    return weight_map, index.get("metadata", {})


def write_index(path: str | os.PathLike, weight_map: Mapping[str, str], total_size: int) -> None:
    index = {"metadata": {"total_size": int(total_size)}, "weight_map": dict(weight_map)}
    atomic_write_text(path, json.dumps(index, indent=2, sort_keys=True) + "\n")


def save_sharded(
    save_directory: str | os.PathLike,
    names_and_sizes: list[tuple[str, int]],
    write_shard: Callable[[str, list[str]], None],
    weights_name: str,
    max_shard_size: int | str = "5GB",
    index_keys: Callable[[str], str] | None = None,
) -> list[str]:
    """Write a checkpoint as one file or as shards plus `<weights_name>.index.json`, in any file format.

    Args:
        names_and_sizes: tensor names in writing order with their byte sizes (tied storage counted once).
        write_shard: `write_shard(path, names)` writes those tensors to `path` (atomically).
        weights_name: the unsharded file name (`model.safetensors`, `tf_model.h5`, ...).
        index_keys: maps a tensor name to the key written in the index (identity by default).
    Returns:
        The file names written. Stale shards or indexes of an earlier save with the same stem are removed.
    """
    save_directory = os.fspath(save_directory)
    os.makedirs(save_directory, exist_ok=True)
    shards = plan_shards(names_and_sizes, max_shard_size)
    if len(shards) == 1:
        files = [weights_name]
    else:
        files = [shard_file_name(weights_name, i + 1, len(shards)) for i in range(len(shards))]
    for file_name, names in zip(files, shards):
        write_shard(os.path.join(save_directory, file_name), names)
    index_name = f"{weights_name}.index.json"
    if len(shards) > 1:
        weight_map = {(index_keys or str)(name): file_name for file_name, names in zip(files, shards) for name in names}
        write_index(os.path.join(save_directory, index_name), weight_map, sum(size for _, size in names_and_sizes))
        written = [*files, index_name]
    else:
        written = files
    for name in os.listdir(save_directory):
        if is_weights_file(name, weights_name) and name not in written:
            os.remove(os.path.join(save_directory, name))
    return written
