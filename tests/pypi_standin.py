"""A stand-in PyPI on loopback: the JSON API and the simple index (PEP 503), serving one real,
dependency-free wheel built here, so `labctl lock` resolves a runtime's whole tree with the real pip."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

from tests.registry import Handler, Reply


def tiny_wheel(name: str, version: str) -> tuple[str, bytes]:
    """A minimal valid pure-Python wheel (fixed timestamps: the same bytes every time)."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: labctl-tests\nRoot-Is-Purelib: true\n"
                                   "Tag: py3-none-any\n",
    }
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{dist}.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text)
    return f"{dist}-py3-none-any.whl", buf.getvalue()


def pypi_routes(name: str, version: str) -> tuple[Handler, str, str]:
    """(handler, wheel filename, wheel sha256) for a one-package index."""
    filename, data = tiny_wheel(name, version)
    sha = hashlib.sha256(data).hexdigest()
    doc = {"info": {"name": name, "version": version},
           "urls": [{"filename": filename, "packagetype": "bdist_wheel", "yanked": False,
                     "url": f"/files/{filename}", "digests": {"sha256": sha}}]}
    page = f'<html><body><a href="/files/{filename}#sha256={sha}">{filename}</a></body></html>'

    def handle(method: str, path: str, headers: dict[str, str]) -> Reply:
        if path == f"/pypi/{name}/{version}/json":
            return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()
        if path.rstrip("/") == f"/simple/{name}":
            return 200, {"Content-Type": "text/html"}, page.encode()
        if path == f"/files/{filename}":
            return 200, {"Content-Type": "application/octet-stream"}, data
        return 404, {"Content-Type": "application/json"}, b'{"error":"Not found"}'

    return handle, filename, sha
