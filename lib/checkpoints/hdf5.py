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

import math
import os
import struct
from typing import Any

import numpy as np

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Object-header message types read here (spec IV.A.2).
_DATASPACE, _DATATYPE, _FILTERS, _LAYOUT, _ATTRIBUTE, _CONTINUATION, _SYMBOL_TABLE = 0x1, 0x3, 0xB, 0x8, 0xC, 0x10, 0x11
_FILL_VALUE = 0x5
_LINK_INFO, _LINK, _ATTRIBUTE_INFO = 0x2, 0x6, 0x15  # new-style groups and dense attributes: not read here
_MESSAGE_CONSTANT = 0x01  # message flag: the message never changes
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
        self.f, self.end = f, size
        superblock = self._find_superblock()
        head = self.read(superblock, 24)
        version, free_space, root_entry, shared_header = head[8], head[9], head[10], head[12]
        if version not in (0, 1) or free_space or root_entry or shared_header or any(head[20:24]):
            raise _Unsupported("superblock version, its parts' versions or its status flags")
        self.offset_size, self.length_size = head[13], head[14]
        # Symbols per symbol-table node and children per group B-tree node are up to 2 K: HDF5 reads whole nodes.
        self.leaf_k, self.node_k = struct.unpack_from("<HH", head, 16)
        if not self.leaf_k or not self.node_k:
            raise _Unsupported("group node sizes")
        if self.offset_size not in (2, 4, 8) or self.length_size not in (2, 4, 8):
            raise _Unsupported("offset or length size")
        # After the fixed fields (24 bytes, 28 in version 1): the base address (every other address is relative
        # to it), the superblock extension (unused before version 2), end-of-file and driver info addresses, then
        # the root group's symbol-table entry (link name offset, object header address, ...).
        fields = superblock + (24 if version == 0 else 28)
        self.base = 0
        self.base = self.address(fields)
        if not self.undefined(fields + self.offset_size) or not self.undefined(fields + 3 * self.offset_size):
            raise _Unsupported("superblock extension or driver info")
        end = self.address(fields + 2 * self.offset_size)
        if end > self.end:  # a truncated file: h5py says so
            raise _Unsupported("the file is shorter than its superblock says")
        self.end = end  # nothing lies beyond the end of the file the superblock records
        self.root = self.address(fields + 5 * self.offset_size)
        if self.unsigned(self.read(fields + 6 * self.offset_size, 4), 0, 4) > 2:
            raise _Unsupported("root symbol-table entry cache type")
        self._headers: dict[int, list[tuple[int, bytes]]] = {}

    def _find_superblock(self) -> int:
        """The superblock is at 0 or after a user block of 512, 1024, 2048, ... bytes."""
        position = 0
        while position + len(_SIGNATURE) <= self.end:
            if self.read(position, len(_SIGNATURE)) == _SIGNATURE:
                return position
            position = 512 if position == 0 else 2 * position
        raise _Unsupported("no HDF5 signature")

    # ----------------------------------------------------------------------------------------- raw reads
    def read(self, position: int, count: int) -> bytes:
        if position < 0 or count < 0 or position + count > self.end:
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

    def undefined(self, position: int) -> bool:
        return self.read(position, self.offset_size) == b"\xff" * self.offset_size

    def address(self, position: int) -> int:
        """A file address at `position`, made absolute; an undefined address (all ones) is unsupported."""
        if self.undefined(position):
            raise _Unsupported("undefined address")
        return self.base + int.from_bytes(self.read(position, self.offset_size), "little")

    # ----------------------------------------------------------------------------------------- object headers
    def messages(self, header: int) -> list[tuple[int, bytes]]:
        """(type, body) of every message of the version-1 object header at `header`."""
        if header not in self._headers:
            prefix = self.read(header, 16)
            if prefix[0] != 1:
                raise _Unsupported(f"object header version {prefix[0]}")
            count = self.unsigned(prefix, 2, 2)
            blocks, seen, messages = [(header + 16, self.unsigned(prefix, 8, 4))], set(), []
            while blocks:
                start, length = blocks.pop(0)
                if start in seen or len(seen) > count:
                    raise _Unsupported("continuation loop")
                seen.add(start)
                block, position = self.read(start, length), 0
                while position < length:
                    kind, size, flags = struct.unpack_from("<HHB", block, position)
                    body = block[position + 8:position + 8 + size]
                    # Version-1 messages are 8-byte aligned; h5py writes no flag but "constant" (bit 0).
                    if len(body) != size or size % 8 or flags & ~_MESSAGE_CONSTANT:
                        raise _Unsupported("message runs past its block, unaligned or with flags")
                    if kind == _CONTINUATION:
                        blocks.append((self.address_in(body, 0), self.unsigned(body, self.offset_size,
                                                                               self.length_size)))
                    messages.append((kind, body))
                    position += 8 + size
            if len(messages) != count:
                raise _Unsupported("object header message count")
            self._headers[header] = messages
        return self._headers[header]

    def address_in(self, data: bytes, position: int) -> int:
        """A defined address inside `data` (a structure already read), made absolute."""
        value = self.unsigned(data, position, self.offset_size)
        if value == (1 << 8 * self.offset_size) - 1:
            raise _Unsupported("undefined address")
        return self.base + value

    def message(self, header: int, kind: int) -> bytes | None:
        found = [body for k, body in self.messages(header) if k == kind]
        if len(found) > 1:
            raise _Unsupported(f"message type {kind} repeated")
        return found[0] if found else None

    # ----------------------------------------------------------------------------------------- groups
    def is_dataset(self, header: int) -> bool:
        return self.message(header, _LAYOUT) is not None

    def lookup(self, group: int, path: str) -> int:
        """The object header of `path` ("a/b/c", relative to `group`)."""
        for name in path.split("/"):
            if not name:
                raise _Unsupported(f"path {path!r}")
            group = self._find(group, name.encode("utf-8"))
        return group

    def _find(self, group: int, name: bytes) -> int:
        """The object header of member `name` of a symbol-table group, looked up as HDF5 does: down the B-tree
        by its keys (the greatest name under each child), then a binary search of the symbol-table node; a
        file whose keys or order are damaged misses the name here as it does in h5py."""
        if any(kind in (_LINK_INFO, _LINK) for kind, _ in self.messages(group)):
            raise _Unsupported("new-style group")
        table = self.message(group, _SYMBOL_TABLE)
        if table is None:
            raise _Unsupported("not a group")
        node = self.address_in(table, 0)
        heap = self.read(self.address_in(table, self.offset_size), 8 + 2 * self.length_size + self.offset_size)
        if heap[:4] != b"HEAP" or heap[4] != 0:
            raise _Unsupported("bad local heap")
        names = self.read(self.address_in(heap, 8 + 2 * self.length_size), self.unsigned(heap, 8, self.length_size))
        self._check_free_list(names, self.unsigned(heap, 8 + self.length_size, self.length_size))

        def heap_name(offset: int) -> bytes:
            end = names.find(b"\0", offset)
            if end < 0:
                raise _Unsupported("unterminated link name")
            return names[offset:end]

        # Keys (heap offsets, `length_size` bytes) alternate with children (addresses), a key first and last.
        stride = self.length_size + self.offset_size
        for _ in range(_MAX_BTREE_DEPTH):
            head = self.read(node, 8 + 2 * self.offset_size)
            if head[:4] != b"TREE" or head[4] != 0:
                raise _Unsupported("bad group B-tree node")
            level, used = head[5], self.unsigned(head, 6, 2)
            body = self.read(node + len(head), 2 * self.node_k * stride + self.length_size)
            if used > 2 * self.node_k:
                raise _Unsupported("B-tree node overfull")
            low, high = 0, used  # the child whose keys bracket `name`: left key < name <= right key
            while low < high:
                middle = (low + high) // 2
                if name <= heap_name(self.unsigned(body, middle * stride, self.length_size)):
                    high = middle
                elif name > heap_name(self.unsigned(body, (middle + 1) * stride, self.length_size)):
                    low = middle + 1
                else:
                    break
            else:
                raise _Unsupported(f"no link {name!r}")
            node = self.address_in(body, middle * stride + self.length_size)
            if level == 0:
                return self._find_in_symbol_node(node, name, heap_name)
        raise _Unsupported("B-tree too deep")

    def _check_free_list(self, names: bytes, free: int) -> None:
        """The local heap's free blocks (next offset, size) chain inside the heap to 1, its end mark: HDF5 checks
        them before any name is read."""
        for _ in range(len(names) // (2 * self.length_size) + 1):
            if free == 1:
                return
            if free >= len(names):
                raise _Unsupported("bad local heap free list")
            following, size = self.unsigned(names, free, self.length_size), self.unsigned(
                names, free + self.length_size, self.length_size)
            if following == 0 or free + size > len(names):
                raise _Unsupported("bad local heap free list")
            free = following
        raise _Unsupported("local heap free list loops")

    def _find_in_symbol_node(self, node: int, name: bytes, heap_name: Any) -> int:
        head = self.read(node, 8)
        if head[:4] != b"SNOD" or head[4] != 1:
            raise _Unsupported("bad symbol-table node")
        entry_size = 2 * self.offset_size + 24  # name offset, header address, cache type, reserved, scratch pad
        count = self.unsigned(head, 6, 2)
        body = self.read(node + 8, 2 * self.leaf_k * entry_size)
        if count > 2 * self.leaf_k:
            raise _Unsupported("symbol-table node overfull")
        if any(self.unsigned(body, i * entry_size + 2 * self.offset_size, 4) > 2 for i in range(count)):
            raise _Unsupported("symbol-table entry cache type")  # HDF5 checks every entry of the node it reads
        low, high = 0, count
        while low < high:
            middle = (low + high) // 2
            entry_name = heap_name(self.unsigned(body, middle * entry_size, self.offset_size))
            if name == entry_name:
                return self.address_in(body, middle * entry_size + self.offset_size)
            low, high = (low, middle) if name < entry_name else (middle + 1, high)
        raise _Unsupported(f"no link {name!r}")

    # ----------------------------------------------------------------------------------------- attributes
    def strings(self, header: int, name: str) -> list[str]:
        """The string attribute `name` (scalar or one-dimensional) of an object, as a list.

        HDF5 decodes every attribute message up to the one asked for: the ones before it are checked the same
        way, and must be strings too (h5py and Keras write only strings on these objects)."""
        if any(kind == _ATTRIBUTE_INFO for kind, _ in self.messages(header)):
            raise _Unsupported("dense attribute storage")
        for kind, body in self.messages(header):
            if kind != _ATTRIBUTE:
                continue
            if body[0] not in (1, 2, 3) or (body[0] > 1 and body[1] & 0x3):
                raise _Unsupported("attribute message version or shared parts")
            name_size, *_ = sizes = struct.unpack_from("<HHH", body, 2)  # name (with its NUL), datatype, dataspace
            if body[0] == 1:  # version 1 pads each part to a multiple of 8 bytes
                sizes = tuple(-(-size // 8) * 8 for size in sizes)
            name_start = 8 if body[0] < 3 else 9
            type_start = name_start + sizes[0]
            space_start = type_start + sizes[1]
            data_start = space_start + sizes[2]
            if data_start > len(body) or not name_size:
                raise _Unsupported("attribute parts run past the message")
            datatype, data = body[type_start:space_start], body[data_start:]
            count, item_size = math.prod(self._shape(body[space_start:data_start])), self._string_size(datatype)
            if len(data) < count * item_size:
                raise _Unsupported("attribute data too short")
            if body[name_start:name_start + name_size - 1].split(b"\0", 1)[0] == name.encode():
                return self._decode_strings(datatype, data, count, item_size)
        raise _Unsupported(f"no attribute {name!r}")

    def _string_size(self, datatype: bytes) -> int:
        """Bytes per element of a string datatype (fixed-length, or variable-length of one-byte characters)."""
        kind, size = datatype[0] & 0x0F, self.unsigned(datatype, 4, 4)
        if datatype[0] >> 4 not in (1, 2, 3):
            raise _Unsupported("datatype version")
        if kind == 3:  # fixed-length strings, padded with NULs (or spaces), ASCII or UTF-8
            if size == 0 or datatype[1] & 0x0F > 2 or datatype[1] >> 4 > 1:
                raise _Unsupported("string padding or character set unknown")
            return size
        if kind == 9 and datatype[1] & 0x0F == 1:  # variable-length strings: length, then a global heap id
            if size != 4 + self.offset_size + 4 or datatype[1] >> 4 > 2 or datatype[2] & 0x0F > 1:
                raise _Unsupported("string size, padding or character set unknown")
            # The base type: one-byte characters (a fixed-point or string type of version 1-3, 8 bits at offset 0).
            base = datatype[8:]
            if base[0] >> 4 not in (1, 2, 3) or base[0] & 0x0F not in (0, 3) or self.unsigned(base, 4, 4) != 1 or (
                    base[0] & 0x0F == 0 and self.unsigned(base, 8, 4) != 8 << 16):
                raise _Unsupported("variable-length string of multi-byte characters")
            return size
        raise _Unsupported(f"attribute datatype class {kind}")

    def _decode_strings(self, datatype: bytes, data: bytes, count: int, item_size: int) -> list[str]:
        if datatype[0] & 0x0F == 3:
            return [data[i * item_size:(i + 1) * item_size].split(b"\0", 1)[0].decode("utf-8") for i in range(count)]
        strings = []
        for i in range(count):
            start = i * item_size
            value = self._global_heap_object(self.address_in(data, start + 4),
                                             self.unsigned(data, start + 4 + self.offset_size, 4))
            if len(value) != self.unsigned(data, start, 4):
                raise _Unsupported("string length disagrees with its global heap object")
            strings.append(value.decode("utf-8"))
        return strings

    def _global_heap_object(self, collection: int, index: int) -> bytes:
        """Object `index` of a global heap collection, whose objects are all checked first, as HDF5 does."""
        head = self.read(collection, 8 + self.length_size)
        if head[:4] != b"GCOL" or head[4] != 1 or index == 0:  # index 0 is the free space
            raise _Unsupported("bad global heap collection")
        size = self.unsigned(head, 8, self.length_size)
        heap, position, found, free_size = self.read(collection, size), len(head), None, None
        object_head = 8 + self.length_size  # index, reference count, reserved, size
        while position < size:
            if position + object_head > size:  # a tail too short for an object header is free space
                object_index, object_size = 0, size - position
            else:
                object_index = self.unsigned(heap, position, 2)
                object_size = self.unsigned(heap, position + 8, self.length_size)
            # The free space (index 0, at most one) counts its header in its size; objects are padded to 8 bytes.
            need = object_size if object_index == 0 else object_head + -(-object_size // 8) * 8
            if need <= 0 or position + need > size or (object_index == 0 and free_size is not None):
                raise _Unsupported("global heap object runs past its collection, or a second free space")
            if object_index == 0:
                free_size = object_size
            elif object_index == index:
                found = heap[position + object_head:position + object_head + object_size]
            position += need
        if free_size is not None and free_size % 8:
            raise _Unsupported("global heap free space not aligned")
        if found is None:
            raise _Unsupported("global heap object not found")
        return found

    # ----------------------------------------------------------------------------------------- datasets
    def _shape(self, dataspace: bytes) -> tuple[int, ...]:
        if len(dataspace) < 4 or dataspace[1] > 32:
            raise _Unsupported("dataspace rank")
        version, rank = dataspace[0], dataspace[1]
        if version == 1:
            start = 8
        elif version == 2 and dataspace[3] in (0, 1):  # scalar or simple (2 = null: no elements)
            start = 4
        else:
            raise _Unsupported(f"dataspace version {version}")
        shape = tuple(self.unsigned(dataspace, start + i * self.length_size, self.length_size) for i in range(rank))
        if dataspace[2] & 0x01:  # maximum sizes follow: HDF5 refuses one below the current size
            unlimited = (1 << 8 * self.length_size) - 1
            for i, size in enumerate(shape):
                maximum = self.unsigned(dataspace, start + (rank + i) * self.length_size, self.length_size)
                if maximum < size and maximum != unlimited:
                    raise _Unsupported("maximum size below the size")
        return shape

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
        if datatype[0] >> 4 not in (1, 2, 3):
            raise _Unsupported("datatype version")
        dtype, shape = self._dtype(datatype), self._shape(dataspace)
        fill = self.message(header, _FILL_VALUE)  # decoded by HDF5 when it opens the dataset
        if fill is not None and (fill[0] not in (1, 2) or fill[1] not in (1, 2, 3) or fill[2] > 2 or fill[3] > 1
                                 or (fill[3] and 8 + self.unsigned(fill, 4, 4) > len(fill))):
            raise _Unsupported("fill value message")
        if layout[0] not in (3, 4) or layout[1] != 1:  # layout class 1: contiguous
            raise _Unsupported("not a contiguous layout")
        offset = self.unsigned(layout, 2, self.offset_size)
        nbytes = self.unsigned(layout, 2 + self.offset_size, self.length_size)
        if nbytes != math.prod(shape) * dtype.itemsize or nbytes == 0:
            raise _Unsupported("empty, or storage size disagrees with the shape")
        if offset == (1 << 8 * self.offset_size) - 1 or self.base + offset + nbytes > self.end:
            raise _Unsupported("data unwritten or beyond the end of the file")
        return dtype, shape, self.base + offset
