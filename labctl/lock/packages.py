"""Pin an agent runtime's distribution: the exact file its registry serves, by the registry's hash.

`mini-swe-agent==2.4.1` names a version; a version's files can still be yanked and re-uploaded
under another name, or a mirror can serve different bytes. The lock records which file (a
pure-Python wheel, else the sdist; for npm the tarball) and its hash, so an image build can refuse
anything else. Only the registries' JSON APIs are read: nothing is downloaded.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from labctl.errors import LabctlError
from labctl.lock.lockfile import PackageLock

PYPI_URL = "https://pypi.org"
NPM_URL = "https://registry.npmjs.org"
PYPI_ENV = "LABCTL_PYPI_URL"
NPM_ENV = "LABCTL_NPM_URL"
TIMEOUT_S = 30.0
Registry = Literal["pypi", "npm"]

RUNTIMES: dict[str, tuple[Registry, str]] = {
    "mini-swe-agent": ("pypi", "mini-swe-agent"),
    "aider": ("pypi", "aider-chat"),
    "opencode": ("npm", "opencode-ai"),
    "claude-code": ("npm", "@anthropic-ai/claude-code"),
    "codex": ("npm", "@openai/codex"),
    "qwen-code": ("npm", "@qwen-code/qwen-code"),
}
"""Agent runtime name (as in a lab's `agent.runtime`) → where its package lives. One line each."""

_SRI = re.compile(r"^sha(256|384|512)-[A-Za-z0-9+/]+={0,2}$")


class PackageError(LabctlError, RuntimeError):
    """A runtime, package or version the registry does not have, or a registry that did not answer."""


@dataclass(frozen=True)
class Resolved:
    """A pinned distribution: the lock entry, plus what PackageLock cannot hold yet."""

    lock: PackageLock
    integrity: str | None
    """npm's Subresource Integrity string (`sha512-<base64>`): npm publishes no sha256, so the lock's
    sha256 is None for npm and this is the hash to record and check. None for PyPI."""
    url: str
    """Where the file is downloaded from (for the image build; not part of the lock's identity)."""


def _get(client: httpx.Client, url: str, what: str, **kw: Any) -> httpx.Response:
    try:
        return client.get(url, **kw)
    except httpx.TransportError as exc:
        raise PackageError(f"cannot reach the registry for {what} ({url}): {exc or type(exc).__name__}") \
            from None


def _json(resp: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise PackageError(f"the registry's answer for {what} is not a JSON object ({resp.request.url})")
    return body


def _is_pure_wheel(filename: str) -> bool:
    """`name-ver(-build)?-py3-none-any.whl`, with compressed tag sets like `py2.py3` allowed."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        return False
    python, abi, platform = parts[-3:]
    return "py3" in python.split(".") and abi == "none" and platform == "any"


def _pick_pypi_file(files: list[dict[str, Any]], sdist_only: bool) -> dict[str, Any] | None:
    """The pure-Python wheel, else the sdist; unyanked first, then by name, so the choice is stable."""
    def rank(f: dict[str, Any]) -> tuple[bool, str]:
        return bool(f.get("yanked")), str(f.get("filename"))

    wheels = [] if sdist_only else sorted(
        (f for f in files if _is_pure_wheel(str(f.get("filename", "")))), key=rank)
    sdists = sorted((f for f in files if f.get("packagetype") == "sdist"), key=rank)
    best = wheels or sdists
    return best[0] if best else None


def _resolve_pypi(client: httpx.Client, base: str, name: str, version: str, sdist_only: bool = False
                  ) -> Resolved:
    what = f"PyPI package {name} {version}"
    resp = _get(client, f"{base}/pypi/{name}/{version}/json", what)
    if resp.status_code == 404:
        # Some mirrors serve only the project document; its `releases` map has every version's files.
        files = _pypi_release_files(client, base, name, version)
    elif resp.status_code != 200:
        raise PackageError(f"PyPI answered HTTP {resp.status_code} for {name} {version}")
    else:
        body = _json(resp, what)
        served = (body.get("info") or {}).get("version")
        if served != version:
            raise PackageError(f"asked PyPI for {name} {version} and got {served!r}; "
                               "write the version exactly")
        files = body.get("urls") or []
    chosen = _pick_pypi_file(files, sdist_only)
    if chosen is None:
        missing = "no sdist" if sdist_only else "neither a pure-Python wheel nor an sdist"
        raise PackageError(f"{name} {version} on PyPI has {missing}")
    sha256 = (chosen.get("digests") or {}).get("sha256")
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise PackageError(f"PyPI gives no sha256 for {chosen.get('filename')}")
    lock = PackageLock(registry="pypi", name=name, version=version, filename=str(chosen["filename"]),
                       sha256=sha256)
    return Resolved(lock, None, str(chosen.get("url", "")))


def _pypi_release_files(client: httpx.Client, base: str, name: str, version: str) -> list[dict[str, Any]]:
    """The files of one version from the project document, or a PackageError naming the latest."""
    resp = _get(client, f"{base}/pypi/{name}/json", f"PyPI package {name}")
    if resp.status_code != 200:
        raise PackageError(f"PyPI has no {name} {version} (no package {name!r} at {base})")
    body = _json(resp, name)
    files = (body.get("releases") or {}).get(version)
    if not files:
        latest = (body.get("info") or {}).get("version")
        raise PackageError(f"PyPI has no {name} {version}" + (f" (latest is {latest})" if latest else ""))
    return files


def npm_path(name: str) -> str:
    """`@scope/name` → `@scope%2fname`: the scoped-package path the npm client itself requests."""
    return name.replace("/", "%2f")


def _integrity(dist: dict[str, Any]) -> str | None:
    """The strongest SRI hash in `dist`; a bare sha1 `shasum` (old packages) is converted to SRI."""
    for sri in str(dist.get("integrity") or "").split():
        if _SRI.match(sri):
            return sri
    shasum = dist.get("shasum")
    if isinstance(shasum, str) and re.fullmatch(r"[0-9a-f]{40}", shasum):
        return "sha1-" + base64.b64encode(bytes.fromhex(shasum)).decode()
    return None


def _resolve_npm(client: httpx.Client, base: str, name: str, version: str) -> Resolved:
    what = f"npm package {name} {version}"
    resp = _get(client, f"{base}/{npm_path(name)}/{version}", what)
    if resp.status_code == 404:
        latest = _npm_latest(client, base, name)
        raise PackageError(f"npm has no {name} {version}" +
                           (f" (latest is {latest})" if latest else f" (no package {name!r} at {base})"))
    if resp.status_code != 200:
        raise PackageError(f"npm answered HTTP {resp.status_code} for {name} {version}")
    body = _json(resp, what)
    if body.get("version") != version:  # `/<name>/<dist-tag>` answers too; a lock wants a version
        raise PackageError(f"asked npm for {name} {version} and got {body.get('version')!r}; "
                           "write the version exactly")
    dist = body.get("dist") or {}
    tarball = dist.get("tarball")
    integrity = _integrity(dist)
    if not isinstance(tarball, str) or not tarball or integrity is None:
        raise PackageError(f"npm gives no tarball with an integrity hash for {name} {version}")
    filename = urlsplit(tarball).path.rsplit("/", 1)[-1]
    return Resolved(PackageLock(registry="npm", name=name, version=version, filename=filename),
                    integrity, tarball)


def _npm_latest(client: httpx.Client, base: str, name: str) -> str | None:
    resp = _get(client, f"{base}/{npm_path(name)}", f"npm package {name}",
                headers={"Accept": "application/vnd.npm.install-v1+json"})  # abbreviated: far smaller
    return ((_json(resp, name).get("dist-tags") or {}).get("latest")) if resp.status_code == 200 else None


def resolve_package(runtime: str, version: str, *, pypi_url: str | None = None, npm_url: str | None = None,
                    timeout: float = TIMEOUT_S, client: httpx.Client | None = None) -> Resolved:
    """Pin `runtime` at exactly `version` to one distribution file and its registry hash.

    Registry base URLs: the arguments, else $LABCTL_PYPI_URL / $LABCTL_NPM_URL (mirrors; tests point
    them at loopback), else pypi.org / registry.npmjs.org.
    """
    if runtime not in RUNTIMES:
        raise PackageError(f"unknown agent runtime {runtime!r}; known: {', '.join(sorted(RUNTIMES))}")
    registry, name = RUNTIMES[runtime]
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        if registry == "pypi":
            base = (pypi_url or os.environ.get(PYPI_ENV) or PYPI_URL).rstrip("/")
            return _resolve_pypi(http, base, name, version)
        base = (npm_url or os.environ.get(NPM_ENV) or NPM_URL).rstrip("/")
        return _resolve_npm(http, base, name, version)
    finally:
        if own:
            http.close()


def resolve_pypi(name: str, version: str, *, sdist: bool = False, pypi_url: str | None = None,
                 timeout: float = TIMEOUT_S, client: httpx.Client | None = None) -> Resolved:
    """Pin any PyPI distribution (the pure-Python wheel, else the sdist; only the sdist with `sdist`).

    For sources that come from PyPI rather than as an agent runtime, e.g. llama.cpp vendored in the
    `llama-cpp-python` sdist (`sdist=True`: the wheel would not carry the source tree).
    """
    base = (pypi_url or os.environ.get(PYPI_ENV) or PYPI_URL).rstrip("/")
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        return _resolve_pypi(http, base, name, version, sdist)
    finally:
        if own:
            http.close()
