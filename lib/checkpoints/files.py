"""Checkpoint files, framework-free: file names, locating files locally or on the Hub, atomic writes, dtypes,
and the base of the lazy tensor-file readers.

Everything here works on NumPy arrays. Writers write to a temporary file that is renamed into place only when
complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import mmap
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import CheckpointError, InputError

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
    `huggingface_hub` (which honours `HF_HUB_OFFLINE`, `HF_HOME` and `cache_dir`). The first Hub look-up of the
    process is one request without retries (HF_HUB_ETAG_TIMEOUT, 10 s by default); if the Hub does not answer
    it, the rest of the process reads the Hub cache only, so a mistyped local path fails in seconds instead of
    retrying every file name with back-off.

    Returns:
        The file's path, or None when it does not exist and `required` is False.
    Raises:
        CheckpointError: the file does not exist (and `required`); or the name is neither a local directory
        nor a repository the Hub (or, offline, the Hub cache) has.
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
        from huggingface_hub import constants
        from huggingface_hub.utils import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as err:  # pragma: no cover - huggingface_hub is a core dependency
        raise CheckpointError("loading from the Hub needs `pip install huggingface_hub`") from err
    offline = local_files_only or constants.HF_HUB_OFFLINE or not _hub_answers(
        huggingface_hub, HfHubHTTPError, path_or_repo_id, filename, revision, token)
    neither = f"{path_or_repo_id} is neither a local directory nor"
    try:
        return huggingface_hub.hf_hub_download(
            path_or_repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=offline,
            token=token,
        )
    except LocalEntryNotFoundError as err:  # first: a subclass of EntryNotFoundError in huggingface_hub ≥ 1
        if not _HUB_STATE:
            _HUB_STATE["unreachable"] = str(err)
        if not required and _in_hub_cache(path_or_repo_id, cache_dir, constants.HF_HUB_CACHE):
            return None  # a cached repository without this (optional) file
        if local_files_only:
            why = "local_files_only is set (--local-files-only)"
        elif constants.HF_HUB_OFFLINE:
            why = "HF_HUB_OFFLINE is set"
        else:
            why = f"the Hub could not be reached ({' '.join(_HUB_STATE['unreachable'].split())})"
        raise CheckpointError(
            f"{neither} reachable on the Hub: {why}, and the Hub cache has no {filename} for it"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{neither} a model repository on the Hub (not found, or private)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"Hub repository {path_or_repo_id} has no revision {revision!r}") from None
    except EntryNotFoundError:
        if required:
            raise CheckpointError(f"Hub repository {path_or_repo_id} has no file named {filename}") from None
        return None
    except Exception as err:  # HTTP errors
        raise CheckpointError(f"could not fetch {filename} from Hub repository {path_or_repo_id}: {err}") from err


# resolve_file's Hub options, as `from_pretrained` methods take them among other keyword arguments.
HUB_ARGUMENTS = ("revision", "cache_dir", "local_files_only", "token")


def pop_hub_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the Hub options (`revision`, `cache_dir`, `local_files_only`, `token`) out of `kwargs`, for
    `resolve_file`; what is left are the caller's own keyword arguments."""
    return {name: kwargs.pop(name) for name in HUB_ARGUMENTS if name in kwargs}


# The first Hub look-up's outcome, for the rest of the process: {"reachable": ""} or {"unreachable": why}.
_HUB_STATE: dict[str, str] = {}


def _hub_answers(
    hub: Any, http_error: type[Exception], repo_id: str, filename: str, revision: str | None, token: str | bool | None
) -> bool:
    """Whether the Hub answers HTTP, asked once per process with a single request (no retries): any HTTP
    status counts as an answer; a connection error or timeout does not."""
    if not _HUB_STATE:
        url = hub.hf_hub_url(repo_id, filename, revision=revision)
        try:
            hub.get_hf_file_metadata(url, token=token)
            _HUB_STATE["reachable"] = ""
        except http_error:
            _HUB_STATE["reachable"] = ""  # 401/404/...: the server answered
        except Exception as err:  # the transport's connection and timeout errors
            _HUB_STATE["unreachable"] = f"{type(err).__name__}: {err}"
    return "reachable" in _HUB_STATE


def _in_hub_cache(repo_id: str, cache_dir: str | os.PathLike | None, default_cache: str) -> bool:
    """Whether the Hub cache holds any snapshot of `repo_id` (its layout: models--{org}--{name}/snapshots)."""
    folder = "models--" + repo_id.replace("/", "--")
    return os.path.isdir(os.path.join(os.fspath(cache_dir or default_cache), folder, "snapshots"))


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


@contextlib.contextmanager
def staged_directory(
    path: str | os.PathLike, *, keep: bool | Callable[[str], bool] = False, overwrite: bool = True
) -> Iterator[str]:
    """A fresh directory beside `path` to write into; when the block succeeds it takes `path`'s place in one
    atomic exchange, so a kill at any moment leaves either the complete previous directory or the complete new one.

    Every writer of a checkpoint, tokenizer or conversion goes through here. A failure inside the block removes the
    staging directory and leaves `path` untouched. A kill may leave a hidden `.<name>.*.partial` directory beside
    `path` (never a partial `path`).

    Args:
        path: the directory to create or replace (a symlink is followed: its target is replaced).
        keep: entries of an existing `path` that the new directory keeps when the block did not write the same
            name: True for all (saving into a folder that holds other files), a predicate on the entry name, or
            False (replace the directory as a whole). Kept files are hard links where the filesystem allows, so
            nothing is copied.
        overwrite: if False, an existing `path` when the block ends is a FileExistsError.
    Raises:
        InputError: `path` exists and is not a directory.
    """
    path = os.path.realpath(os.fspath(path))
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InputError(f"save_directory {path!r} is a file, expected a directory")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=parent)
    try:
        yield staging
        _share_modes(staging, path)
        if os.path.isdir(path):
            if not overwrite:
                raise FileExistsError(f"{path} appeared while it was being written; pass force=True to replace it")
            if keep:
                written = set(os.listdir(staging))
                for name in os.listdir(path):
                    if name not in written and (keep is True or keep(name)):
                        _link_tree(os.path.join(path, name), os.path.join(staging, name))
            _fsync_directory(staging)
            _exchange(staging, path)  # `staging` now names the previous directory
        else:
            _fsync_directory(staging)
            os.replace(staging, path)
        _fsync_directory(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _share_modes(staging: str, path: str) -> None:
    """mkdtemp and mkstemp make private entries; give them the modes a plain `open` and `mkdir` would."""
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.isdir(path) else 0o777 & ~umask
    os.chmod(staging, mode)
    for root, dirs, files in os.walk(staging):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), 0o666 & ~umask)


def _link_tree(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fsync_directory(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> None:
    """Swap two directories in one step (Linux `renameat2(RENAME_EXCHANGE)`). Where the kernel or filesystem lacks
    it, fall back to two renames: a kill between them leaves the previous directory as `a`."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, f"cannot swap {a} into place: {os.strerror(code)}", b)
    aside = tempfile.mkdtemp(prefix=f".{os.path.basename(b)}.", suffix=".old", dir=os.path.dirname(b))
    os.replace(b, os.path.join(aside, "previous"))
    os.replace(a, b)
    os.replace(os.path.join(aside, "previous"), a)
    os.rmdir(aside)


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - platforms without a C library handle
        return None


# --------------------------------------------------------------------------------------------- dtypes
def bfloat16_dtype() -> np.dtype:
    """NumPy's bfloat16 (from `ml_dtypes`, which JAX and TensorFlow also use)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)





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


def scratch_array(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialized C-contiguous array in pages of its own (an anonymous memory map), given back to the OS
    the moment it is freed: for temporaries while loading (see `release_free_memory`)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype).reshape(shape)


def release_free_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc `malloc_trim`; nothing elsewhere).

    Once glibc has freed one big block it serves blocks up to 32 MB from its heap, and what the frameworks
    free there between two tensors stays in the resident set: loading a GPT-2 checkpoint tensor by tensor
    peaked about 0.05× of the checkpoint higher without trimming (benchmarks/bench_load.py).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


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




# --------------------------------------------------------------------------------------------- sharded files
def _write_via(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Run `write(file_object)` on a temporary file beside `path`, renamed into place only on success."""
    with atomic_output(path, mode) as f:
        write(f)


def _check_specs(specs: Specs, fetch: Fetch, name: str) -> np.ndarray:
    """The whole tensor, for writers that need it at once: blocks are copied into it as they come, so memory
    is the tensor plus one block (joining a list of blocks held the tensor twice)."""
    dtype, shape = specs[name]
    blocks = iter_blocks(specs, fetch, name)
    first = next(blocks)
    if first.shape == tuple(shape):  # one block: the tensor itself
        for _ in blocks:  # none left; runs iter_blocks' row count check
            pass
        return first
    whole = scratch_array(shape, dtype)  # its own pages (the C heap would keep a freed one up to 32 MB)
    row = 0
    for block in itertools.chain([first], blocks):
        if row + block.shape[0] > shape[0]:
            raise ValueError(f"tensor {name!r} got more than the {shape[0]} rows expected")
        whole[row:row + block.shape[0]] = block
        row += block.shape[0]
    return whole
