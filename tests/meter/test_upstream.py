"""The meter's upstream client against real loopback servers that behave and misbehave the ways
model servers and networks do: keep-alive reuse, an idle connection the server closed, chunked and
close-delimited bodies, a stall past the read timeout, a cut mid-body, garbage, nothing listening,
and a slow reader holding a large body (the socket is paused, not the memory filled)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from labctl.meter.upstream import (
    HIGH_WATER,
    Pool,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamResponse,
    UpstreamTimeout,
)


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)  # the meter's loop


class Server:
    """A raw HTTP/1.1 server on loopback: `answer` writes the response to each request (its head
    given) and says whether the connection stays open."""

    def __init__(self, answer: Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]) -> None:
        self.answer, self.connections = answer, 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.ssl: ssl.SSLContext | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=self.ssl)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if not await self.answer(head, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


def fixed(body: bytes, keep: bool = True) -> Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]:
    async def answer(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body))
        await w.drain()
        return keep
    return answer


async def exchanges(pool: Pool, n: int, target: str = "/x", body: bytes = b"{}",
                    headers: dict[str, str] | None = None) -> list[tuple[UpstreamResponse, bytes]]:
    """n POSTs in turn on `pool` (closed after), each response with its whole body."""
    got = []
    for _ in range(n):
        async with pool.request("POST", target, body, headers) as up:
            got.append((up, await up.read()))
    await pool.close()
    return got


def test_keep_alive_reuses_one_connection_and_sends_host_and_length() -> None:
    async def main() -> None:
        srv = Server(fixed(b'{"ok":true}'))
        async with srv as url:
            got = await exchanges(Pool(url + "/v1"), 3, "/v1/chat/completions", b'{"a":1}',
                                  {"Content-Type": "application/json"})
        for up, body in got:
            assert up.status == 200 and up.content_type == "application/json"
            assert up.headers["content-type"] == "application/json"  # any case
            assert body == b'{"ok":true}'
        assert srv.connections == 1 and len(srv.requests) == 3
        first = srv.requests[0]
        assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{url.rsplit(':', 1)[1]}".encode() in first
        assert b"Content-Length: 7\r\n" in first and first.endswith(b'{"a":1}')
    run(main())


def test_an_idle_connection_the_server_closed_is_retried_once_fresh() -> None:
    async def main() -> None:
        srv = Server(fixed(b"1", keep=False))  # closes after each answer, announcing nothing
        async with srv as url:
            pool = Pool(url)
            for _ in range(3):
                async with pool.request("GET", "/health") as up:
                    assert await up.read() == b"1"
                await asyncio.sleep(0.05)  # the close reaches us (or not yet: then the write fails)
            await pool.close()
        assert srv.connections == 3 and len(srv.requests) == 3
    run(main())


def test_chunked_body_arrives_piece_by_piece_and_the_connection_is_kept() -> None:
    async def answer(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(3):
            event = b"data: %d\n\n" % i
            w.write(b"%x\r\n%s\r\n" % (len(event), event))
            await w.drain()
            await asyncio.sleep(0.05)
        w.write(b"0\r\n\r\n")
        return True

    async def main() -> None:
        srv = Server(answer)
        async with srv as url:
            pool = Pool(url)
            async with pool.request("POST", "/v1/chat/completions", b"{}") as up:
                assert up.content_type == "text/event-stream"
                got = [chunk async for chunk in up.iter_any()]
            assert b"".join(got) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n" and len(got) >= 3  # as they came
            async with pool.request("POST", "/v1/chat/completions", b"{}") as up:
                assert (await up.read()).count(b"data:") == 3
            await pool.close()
        assert srv.connections == 1
    run(main())


def test_a_body_without_length_ends_with_the_connection() -> None:
    async def answer(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"whole\": ")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"true}")
        return False

    async def main() -> None:
        srv = Server(answer)
        async with srv as url:
            got = await exchanges(Pool(url), 2)
        assert [body for _, body in got] == [b'{"whole": true}'] * 2
        assert srv.connections == 2  # never reused
    run(main())


@pytest.mark.parametrize("length", [b"Content-Length: 10\r\n", b""], ids=["with length", "close-delimited"])
def test_a_stall_past_the_read_timeout_is_a_timeout_error(length: bytes) -> None:
    """Never the part that came as if it were the whole body, whichever way the body is framed."""
    release = asyncio.Event()  # the server stalls until the test has its answer

    async def answer(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\n" + length + b"\r\n12345")
        await w.drain()
        await release.wait()
        return False

    async def main() -> None:
        async with Server(answer) as url:
            pool = Pool(url, read_timeout_s=0.3)
            async def call() -> None:
                async with pool.request("POST", "/x", b"{}") as up:
                    await up.read()

            with pytest.raises(UpstreamTimeout) as caught:  # the guard's plain TimeoutError fails it
                await asyncio.wait_for(call(), 60)
            # The server still holds the connection open: the read timeout ended the wait, not the
            # server's close.
            assert isinstance(caught.value, TimeoutError) and not release.is_set()
            release.set()
            await pool.close()
    run(main())


@pytest.mark.parametrize("what", ["cut mid-body", "garbage", "closed at once"])
def test_a_broken_response_is_a_disconnect_and_not_retried(what: str) -> None:
    async def answer(head: bytes, w: asyncio.StreamWriter) -> bool:
        if what == "cut mid-body":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        elif what == "garbage":
            w.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await w.drain()
        return False

    async def main() -> None:
        srv = Server(answer)
        async with srv as url:
            pool = Pool(url)
            with pytest.raises(UpstreamDisconnected):
                async with pool.request("POST", "/x", b"{}") as up:
                    await up.read()
            await pool.close()
        assert len(srv.requests) == 1  # a fresh connection's failure is not sent twice
    run(main())


def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused

        async def main() -> None:
            pool = Pool(f"http://127.0.0.1:{port}")
            with pytest.raises(UpstreamConnectError):
                async with pool.request("GET", "/health"):
                    pass
            assert pool.slots._value == 64  # the slot came back
        run(main())


def test_a_slow_reader_pauses_the_socket_instead_of_buffering_everything() -> None:
    size = 16 * HIGH_WATER

    sent = 0

    async def answer(head: bytes, w: asyncio.StreamWriter) -> bool:
        nonlocal sent
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            w.write(b"x" * 65536)
            await w.drain()
            sent += 65536
        return True

    async def main() -> None:
        async with Server(answer) as url:
            pool = Pool(url)
            async with pool.request("GET", "/big") as up:
                conn = up._conn
                # The agent reads nothing: wait for the client's state to say "paused" (an event,
                # not a sleep); the guard only keeps a client that never pauses from hanging.
                guard = asyncio.get_running_loop().time() + 60
                while not conn.paused and asyncio.get_running_loop().time() < guard:
                    await asyncio.sleep(0.005)
                assert conn.paused and conn.buffered < 4 * HIGH_WATER
                # ...and the server is held back by it: not all of the body has left it (the
                # kernel's socket buffers hold a few MiB at most, the body is 16 MiB).
                assert sent < size
                total = 0
                async for chunk in up.iter_any():
                    total += len(chunk)
            assert total == size
            await pool.close()
    run(main())


def test_https_upstream_with_the_servers_name_checked(tmp_path: Path) -> None:
    """Cloud contestants' upstreams are HTTPS: a real TLS server (a self-signed certificate for
    `localhost` made by openssl here), trusted through the context; a name mismatch is refused."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trust = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        srv = Server(fixed(b'{"tls":true}'))
        srv.ssl = server_ctx
        async with srv as url:
            port = url.rsplit(":", 1)[1]
            got = await exchanges(Pool(f"https://localhost:{port}/v1", ssl_context=trust), 2, "/v1/messages")
            assert [body for _, body in got] == [b'{"tls":true}'] * 2
            wrong = Pool(f"https://127.0.0.1:{port}", ssl_context=trust)  # not the certificate's name
            with pytest.raises(UpstreamConnectError):
                async with wrong.request("GET", "/health"):
                    pass
        assert srv.connections == 1 and len(srv.requests) == 2  # one connection, kept alive
        assert b"Host: localhost:" + port.encode() in srv.requests[0]
    run(main())


def test_an_informational_response_before_the_real_one_is_skipped() -> None:
    async def answer(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Real: yes\r\n\r\nok")
        return True

    async def main() -> None:
        srv = Server(answer)
        async with srv as url:
            got = await exchanges(Pool(url), 2)
        for up, body in got:
            assert up.status == 201 and up.headers["X-Real"] == "yes" and body == b"ok"
        assert srv.connections == 1
    run(main())
