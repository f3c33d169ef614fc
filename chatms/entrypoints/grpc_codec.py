"""The gRPC door's protobuf codec, and a fast encoder for the streamed responses.

grpclib's own codec lets a decode failure (say, invalid UTF-8 in a string field) escape as
an unexpected error; a client deserves to hear that its request was at fault. On the way
out, the codec passes pre-encoded bytes through, so a streamed token does not pay for
building and serializing a message object.
"""

from __future__ import annotations

from typing import Any

from grpclib import GRPCError
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec

from chatms.entrypoints.grpc_wire import WireError, check_wire


class GuardedProtoCodec(ProtoCodec):
    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def encode(self, message: Any, message_type: Any) -> bytes:
        if type(message) is bytes:  # already encoded (ChatResponseEncoder, on the hot path)
            return message
        return super().encode(message, message_type)

    def decode(self, data: bytes, message_type: Any) -> Any:
        if len(data) > self.max_message_bytes:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"request is {len(data)} bytes; the limit is {self.max_message_bytes}",
            )
        try:
            if hasattr(message_type, "_betterproto"):  # ours; health and reflection are not
                check_wire(data, message_type)
            return message_type.FromString(data)
        except WireError as exc:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"request is not a valid {message_type.__name__}: {exc}"
            ) from None
        except Exception as exc:  # UnicodeDecodeError, protobuf's DecodeError, ...
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"request is not a valid {message_type.__name__}: {type(exc).__name__}",
            ) from None


def _field(number: int, text: str) -> bytes:
    """A length-delimited protobuf field; proto3 leaves an empty string out."""
    if not text:
        return b""
    data = text.encode()
    size, length = len(data), bytearray()
    while size > 0x7F:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return bytes((number << 3 | 2,)) + bytes(length) + data


def _varint_field(number: int, value: int) -> bytes:
    """A varint field; proto3 leaves a zero out."""
    if not value:
        return b""
    out = bytearray((number << 3,))
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class ChatResponseEncoder:
    """`pb.ChatResponse` bytes for the messages of one turn, built without the message class.

    Every message of a turn repeats the same chat_id and user_id, so they are encoded once;
    only `content` (field 3) and `position` (field 4) are new each time. The output is
    byte-for-byte what the generated class serializes (a test holds it to that).
    """

    __slots__ = ("_prefix",)

    def __init__(self, chat_id: str, user_id: str) -> None:
        self._prefix = _field(1, chat_id) + _field(2, user_id)

    def encode(self, content: str, position: int = 0) -> bytes:
        return self._prefix + _field(3, content) + _varint_field(4, position)
