"""The "outside world" of a test, served from the test's own containers: never the real internet.

`Outside` makes an **internal** Docker network (no route out, so not even `egress: open` can reach
past it) and hands it to labctl as `LABCTL_EGRESS_NETWORK`: a run's egress gateway (`allowlist`) or
its agent container (`open`) joins it instead of a fresh bridge. On it, stand-in hosts
(`tests/outside_server.py` in a container of the labctl image: HTTP on 80, HTTPS on 443 with a
self-signed certificate) answer under registry host names by network alias (`pypi.org`,
`deb.debian.org`, …); every request they see is in `Standin.requests()`.

Content helpers write what the stand-ins serve: `pypi_tree` (PEP 503 simple index + files, for
`pip install --index-url http://pypi.org/simple --trusted-host pypi.org NAME`), `debian_tree` (an
unsigned archive in Debian's layout, for `deb [trusted=yes] http://deb.debian.org/debian bookworm
main`) and `make_deb` (a real .deb built by dpkg-deb). See /work/wt/OUTSIDE_FIXTURE.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from labctl.engine.container import Engine
from labctl.engine.names import label_flags

SERVER = Path(__file__).resolve().parent / "outside_server.py"
EGRESS_NETWORK_ENV = "LABCTL_EGRESS_NETWORK"
"""labctl's own variable (`labctl.run.egress`): the existing network a run's way out joins."""
READY_S = 60


def labctl_image(docker: Engine) -> str:
    """A labctl image of this engine (any: the stand-ins only need its python3)."""
    found = docker("images", "--filter", "label=org.labctl.image=labctl", "--format",
                   "{{.Repository}}:{{.Tag}}").stdout.split()
    if not found:
        raise RuntimeError("no labctl image: build a lab's images first (tests/run/test_runner.build)")
    return found[0]


@dataclass
class Standin:
    """One stand-in host: a container answering under `aliases` on the outside network."""

    docker: Engine
    name: str
    aliases: list[str]

    def requests(self) -> list[dict[str, object]]:
        """Every request it answered, oldest first: {"method", "host", "path", "status", "tls"}."""
        out = self.docker("logs", self.name).stdout
        return [rec for line in out.splitlines() if line.startswith("{")
                if "method" in (rec := json.loads(line))]


@dataclass
class Outside:
    """An internal network of stand-in hosts; `env` points labctl's runs at it."""

    docker: Engine
    scratch: Path
    image: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    standins: list[Standin] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {"labctl.test": f"outside-{self.id}"}

    @property
    def network(self) -> str:
        return f"lc-outside-{self.id}"

    @property
    def env(self) -> dict[str, str]:
        """What labctl needs in its environment to use this outside (set it for the run)."""
        return {EGRESS_NETWORK_ENV: self.network}

    def start(self) -> None:
        self.docker("network", "create", "--internal", *label_flags(self.labels), self.network)

    def serve(self, root: Path, aliases: list[str], *, tls: bool = True) -> Standin:
        """A stand-in serving `root` under every name in `aliases` (HTTP; HTTPS on 443 with `tls`)."""
        name = f"lc-outside-{self.id}-{len(self.standins)}"
        mounts = ["-v", f"{SERVER}:/outside_server.py:ro", "-v", f"{root.resolve()}:/srv:ro"]
        if tls:
            mounts += ["-v", f"{self._certificate(aliases)}:/tls:ro"]
        alias_flags = [f for a in aliases for f in ("--network-alias", a)]
        self.docker("run", "-d", "--name", name, "--network", self.network, *alias_flags, "--user", "0",
                    *label_flags(self.labels), *mounts, "--entrypoint", "python3", self.image,
                    "-u", "/outside_server.py", "/srv")
        one = Standin(self.docker, name, aliases)
        self.standins.append(one)
        deadline = time.monotonic() + READY_S
        while '"ready"' not in self.docker("logs", name, check=False).stdout:  # its own "listening" line
            if time.monotonic() > deadline or not self.docker.running(name):
                raise RuntimeError(f"stand-in {name} did not start: {self.docker('logs', name, check=False)}")
            time.sleep(0.2)
        return one

    def _certificate(self, aliases: list[str]) -> Path:
        """A self-signed certificate for the aliases (clients use -k / --trusted-host)."""
        d = self.scratch / f"tls-{len(self.standins)}"
        d.mkdir(parents=True, exist_ok=True)
        san = ",".join(f"DNS:{a}" for a in aliases)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", f"/CN={aliases[0]}", "-addext", f"subjectAltName={san}",
                        "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                       check=True, capture_output=True)
        for f in d.iterdir():
            f.chmod(0o644)
        return d

    def close(self) -> None:
        self.docker.remove_labelled(self.labels)


@contextmanager
def outside_world(docker: Engine, scratch: Path, image: str | None = None,
                  env: Mapping[str, str] | None = None) -> Iterator[Outside]:
    """An `Outside`, its network in `os.environ` (or in the `env` dict given) while in use; removed
    afterwards, stand-ins and all."""
    world = Outside(docker, scratch, image or labctl_image(docker))
    world.start()
    target = os.environ if env is None else env
    saved = target.get(EGRESS_NETWORK_ENV)
    target[EGRESS_NETWORK_ENV] = world.network  # type: ignore[index]
    try:
        yield world
    finally:
        if saved is None:
            target.pop(EGRESS_NETWORK_ENV, None)  # type: ignore[union-attr]
        else:
            target[EGRESS_NETWORK_ENV] = saved  # type: ignore[index]
        world.close()


# --- what the stand-ins serve ----------------------------------------------------------------------


def pypi_tree(root: Path, files: Mapping[str, list[tuple[str, bytes]]]) -> Path:
    """A PEP 503 simple index under `root`: project name → [(filename, bytes)] (wheels or sdists),
    at /simple/<name>/ linking /packages/<filename>#sha256=…; returns `root`."""
    (root / "simple").mkdir(parents=True, exist_ok=True)
    (root / "packages").mkdir(exist_ok=True)
    names = []
    for name, dists in files.items():
        norm = name.lower().replace("_", "-").replace(".", "-")
        names.append(norm)
        links = []
        for filename, data in dists:
            (root / "packages" / filename).write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            links.append(f'<a href="/packages/{filename}#sha256={sha}">{filename}</a><br>')
        page = root / "simple" / norm
        page.mkdir(exist_ok=True)
        (page / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    index = "".join(f'<a href="/simple/{n}/">{n}</a><br>\n' for n in names)
    (root / "simple" / "index.html").write_text(f"<html><body>\n{index}</body></html>\n")
    return root


def make_deb(out_dir: Path, package: str, version: str, files: Mapping[str, bytes | str],
             *, postinst: str | None = None, arch: str = "all") -> Path:
    """A real .deb (dpkg-deb --build) installing `files` (absolute path → content; a path under a
    `bin/` directory is made executable); `postinst` is its maintainer script."""
    tree = out_dir / f".{package}-{version}"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: labctl tests "
        f"<tests@labctl.invalid>\nDescription: a stand-in package of labctl's tests\n")
    if postinst:
        (tree / "DEBIAN" / "postinst").write_text(postinst)
        (tree / "DEBIAN" / "postinst").chmod(0o755)
    for path, content in files.items():
        dest = tree / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content.encode() if isinstance(content, str) else content)
        dest.chmod(0o755 if "/bin/" in path else 0o644)
    deb = out_dir / f"{package}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(tree)
    return deb


def debian_tree(root: Path, debs: list[Path], *, suite: str = "bookworm", component: str = "main",
                archs: tuple[str, ...] = ("amd64", "arm64")) -> Path:
    """An unsigned archive in Debian's layout under `root` (= http://deb.debian.org/debian/ when
    served there): pool/ with the .debs, dists/<suite>/Release and <component>/binary-<arch>/Packages
    (+ .gz). apt accepts it with `[trusted=yes]`; returns `root`."""
    pool = root / "pool" / component
    pool.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for deb in debs:
        shutil.copyfile(deb, pool / deb.name)
        data = deb.read_bytes()
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True,
                                 text=True).stdout.strip()
        stanzas.append(f"{control}\nFilename: pool/{component}/{deb.name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    packages = "\n".join(stanzas).encode()
    dist = root / "dists" / suite
    listed = []
    for arch in archs:
        d = dist / component / f"binary-{arch}"
        d.mkdir(parents=True, exist_ok=True)
        for fname, body in (("Packages", packages), ("Packages.gz", gzip.compress(packages, mtime=0))):
            (d / fname).write_bytes(body)
            sha = hashlib.sha256(body).hexdigest()
            listed.append(f" {sha} {len(body)} {component}/binary-{arch}/{fname}")
    (dist / "Release").write_text(
        f"Origin: labctl-tests\nLabel: stand-in\nSuite: {suite}\nCodename: {suite}\n"
        "Date: Thu, 01 Jan 2026 00:00:00 UTC\n"
        f"Architectures: {' '.join(archs)}\nComponents: {component}\nSHA256:\n" + "\n".join(listed) + "\n")
    return root
