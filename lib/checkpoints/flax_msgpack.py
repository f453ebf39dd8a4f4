"""`flax_model.msgpack`: `flax.serialization.to_bytes(params)`, parsed and written here with the `msgpack`
package and NumPy only, leaves read straight out of a memory map.
"""


import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .files import CheckpointError, Fetch, Specs, TensorFile, _check_specs, _write_via, iter_blocks, numpy_dtype

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
