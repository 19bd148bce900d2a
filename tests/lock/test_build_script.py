"""scripts/build-llama-server.sh takes llama.cpp from a PyPI sdist: only the bytes lab.lock pins.

The real download and compile run wherever a test needs the host llama-server (marked `llama`);
here the script runs against a private cache with PyPI's download stood in for by a `PIP` command
that hands over a chosen file, and a cmake that writes a placeholder binary instead of compiling
for minutes: what is tested is the script's own checks, which no real PyPI file could fail.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.images.test_images import SDIST_SHA

SCRIPT = ROOT / "scripts" / "build-llama-server.sh"
V = "0.3.36"

FAKE_PIP = """#!/usr/bin/env bash
# `pip download ... -d DIR`: put $FAKE_SDIST there under the sdist's name
while [[ $# -gt 0 ]]; do [[ $1 == -d ]] && dest=$2; shift; done
cp "$FAKE_SDIST" "$dest/llama_cpp_python-$FAKE_VERSION.tar.gz"
"""
FAKE_CMAKE = """#!/usr/bin/env bash
# `cmake --build DIR ...` writes DIR/bin/llama-server and DIR/bin/llama-fit-params; configuring
# does nothing
if [[ $1 == --build ]]; then
  mkdir -p "$2/bin"
  for b in llama-server llama-fit-params; do
    printf '#!/bin/sh\\necho "version: 1 (0c1e57098)"\\n' > "$2/bin/$b"
    chmod +x "$2/bin/$b"
  done
fi
"""


def sdist_bytes(version: str = V, marker: str = "") -> bytes:
    """A gzipped tarball laid out like llama-cpp-python's sdist (the parts the script reads)."""
    files = {f"llama_cpp_python-{version}/vendor/llama.cpp/CMakeLists.txt": f"project(llama){marker}\n",
             f"llama_cpp_python-{version}/CHANGELOG.md":
                 f"## [{version}]\n\n- feat: Update llama.cpp to ggml-org/llama.cpp@0c1e57098\n"}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    # mtime 0: gzip would stamp the current second into its header, and two calls a second apart
    # would give two different "same" sdists.
    return gzip.compress(raw.getvalue(), mtime=0)


def run_script(tmp: Path, sdist: bytes, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    tools = {"pip": FAKE_PIP, "cmake": FAKE_CMAKE, "g++": "#!/bin/sh\n", "make": "#!/bin/sh\n"}
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    offered = tmp / "offered.tar.gz"
    offered.write_bytes(sdist)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp),
           "LABCTL_LLAMA_CACHE": str(tmp / "cache"), "LABCTL_BUILD_JOBS": "1", "PIP": str(bin_dir / "pip"),
           "FAKE_SDIST": str(offered),
           "FAKE_VERSION": env.get("LLAMA_CPP_PYTHON_VERSION", V), **env}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_the_script_pins_the_sdist_the_lock_pins() -> None:
    text = SCRIPT.read_text()
    assert re.search(rf"^DEFAULT_V={re.escape(V)}$", text, re.M)
    assert re.search(rf"^DEFAULT_SHA256={SDIST_SHA}$", text, re.M)  # what `labctl lock` recorded


def test_a_download_that_is_not_the_pinned_sdist_is_refused(tmp_path: Path) -> None:
    done = run_script(tmp_path, sdist_bytes())  # not PyPI's bytes for 0.3.36
    got = hashlib.sha256(sdist_bytes()).hexdigest()
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert "REFUSED: " in done.stderr
    assert f"has sha256 {got}, but llama-cpp-python==0.3.36 is pinned to {SDIST_SHA}" in done.stderr
    cache = tmp_path / "cache"
    assert not (cache / "sdist" / f"llama_cpp_python-{V}.tar.gz").exists()  # not kept to be reused
    assert not any((cache / "src").iterdir()) and not (cache / "bin" / "llama-server").exists()


def test_another_version_needs_its_hash(tmp_path: Path) -> None:
    done = run_script(tmp_path, sdist_bytes("0.3.99"), LLAMA_CPP_PYTHON_VERSION="0.3.99")
    assert done.returncode == 1 and "set LLAMA_CPP_PYTHON_SHA256" in done.stderr, done.stderr
    done = run_script(tmp_path, sdist_bytes("0.3.99"), LLAMA_CPP_PYTHON_VERSION="0.3.99",
                      LLAMA_CPP_PYTHON_SHA256="abc")
    assert done.returncode == 1 and "is not a sha256: abc" in done.stderr, done.stderr


def test_the_pinned_sdist_builds_and_a_changed_cache_is_refused(tmp_path: Path) -> None:
    good = sdist_bytes()
    sha = hashlib.sha256(good).hexdigest()
    first = run_script(tmp_path, good, LLAMA_CPP_PYTHON_SHA256=sha)
    binary = tmp_path / "cache" / "bin" / "llama-server"
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == str(binary) and binary.is_file()
    assert "llama.cpp commit (from llama-cpp-python 0.3.36 changelog): 0c1e57098" in first.stderr
    again = run_script(tmp_path, good, LLAMA_CPP_PYTHON_SHA256=sha)
    assert again.returncode == 0 and again.stdout.strip() == str(binary), again.stderr
    assert "up to date" in again.stderr and "configuring" not in again.stderr
    # The cached sdist is checked on every run: a binary built from other bytes is not handed out.
    (tmp_path / "cache" / "sdist" / f"llama_cpp_python-{V}.tar.gz").write_bytes(sdist_bytes(marker="#"))
    changed = run_script(tmp_path, good, LLAMA_CPP_PYTHON_SHA256=sha)
    assert changed.returncode == 1 and changed.stdout == "", changed.stderr
    assert f"is pinned to {sha}" in changed.stderr and "REFUSED" in changed.stderr


def test_a_prebuilt_llama_server_is_named_and_refused_in_ci(tmp_path: Path) -> None:
    """$LABCTL_LLAMA_SERVER may point at any binary: a session says which one it uses, CI refuses it."""
    fake = tmp_path / "llama-server"
    fake.write_text('#!/bin/sh\necho "version: 42 (deadbeef)"\n')
    fake.chmod(0o755)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
            "tests/engine/test_engine.py::test_remove_labelled_refuses_empty_labels"]  # a light module
    env = {**os.environ, "LABCTL_LLAMA_SERVER": str(fake)}
    local = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**env, "CI": ""})
    assert local.returncode == 0, local.stdout + local.stderr
    assert f"llama-server: LABCTL_LLAMA_SERVER={fake} (version: 42 (deadbeef)), not the pinned build" \
        in local.stdout
    ci = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**env, "CI": "true"})
    assert ci.returncode == pytest.ExitCode.USAGE_ERROR, ci.stdout + ci.stderr
    assert f"LABCTL_LLAMA_SERVER={fake} is refused in CI" in ci.stderr
