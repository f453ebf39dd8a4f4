"""Reading any checkpoint canonically: `open_checkpoint` reads whatever weights a directory or Hub repository
holds (safetensors of any of the three frameworks, `pytorch_model.bin`, `tf_model.h5`, `flax_model.msgpack`,
sharded or not) as one lazy mapping from canonical (PyTorch) key to NumPy array. Every twin's
`from_pretrained` starts there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..conversion.tables import IDENTITY, Transform, family_of, head_of, plan_from_backend
from .files import (
    FLAX_WEIGHTS_INDEX_NAME,
    FLAX_WEIGHTS_NAME,
    PT_WEIGHTS_INDEX_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_INDEX_NAME,
    TF_WEIGHTS_NAME,
    CheckpointError,
    resolve_file,
    scratch_array,
)
from .flax_msgpack import MsgpackFile
from .keras_h5 import H5File
from .safetensors import SafetensorsFile
from .sharding import ShardedFiles, read_index
from .torch_bin import TorchBinFile

# Weight files in Hugging Face's PyTorch lookup order (FORMATS.md §1): (file name, kind, is an index).
WEIGHT_FILES: tuple[tuple[str, str, bool], ...] = (
    (SAFE_WEIGHTS_NAME, "safetensors", False),
    (SAFE_WEIGHTS_INDEX_NAME, "safetensors", True),
    (PT_WEIGHTS_NAME, "bin", False),
    (PT_WEIGHTS_INDEX_NAME, "bin", True),
    (TF_WEIGHTS_NAME, "h5", False),
    (TF_WEIGHTS_INDEX_NAME, "h5", True),
    (FLAX_WEIGHTS_NAME, "msgpack", False),
    (FLAX_WEIGHTS_INDEX_NAME, "msgpack", True),
)
_KINDS = ("safetensors", "bin", "h5", "msgpack")


# --------------------------------------------------------------------------------------------- reading
class CanonicalCheckpoint(Mapping):
    """A checkpoint of any format seen as a read-only mapping: canonical (PyTorch) key → NumPy array.

    Nothing is read until a tensor is asked for. Arrays are views of the memory-mapped file where the format
    allows (safetensors, `.bin`, msgpack) — transposed views for layouts that differ from PyTorch's — so
    call `np.ascontiguousarray` (or `read_into`) when you need your own contiguous copy. bf16 tensors come
    back as `ml_dtypes.bfloat16`.

    Attributes:
        source_format: the framework layout of the stored names and shapes: "pt", "tf" or "flax".
        weights_name: the weight file (or index) found, e.g. "model.safetensors.index.json".
        files: local paths of every file the weights come from (index first, then shards).
        family: the config's `model_type` ("gpt2", "gptj", "gpt_neo"), or None without a config.json.
        config: the parsed config (None without a config.json).
        config_file: local path of config.json (or None).
    """

    def __init__(
        self,
        entries: Mapping[str, tuple[Any, str, Transform]],
        *,
        source_format: str,
        weights_name: str,
        files: Sequence[str],
        config: Any = None,
        config_file: str | None = None,
    ) -> None:
        self._entries = dict(entries)
        self.source_format = source_format
        self.weights_name = weights_name
        self.files = list(files)
        self.config = config
        self.config_file = config_file
        self.family = getattr(config, "model_type", None)

    def __getitem__(self, key: str) -> np.ndarray:
        source, raw_key, transform = self._entry(key)
        return transform.to_canonical(source[raw_key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"CanonicalCheckpoint({self.weights_name!r}, format={self.source_format!r}, {len(self)} tensors)"

    def _entry(self, key: str) -> tuple[Any, str, Transform]:
        if key not in self._entries:
            raise KeyError(f"checkpoint {self.weights_name} ({self.files[0]}) has no tensor {key!r}")
        return self._entries[key]

    def source_key(self, key: str) -> str:
        """The name the file stores canonical `key` under (`transformer/wte/embeddings:0`, ...)."""
        return self._entry(key)[1]

    def shape(self, key: str) -> tuple[int, ...]:
        source, raw_key, transform = self._entry(key)
        return transform.canonical_shape(tuple(source.shape(raw_key)))

    def dtype(self, key: str) -> np.dtype:
        source, raw_key, _ = self._entry(key)
        return source.dtype(raw_key)

    def nbytes(self, key: str) -> int:
        source, raw_key, _ = self._entry(key)
        return source.nbytes(raw_key)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical key → shape of every tensor (no data is read); handy for `loading.plan_load`."""
        return {key: self.shape(key) for key in self._entries}

    def read_into(self, key: str, out: np.ndarray) -> None:
        """Fill `out` (the canonical shape and the stored dtype, C-contiguous) with tensor `key`.

        Safetensors sources whose layout equals PyTorch's are read with plain file reads straight into
        `out` (`checkpoint.SafetensorsFile.read_into`), so no page of the memory map stays resident.
        """
        source, raw_key, transform = self._entry(key)
        if out.shape != self.shape(key) or out.dtype != self.dtype(key):
            raise ValueError(
                f"cannot read {key!r} {self.dtype(key)}{list(self.shape(key))} "
                f"into a {out.dtype}{list(out.shape)} array"
            )
        if transform.keeps_memory_order and hasattr(source, "read_into") and out.flags.c_contiguous:
            source.read_into(raw_key, out.reshape(source.shape(raw_key)))
        elif hasattr(source, "read_into"):
            raw = np.empty(source.shape(raw_key), source.dtype(raw_key))
            source.read_into(raw_key, raw)
            np.copyto(out, transform.to_canonical(raw))
        else:
            np.copyto(out, self[key])

    def read_view(self, key: str) -> np.ndarray:
        """Tensor `key` in the canonical shape, as the file's layout read into pages of its own (given back to
        the OS once dropped) and seen through the transform: a transposed view where the file stores the
        transpose. For streaming writers that lay out a block at a time (`read` lays out a whole copy)."""
        source, raw_key, transform = self._entry(key)
        if not hasattr(source, "read_into"):
            return self[key]
        raw = scratch_array(source.shape(raw_key), source.dtype(raw_key))
        source.read_into(raw_key, raw)
        return transform.to_canonical(raw)

    def can_read_rows(self, key: str) -> bool:
        """Whether `read_rows` works for `key`: its stored layout is PyTorch's and the file allows row reads."""
        source, raw_key, transform = self._entry(key)
        if transform is not IDENTITY or not hasattr(source, "read_rows"):
            return False
        return source.can_read_rows(raw_key) if hasattr(source, "can_read_rows") else True

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` (first axis) of tensor `key` with plain file reads (see `can_read_rows`)."""
        if not self.can_read_rows(key):
            raise ValueError(f"{key!r} cannot be read by rows from {self.weights_name}")
        source, raw_key, _ = self._entry(key)
        return source.read_rows(raw_key, start, stop)

    def read(self, key: str) -> np.ndarray:
        """Tensor `key` as a new array owned by the caller, read with plain file reads where the format allows,
        so streaming through a large checkpoint keeps about one tensor resident (a memory-mapped view would
        leave every page it touched in the process's resident set)."""
        out = np.empty(self.shape(key), self.dtype(key))
        self.read_into(key, out)
        return out


def find_weights(
    path_or_repo_id: str | os.PathLike, *, prefer: str | None = None, **hub: Any
) -> tuple[str, str, bool, str]:
    """The weight file a directory or Hub repository offers, in Hugging Face's lookup order.

    Args:
        prefer: a kind to look for first: "safetensors", "bin", "h5" or "msgpack".
        **hub: `revision`, `cache_dir`, `local_files_only`, `token`, as `open_checkpoint` takes them.
    Returns:
        (file name, kind, is an index, local path).
    Raises:
        CheckpointError: no weight file at all (the message lists the names looked for).
    """
    if prefer is not None and prefer not in _KINDS:
        raise ValueError(f"prefer must be one of {', '.join(_KINDS)} or None, got {prefer!r}")
    order = sorted(WEIGHT_FILES, key=lambda entry: entry[1] != prefer)
    for name, kind, is_index in order:
        local = resolve_file(path_or_repo_id, name, required=False, **hub)
        if local is not None:
            return name, kind, is_index, local
    raise CheckpointError(
        f"{path_or_repo_id} holds no weights: none of {', '.join(name for name, _, _ in WEIGHT_FILES)} found"
    )


def open_checkpoint(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    prefer: str | None = None,
) -> CanonicalCheckpoint:
    """Open the weights of a local directory or Hugging Face Hub repository as canonical NumPy arrays.

    Files are looked up in Hugging Face's order (FORMATS.md §1): `model.safetensors`, its index,
    `pytorch_model.bin`, its index, `tf_model.h5`, its index, `flax_model.msgpack`, its index; `prefer`
    moves one kind to the front. TF- and Flax-layout files (including safetensors whose metadata says
    "tf" or "flax") are translated through the family's table, which needs the directory's config.json.

    Args:
        path_or_repo_id: a directory, or a Hub id such as "gpt2".
        revision, cache_dir, local_files_only, token: passed to the Hub download.
        prefer: "safetensors", "bin", "h5" or "msgpack" to try first.
    Returns:
        A `CanonicalCheckpoint`.
    Raises:
        CheckpointError (an OSError): no weights, a missing shard, a truncated or corrupt file.
        ValueError: an unknown model_type, or tensor names the family's table does not know.
        ImportError: a `.bin` file without torch, an `.h5` file outside h5py's default layout without h5py.
    """
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    name, kind, is_index, local = find_weights(path_or_repo_id, prefer=prefer, **hub)
    config_file = resolve_file(path_or_repo_id, "config.json", required=False, **hub)
    config = _read_config(config_file) if config_file else None

    open_file = _OPENERS[kind]
    if is_index:
        weight_map, _ = read_index(local, check_files=False)
        shard_paths = {
            shard: resolve_file(path_or_repo_id, shard, **hub) for shard in sorted(set(weight_map.values()))
        }
        index_prefix = _index_prefix(weight_map, local, open_file, shard_paths)
        source = ShardedFiles(
            local, open_file, shard_paths,
            index_key=(lambda key: index_prefix + key) if index_prefix else None,
        )
        files = [local, *source.shard_paths.values()]
        first = source.shards[source.shard_names[0]]
    else:
        source = open_file(local)
        files = [local]
        first = source
    source_format = _source_format(kind, first)
    if source_format == "pt":
        entries = {key: (source, key, IDENTITY) for key in source}
    else:
        entries = _translate_source(source, source_format, kind, config, local)
    return CanonicalCheckpoint(
        entries, source_format=source_format, weights_name=name, files=files, config=config, config_file=config_file
    )


def _read_config(config_file: str) -> Any:
    from ..configuration import AutoConfig

    return AutoConfig.from_pretrained(config_file)


def _source_format(kind: str, first_file: Any) -> str:
    if kind == "safetensors":
        fmt = first_file.format
        if fmt not in ("pt", "tf", "flax"):
            raise CheckpointError(
                f"{first_file.path} has safetensors format {fmt!r}; twinformers reads 'pt', 'tf' and 'flax'"
            )
        return fmt
    return {"bin": "pt", "h5": "tf", "msgpack": "flax"}[kind]


def _index_prefix(
    weight_map: Mapping[str, str], index_path: str, open_file: Callable[[str], Any], shard_paths: Mapping[str, str]
) -> str:
    """TF indexes key tensors by `<keras model name>/<name>` while the shards store `<name>` (FORMATS.md
    §8); returns that `<keras model name>/` (empty for the other frameworks)."""
    first_shard = open_file(shard_paths[sorted(set(weight_map.values()))[0]])
    if all(key in weight_map for key in first_shard):
        return ""
    heads = {key.split("/", 1)[0] for key in weight_map}
    if len(heads) == 1 and all("/" in key for key in weight_map):
        return heads.pop() + "/"
    raise CheckpointError(f"{index_path} lists tensor names its shards do not contain")


def _open_safetensors(path: str) -> SafetensorsFile:
    return SafetensorsFile(path)


_OPENERS: dict[str, Callable[[str], Any]] = {
    "safetensors": _open_safetensors,
    "bin": TorchBinFile,
    "h5": H5File,
    "msgpack": MsgpackFile,
}


def _translate_source(source: Mapping, source_format: str, kind: str, config: Any, path: str) -> dict:
    """Canonical key → (source, stored name, transform) for a TF- or Flax-layout file, via the family table."""
    if config is None:
        raise CheckpointError(f"{path} holds {source_format}-layout weights; translating them needs its config.json")
    family = family_of(config)
    backend = "tf_h5" if source_format == "tf" else "flax"
    # Flax-format safetensors join the param path with "." (FORMATS.md §6); the msgpack tree with "/".
    stored = {(name.replace(".", "/") if backend == "flax" else name): name for name in source}
    head = head_of(config)
    plan = plan_from_backend(family, backend, stored, head=head)
    return {key: (source, stored[name], transform) for name, (key, transform) in plan.items()}
