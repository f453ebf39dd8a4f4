"""`pytorch_model.bin`: a `torch.save` zip of a plain dict of tensors, read without torch where the pickle holds
only contiguous tensors (otherwise with `torch.load(weights_only=True)`, memory-mapped), and written from
`specs` and a `fetch(name)` callback.
"""


import collections
import io
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .files import CheckpointError, Fetch, Specs, TensorFile, _check_specs, _write_via, bfloat16_dtype, numpy_dtype


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
        if os.path.isfile(self.path) and (records := _read_zip_pickle(self.path)) is not None:
            # No torch needed (importing it alone is ~230 MB resident, 0.46x of GPT-2 124M).
            self._torch = None
            self._specs = {key: (dtype, shape) for key, (dtype, shape, _) in records.items()}
            self._offsets = {key: offset for key, (_, _, offset) in records.items()}
            return
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
                f"corrupt or its pickle needs more than tensors): {_first_line(err)}"
            ) from err
        if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
        ):
            raise CheckpointError(f"{self.path} does not hold a plain dict of named tensors")
        self._torch = torch
        self._tensors = state_dict
        self._specs = {k: (_torch_numpy_dtype(v.dtype, self.path, k), tuple(v.shape)) for k, v in state_dict.items()}
        self._offsets = _file_offsets(torch, self.path, state_dict)

    def read_into(self, key: str, out: np.ndarray) -> None:
        """Copy tensor `key` into `out` with plain file reads where the file allows it (a contiguous tensor of
        a zip-format file), so no page of the memory map stays resident; otherwise from the map."""
        self._check_out(key, out)
        if key not in self._offsets:
            np.copyto(out, self[key])
            return
        with open(self.path, "rb") as f:
            f.seek(self._offsets[key])
            if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise CheckpointError(f"{self.path} ended while reading {key!r}")

    def can_read_rows(self, key: str) -> bool:
        return key in self._offsets and len(self._specs[key][1]) > 0

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` of `key` with plain file reads (see `can_read_rows`)."""
        dtype, shape = self._specs[key]
        out = np.empty((stop - start, *shape[1:]), dtype)
        with open(self.path, "rb") as f:
            f.seek(self._offsets[key] + start * out[:1].nbytes)
            if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise CheckpointError(f"{self.path} ended while reading {key!r}")
        return out

    def _read(self, key: str) -> np.ndarray:
        if self._torch is None:
            out = np.empty(self._specs[key][1], self._specs[key][0])
            self.read_into(key, out)
            return out
        tensor = self._tensors[key].detach()
        if tensor.dtype == self._torch.bfloat16:
            # NumPy has no bfloat16 of its own: reinterpret the same bits as ml_dtypes.bfloat16 (no copy).
            return tensor.view(self._torch.int16).numpy().view(bfloat16_dtype())
        return tensor.numpy()


_STORAGE_DTYPES = {  # torch's typed-storage class names, as torch.save still pickles them: the dtypes a .bin may hold
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16", "DoubleStorage": "float64",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}


class _TensorRecord(tuple):
    """(storage key, dtype name, storage offset, shape, stride) of one pickled tensor."""


def _rebuild_tensor(storage: tuple[str, str], storage_offset: int, size: Any, stride: Any, *_: Any) -> _TensorRecord:
    return _TensorRecord((storage[0], storage[1], storage_offset, tuple(size), tuple(stride)))


class _WeightsUnpickler(pickle.Unpickler):
    """The pickle of a dict of tensors, with each tensor as a `_TensorRecord`: any other global refuses."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain dict of tensors")

    def persistent_load(self, pid: Any) -> tuple[str, str]:
        storage = isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
        if not (storage and pid[1] in _STORAGE_DTYPES.values()):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return str(pid[2]), pid[1]  # (storage key, dtype name)


def _read_zip_pickle(path: str) -> dict[str, tuple[np.dtype, tuple[int, ...], int]] | None:
    """Key → (dtype, shape, byte offset of its data) of a zip-format `torch.save` file whose pickle holds only
    a dict of C-contiguous tensors in uncompressed records, read without torch; None for any other file (the
    caller then asks torch, which also gives the errors)."""
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            infos = {info.filename: info for info in archive.infolist()}
            pickles = [name for name in infos if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                return None
            prefix = pickles[0][: -len("data.pkl")]
            with archive.open(pickles[0]) as f:
                state_dict = _WeightsUnpickler(f).load()
            if not isinstance(state_dict, dict):
                return None
            records = {}
            for key, record in state_dict.items():
                if not isinstance(key, str) or not isinstance(record, _TensorRecord):
                    return None
                storage, dtype_name, storage_offset, shape, stride = record
                info = infos.get(f"{prefix}data/{storage}")
                if info is None or info.compress_type != zipfile.ZIP_STORED:
                    return None
                dtype = numpy_dtype(dtype_name)
                contiguous = [int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape))]
                if any(n > 1 and a != b for n, a, b in zip(shape, stride, contiguous)):
                    return None
                start = storage_offset * dtype.itemsize
                if start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > info.file_size:
                    return None
                raw.seek(info.header_offset)
                header = raw.read(30)  # the local file header: its name and extra field lengths sit at 26 and 28
                name_length, extra_length = struct.unpack("<HH", header[26:30])
                records[key] = (dtype, tuple(shape), info.header_offset + 30 + name_length + extra_length + start)
            return records
    except (zipfile.BadZipFile, pickle.UnpicklingError, ValueError, TypeError, EOFError, struct.error,
            AttributeError, IndexError, KeyError):
        return None


def _file_offsets(torch: Any, path: str, state_dict: Mapping[str, Any]) -> dict[str, int]:
    """Key → byte offset in the file of each contiguous tensor's data, for plain reads.

    `torch.load(mmap=True)` maps the whole file once and gives each storage the address of its zip record
    (stored uncompressed), so address minus record offset is the same map base for every storage; the
    lowest address belongs to the lowest record. Returns {} for files that do not check out (legacy format).
    """
    try:
        reader = torch._C.PyTorchFileReader(path)
        records = [reader.get_record_offset(name) for name in reader.get_all_records() if "data/" in name]
    except Exception:  # a legacy (non-zip) file, or a torch without the reader
        return {}
    addresses = {key: tensor.untyped_storage().data_ptr() for key, tensor in state_dict.items()
                 if tensor.untyped_storage().nbytes() > 0}
    if not records or not addresses:
        return {}
    base = min(addresses.values()) - min(records)
    known = set(records)
    if any(address - base not in known for address in addresses.values()):
        return {}
    return {
        key: addresses[key] - base + tensor.storage_offset() * tensor.element_size()
        for key, tensor in state_dict.items() if key in addresses and tensor.is_contiguous()
    }


def _torch_numpy_dtype(dtype: Any, path: str, key: str) -> np.dtype:
    name = str(dtype).removeprefix("torch.")
    if name not in _STORAGE_DTYPES.values():  # the same dtypes as the torch-free reader
        raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {name}")
    return numpy_dtype(name)


def write_pytorch_bin(path: str | os.PathLike, specs: Specs, fetch: Fetch, aliases: Mapping[str, str] = {}) -> None:  # noqa: B006
    """Write `pytorch_model.bin` as `torch.save` of a dict of tensors does (Hugging Face's `.bin`), one tensor in
    memory at a time.

    The zip is written with torch's own record writer: first the pickle, built from `specs` alone over
    tensors whose storage is never touched (`torch.empty`: pages are only reserved), then each storage's bytes
    from `fetch`, one tensor at a time. Memory stays at the largest tensor, as for the other writers.

    Args:
        aliases: key → key it shares storage with (the tied `lm_head.weight` → `transformer.wte.weight`);
            stored once, as torch.save does for tied parameters.
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError("writing pytorch_model.bin needs PyTorch: pip install 'twinformers[pt]'") from err
    placeholders = {
        name: torch.empty(shape, dtype=_numpy_torch_dtype(torch, dtype, name))
        for name, (dtype, shape) in specs.items() if name not in aliases
    }
    state_dict = {name: placeholders[aliases.get(name, name)] for name in specs}  # the caller's order, tied included
    owners = {tensor.untyped_storage()._cdata: name for name, tensor in placeholders.items()}
    keys: dict[str, str] = {}  # tensor name -> its storage record's key, in pickling order

    def persistent_id(obj: Any) -> Any:
        """torch.save's reference to a storage: ("storage", storage class, record key, location, elements)."""
        if not isinstance(obj, torch.storage.TypedStorage):
            return None
        key = keys.setdefault(owners[obj._untyped_storage._cdata], str(len(keys)))
        return ("storage", getattr(torch, obj._pickle_storage_type()), key, "cpu", obj._size())

    def write(f: Any) -> None:
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=2)
        pickler.persistent_id = persistent_id
        pickler.dump(state_dict)
        writer = torch._C.PyTorchFileWriter(f)
        writer.write_record("data.pkl", buffer.getvalue(), len(buffer.getvalue()))
        writer.write_record("byteorder", sys.byteorder, len(sys.byteorder))
        for name, key in keys.items():
            data = np.ascontiguousarray(_check_specs(specs, fetch, name)).reshape(-1).view(np.uint8)
            writer.write_record(f"data/{key}", torch.from_numpy(data).untyped_storage(), data.nbytes)  # no copy
            del data
        writer.write_end_of_file()

    _write_via(path, write)


def _numpy_torch_dtype(torch: Any, dtype: np.dtype, name: str) -> Any:
    """The torch dtype of a NumPy one (ml_dtypes' bfloat16 included)."""
    dtype = np.dtype(dtype)
    torch_dtype = torch.bfloat16 if dtype == bfloat16_dtype() else getattr(torch, dtype.name, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise CheckpointError(f"tensor {name!r} has dtype {dtype}, which pytorch_model.bin cannot hold")
    return torch_dtype


def _first_line(err: BaseException) -> str:
    """The first line of an error message; the error's type when the message is empty (an empty file)."""
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__
