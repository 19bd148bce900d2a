"""Pin container images by manifest digest, and find every image a lab needs.

A tag like `nvidia/cuda:13.1.0-devel-ubuntu24.04` can be re-pushed; its manifest digest cannot. The
lock asks the registry's v2 HTTP API directly (HEAD on the manifest, anonymous bearer token when
challenged), so locking needs neither a pull nor a Docker engine. A machine that cannot reach the
registry but holds the image (an air-gapped lab, a debootstrapped base) gets the local image id,
marked `source: local`, instead of a failure.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from labctl.errors import LabctlError
from labctl.lock.lockfile import ImageLock
from labctl.lock.mirrors import IMAGE_ID, SUGGESTED_LOCAL, how_to_fix, mirror_target, suggestion
from labctl.lock.reference import DIGEST, DOCKER_HUB, ImageRef, RegistryError, parse_reference
from labctl.spec.task import prebuilt_image

if TYPE_CHECKING:
    from python_on_whales import DockerClient

    from labctl.spec.load import LoadedLab

HUB_ENDPOINT = "https://registry-1.docker.io"
HUB_ENV = "LABCTL_DOCKERHUB_URL"
"""Overrides Docker Hub's API endpoint (a pull-through mirror; tests point it at loopback)."""
TIMEOUT_S = 20.0
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
"""Indexes first: the lock pins the multi-platform index, as `docker push`/`pull` report it."""


class DockerfileError(LabctlError, ValueError):
    """A Dockerfile whose base images cannot be determined (e.g. `FROM $X` with no default for X)."""


def apply_mirrors(ref: ImageRef, mirrors: Mapping[str, str] | None) -> ImageRef:
    """Rewrite through the longest matching key of `mirrors` (see `labctl.lock.mirrors`: keys are
    spelled like images, `ubuntu:24.04` or `docker.io/nvidia/`)."""
    target = mirror_target(str(ref), mirrors)
    return parse_reference(target) if target else ref


def _is_loopback(host: str) -> bool:
    """`127.0.0.1:5000`, `localhost`, `[::1]:5000`, `::1` → True."""
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_endpoint(registry: str, endpoints: Mapping[str, str] | None = None) -> str:
    """Base URL of a registry's API: an explicit endpoint, Docker Hub's API host, plain HTTP for
    loopback (what `docker` itself allows without TLS), HTTPS for everything else."""
    if endpoints and registry in endpoints:
        return endpoints[registry].rstrip("/")
    if registry == DOCKER_HUB:
        return os.environ.get(HUB_ENV, HUB_ENDPOINT).rstrip("/")
    return f"{'http' if _is_loopback(registry) else 'https'}://{registry}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="repository:x:pull,push"` → ("bearer", {realm, …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): q or bare
              for k, q, bare in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]+))', rest)}
    return scheme.lower(), params


def _token(client: httpx.Client, challenge: str, ref: ImageRef) -> str:
    scheme, params = parse_challenge(challenge)
    if scheme != "bearer" or "realm" not in params:
        raise RegistryError(f"{ref.registry} wants credentials ({challenge or 'no challenge'}); "
                            "labctl pulls anonymously — use a mirror or a local image")
    query = {"service": params["service"]} if "service" in params else {}
    query["scope"] = params.get("scope", f"repository:{ref.repository}:pull")
    try:
        resp = client.get(params["realm"], params=query)
    except httpx.TransportError as exc:
        raise RegistryError(f"cannot reach the token service {params['realm']}: {exc}") from None
    if resp.status_code != 200:
        raise RegistryError(f"token service {params['realm']} answered HTTP {resp.status_code}")
    try:
        body = resp.json()
        token = body.get("token") or body.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"token service {params['realm']} gave no token")
    return token


def _digest_of(resp: httpx.Response, *, body: bool) -> str | None:
    header = resp.headers.get("docker-content-digest", "")
    if not body:
        return header if DIGEST.match(header) else None
    computed = "sha256:" + hashlib.sha256(resp.content).hexdigest()
    if DIGEST.match(header) and header != computed:
        raise RegistryError(f"manifest at {resp.request.url} does not match its digest header {header}")
    return computed


def registry_digest(reference: str | ImageRef, *, endpoints: Mapping[str, str] | None = None,
                    timeout: float = TIMEOUT_S, client: httpx.Client | None = None) -> str:
    """The manifest digest the registry serves for a tag (no local fallback, no mirrors).

    HEAD first (no body to transfer, and Docker Hub does not count HEADs against its anonymous pull
    rate limit); GET when HEAD gives no usable Docker-Content-Digest, hashing
    the exact bytes served. A 401 is answered once with an anonymous bearer token.
    """
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    if ref.digest:
        return ref.digest
    base = registry_endpoint(ref.registry, endpoints)
    url = f"{base}/v2/{ref.repository}/manifests/{ref.tag}"
    own = client is None
    # No proxy for loopback: an HTTP(S)_PROXY meant for the internet must not swallow a local registry.
    http = client or httpx.Client(timeout=timeout, follow_redirects=True,
                                  trust_env=not _is_loopback(httpx.URL(base).host))
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    try:
        for method in ("HEAD", "GET"):
            resp = http.request(method, url, headers=headers)
            if resp.status_code == 401 and "Authorization" not in headers:
                token = _token(http, resp.headers.get("www-authenticate", ""), ref)
                headers["Authorization"] = f"Bearer {token}"
                resp = http.request(method, url, headers=headers)
            if resp.status_code == 404:
                raise RegistryError(f"{ref} does not exist at {base} (no such repository or tag)")
            if resp.status_code in (401, 403):
                raise RegistryError(f"{base} denied access to {ref.repository} (HTTP {resp.status_code}; "
                                    "private image? labctl pulls anonymously)")
            if resp.status_code == 200:
                digest = _digest_of(resp, body=method == "GET")
                if digest:
                    return digest
            elif method == "GET":
                raise RegistryError(f"{base} answered HTTP {resp.status_code} for {ref}")
        raise RegistryError(f"{base} gave no manifest digest for {ref}")  # pragma: no cover
    except httpx.TransportError as exc:
        raise RegistryError(f"cannot reach {base}: {exc or type(exc).__name__}") from None
    finally:
        if own:
            http.close()


def local_image_id(reference: str, docker: DockerClient | None = None) -> str | None:
    """The id of a local image of that name (what `docker build` would use), or None."""
    from python_on_whales import DockerClient
    from python_on_whales.client_config import ClientNotFoundError
    from python_on_whales.exceptions import DockerException

    try:
        image_id = (docker or DockerClient()).image.inspect(reference).id
    except (DockerException, ClientNotFoundError, OSError):
        return None
    return image_id if DIGEST.match(image_id or "") else None


def resolve_image(reference: str, *, mirrors: Mapping[str, str] | None = None,
                  endpoints: Mapping[str, str] | None = None, timeout: float = TIMEOUT_S,
                  docker: DockerClient | None = None, local_fallback: bool = True,
                  client: httpx.Client | None = None) -> ImageLock:
    """Pin an image: the registry's manifest digest (through `mirrors`), else the local image id.

    `endpoints` maps a registry name (`docker.io`, `ghcr.io`) to its API base URL. Any registry
    failure — unreachable, unknown tag, denied — falls back to a local image of the name the build
    will use (the mirror's, when one applies) when `local_fallback`, since a locally built or
    imported image is what `docker build` would use. The lock records the mirror next to the image.
    A failure names the image, the mirror, the mirror map and the lab.yaml line that would fix it.
    """
    ref = parse_reference(reference)
    if ref.digest:
        return ImageLock(digest=ref.digest, source="registry")
    target = mirror_target(reference, mirrors)
    name = target or reference
    if IMAGE_ID.match(name):  # an image id names a local image, never a registry's
        reason = "an image id is not in any registry"
    else:
        try:
            return ImageLock(digest=registry_digest(parse_reference(name), endpoints=endpoints,
                                                    timeout=timeout, client=client),
                             source="registry", mirror=target)
        except RegistryError as exc:
            reason = str(exc)
    local = local_image_id(name, docker) if local_fallback else None
    if local:
        return ImageLock(digest=local, source="local", mirror=target)
    where = f"and no local image is named {name}" if local_fallback else "(local fallback off)"
    via = f" through its mirror {target}" if target else ""
    have = bool(local_fallback and local_image_id(SUGGESTED_LOCAL, docker))
    raise RegistryError(f"cannot pin image {reference}{via}: {reason}; {where}; "
                        + how_to_fix(reference, mirrors, suggestion(target, have)))


_HEREDOC = re.compile(r"(?<!<)<<(?!<)(-?)([\"']?)([A-Za-z_]\w*)\2")


def _instructions(text: str, *, heredocs_on: bool = True) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments and heredoc bodies dropped.

    A `<<WORD` whose WORD never closes was not a heredoc (the classic builder has none): the text
    is then parsed again without heredocs rather than losing every instruction after it."""
    lines = text.splitlines()
    escape = "\\"
    for line in lines:  # parser directives sit at the very top
        m = re.match(r"^\s*#\s*(\w+)\s*=\s*(\S+)\s*$", line)
        if not m:
            break
        if m.group(1).lower() == "escape":
            escape = m.group(2)
    out: list[tuple[str, str]] = []
    buf: str | None = None
    heredocs: list[tuple[str, bool]] = []
    for line in lines:
        if heredocs:
            word, strip_tabs = heredocs[0]
            if (line.lstrip("\t") if strip_tabs else line) == word:
                heredocs.pop(0)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        right = line.rstrip()
        cont = right.endswith(escape)
        buf = (buf or "") + (right[: -len(escape)] if cont else line)
        if cont:
            continue
        keyword, _, args = buf.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        out.append((keyword, args))
        buf = None
        if heredocs_on and keyword in ("RUN", "COPY", "ADD"):
            heredocs = [(w, dash == "-") for dash, _, w in _HEREDOC.findall(args)]
    return _instructions(text, heredocs_on=False) if heredocs else out


_VAR = re.compile(r"\$(?:\{(\w+)(?::([-+])([^}]*))?\}|(\w+))")


def _substitute(value: str, args: Mapping[str, str | None], dockerfile: Path) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        current = args.get(name)
        if m.group(2) == "-":
            return current or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if current else ""
        if current is None:
            raise DockerfileError(f"{dockerfile}: `{value}` uses ${name}, which has no default; "
                                  "give it a default in a global ARG")
        return current

    return _VAR.sub(one, value)


def dockerfile_bases(dockerfile: Path, build_args: Mapping[str, str] | None = None) -> list[str]:
    """Every external image a Dockerfile builds from, in order: FROM lines (with global ARG defaults,
    or `build_args`, substituted), and `COPY --from=` / `RUN --mount=from=` naming an image. Stage
    names, stage numbers and `scratch` are not images."""
    given = dict(build_args or {})
    args: dict[str, str | None] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False

    def add(image: str) -> None:
        image = _substitute(image, args, dockerfile)
        if image and image.lower() not in stages and image != "scratch" and not image.isdigit():
            images.append(image)

    for keyword, rest in _instructions(dockerfile.read_text(encoding="utf-8")):
        tokens = rest.split()
        if keyword == "ARG" and not seen_from:
            for token in tokens:
                name, eq, default = token.partition("=")
                args[name] = given.get(name, default.strip("\"'") if eq else None)
        elif keyword == "FROM":
            seen_from = True
            words = [t for t in tokens if not t.startswith("--")]
            if not words:
                raise DockerfileError(f"{dockerfile}: FROM without an image")
            add(words[0])
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2].lower())
        elif keyword in ("COPY", "ADD"):
            for token in tokens:
                if token.startswith("--from="):
                    add(token.removeprefix("--from="))
        elif keyword == "RUN":
            for token in tokens:
                if token.startswith("--mount="):
                    for field in token.removeprefix("--mount=").split(","):
                        if field.startswith("from="):
                            add(field.removeprefix("from="))
    return list(dict.fromkeys(images))


def images_dir(base_dir: Path) -> Path | None:
    """The `images/` directory of a lab: next to the lab file, else in an enclosing directory up to
    the root of the git work tree (labs/smoke.yaml uses the repository's images/)."""
    base_dir = base_dir.resolve()
    chain = [base_dir, *base_dir.parents]
    top = next((i for i, d in enumerate(chain) if (d / ".git").exists()), 0)
    return next((d / "images" for d in chain[: top + 1] if (d / "images").is_dir()), None)


def image_references(loaded: LoadedLab) -> list[str]:
    """Every image reference a lab needs, as written (the keys of `lab.lock`'s images), sorted.

    The CUDA build/runtime images, the CPU build image, the task's environment/Dockerfile bases (or
    its `[environment] docker_image` when it has no Dockerfile or the lab builds from prebuilt images:
    `spec.task.prebuilt_image`; beside a Dockerfile, as Terminal-Bench 2 writes it, docker_image is
    otherwise a prebuilt copy of what labctl builds, so nothing is pulled from it and nothing pins
    it), and the bases of every images/*/Dockerfile.
    """
    engine = loaded.lab.engine
    found: set[str] = {engine.cpu_image}
    if engine.cuda is not None:
        found |= {engine.cuda.build_image, engine.cuda.runtime_image}
    dockerfiles = []
    prefer = loaded.lab.build.task_image == "prebuilt"
    for task_dir in loaded.tasks.values():  # the one task, or every task of a dataset
        if image := prebuilt_image(task_dir, prefer):
            found.add(image)
        else:
            dockerfiles.append(task_dir / "environment" / "Dockerfile")
    root = images_dir(loaded.base_dir)
    if root is not None:
        dockerfiles += sorted(root.glob("*/Dockerfile"))
    for dockerfile in dockerfiles:
        if dockerfile.is_file():
            found.update(dockerfile_bases(dockerfile))
    return sorted(found)
