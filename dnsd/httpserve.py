"""A tiny asyncio HTTP/1.1 server for the operator endpoints (/health, /ready, /metrics).

Listeners are shared by address and outlive a configuration reload: a plugin registers a
path with an owner token; the listener closes when its last path goes.  So a reload that keeps
``health :8080`` never closes the port, and two plugins may share one address.  Each path keeps
its owners in registration order and the newest one answers: when a reload fails and its
plugins stop, the running configuration's owner answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("dnsd")

# handler() -> (status, content type, body)
Handler = Callable[[], tuple[int, str, bytes] | Awaitable[tuple[int, str, bytes]]]
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def split_address(addr: str, default_port: int) -> tuple[str, int]:
    """``:8080`` -> ("", 8080); ``127.0.0.1:8080``; ``[::1]:8080``; ``host`` -> default port."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest.lstrip(":")
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    elif ":" in addr:
        host, port = addr, ""
    else:
        host, port = addr, ""
    value = int(port) if port else default_port
    if not 0 <= value <= 65535:
        raise ValueError(f"invalid port in {addr!r}")
    return host, value


class Listener:
    def __init__(self, host: str, port: int, reuse_port: bool = False) -> None:
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.routes: dict[str, list[tuple[object, Handler]]] = {}  # path -> owners, newest last
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, self.host or None, self.port,
                                                 reuse_port=self.reuse_port or None)
        sock = self.server.sockets[0]
        self.port = sock.getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            path = path.split("?", 1)[0]
            owners = self.routes.get(path)
            if not owners:
                status, ctype, body = 404, "text/plain", b"404 page not found\n"
            elif method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            else:
                result = owners[-1][1]()
                if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                    result = await result  # type: ignore[misc]
                status, ctype, body = result  # type: ignore[misc]
            head = (f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("[ERROR] http handler failed")
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None


class HttpRegistry:
    """Process-wide table of listeners by address (kept in the runtime's ``shared`` dict)."""

    def __init__(self, reuse_port: bool = False) -> None:
        self.reuse_port = reuse_port  # -workers: every worker serves the same HTTP ports
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.lock = asyncio.Lock()

    async def add(self, host: str, port: int, path: str, owner: object, handler: Handler) -> Listener:
        async with self.lock:
            listener = self.listeners.get((host, port))
            if listener is None:
                listener = Listener(host, port, self.reuse_port)
                await listener.start()
                self.listeners[(host, port)] = listener
            owners = listener.routes.setdefault(path, [])
            owners[:] = [entry for entry in owners if entry[0] is not owner]
            owners.append((owner, handler))
            return listener

    async def remove(self, host: str, port: int, path: str, owner: object) -> None:
        async with self.lock:
            listener = self.listeners.get((host, port))
            if listener is None:
                return
            owners = [entry for entry in listener.routes.get(path, []) if entry[0] is not owner]
            if owners:
                listener.routes[path] = owners
            else:
                listener.routes.pop(path, None)
            if not listener.routes:
                del self.listeners[(host, port)]
                await listener.stop()


def registry(shared: dict[str, Any]) -> HttpRegistry:
    reg = shared.get("http")
    if reg is None:
        reg = shared["http"] = HttpRegistry(bool(shared.get("reuse_port")))
    return reg  # type: ignore[no-any-return]
