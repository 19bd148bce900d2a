"""The meter's HTTP/1.1 client to its one upstream: keep-alive connections, llhttp's parser.

Why not aiohttp's client (the meter's server stays aiohttp's): measured on this project's 2-core
box (benchmarks/proxy_latency.py; a bare aiohttp proxy hop next to the same hop with this kind of
client), aiohttp's ClientSession cost ~0.17 ms of Python per call — about half of what the meter
added to a non-streaming call, against a goal of 0.5 ms in all. A meter talks to exactly one
upstream with JSON bodies it already holds, so most of a general client (cookies, redirects,
proxies, auth, compression, multipart, per-request URL parsing) is dead weight here. The byte-level
parsing stays with a well-kept library: httptools (llhttp, Node's parser — status line, headers,
chunked transfer-encoding, keep-alive rules).

    pool = Pool("http://server:8080", connect_timeout_s=10, read_timeout_s=900, keepalive_s=4)
    async with pool.request("POST", "/v1/chat/completions", body, headers) as up:
        up.status, up.headers["Content-Type"], await up.read()   # or: async for chunk in up.iter_any()
    await pool.close()

Errors are `UpstreamError`s (`UpstreamTimeout` is also a TimeoutError). A pooled connection the
upstream closed while it was idle is retried once on a fresh one (nothing of a response had come);
a connection is reused only after its response was read to the end.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from labctl.meter.state import MeterConfigError

__all__ = ["Pool", "UpstreamConnectError", "UpstreamDisconnected", "UpstreamError", "UpstreamResponse",
           "UpstreamTimeout"]

HIGH_WATER = 1 << 20
"""Bytes of a response held unread before the upstream socket is paused (a slow agent)."""


class UpstreamError(Exception):
    """The upstream could not be reached or broke off (the meter answers 502 / an error event)."""


class UpstreamConnectError(UpstreamError):
    """No connection: refused, unresolvable, TLS failed, or the connect timed out."""


class UpstreamDisconnected(UpstreamError):
    """The connection closed (or sent what is not HTTP) before the response was whole."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """No byte from the upstream within the read timeout."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout_s: float | None) -> None:
        self.loop, self.read_timeout_s = loop, read_timeout_s
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.header_list: list[tuple[str, str]] = []
        self.headers_done = self.complete = self.got_bytes = self.paused = self.head = False
        self.keep_alive = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.close_delimited = False

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamDisconnected("the upstream switched protocols"))
        except httptools.HttpParserError as e:
            self._fail(UpstreamDisconnected(f"not an HTTP response: {e}"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.headers_done and self.close_delimited and not self.complete and exc is None \
                and self.error is None:
            self.complete = True  # a body without length or chunking ends with the connection (cleanly)
        elif not self.complete:
            self._fail(UpstreamDisconnected("the upstream closed the connection"
                                            + (" before the response" if not self.got_bytes else "")))
        self._wake()

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_list.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is done
        names = {k.lower() for k, _ in self.header_list}
        self.close_delimited = "content-length" not in names and "transfer-encoding" not in names
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # `100 Continue` and the like: the real response follows
            self.header_list, self.headers_done, self.close_delimited = [], False, False
        elif self.head or status in (204, 304):
            self.complete, self.close_delimited = True, False

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.headers_done:  # not the end of an informational (1xx) response
            self.complete = True

    # --- the consumer's side
    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _timed_out(self) -> None:
        self._fail(UpstreamTimeout(f"no data from the upstream in {self.read_timeout_s} s"))
        self._wake()

    async def wait(self) -> None:
        """Until more of the response arrived (or it failed, or the read timeout passed)."""
        self.waiter = self.loop.create_future()
        timer = (self.loop.call_later(self.read_timeout_s, self._timed_out)
                 if self.read_timeout_s else None)
        try:
            await self.waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def reusable(self) -> bool:
        return (self.complete and self.error is None and not self.close_delimited and self.keep_alive
                and self.alive())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


class UpstreamResponse:
    """Status and headers at once; the body read whole or chunk by chunk as it arrives."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status: int = conn.parser.get_status_code()
        self.headers: CIMultiDict[str] = CIMultiDict(conn.header_list)
        self.content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """What has arrived since the last chunk, as soon as anything has."""
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.error is not None:
                raise conn.error
            elif conn.complete:
                return
            else:
                await conn.wait()

    async def read(self) -> bytes:
        conn = self._conn
        while not conn.complete:
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        return conn.take()


class _Exchange:
    """`async with pool.request(...) as response`: the connection goes back to the pool when the
    response was read to its end, else it is closed."""

    def __init__(self, pool: Pool, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> None:
        self.pool, self.args = pool, (method, target, body, headers)
        self.conn: _Connection | None = None

    async def __aenter__(self) -> UpstreamResponse:
        for attempt in (0, 1):
            conn = await self.pool.acquire()
            try:
                response = await self.pool.send(conn, *self.args)
            except BaseException as e:
                self.pool.release(conn, broken=True)
                if isinstance(e, UpstreamDisconnected) and not attempt and conn.reused and not conn.got_bytes:
                    continue  # only an idle pooled connection the upstream had closed is tried again
                raise
            self.conn = conn
            return response
        raise AssertionError("unreachable")

    async def __aexit__(self, *exc: object) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.pool.release(conn)


class Pool:
    """Keep-alive connections to one upstream (scheme, host and port of its base URL)."""

    def __init__(self, base_url: str, connect_timeout_s: float | None = 10.0,
                 read_timeout_s: float | None = 900.0, keepalive_s: float = 4.0, limit: int = 64,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise MeterConfigError(f"not an http(s) URL: {base_url!r}")
        self.host, self.tls = u.hostname, u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        default = (self.port == 443) if self.tls else (self.port == 80)
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = name if default else f"{name}:{self.port}"
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self.keepalive_s = keepalive_s
        self.ssl_context = ssl_context or (ssl.create_default_context() if self.tls else None)
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(limit)  # at most `limit` responses in flight at once
        self.open_conns: set[_Connection] = set()

    def request(self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
                ) -> _Exchange:
        """`target`: the path and query (`/v1/chat/completions`); `body` sent with its length."""
        return _Exchange(self, method, target, body, headers or {})

    async def acquire(self) -> _Connection:
        await self.slots.acquire()
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.alive() and now - conn.idle_since < self.keepalive_s:
                conn.reused = True
                return conn
            self._drop(conn)
        try:
            return await self._connect()
        except BaseException:
            self.slots.release()
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self.read_timeout_s), self.host, self.port,
                    ssl=self.ssl_context, server_hostname=self.host if self.tls else None)
        except TimeoutError as e:
            raise UpstreamConnectError(f"connecting took over {self.connect_timeout_s} s") from e
        except (OSError, ssl.SSLError) as e:
            raise UpstreamConnectError(f"cannot connect: {type(e).__name__}: {e}") from e
        self.open_conns.add(conn)
        return conn

    async def send(self, conn: _Connection, method: str, target: str, body: bytes, headers: Mapping[str, str]
                   ) -> UpstreamResponse:
        if conn.transport is None:
            raise UpstreamDisconnected("the upstream closed the connection before the response")
        conn._reset()
        conn.head = method == "HEAD"
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        head += [f"{k}: {v}" for k, v in headers.items() if "\r" not in v and "\n" not in v]
        head.append(f"Content-Length: {len(body)}")
        conn.transport.write("\r\n".join(head).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body)
        while not conn.headers_done:
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        return UpstreamResponse(conn)

    def release(self, conn: _Connection, broken: bool = False) -> None:
        self.slots.release()
        if not broken and conn.reusable():
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self.open_conns.discard(conn)

    async def close(self) -> None:
        for conn in list(self.open_conns):
            self._drop(conn)
        self.idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
