"""Where each weight of a `tf_model.h5` lies, read without h5py: the subset of HDF5 that h5py writes by default.

Importing h5py and opening a file with it keeps ~13 MB resident (its extension modules, libhdf5 and its caches),
which a `.safetensors` load does not pay. h5py's default ("earliest") format is simple enough to walk with
`struct`: a version-0/1 superblock, version-1 object headers, groups as symbol tables (a version-1 B-tree of
symbol-table nodes, names in a local heap), compact attributes (fixed-length or variable-length strings, the
latter in a global heap) and contiguous datasets. `keras_weights` finds every dataset's dtype, shape and byte
offset there; anything else (version-2 object headers, dense or shared messages, chunked, compact or unwritten
datasets, soft links, a damaged file) returns None and the caller opens the file with h5py, which reports what
is wrong. HDF5 File Format Specification version 3: https://docs.hdfgroup.org/hdf5/latest/_f_m_t3.html
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Object-header message types read here (spec IV.A.2).
_DATASPACE, _DATATYPE, _FILTERS, _LAYOUT, _ATTRIBUTE, _CONTINUATION, _SYMBOL_TABLE = 0x1, 0x3, 0xB, 0x8, 0xC, 0x10, 0x11
_LINK_INFO, _LINK, _ATTRIBUTE_INFO = 0x2, 0x6, 0x15  # new-style groups and dense attributes: not read here
_MESSAGE_SHARED = 0x02  # message flag: the message lives elsewhere (a shared datatype or dataspace)
_MAX_BTREE_DEPTH = 32


class _Unsupported(Exception):
    """A structure outside the subset read here, or a damaged file: the caller falls back to h5py."""


def keras_weights(path: str | os.PathLike) -> dict[str, tuple[np.dtype, tuple[int, ...], int]] | None:
    """The weights of a Keras-2 weights file as `H5File` names them: key → (dtype, shape, byte offset of the
    contiguous data), or None where the file is not in the subset read here (h5py must read it).

    The layout is `H5File._index`'s (unsharded: root `layer_names` → groups listing `weight_names`; sharded:
    `layer_names` are the dataset paths); any missing piece also returns None, so the errors on a bad file
    stay h5py's and `H5File`'s own.
    """
    try:
        with open(path, "rb") as f:
            reader = _Reader(f, os.fstat(f.fileno()).st_size)
            layer_names = reader.strings(reader.root, "layer_names")
            if not layer_names:
                return None
            weights: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}
            for layer in layer_names:
                node = reader.lookup(reader.root, layer)
                if reader.is_dataset(node):  # sharded layout: layer_names are the variable names
                    weights[layer] = reader.dataset(node)
                    continue
                for weight_name in reader.strings(node, "weight_names"):
                    # Drop the Keras model name, as `H5File._index` does.
                    weights[weight_name.split("/", 1)[-1]] = reader.dataset(reader.lookup(node, weight_name))
            return weights
    except (_Unsupported, struct.error, ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError):
        return None


class _Reader:
    """Object headers, groups, attributes and dataset layouts of one open file (addresses are file offsets)."""

    def __init__(self, f: Any, size: int) -> None:
        self.f, self.size = f, size
        superblock = self._find_superblock()
        version = self.read(superblock + 8, 1)[0]
        if version not in (0, 1):
            raise _Unsupported(f"superblock version {version}")
        self.offset_size, self.length_size = self.read(superblock + 13, 2)
        if self.offset_size not in (2, 4, 8) or self.length_size not in (2, 4, 8):
            raise _Unsupported("offset or length size")
        # After the fixed fields (24 bytes, 28 in version 1): the base address (every other address is relative
        # to it), the free-space, end-of-file and driver addresses, then the root group's symbol-table entry
        # (link name offset, object header address, ...).
        fields = superblock + (24 if version == 0 else 28)
        self.base = 0
        self.base = self.address(fields)
        self.root = self.address(fields + 5 * self.offset_size)
        self._headers: dict[int, list[tuple[int, int, bytes]]] = {}
        self._links: dict[int, dict[str, int]] = {}

    def _find_superblock(self) -> int:
        """The superblock is at 0 or after a user block of 512, 1024, 2048, ... bytes."""
        position = 0
        while position + len(_SIGNATURE) <= self.size:
            if self.read(position, len(_SIGNATURE)) == _SIGNATURE:
                return position
            position = 512 if position == 0 else 2 * position
        raise _Unsupported("no HDF5 signature")

    # ----------------------------------------------------------------------------------------- raw reads
    def read(self, position: int, count: int) -> bytes:
        if position < 0 or count < 0 or position + count > self.size:
            raise _Unsupported("a structure lies beyond the end of the file")
        self.f.seek(position)
        data = self.f.read(count)
        if len(data) != count:
            raise _Unsupported("short read")
        return data

    def unsigned(self, data: bytes, position: int, size: int) -> int:
        if position + size > len(data):
            raise _Unsupported("a field runs past its structure")
        return int.from_bytes(data[position:position + size], "little")

    def address(self, position: int) -> int:
        """A file address at `position`, made absolute; an undefined address (all ones) is unsupported."""
        value = int.from_bytes(self.read(position, self.offset_size), "little")
        if value == (1 << 8 * self.offset_size) - 1:
            raise _Unsupported("undefined address")
        return self.base + value

    # ----------------------------------------------------------------------------------------- object headers
    def messages(self, header: int) -> list[tuple[int, int, bytes]]:
        """(type, flags, body) of every message of the version-1 object header at `header`."""
        if header not in self._headers:
            prefix = self.read(header, 16)
            if prefix[0] != 1:
                raise _Unsupported(f"object header version {prefix[0]}")
            count = self.unsigned(prefix, 2, 2)
            blocks, seen, messages = [(header + 16, self.unsigned(prefix, 8, 4))], set(), []
            while blocks and len(messages) < count:
                start, length = blocks.pop(0)
                if start in seen:
                    raise _Unsupported("continuation loop")
                seen.add(start)
                block, position = self.read(start, length), 0
                while position + 8 <= length and len(messages) < count:
                    kind, size, flags = struct.unpack_from("<HHB", block, position)
                    body = block[position + 8:position + 8 + size]
                    if len(body) != size:
                        raise _Unsupported("message runs past its block")
                    if kind == _CONTINUATION:
                        blocks.append((self.base + self.unsigned(body, 0, self.offset_size),
                                       self.unsigned(body, self.offset_size, self.length_size)))
                    messages.append((kind, flags, body))
                    position += 8 + size
            self._headers[header] = messages
        return self._headers[header]

    def message(self, header: int, kind: int) -> bytes | None:
        found = [(flags, body) for k, flags, body in self.messages(header) if k == kind]
        if len(found) > 1 or (found and found[0][0] & _MESSAGE_SHARED):
            raise _Unsupported(f"message type {kind} repeated or shared")
        return found[0][1] if found else None

    # ----------------------------------------------------------------------------------------- groups
    def is_dataset(self, header: int) -> bool:
        return self.message(header, _LAYOUT) is not None

    def lookup(self, group: int, path: str) -> int:
        """The object header of `path` ("a/b/c", relative to `group`)."""
        for name in path.split("/"):
            if not name:
                raise _Unsupported(f"path {path!r}")
            group = self.links(group).get(name, -1)
            if group < 0:
                raise _Unsupported(f"no link {name!r}")
        return group

    def links(self, group: int) -> dict[str, int]:
        """Name → object header address of a symbol-table group's members."""
        if group not in self._links:
            self._links[group] = self._read_links(group)
        return self._links[group]

    def _read_links(self, group: int) -> dict[str, int]:
        kinds = {kind for kind, _, _ in self.messages(group)}
        if kinds & {_LINK_INFO, _LINK}:
            raise _Unsupported("new-style group")
        table = self.message(group, _SYMBOL_TABLE)
        if table is None:
            raise _Unsupported("not a group")
        tree = self.base + self.unsigned(table, 0, self.offset_size)
        heap = self.read(self.base + self.unsigned(table, self.offset_size, self.offset_size), 8 + 2 * self.length_size
                         + self.offset_size)
        if heap[:4] != b"HEAP":
            raise _Unsupported("bad local heap")
        heap_size = self.unsigned(heap, 8, self.length_size)
        names = self.read(self.base + self.unsigned(heap, 8 + 2 * self.length_size, self.offset_size), heap_size)
        links: dict[str, int] = {}
        for node in self._symbol_nodes(tree, 0):
            for name_offset, header in node:
                end = names.find(b"\0", name_offset)
                if end < 0:
                    raise _Unsupported("unterminated link name")
                links[names[name_offset:end].decode("utf-8")] = header
        return links

    def _symbol_nodes(self, node: int, depth: int) -> list[list[tuple[int, int]]]:
        """The (name offset, object header) entries of every symbol-table node under B-tree node `node`."""
        if depth > _MAX_BTREE_DEPTH:
            raise _Unsupported("B-tree too deep")
        head = self.read(node, 8 + 2 * self.offset_size)
        if head[:4] != b"TREE" or head[4] != 0:
            raise _Unsupported("bad group B-tree node")
        level, used = head[5], self.unsigned(head, 6, 2)
        # Keys (heap offsets, `length_size` bytes) alternate with children (addresses), a key first and last.
        stride = self.length_size + self.offset_size
        body = self.read(node + len(head), used * stride + self.length_size)
        children = [self.base + self.unsigned(body, i * stride + self.length_size, self.offset_size)
                    for i in range(used)]
        if level:
            return [entries for child in children for entries in self._symbol_nodes(child, depth + 1)]
        return [self._symbol_node(child) for child in children]

    def _symbol_node(self, node: int) -> list[tuple[int, int]]:
        head = self.read(node, 8)
        if head[:4] != b"SNOD" or head[4] != 1:
            raise _Unsupported("bad symbol-table node")
        entry_size = 2 * self.offset_size + 24  # name offset, header address, cache type, reserved, scratch pad
        count = self.unsigned(head, 6, 2)
        body = self.read(node + 8, count * entry_size)
        return [(self.unsigned(body, i * entry_size, self.offset_size),
                 self.base + self.unsigned(body, i * entry_size + self.offset_size, self.offset_size))
                for i in range(count)]

    # ----------------------------------------------------------------------------------------- attributes
    def strings(self, header: int, name: str) -> list[str]:
        """The string attribute `name` (scalar or one-dimensional) of an object, as a list."""
        if any(kind == _ATTRIBUTE_INFO for kind, _, _ in self.messages(header)):
            raise _Unsupported("dense attribute storage")
        for kind, flags, body in self.messages(header):
            if kind != _ATTRIBUTE:
                continue
            if flags & _MESSAGE_SHARED or body[0] not in (1, 2, 3) or (body[0] > 1 and body[1] & 0x3):
                raise _Unsupported("attribute message version or shared parts")
            sizes = struct.unpack_from("<HHH", body, 2)  # name (with its NUL), datatype, dataspace
            if body[0] == 1:  # version 1 pads each part to a multiple of 8 bytes
                sizes = tuple(-(-size // 8) * 8 for size in sizes)
            name_start = 8 if body[0] < 3 else 9
            type_start = name_start + sizes[0]
            space_start = type_start + sizes[1]
            if body[name_start:type_start].split(b"\0", 1)[0].decode("utf-8") == name:
                count = int(np.prod(self._shape(body[space_start:space_start + sizes[2]]), dtype=np.int64))
                return self._decode_strings(body[type_start:space_start], body[space_start + sizes[2]:], count)
        raise _Unsupported(f"no attribute {name!r}")

    def _decode_strings(self, datatype: bytes, data: bytes, count: int) -> list[str]:
        kind, size = datatype[0] & 0x0F, self.unsigned(datatype, 4, 4)
        if kind == 3:  # fixed-length strings, padded with NULs (or spaces)
            items = [data[i * size:(i + 1) * size] for i in range(count)]
            if len(data) < count * size:
                raise _Unsupported("attribute data too short")
            return [item.split(b"\0", 1)[0].decode("utf-8") for item in items]
        if kind == 9 and datatype[1] & 0x0F == 1:  # variable-length strings: length, then a global heap id
            item_size = 4 + self.offset_size + 4
            if len(data) < count * item_size:
                raise _Unsupported("attribute data too short")
            strings = []
            for i in range(count):
                start = i * item_size
                length = self.unsigned(data, start, 4)
                collection = self.base + self.unsigned(data, start + 4, self.offset_size)
                index = self.unsigned(data, start + 4 + self.offset_size, 4)
                strings.append(self._global_heap_object(collection, index)[:length].decode("utf-8"))
            return strings
        raise _Unsupported(f"attribute datatype class {kind}")

    def _global_heap_object(self, collection: int, index: int) -> bytes:
        head = self.read(collection, 8 + self.length_size)
        if head[:4] != b"GCOL":
            raise _Unsupported("bad global heap collection")
        size = self.unsigned(head, 8, self.length_size)
        heap, position = self.read(collection, size), len(head)
        object_head = 8 + self.length_size  # index, reference count, reserved, size
        while position + object_head <= size:
            object_index = self.unsigned(heap, position, 2)
            object_size = self.unsigned(heap, position + 8, self.length_size)
            if object_index == 0:  # free space: the end of the objects
                break
            if object_index == index:
                value = heap[position + object_head:position + object_head + object_size]
                if len(value) != object_size:
                    raise _Unsupported("global heap object runs past its collection")
                return value
            position += object_head + -(-object_size // 8) * 8
        raise _Unsupported("global heap object not found")

    # ----------------------------------------------------------------------------------------- datasets
    def _shape(self, dataspace: bytes) -> tuple[int, ...]:
        version, rank = dataspace[0], dataspace[1]
        if version == 1:
            start = 8
        elif version == 2 and dataspace[3] in (0, 1):  # scalar or simple (2 = null: no elements)
            start = 4
        else:
            raise _Unsupported(f"dataspace version {version}")
        return tuple(self.unsigned(dataspace, start + i * self.length_size, self.length_size) for i in range(rank))

    def _dtype(self, datatype: bytes) -> np.dtype:
        """IEEE floats and integers, either byte order; anything else is h5py's to map."""
        kind, bits, size = datatype[0] & 0x0F, datatype[1], self.unsigned(datatype, 4, 4)
        order = ">" if bits & 0x01 else "<"
        if kind == 0 and size in (1, 2, 4, 8) and not bits & 0x06:  # no padding bits
            precision = self.unsigned(datatype, 10, 2)
            if self.unsigned(datatype, 8, 2) != 0 or precision != 8 * size:
                raise _Unsupported("integer with offset or padding")
            return np.dtype(f"{order}{'i' if bits & 0x08 else 'u'}{size}")
        # Float properties: bit offset, precision, exponent location and size, mantissa location and size, bias.
        ieee = {2: (0, 16, 10, 5, 0, 10, 15), 4: (0, 32, 23, 8, 0, 23, 127), 8: (0, 64, 52, 11, 0, 52, 1023)}
        # Bit field: byte order (bit 0; bit 6 is VAX order), no padding bits (1-3), an implied leading mantissa
        # bit (bits 4-5 = 2); then the sign bit's position.
        if kind == 1 and size in ieee and bits & 0x7E == 0x20 and datatype[2] == 8 * size - 1:
            if struct.unpack_from("<HHBBBBI", datatype, 8) == ieee[size]:
                return np.dtype(f"{order}f{size}")
        raise _Unsupported(f"datatype class {kind}")

    def dataset(self, header: int) -> tuple[np.dtype, tuple[int, ...], int]:
        """(dtype, shape, offset) of a contiguous, unfiltered dataset whose data the file holds."""
        dataspace, datatype = self.message(header, _DATASPACE), self.message(header, _DATATYPE)
        layout = self.message(header, _LAYOUT)
        if dataspace is None or datatype is None or layout is None or self.message(header, _FILTERS) is not None:
            raise _Unsupported("not a plain dataset")
        dtype, shape = self._dtype(datatype), self._shape(dataspace)
        if layout[0] not in (3, 4) or layout[1] != 1:  # layout class 1: contiguous
            raise _Unsupported("not a contiguous layout")
        offset = self.unsigned(layout, 2, self.offset_size)
        nbytes = self.unsigned(layout, 2 + self.offset_size, self.length_size)
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or nbytes == 0:
            raise _Unsupported("empty, or storage size disagrees with the shape")
        if offset == (1 << 8 * self.offset_size) - 1 or self.base + offset + nbytes > self.size:
            raise _Unsupported("data unwritten or beyond the end of the file")
        return dtype, shape, self.base + offset
