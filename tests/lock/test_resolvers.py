"""Resolvers behind `labctl lock`: tree hashes, git refs, image digests, package hashes.

Every server here is on 127.0.0.1 (a real git repo over file://, Debian's real distribution
registry, hand-written PyPI/npm JSON); a guard fails any test whose HTTP client leaves loopback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import httpx
import pytest
from python_on_whales import DockerClient

from labctl.lock.gitref import GitRefError, fetch_source, lock_path_source, resolve_git
from labctl.lock.packages import PackageError, resolve_package, resolve_pypi
from labctl.lock.reference import RegistryError, parse_reference
from labctl.lock.registry import (
    DockerfileError,
    apply_mirrors,
    dockerfile_bases,
    image_references,
    parse_challenge,
    registry_digest,
    registry_endpoint,
    resolve_image,
)
from labctl.spec.load import load_lab
from labctl.treehash import TreeHashError, file_sha256, tree_sha256
from tests.helpers import lab_copy
from tests.registry import (
    MANIFEST_DIGEST,
    Server,
    distribution_registry,
    free_port,
    json_routes,
    serve,
    token_registry,
)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if any httpx request here is about to leave 127.0.0.1, and aim defaults at nothing."""
    real = httpx.HTTPTransport.handle_request

    def loopback(host: str) -> bool:
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def guarded(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        assert loopback(request.url.host), f"non-loopback request in a test: {request.url}"
        return real(self, request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", guarded)
    dead = f"http://127.0.0.1:{free_port()}"
    for var in ("LABCTL_DOCKERHUB_URL", "LABCTL_PYPI_URL", "LABCTL_NPM_URL"):
        monkeypatch.setenv(var, dead)


# ---------------------------------------------------------------------------------------- treehash

def _tree(root: Path, files: dict[str, bytes], mtime: int) -> Path:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (mtime, mtime))
    return root


FILES = {"a.txt": b"alpha\n", "sub/b.sh": b"#!/bin/sh\necho hi\n", "node_modules/x/index.js": b"1;\n"}


def test_tree_hash_ignores_mtimes_and_modes_but_not_content(tmp_path: Path) -> None:
    one = _tree(tmp_path / "one", FILES, 1_000_000)
    two = _tree(tmp_path / "two", FILES, 2_000_000)
    (two / "a.txt").chmod(0o600)  # group/other bits are not content
    (two / "empty-dir").mkdir()  # git cannot carry an empty directory, so neither does the hash
    (two / ".git").mkdir()
    (two / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (two / "sub" / "__pycache__").mkdir()
    (two / "sub" / "__pycache__" / "b.pyc").write_bytes(b"\0")
    base = tree_sha256(one)
    assert tree_sha256(two) == base and len(base) == 64

    (two / "a.txt").write_bytes(b"alphA\n")
    assert tree_sha256(two) != base
    (two / "a.txt").write_bytes(b"alpha\n")
    (two / "sub" / "b.sh").chmod(0o755)
    assert tree_sha256(two) != base
    (two / "sub" / "b.sh").chmod(0o644)
    (two / "a.txt").rename(two / "A.txt")
    assert tree_sha256(two) != base
    (two / "A.txt").rename(two / "a.txt")
    assert tree_sha256(two) == base
    (two / "node_modules" / "x" / "index.js").write_bytes(b"2;\n")  # a task's node_modules is content
    assert tree_sha256(two) != base
    assert tree_sha256(two, ignore=lambda p: p.parts[0] == "node_modules") == \
        tree_sha256(one, ignore=lambda p: p == PurePosixPath("node_modules"))


def test_tree_hash_symlinks_by_target_and_odd_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", {"f": b"x"}, 0)
    (root / "link").symlink_to("missing-target")  # dangling: hashed by its text, never followed
    first = tree_sha256(root)
    (root / "link").unlink()
    (root / "link").symlink_to("f")
    assert tree_sha256(root) != first
    os.mkfifo(root / "pipe")
    with pytest.raises(TreeHashError, match="pipe"):
        tree_sha256(root)
    with pytest.raises(NotADirectoryError):
        tree_sha256(root / "f")
    assert file_sha256(root / "f") == hashlib.sha256(b"x").hexdigest()


# --------------------------------------------------------------------------------------------- git

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, str]:
    """A repo with a lightweight tag b9660, an annotated tag v2, a branch dev, and a name that is both
    a tag and a branch; returns the commits and the URL."""
    r = tmp_path / "llama cpp"  # a space: file:// URLs are percent-encoded
    r.mkdir()
    git(r, "init", "-q", "-b", "master")
    (r / "CMakeLists.txt").write_text("project(x)\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "one")
    c1 = git(r, "rev-parse", "HEAD")
    git(r, "tag", "b9660")
    (r / "CMakeLists.txt").write_text("project(y)\n")
    git(r, "commit", "-qam", "two")
    c2 = git(r, "rev-parse", "HEAD")
    git(r, "tag", "-a", "v2", "-m", "release 2")
    git(r, "checkout", "-qb", "dev")
    (r / "new.c").write_text("int main(){}\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "three")
    c3 = git(r, "rev-parse", "HEAD")
    git(r, "checkout", "-q", "master")
    git(r, "branch", "both", c1)
    git(r, "tag", "both", c2)
    return {"url": r.as_uri(), "path": str(r), "c1": c1, "c2": c2, "c3": c3,
            "v2_object": git(r, "rev-parse", "v2")}


def test_resolve_git_tags_branches_and_commits(repo: dict[str, str]) -> None:
    url = repo["url"]
    assert resolve_git(url, "b9660") == repo["c1"]
    assert repo["v2_object"] != repo["c2"]
    assert resolve_git(url, "v2") == repo["c2"]  # the peeled commit, not the tag object
    assert resolve_git(url, "refs/tags/v2") == repo["c2"]
    assert resolve_git(url, "dev") == repo["c3"]
    assert resolve_git(url, "refs/heads/both") == repo["c1"]
    assert resolve_git(url, "HEAD") == repo["c2"]
    assert resolve_git(url, repo["c3"].upper()) == repo["c3"]
    assert resolve_git(repo["path"], "b9660") == repo["c1"]  # a plain path works like file://


@pytest.mark.parametrize(("ref", "message"), [
    ("b9999", "ref 'b9999' does not exist in file://"),
    ("0" * 40, "does not exist in file://"),
    ("abc1234", "give all 40 hex digits"),
    ("both", "both a tag and a branch"),
])
def test_resolve_git_errors_name_url_and_ref(repo: dict[str, str], ref: str, message: str) -> None:
    with pytest.raises(GitRefError, match=message) as info:
        resolve_git(repo["url"], ref)
    assert "\n" not in str(info.value)


def test_resolve_git_unreachable_repo(tmp_path: Path) -> None:
    with pytest.raises(GitRefError, match=r"cannot list the refs of file://.*nope"):
        resolve_git((tmp_path / "nope").as_uri(), "main")


def test_fetch_source_checks_out_exactly_the_commit(repo: dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "src"
    assert fetch_source(repo["url"], repo["c1"], dest) == dest
    assert git(dest, "rev-parse", "HEAD") == repo["c1"]
    assert (dest / "CMakeLists.txt").read_text() == "project(x)\n" and not (dest / "new.c").exists()
    mark = (dest / "CMakeLists.txt").stat().st_mtime_ns
    fetch_source(repo["url"], repo["c1"], dest)  # already there and clean: reused, not refetched
    assert (dest / "CMakeLists.txt").stat().st_mtime_ns == mark
    fetch_source(repo["url"], repo["c3"], dest)  # another commit: replaced
    assert git(dest, "rev-parse", "HEAD") == repo["c3"]
    git(Path(repo["path"]), "checkout", "-q", "dev")
    assert lock_path_source(dest).tree_sha256 == lock_path_source(Path(repo["path"])).tree_sha256
    with pytest.raises(GitRefError, match="0000000000"):
        fetch_source(repo["url"], "0" * 40, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(GitRefError, match="not made by labctl"):
        fetch_source(repo["url"], repo["c1"], foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_fetch_source_falls_back_to_a_full_fetch(repo: dict[str, str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that refuses unadvertised commits (protocol v0, no allowAnySHA1InWant) still works."""
    r = Path(repo["path"])
    git(r, "commit", "-q", "--allow-empty", "-m", "four")
    hidden = repo["c2"]  # master moved on: c2 is reachable but no longer a ref tip (only the v2 tag object)
    git(r, "tag", "-d", "v2", "both")
    for key, value in {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.version",
                       "GIT_CONFIG_VALUE_0": "0"}.items():
        monkeypatch.setenv(key, value)
    dest = fetch_source(repo["url"], hidden, tmp_path / "src")
    assert git(dest, "rev-parse", "HEAD") == hidden


def test_lock_path_source(repo: dict[str, str], tmp_path: Path) -> None:
    work = Path(repo["path"])
    clean = lock_path_source(work)
    assert clean.commit == repo["c2"] and not clean.dirty
    (work / ".gitignore").write_text("build/\n")
    git(work, "add", ".gitignore")
    git(work, "commit", "-qm", "ignore build")
    head = git(work, "rev-parse", "HEAD")
    before = lock_path_source(work)
    (work / "build").mkdir()
    (work / "build" / "CMakeCache.txt").write_text("junk")  # git-ignored: neither content nor dirt
    after = lock_path_source(work)
    assert after == before and after.commit == head and not after.dirty
    assert lock_path_source(work, respect_gitignore=False).tree_sha256 != before.tree_sha256
    (work / "CMakeLists.txt").write_text("project(edited)\n")
    edited = lock_path_source(work)
    assert edited.dirty and edited.commit == head and edited.tree_sha256 != before.tree_sha256
    plain = _tree(tmp_path / "plain", {"x": b"1"}, 0)
    assert lock_path_source(plain) == (tree_sha256(plain), None, False)


# ---------------------------------------------------------------------------------------- registry

@pytest.mark.parametrize(("ref", "full"), [
    ("debian:bookworm-slim", "docker.io/library/debian:bookworm-slim"),
    ("nvidia/cuda:13.1.0-devel-ubuntu24.04", "docker.io/nvidia/cuda:13.1.0-devel-ubuntu24.04"),
    ("ubuntu", "docker.io/library/ubuntu:latest"),
    ("index.docker.io/library/debian:12", "docker.io/library/debian:12"),
    ("127.0.0.1:5000/foo:bar", "127.0.0.1:5000/foo:bar"),
    ("localhost/a/b", "localhost/a/b:latest"),
    ("ghcr.io/x/y@sha256:" + "a" * 64, "ghcr.io/x/y@sha256:" + "a" * 64),
])
def test_parse_reference(ref: str, full: str) -> None:
    assert str(parse_reference(ref)) == full


def test_mirrors_endpoints_and_challenges() -> None:
    mirrors = {"docker.io/nvidia": "gpu.lan/nvidia", "docker.io/": "mirror.lan:5000/hub/"}
    assert str(apply_mirrors(parse_reference("nvidia/cuda:13"), mirrors)) == "gpu.lan/nvidia/cuda:13"
    assert str(apply_mirrors(parse_reference("nvidia2/x:1"), mirrors)) == "mirror.lan:5000/hub/nvidia2/x:1"
    assert str(apply_mirrors(parse_reference("ghcr.io/a/b:1"), mirrors)) == "ghcr.io/a/b:1"
    assert registry_endpoint("[::1]:5000") == "http://[::1]:5000"
    assert registry_endpoint("localhost:5000") == "http://localhost:5000"
    assert registry_endpoint("ghcr.io") == "https://ghcr.io"
    assert parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                           'scope="repository:a/b:pull,push"') == (
        "bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                   "scope": "repository:a/b:pull,push"})


def test_invalid_reference_and_digest_reference() -> None:
    with pytest.raises(RegistryError, match="not a valid image reference"):
        parse_reference("Debian:Bookworm")
    pinned = "ghcr.io/x/y@sha256:" + "b" * 64
    assert resolve_image(pinned).digest == "sha256:" + "b" * 64  # already content-addressed: no request


def test_token_flow_and_digest_from_body() -> None:
    box: list[str] = []
    with serve(token_registry(lambda: box[0])) as server:
        box.append(server.url)
        host = server.url.removeprefix("http://")
        assert registry_digest(f"{host}/auth/with-header:1") == MANIFEST_DIGEST
        methods = [(m, p.split("?")[0], h.get("authorization")) for m, p, h in server.requests]
        assert methods == [("HEAD", "/v2/auth/with-header/manifests/1", None),
                           ("GET", "/token", None),
                           ("HEAD", "/v2/auth/with-header/manifests/1", "Bearer good-token")]
        assert "scope=repository%3Aauth%2Fwith-header%3Apull" in server.requests[1][1]
        accept = server.requests[0][2]["accept"]
        assert accept.startswith("application/vnd.oci.image.index.v1+json") and "manifest.v2" in accept
        server.requests.clear()
        assert resolve_image(f"{host}/auth/no-header:1", local_fallback=False).digest == MANIFEST_DIGEST
        assert [m for m, _, _ in server.requests] == ["HEAD", "GET", "HEAD", "GET"]
        with pytest.raises(RegistryError, match="does not exist"):
            registry_digest(f"{host}/auth/with-header:2")


def test_basic_auth_registry_is_refused_clearly() -> None:
    def basic(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return 401, {"WWW-Authenticate": 'Basic realm="private"'}, b""

    with serve(basic) as server, pytest.raises(RegistryError, match="wants credentials"):
        registry_digest(server.url.removeprefix("http://") + "/x/y:1")


@pytest.mark.docker
def test_registry_digest_matches_docker_push(docker_engine: DockerClient, labctl_labels: dict[str, str],
                                             tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM debian:bookworm-slim\nLABEL purpose=resolver-test\n")
    with distribution_registry(tmp_path) as host:
        tag = f"{host}/labctl-test/base:1"
        docker_engine.legacy_build(tmp_path / "ctx", tags=[tag], labels=labctl_labels)  # removed by label
        docker_engine.image.push(tag, quiet=True)
        repo_digests = docker_engine.image.inspect(tag).repo_digests
        pushed = next(d for d in repo_digests if d.startswith(f"{host}/labctl-test/base@"))
        digest = pushed.split("@", 1)[1]
        assert resolve_image(tag, docker=docker_engine).model_dump(exclude_none=True) == {"digest": digest,
                                                                          "source": "registry"}
        # An air-gapped lab: Engine Hub names rewritten to the local mirror; docker.io is never asked.
        mirrors = {"docker.io/labctl-test/": f"{host}/labctl-test/"}
        hub = {"docker.io": f"http://127.0.0.1:{free_port()}"}
        assert resolve_image("labctl-test/base:1", mirrors=mirrors, endpoints=hub).digest == digest
        with pytest.raises(RegistryError, match=r"labctl-test/base:nope.*does not exist.*no local image"):
            resolve_image(f"{host}/labctl-test/base:nope", docker=docker_engine)


@pytest.mark.docker
def test_local_fallback_when_registry_unreachable(docker_engine: DockerClient) -> None:
    hub = {"docker.io": f"http://127.0.0.1:{free_port()}"}
    local = resolve_image("debian:bookworm-slim", endpoints=hub, docker=docker_engine, timeout=5)
    assert local.source == "local" and local.digest == docker_engine.image.inspect("debian:bookworm-slim").id
    with pytest.raises(RegistryError, match=r"cannot pin image debian:bookworm-slim: cannot reach http://127"):
        resolve_image("debian:bookworm-slim", endpoints=hub, local_fallback=False)
    with pytest.raises(RegistryError, match="labctl-no-such/image:1.*no local image"):
        resolve_image("labctl-no-such/image:1", endpoints=hub, docker=docker_engine)


DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG CUDA=13.1.0
ARG UBUNTU
ARG TAG
FROM --platform=$BUILDPLATFORM nvidia/cuda:${CUDA}-devel-ubuntu${UBUNTU:-24.04} AS build
RUN --mount=type=cache,target=/root/.cache \\
    --mount=type=bind,from=ghcr.io/astral-sh/uv:0.5,source=/uv,target=/uv \\
    echo building
COPY --from=build /out /out
RUN <<EOF
FROM not/an-image:inside-heredoc
EOF
FROM build AS test
FROM nvidia/cuda:${CUDA}-runtime-ubuntu24.04
COPY --from=build /app /app
COPY --from=busybox:1.36 /bin/busybox /bin/
COPY --from=0 /x /x
FROM scratch
"""


def test_dockerfile_bases(tmp_path: Path) -> None:
    df = tmp_path / "Dockerfile"
    df.write_text(DOCKERFILE)
    assert dockerfile_bases(df) == ["nvidia/cuda:13.1.0-devel-ubuntu24.04", "ghcr.io/astral-sh/uv:0.5",
                                    "nvidia/cuda:13.1.0-runtime-ubuntu24.04", "busybox:1.36"]
    assert dockerfile_bases(df, {"CUDA": "12.8.1"})[0] == "nvidia/cuda:12.8.1-devel-ubuntu24.04"
    df.write_text("ARG TAG\nFROM debian:${TAG}\n")
    with pytest.raises(DockerfileError, match=r"\$TAG, which has no default"):
        dockerfile_bases(df)
    df.write_text("FROM alpine:3 AS a\nRUN cat <<<word\nFROM debian:12\n")  # a here-string, no heredoc
    assert dockerfile_bases(df) == ["alpine:3", "debian:12"]


def test_lab_images(tmp_path: Path) -> None:
    lab = load_lab(lab_copy(tmp_path))  # Round 7: CUDA images + CPU image; tag-manager has no Dockerfile
    assert image_references(lab) == ["debian:bookworm-slim", "nvidia/cuda:13.1.0-devel-ubuntu24.04",
                               "nvidia/cuda:13.1.0-runtime-ubuntu24.04"]
    (tmp_path / ".git").mkdir()  # the repository root: labs/ below it share its images/
    (tmp_path / "images" / "agent").mkdir(parents=True)
    (tmp_path / "images" / "agent" / "Dockerfile").write_text("FROM python:3.12-slim AS x\nFROM x\n")
    (tmp_path / "labs").mkdir()
    smoke = (Path(__file__).parents[2] / "labs" / "smoke.yaml").read_text()
    (tmp_path / "labs" / "smoke.yaml").write_text(smoke)
    assert image_references(load_lab(tmp_path / "labs" / "smoke.yaml")) == ["debian:bookworm-slim",
                                                                         "python:3.12-slim"]


# ---------------------------------------------------------------------------------------- packages

def _hex(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def _pypi_file(filename: str, packagetype: str, seed: str) -> dict[str, object]:
    return {"comment_text": "", "digests": {"blake2b_256": _hex("b2" + seed), "md5": _hex(seed)[:32],
                                            "sha256": _hex(seed)},
            "downloads": -1, "filename": filename, "has_sig": False, "md5_digest": _hex(seed)[:32],
            "packagetype": packagetype, "python_version": "py3" if packagetype == "bdist_wheel" else "source",
            "requires_python": ">=3.10", "size": 123456, "upload_time": "2025-11-20T10:00:00",
            "upload_time_iso_8601": "2025-11-20T10:00:00.000000Z",
            "url": f"https://files.pythonhosted.org/packages/ab/cd/{filename}", "yanked": False,
            "yanked_reason": None}


MINI_WHEEL = "mini_swe_agent-2.4.6-py3-none-any.whl"
CODEX_INTEGRITY = "sha512-" + "Q" * 86 + "=="
ROUTES: dict[str, object] = {
    "/pypi/mini-swe-agent/2.4.6/json": {
        "info": {"name": "mini-swe-agent", "version": "2.4.6", "requires_python": ">=3.10"},
        "last_serial": 31000000, "vulnerabilities": [],
        "urls": [_pypi_file("mini_swe_agent-2.4.6.tar.gz", "sdist", "sdist"),
                 _pypi_file(MINI_WHEEL, "bdist_wheel", "wheel")]},
    "/pypi/mini-swe-agent/json": {"info": {"name": "mini-swe-agent", "version": "2.4.6"}, "urls": []},
    "/pypi/aider-chat/0.86.1/json": {
        "info": {"name": "aider-chat", "version": "0.86.1"}, "last_serial": 1, "vulnerabilities": [],
        "urls": [_pypi_file("aider_chat-0.86.1-cp312-cp312-manylinux_2_17_x86_64.whl", "bdist_wheel", "p"),
                 _pypi_file("aider_chat-0.86.1.tar.gz", "sdist", "aider-sdist")]},
    "/@openai%2fcodex/0.1.0": {
        "name": "@openai/codex", "version": "0.1.0", "license": "Apache-2.0",
        "dist": {"tarball": "https://registry.npmjs.org/@openai/codex/-/codex-0.1.0.tgz",
                 "shasum": "0123456789abcdef0123456789abcdef01234567", "integrity": CODEX_INTEGRITY,
                 "fileCount": 12, "unpackedSize": 345678,
                 "signatures": [{"keyid": "SHA256:abc", "sig": "MEUCIQ"}]}},
    "/@openai%2fcodex": {"name": "@openai/codex", "dist-tags": {"latest": "0.1.0"}, "versions": {}},
    "/opencode-ai/0.0.9": {"name": "opencode-ai", "version": "0.0.9",
                           "dist": {"tarball": "https://registry.npmjs.org/opencode-ai/-/opencode-ai-0.0.9.tgz",
                                    "shasum": "00112233445566778899aabbccddeeff00112233"}},
    "/opencode-ai/latest": {"name": "opencode-ai", "version": "0.0.9", "dist": {}},
}


@pytest.fixture
def fake_registries() -> Iterator[Server]:
    with serve(json_routes(ROUTES)) as server:
        yield server


def test_pypi_picks_the_pure_wheel_else_the_sdist(fake_registries: Server,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_PYPI_URL", fake_registries.url)  # env override, as `labctl lock` would see
    got = resolve_package("mini-swe-agent", "2.4.6")
    assert got.lock.model_dump(exclude_none=True) == {"registry": "pypi", "name": "mini-swe-agent",
                                                      "version": "2.4.6", "filename": MINI_WHEEL,
                                                      "sha256": _hex("wheel")}
    assert got.integrity is None and got.url.endswith(MINI_WHEEL)
    aider = resolve_package("aider", "0.86.1", pypi_url=fake_registries.url)
    assert (aider.lock.filename, aider.lock.sha256) == ("aider_chat-0.86.1.tar.gz", _hex("aider-sdist"))
    sdist = resolve_pypi("mini-swe-agent", "2.4.6", sdist=True)
    assert sdist.lock.filename == "mini_swe_agent-2.4.6.tar.gz"


def test_npm_records_integrity_and_encodes_scopes(fake_registries: Server) -> None:
    got = resolve_package("codex", "0.1.0", npm_url=fake_registries.url)
    assert got.lock.model_dump(exclude_none=True) == {"registry": "npm", "name": "@openai/codex",
                                                      "version": "0.1.0", "filename": "codex-0.1.0.tgz"}
    assert got.integrity == CODEX_INTEGRITY
    assert fake_registries.requests[-1][1] == "/@openai%2fcodex/0.1.0"
    old = resolve_package("opencode", "0.0.9", npm_url=fake_registries.url)  # only a sha1 shasum
    assert old.integrity == "sha1-ABEiM0RVZneImaq7zN3u/wARIjM="


@pytest.mark.parametrize(("runtime", "version", "message"), [
    ("mini-swe-agent", "9.9.9", r"PyPI has no mini-swe-agent 9\.9\.9 \(latest is 2\.4\.6\)"),
    ("aider", "1.0", r"PyPI has no aider-chat 1\.0 \(no package 'aider-chat' at http://127"),
    ("codex", "9.9.9", r"npm has no @openai/codex 9\.9\.9 \(latest is 0\.1\.0\)"),
    ("qwen-code", "1.0.0", r"npm has no @qwen-code/qwen-code 1\.0\.0 \(no package"),
    ("opencode", "latest", r"asked npm for opencode-ai latest and got '0\.0\.9'"),
    ("cursor", "1.0", r"unknown agent runtime 'cursor'; known: aider, claude-code"),
])
def test_package_errors_are_one_line(fake_registries: Server, runtime: str, version: str,
                                     message: str) -> None:
    with pytest.raises(PackageError, match=message) as info:
        resolve_package(runtime, version, pypi_url=fake_registries.url, npm_url=fake_registries.url)
    assert "\n" not in str(info.value)


def test_unreachable_package_registry() -> None:
    with pytest.raises(PackageError, match=r"cannot reach the registry for PyPI package mini-swe-agent"):
        resolve_package("mini-swe-agent", "2.4.6", timeout=5)
