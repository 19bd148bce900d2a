"""Loopback servers for resolver tests: a real distribution registry, a fake token-auth registry,
and a JSON server standing in for PyPI / npm. Everything binds 127.0.0.1 on an ephemeral port."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from labctl.plan.llamaserver import free_port  # noqa: F401  (re-exported for the tests)

REGISTRY_BIN = Path("/usr/bin/docker-registry")

Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[str, str, dict[str, str]], Reply]
"""(method, raw path with query, headers lower-cased) → (status, headers, body)."""




@dataclass
class Server:
    url: str
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


@contextlib.contextmanager
def serve(handler: Handler) -> Iterator[Server]:
    """Run `handler` behind a threaded HTTP server on 127.0.0.1; records every request."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server = Server(f"http://127.0.0.1:{httpd.server_address[1]}")

    class Handle(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.requests.append((self.command, self.path, headers))
            status, out_headers, body = handler(self.command, self.path, headers)
            self.send_response(status)
            for k, v in out_headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = _answer

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

    httpd.RequestHandlerClass = Handle
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


def json_routes(routes: dict[str, object]) -> Handler:
    """A handler answering GET of exact raw paths with JSON, 404 (npm/PyPI style body) otherwise."""
    def handle(method: str, path: str, headers: dict[str, str]) -> Reply:
        if path in routes:
            return 200, {"Content-Type": "application/json"}, json.dumps(routes[path]).encode()
        return 404, {"Content-Type": "application/json"}, b'{"error":"Not found"}'
    return handle


MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
               "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
    "layers": [],
}, indent=3).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
TOKEN = "good-token"
SERVICE = "labctl-test-registry"


def token_registry(server_url: Callable[[], str]) -> Handler:
    """A registry that wants an anonymous bearer token, like Docker Hub and ghcr.io.

    Repositories: `auth/with-header` (HEAD carries Docker-Content-Digest) and `auth/no-header`
    (no digest header anywhere: the client must GET and hash the body). `/token` hands out TOKEN
    only for this service and a pull scope of the repository asked for.
    """
    def handle(method: str, path: str, headers: dict[str, str]) -> Reply:
        parts = urlsplit(path)
        if parts.path == "/token":
            q = parse_qs(parts.query)
            ok = q.get("service") == [SERVICE] and q.get("scope", [""])[0].endswith(":pull")
            return (200, {"Content-Type": "application/json"},
                    json.dumps({"token": TOKEN, "expires_in": 300}).encode()) if ok else (400, {}, b"")
        if not parts.path.startswith("/v2/"):
            return 404, {}, b""
        repo = parts.path.removeprefix("/v2/").split("/manifests/")[0]
        if headers.get("authorization") != f"Bearer {TOKEN}":
            challenge = (f'Bearer realm="{server_url()}/token",service="{SERVICE}",'
                         f'scope="repository:{repo}:pull"')
            return 401, {"WWW-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
        if parts.path == "/v2/auth/with-header/manifests/1":
            return 200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                         "Docker-Content-Digest": MANIFEST_DIGEST}, MANIFEST
        if parts.path == "/v2/auth/no-header/manifests/1":
            return 200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, MANIFEST
        return 404, {}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'
    return handle


@contextlib.contextmanager
def distribution_registry(root: Path, attempts: int = 3) -> Iterator[str]:
    """Debian's docker-registry (the real distribution v2 server) on 127.0.0.1; yields `host:port`."""
    for _ in range(attempts):  # the free port may be taken between probe and bind: try another
        port = free_port()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: error}\n"
            f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n  delete: {{enabled: true}}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if _wait_ready(proc, f"http://127.0.0.1:{port}/v2/"):
                yield f"127.0.0.1:{port}"
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    raise RuntimeError(f"docker-registry did not start in {attempts} attempts")


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False
