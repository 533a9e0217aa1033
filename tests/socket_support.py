"""Raw-socket DNS clients for the socket, flood and bad-input tests: hand-built queries, one
datagram at a time over UDP, length-prefixed frames over TCP (all to 127.0.0.1)."""

from __future__ import annotations

import socket
import struct

ADDR = "127.0.0.1"


def header(qid: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!6H", qid, flags, qd, an, ns, ar)


def question(labels: list[bytes], qtype: int = 1, qclass: int = 1) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00" + struct.pack("!HH", qtype, qclass)


def raw_query(qid: int, name: str, qtype: int = 1) -> bytes:
    """A plain recursive query for ``name`` (class IN), built without a DNS library."""
    return header(qid) + question([p.encode() for p in name.rstrip(".").split(".")], qtype)


# --- UDP ------------------------------------------------------------------------------------------


def udp_client(port: int, timeout: float) -> socket.socket:
    """A UDP socket connected to the server, its receives limited to ``timeout`` seconds."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((ADDR, port))
    s.settimeout(timeout)
    return s


def udp_ask(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    """Send one datagram from a new socket; the reply (TimeoutError if none within ``timeout``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (ADDR, port))
        return s.recv(65535)


def udp_exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    """Send one datagram; the reply, or None if nothing came back within ``timeout``."""
    try:
        return udp_ask(port, data, timeout)
    except TimeoutError:
        return None


# --- TCP ------------------------------------------------------------------------------------------


def tcp_connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((ADDR, port), timeout=timeout)


def frame(data: bytes) -> bytes:
    """``data`` with its 2-byte length prefix, as DNS over TCP sends it."""
    return len(data).to_bytes(2, "big") + data


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def recv_frame(sock: socket.socket) -> bytes:
    size = int.from_bytes(recv_exact(sock, 2), "big")
    return recv_exact(sock, size)


def frame_exchange(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` as one frame on a connected socket; the next frame it gets back."""
    sock.sendall(frame(data))
    return recv_frame(sock)


def tcp_exchange(port: int, data: bytes) -> bytes:
    """One query on a new connection; its reply."""
    with tcp_connect(port) as s:
        return frame_exchange(s, data)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the server closes (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
