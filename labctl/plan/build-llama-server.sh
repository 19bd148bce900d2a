#!/usr/bin/env bash
# Build a CPU-only llama-server from pinned llama.cpp source, without GitHub.
#
# The PyPI sdist of llama-cpp-python vendors the complete llama.cpp tree at
# vendor/llama.cpp, so PyPI is the only network source this script needs.
#
#   scripts/build-llama-server.sh          # build (or reuse) and print the binary path
#
# Environment:
#   LLAMA_CPP_PYTHON_VERSION  llama-cpp-python sdist to take llama.cpp from (default 0.3.36)
#   LLAMA_CPP_PYTHON_SHA256   that sdist's sha256, as lab.lock pins it (llama_cpp.sdist_sha256);
#                             known for the default version, required for any other
#   LABCTL_LLAMA_CACHE        cache dir (default ${XDG_CACHE_HOME:-$HOME/.cache}/labctl/llama.cpp)
#   LABCTL_BUILD_JOBS         parallel build jobs (default: nproc)
#   PIP                       pip command used for the download (default: python3 -m pip)
#
# Layout under the cache dir:
#   sdist/llama_cpp_python-<V>.tar.gz   downloaded sdist
#   src/<V>/                            extracted vendor/llama.cpp (+ CHANGELOG.md)
#   build/<V>/                          cmake build tree
#   bin/llama-server                    the built binary (statically linked llama/ggml)
#   bin/llama-fit-params                llama.cpp's own fitter, same tree and flags (`labctl plan --measure`)
#   bin/llama-server.stamp              what the binaries were built from; reuse key
#
# Idempotent: when bin/llama-server exists and its stamp matches, nothing is built. The sdist is
# checked against the pinned sha256 on every run (cached or downloaded, before anything is
# unpacked): a mismatch is refused, and so is a binary built from it.
# When both binaries exist and the stamp matches, nothing is built (a cache from before
# llama-fit-params was added gets just that target, incrementally, from the kept build tree).
# All progress goes to stderr; the last line on stdout is the binary's path.
set -euo pipefail

DEFAULT_V=0.3.36
# What `labctl lock` pins for llama-cpp-python==0.3.36 (labs/smoke.yaml; tests/test_images.py
# SDIST_SHA, checked against this line by tests/test_build_script.py).
DEFAULT_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
V="${LLAMA_CPP_PYTHON_VERSION:-$DEFAULT_V}"
CACHE="${LABCTL_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/labctl/llama.cpp}"
JOBS="${LABCTL_BUILD_JOBS:-$(nproc)}"
BIN="$CACHE/bin/llama-server"
STAMP="$BIN.stamp"

log() { printf '[build-llama-server] %s\n' "$*" >&2; }

if [[ -n "${LLAMA_CPP_PYTHON_SHA256:-}" ]]; then
  SHA256="$LLAMA_CPP_PYTHON_SHA256"
elif [[ "$V" == "$DEFAULT_V" ]]; then
  SHA256="$DEFAULT_SHA256"
else
  log "llama-cpp-python==$V is not pinned here: set LLAMA_CPP_PYTHON_SHA256 to its sdist's sha256" \
      "(llama_cpp.sdist_sha256 in the lab's lab.lock)"
  exit 1
fi
[[ "$SHA256" =~ ^[0-9a-f]{64}$ ]] || { log "LLAMA_CPP_PYTHON_SHA256 is not a sha256: $SHA256"; exit 1; }

# verify_sdist FILE: the sdist must be the pinned bytes; nothing is unpacked or reused otherwise.
verify_sdist() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$got" != "$SHA256" ]]; then
    log "REFUSED: $1 has sha256 $got, but llama-cpp-python==$V is pinned to $SHA256"
    return 1
  fi
}

CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=OFF
  -DGGML_CUDA=OFF
  -DGGML_METAL=OFF
  -DGGML_VULKAN=OFF
  -DGGML_BLAS=OFF
  -DGGML_RPC=OFF
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_COMMON=ON
  -DLLAMA_BUILD_APP=OFF
  # The web UI is not needed (API only) and its assets would come from npm or a HF bucket.
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
)

# Stamp: the sdist version plus the build flags; a change in either rebuilds.
stamp_text() {
  printf 'llama-cpp-python==%s\n' "$V"
  printf '%s\n' "${CMAKE_FLAGS[@]}"
}

# One build at a time per cache: concurrent callers (parallel test sessions) would compile into
# the same build tree; a waiter finds the finished binaries below.
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9

SDIST="$CACHE/sdist/llama_cpp_python-$V.tar.gz"
FIT="$CACHE/bin/llama-fit-params"
if [[ -x "$BIN" && -f "$STAMP" && -s "$SDIST" ]] && [[ "$(cat "$STAMP")" == "$(stamp_text)" ]]; then
  verify_sdist "$SDIST" || { log "remove $SDIST and $BIN to download and build again"; exit 1; }
  if [[ ! -x "$FIT" && -f "$CACHE/build/$V/CMakeCache.txt" ]]; then
    log "building llama-fit-params beside the cached llama-server"
    GIT_CEILING_DIRECTORIES="$CACHE" cmake --build "$CACHE/build/$V" --target llama-fit-params -j "$JOBS" >&2
    install -m 0755 "$CACHE/build/$V/bin/llama-fit-params" "$FIT.tmp"
    mv -f "$FIT.tmp" "$FIT"
  fi
fi
if [[ -x "$BIN" && -x "$FIT" && -f "$STAMP" && -s "$SDIST" ]] && [[ "$(cat "$STAMP")" == "$(stamp_text)" ]]; then
  log "up to date: $BIN (llama-cpp-python==$V, sha256 ${SHA256:0:12})"
  echo "$BIN"
  exit 0
fi

# --- toolchain -----------------------------------------------------------------
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || missing+=(make)
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    log "missing build tools: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})"
    exit 1
  fi
fi
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)

# --- source ----------------------------------------------------------------------
mkdir -p "$CACHE/sdist" "$CACHE/src" "$CACHE/build" "$CACHE/bin"
if [[ -s "$SDIST" ]]; then
  verify_sdist "$SDIST" || { log "remove $SDIST to download it again"; exit 1; }
else
  PIP_CMD=(${PIP:-python3 -m pip})
  log "downloading llama-cpp-python==$V sdist from PyPI"
  dl="$(mktemp -d "$CACHE/sdist/.dl.XXXXXX")"
  "${PIP_CMD[@]}" download --quiet --no-deps --no-binary :all: "llama-cpp-python==$V" -d "$dl" >&2
  f="$(find "$dl" -maxdepth 1 -name 'llama_cpp_python-*.tar.gz' | head -n1)"
  [[ -n "$f" ]] || { log "pip download produced no sdist"; exit 1; }
  verify_sdist "$f" || { rm -rf "$dl"; exit 1; }
  mv -f "$f" "$SDIST"
  rm -rf "$dl"
fi

SRC="$CACHE/src/$V"
if [[ ! -f "$SRC/llama.cpp/CMakeLists.txt" ]]; then
  log "extracting vendor/llama.cpp from $(basename "$SDIST")"
  tmp="$(mktemp -d "$CACHE/src/.x.XXXXXX")"
  top="llama_cpp_python-$V"
  tar -xzf "$SDIST" -C "$tmp" "$top/vendor/llama.cpp" "$top/CHANGELOG.md"
  mkdir -p "$tmp/out"
  mv "$tmp/$top/vendor/llama.cpp" "$tmp/out/llama.cpp"
  mv "$tmp/$top/CHANGELOG.md" "$tmp/out/CHANGELOG.md"
  rm -rf "$SRC"
  mv "$tmp/out" "$SRC"
  rm -rf "$tmp"
fi

# The sdist keeps llama.cpp's submodule pointer file (.git -> ../../.git/modules/...),
# which points nowhere here; drop it so cmake's git probes fail quietly.
[[ -f "$SRC/llama.cpp/.git" ]] && rm -f "$SRC/llama.cpp/.git"

# The tree has no usable git history, so llama.cpp's build info would say "unknown"; take the
# pinned upstream commit from the sdist's changelog entry for this version.
COMMIT="$(awk -v v="## [$V]" '
  index($0, v) == 1 { on = 1; next }
  on && /^## \[/ { exit }
  on && match($0, /llama\.cpp@[0-9a-f]+/) { print substr($0, RSTART + 10, RLENGTH - 10); exit }
' "$SRC/CHANGELOG.md" || true)"
COMMIT="${COMMIT:-unknown}"
log "llama.cpp commit (from llama-cpp-python $V changelog): $COMMIT"

# --- build -----------------------------------------------------------------------
BUILD="$CACHE/build/$V"
t0=$SECONDS
log "configuring in $BUILD"
# GIT_CEILING_DIRECTORIES keeps llama.cpp's build-info from picking up an unrelated enclosing repo.
GIT_CEILING_DIRECTORIES="$CACHE" cmake -S "$SRC/llama.cpp" -B "$BUILD" "${GENERATOR[@]}" \
  "${CMAKE_FLAGS[@]}" -DLLAMA_BUILD_COMMIT="$COMMIT" >&2
log "building llama-server with $JOBS jobs (several minutes on few cores)"
GIT_CEILING_DIRECTORIES="$CACHE" cmake --build "$BUILD" --target llama-server llama-fit-params -j "$JOBS" >&2
built="$BUILD/bin/llama-server"
for b in "$built" "$BUILD/bin/llama-fit-params"; do
  [[ -x "$b" ]] || { log "build finished but $b is missing"; exit 1; }
done
install -m 0755 "$BUILD/bin/llama-fit-params" "$FIT.tmp"
mv -f "$FIT.tmp" "$FIT"

# Static llama/ggml; only system libs (libstdc++, libgomp, libc) remain dynamic.
if ldd "$built" 2>/dev/null | grep -q 'not found'; then
  log "unresolved shared libraries:"; ldd "$built" >&2; exit 1
fi

install -m 0755 "$built" "$BIN.tmp"
mv -f "$BIN.tmp" "$BIN"
stamp_text >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"
log "built in $((SECONDS - t0))s: $("$BIN" --version 2>&1 | tr '\n' ' ')"
echo "$BIN"
