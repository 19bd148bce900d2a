"""A stand-in for a host of the internet, run inside a test's own container (stdlib only: it runs
under the labctl image's python3): serves a directory over HTTP on port 80 and, when a certificate
is mounted at /tls/cert.pem + /tls/key.pem, over HTTPS on 443. Every request is one JSON line on
stdout (`docker logs`): {"method", "host", "path", "status", "tls"}, so a test can say which
stand-in saw which request. Usage: python3 outside_server.py ROOT
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    tls = False

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        line = {"method": self.command, "host": self.headers.get("Host", ""), "path": self.path,
                "status": int(code) if str(code).isdigit() else code, "tls": self.tls}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the stdlib's name)
        pass  # the JSON line above is the log


class TLSHandler(Handler):
    tls = True


def main() -> None:
    root = sys.argv[1]
    servers = [ThreadingHTTPServer(("0.0.0.0", 80), functools.partial(Handler, directory=root))]
    if os.path.isfile("/tls/cert.pem"):
        tls = ThreadingHTTPServer(("0.0.0.0", 443), functools.partial(TLSHandler, directory=root))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain("/tls/cert.pem", "/tls/key.pem")
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    sys.stdout.write(json.dumps({"ready": [s.server_address[1] for s in servers]}) + "\n")
    sys.stdout.flush()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
