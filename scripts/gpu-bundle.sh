#!/usr/bin/env bash
# Stage what scripts/gpu-measure.sh needs on a GPU machine with no network and no Docker, under the
# ignored folder .gpu-bundle/ (carry it: it stays well under 64 MiB):
#
#   .gpu-bundle/llama.cpp/   the pinned llama.cpp source (llama-cpp-python's vendored tree, as
#                            scripts/build-llama-server.sh caches it) without models/, tests/, docs/,
#                            the web UI's sources and the backends a CUDA build never configures
#   .gpu-bundle/COMMIT       the upstream commit of that tree (from the sdist's changelog)
#   .gpu-bundle/whl/         wheels of labctl's Python dependencies the GPU image lacks, for its
#                            Python (GPU_PYTHON, default 3.12); pure-Python or manylinux x86-64
#
#   scripts/gpu-bundle.sh            # or: make gpu-bundle
# Environment: LLAMA_CPP_PYTHON_VERSION (0.3.36), LABCTL_LLAMA_CACHE, GPU_PYTHON (3.12), PIP.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${LABCTL_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/labctl/llama.cpp}"
PY="${GPU_PYTHON:-3.12}"
OUT="$ROOT/.gpu-bundle"
PIP_CMD=(${PIP:-python3 -m pip})
log() { printf '[gpu-bundle] %s\n' "$*" >&2; }

# The image lacks these (see the device notes' package list); the rest of labctl's imports are there.
WHEELS=(pydantic pydantic_core annotated-types typing-inspection typing_extensions ruamel.yaml python-on-whales gguf)

SRC="$CACHE/src/$V/llama.cpp"
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
  log "no cached llama.cpp source at $SRC: running scripts/build-llama-server.sh first"
  bash "$ROOT/scripts/build-llama-server.sh" >/dev/null
fi

mkdir -p "$OUT"
log "staging $SRC"
rm -rf "$OUT/llama.cpp.tmp"
mkdir -p "$OUT/llama.cpp.tmp"
# What a CUDA build of llama-server + llama-fit-params never reads: models (vocab files), tests,
# docs, media, the web UI's sources (LLAMA_BUILD_UI=OFF) and the other GPU backends' sources.
tar -C "$SRC" -c \
  --exclude=./models --exclude=./tests --exclude=./docs --exclude=./media --exclude=./.git \
  --exclude=./tools/ui/src --exclude=./tools/ui/tests --exclude=./tools/ui/static \
  --exclude=./gguf-py --exclude=./benches --exclude=./conversion \
  --exclude=./ggml/src/ggml-vulkan --exclude=./ggml/src/ggml-sycl --exclude=./ggml/src/ggml-metal \
  --exclude=./ggml/src/ggml-opencl --exclude=./ggml/src/ggml-cann --exclude=./ggml/src/ggml-webgpu \
  --exclude=./ggml/src/ggml-hexagon --exclude=./ggml/src/ggml-zdnn --exclude=./ggml/src/ggml-openvino \
  --exclude=./ggml/src/ggml-virtgpu --exclude=./ggml/src/ggml-zendnn --exclude=./ggml/src/ggml-et \
  . | tar -C "$OUT/llama.cpp.tmp" -x
rm -rf "$OUT/llama.cpp"
mv "$OUT/llama.cpp.tmp" "$OUT/llama.cpp"

COMMIT="$(awk -v v="## [$V]" '
  index($0, v) == 1 { on = 1; next }
  on && /^## \[/ { exit }
  on && match($0, /llama\.cpp@[0-9a-f]+/) { print substr($0, RSTART + 10, RLENGTH - 10); exit }
' "$CACHE/src/$V/CHANGELOG.md" 2>/dev/null || true)"
echo "${COMMIT:-unknown}" >"$OUT/COMMIT"

log "wheels for Python $PY: ${WHEELS[*]}"
rm -rf "$OUT/whl"
mkdir -p "$OUT/whl"
pins=()
for w in "${WHEELS[@]}"; do
  v="$("$ROOT/.venv/bin/python" -c "import importlib.metadata as m; print(m.version('$w'))" 2>/dev/null || true)"
  pins+=("$w${v:+==$v}")
done
"${PIP_CMD[@]}" download --quiet --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$OUT/whl" "${pins[@]}" >&2

log "$(du -sh "$OUT" | cut -f1) in $OUT (commit ${COMMIT:-unknown})"
echo "$OUT"
