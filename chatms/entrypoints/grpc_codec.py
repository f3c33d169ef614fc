"""A protobuf codec that turns oversized or undecodable requests into INVALID_ARGUMENT.

grpclib's own codec lets a decode failure (say, invalid UTF-8 in a string field) escape as
an unexpected error; a client deserves to hear that its request was at fault.
"""

from __future__ import annotations

from typing import Any

from grpclib import GRPCError
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec


class GuardedProtoCodec(ProtoCodec):
    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def decode(self, data: bytes, message_type: Any) -> Any:
        if len(data) > self.max_message_bytes:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"request is {len(data)} bytes; the limit is {self.max_message_bytes}",
            )
        try:
            return message_type.FromString(data)
        except (ValueError, TypeError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"request is not a valid {message_type.__name__}: {type(exc).__name__}",
            ) from None
