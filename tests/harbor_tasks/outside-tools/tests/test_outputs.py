"""The service hello-svc ships answers on port 8080, installed from the archive."""

import os
import socket


def test_package_installed() -> None:
    assert os.path.exists("/usr/bin/hello-svc"), "hello-svc is not installed"


def test_service_answers() -> None:
    with socket.create_connection(("127.0.0.1", 8080), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = s.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.0 200"), reply
    assert reply.endswith("hello"), reply
