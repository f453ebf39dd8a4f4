"""Checkpoint files, framework-free: locating them, safetensors read/write, shards and index files.

Everything here works on NumPy arrays. Safetensors files are memory-mapped and read tensor by tensor, so a
reader never holds more than the tensor it was asked for; writers stream tensor by tensor and write to a
temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "SAFE_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "PT_WEIGHTS_NAME",
    "PT_WEIGHTS_INDEX_NAME",
    "TF_WEIGHTS_NAME",
    "TF_WEIGHTS_INDEX_NAME",
    "FLAX_WEIGHTS_NAME",
    "FLAX_WEIGHTS_INDEX_NAME",
    "GENERATION_CONFIG_NAME",
    "CheckpointError",
    "resolve_file",
    "atomic_write_text",
    "atomic_output",
    "SafetensorsFile",
    "ShardedFiles",
    "ShardedSafetensors",
    "iter_blocks",
    "check_array",
    "open_safetensors",
    "write_safetensors",
    "parse_size",
    "plan_shards",
    "shard_file_name",
    "read_index",
    "write_index",
    "save_sharded",
    "bfloat16_dtype",
]

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
TF_WEIGHTS_NAME = "tf_model.h5"
TF_WEIGHTS_INDEX_NAME = "tf_model.h5.index.json"
FLAX_WEIGHTS_NAME = "flax_model.msgpack"
FLAX_WEIGHTS_INDEX_NAME = "flax_model.msgpack.index.json"
GENERATION_CONFIG_NAME = "generation_config.json"

# Safetensors `__metadata__["format"]` values Hugging Face accepts on load.
SAFETENSORS_FORMATS = ("pt", "tf", "flax", "mlx")


class CheckpointError(OSError):
    """A checkpoint file is missing, malformed or inconsistent; the message names the path."""


# --------------------------------------------------------------------------------------------- resolving
def resolve_file(
    path_or_repo_id: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    required: bool = True,
) -> str | None:
    """Local path of `filename` in a directory or a Hugging Face Hub repository.

    A local directory is used as is. Anything else is treated as a Hub id and fetched through
    `huggingface_hub` (which honours `HF_HUB_OFFLINE`, `HF_HOME` and `cache_dir`).

    Returns:
        The file's path, or None when it does not exist and `required` is False.
    Raises:
        CheckpointError: the file does not exist (and `required`), or the Hub could not be reached.
    """
    path_or_repo_id = str(path_or_repo_id)
    if os.path.isdir(path_or_repo_id):
        candidate = os.path.join(path_or_repo_id, filename)
        if os.path.isfile(candidate):
            return candidate
        if required:
            raise CheckpointError(f"{path_or_repo_id} has no file named {filename}")
        return None
    if os.path.exists(path_or_repo_id):
        raise CheckpointError(f"{path_or_repo_id} is a file; expected a checkpoint directory or a Hub id")
    if not _looks_like_repo_id(path_or_repo_id):
        raise CheckpointError(f"{path_or_repo_id} is neither an existing directory nor a valid Hub repository id")
    try:
        import huggingface_hub
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError as err:  # pragma: no cover - huggingface_hub is a core dependency
        raise CheckpointError("loading from the Hub needs `pip install huggingface_hub`") from err
    try:
        return huggingface_hub.hf_hub_download(
            path_or_repo_id, filename, revision=revision, cache_dir=cache_dir,
            local_files_only=local_files_only, token=token,
        )
    except EntryNotFoundError:
        if required:
            raise CheckpointError(f"Hub repository {path_or_repo_id} has no file named {filename}") from None
        return None
    except LocalEntryNotFoundError as err:
        if not required and local_files_only:
            return None
        raise CheckpointError(
            f"could not find {filename} for {path_or_repo_id} in the local cache and could not reach the Hub "
            f"(offline or HF_HUB_OFFLINE=1?): {err}"
        ) from err
    except Exception as err:  # RepositoryNotFoundError, RevisionNotFoundError, HTTP errors
        raise CheckpointError(f"could not fetch {filename} from Hub repository {path_or_repo_id}: {err}") from err


def _looks_like_repo_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", name) is not None and ".." not in name


# --------------------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside `path`; it replaces `path` only if the block finishes without error."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------------------------- dtypes
def bfloat16_dtype() -> np.dtype:
    """NumPy's bfloat16 (from `ml_dtypes`, which JAX and TensorFlow also use)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


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
class SafetensorsFile(Mapping):
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
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
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
            self._entries[key] = (dtype, shape, start, end)
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

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._entries:
            raise KeyError(f"{self.path} has no tensor {key!r}")
        dtype, shape, start, end = self._entries[key]
        return self._buffer()[start:end].view(dtype).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def dtype(self, key: str) -> np.dtype:
        return self._entries[key][0]

    def nbytes(self, key: str) -> int:
        dtype, shape, _, _ = self._entries[key]
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    def read_into(self, key: str, out: np.ndarray) -> None:
        """Read tensor `key` straight into the C-contiguous array `out` (same dtype and shape) with plain
        file reads: no memory map stays resident, so loading needs ~1× the checkpoint in memory."""
        if key not in self._entries:
            raise KeyError(f"{self.path} has no tensor {key!r}")
        dtype, shape, start, end = self._entries[key]
        if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(
                f"{self.path}: cannot read {key!r} {dtype}{list(shape)} into a {out.dtype}{list(out.shape)} array"
            )
        with open(self.path, "rb") as f:
            f.seek(self._data_start + start)
            if f.readinto(out.reshape(-1).view(np.uint8)) != end - start:
                raise CheckpointError(f"{self.path} ended while reading {key!r}")

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` (first axis) of tensor `key`, read with plain file reads, so a converter can
        stream a tensor larger than the memory it wants to use."""
        dtype, shape, begin, _ = self._entries[key]
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        out = np.empty((stop - start, *shape[1:]), dtype)
        with open(self.path, "rb") as f:
            f.seek(self._data_start + begin + start * row_bytes)
            if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise CheckpointError(f"{self.path} ended while reading {key!r}")
        return out


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


# --------------------------------------------------------------------------------------------- writing
def check_array(array: np.ndarray, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        raise ValueError(
            f"tensor {name!r} is {array.dtype}{list(array.shape)}, expected {np.dtype(dtype)}{list(shape)}"
        )
    return array


def iter_blocks(
    specs: Mapping[str, tuple[np.dtype, tuple[int, ...]]], fetch: Callable[[str], Any], name: str
) -> Iterator[np.ndarray]:
    """The tensor as row blocks: `fetch` may return one array or an iterator of blocks (see
    `write_safetensors`); every block is checked against the spec."""
    dtype, shape = specs[name]
    value = fetch(name)
    if not isinstance(value, Iterator):
        yield check_array(np.asarray(value), name, dtype, shape)
        return
    rows = 0
    for block in value:
        block = np.ascontiguousarray(block)
        if block.dtype != np.dtype(dtype) or block.shape[1:] != tuple(shape[1:]):
            raise ValueError(f"a block of {name!r} is {block.dtype}{list(block.shape)}, expected rows of "
                             f"{np.dtype(dtype)}{list(shape)}")
        rows += block.shape[0]
        yield block
    if rows != shape[0]:
        raise ValueError(f"tensor {name!r} got {rows} rows, expected {shape[0]}")


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


# --------------------------------------------------------------------------------------------- shards
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """`"5GB"` → 5·10⁹ bytes (decimal, as Hugging Face); `"2GiB"` → 2·2³⁰; ints pass through."""
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"max_shard_size must be positive, got {size}")
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", str(size).upper())
    if not match:
        raise ValueError(f"max_shard_size {size!r} is not a size such as '5GB', '500MB' or an int")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"])


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
    stem = weights_name.split(".", 1)[0]
    ext = weights_name.split(".", 1)[1]
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
    pattern = re.compile(rf"{re.escape(stem)}-\d{{5}}-of-\d{{5}}\.{re.escape(ext)}$")
    for name in os.listdir(save_directory):
        stale = pattern.fullmatch(name) or name in (weights_name, index_name)
        if stale and name not in written:
            os.remove(os.path.join(save_directory, name))
    return written
