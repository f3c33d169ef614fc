"""A strict check of a request's protobuf wire format, before betterproto2 decodes it.

betterproto2 decodes leniently: a varint where a string belongs comes out as an int, a
length past the end is cut short, an unknown wire type is skipped. Our requests are a
handful of small fields, so one pass over the bytes settles it: every field well formed,
every known field with the wire type its declared type uses.
"""

from __future__ import annotations

from typing import Any

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
_FIXED32_TYPES = frozenset({"float", "fixed32", "sfixed32"})
_FIXED64_TYPES = frozenset({"double", "fixed64", "sfixed64"})
_LEN_TYPES = frozenset({"string", "bytes", "message", "map"})
MAX_DEPTH = 32


class WireError(ValueError):
    """The bytes are not a well-formed message of the expected type."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise WireError("a varint is truncated or longer than 10 bytes")


def _wire_type(proto_type: str, repeated: bool) -> set[int]:
    if proto_type in _LEN_TYPES:
        return {LEN}
    scalar = FIXED32 if proto_type in _FIXED32_TYPES else (
        FIXED64 if proto_type in _FIXED64_TYPES else VARINT)
    return {scalar, LEN} if repeated else {scalar}  # repeated scalars may come packed


def _expected(message_type: Any) -> dict[int, tuple[set[int], Any]]:
    """Field number -> (allowed wire types, nested message class or None), cached."""
    cached = message_type.__dict__.get("_chatms_wire")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    meta = message_type._betterproto
    table: dict[int, tuple[set[int], Any]] = {}
    for name, field in meta.meta_by_field_name.items():
        nested = meta.cls_by_field.get(name) if field.proto_type == "message" else None
        table[field.number] = (_wire_type(field.proto_type, field.repeated), nested)
    message_type._chatms_wire = table
    return table


def check_wire(data: bytes, message_type: Any, depth: int = 0) -> None:
    """Raise WireError unless `data` is a well-formed `message_type` (betterproto2 class)."""
    if depth > MAX_DEPTH:
        raise WireError("messages are nested too deeply")
    expected = _expected(message_type)
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0 is not allowed")
        if wire == VARINT:
            _, pos = _varint(data, pos)
        elif wire in (FIXED64, FIXED32):
            pos += 8 if wire == FIXED64 else 4
        elif wire == LEN:
            size, pos = _varint(data, pos)
            if size > end - pos:
                raise WireError(f"field {number} claims {size} bytes; {end - pos} remain")
            nested = expected.get(number, (None, None))[1]
            if nested is not None:
                check_wire(data[pos:pos + size], nested, depth + 1)
            pos += size
        else:
            raise WireError(f"field {number} has wire type {wire}, which proto3 does not use")
        if pos > end:
            raise WireError(f"field {number} is truncated")
        allowed = expected.get(number)
        if allowed is not None and wire not in allowed[0]:
            raise WireError(f"field {number} has the wrong wire type ({wire})")
