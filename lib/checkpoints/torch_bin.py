"""`pytorch_model.bin`: a `torch.save` zip of a plain dict of tensors, read with `weights_only=True` and
memory-mapped (needs torch), and written from `specs` and a `fetch(name)` callback.
"""


import io
import os
import pickle
import sys
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
        tensor = self._tensors[key].detach()
        if tensor.dtype == self._torch.bfloat16:
            # NumPy has no bfloat16 of its own: reinterpret the same bits as ml_dtypes.bfloat16 (no copy).
            return tensor.view(self._torch.int16).numpy().view(bfloat16_dtype())
        return tensor.numpy()


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
    if name not in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"):
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
