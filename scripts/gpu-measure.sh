#!/usr/bin/env bash
# Measure the Round 7 plans on a real NVIDIA GPU: no network, no Docker, llama.cpp built natively.
#
# Prepare here (any machine with the cached llama.cpp source and PyPI):  make gpu-bundle
# Then on the GPU machine, from the repo root, with .gpu-bundle carried:
#   scripts/gpu-measure.sh build [ARCH ...]  # CMake + nvcc: llama-server + llama-fit-params, arch 90
#                                            # by default; each ARCH's build time and result recorded
#   scripts/gpu-measure.sh measure           # `labctl plan --measure` of LAB on each of PROFILES,
#                                            # twins from declared metadata, free VRAM held to the budget
#   scripts/gpu-measure.sh all               # build 90, then measure
# $OUT (default ./gpu-out) gets few files (a device run brings back at most 8): build-<arch>.json,
# measured-<profile>.json (the file labctl writes beside the lock) and one gpu-<stage>.tgz holding the
# rest (build log, plan JSON/text, host.txt, every llama-server / fitter log; never the twins).
# The build tree lives in .gpu-build/ (ignored, kept between runs on a warm machine, and not under
# .gpu-bundle/, so carrying the bundle again does not replace it).
#
# On the lent device (see the report of issue 15): run 1 `scripts/gpu-measure.sh build` (carry
# .gpu-bundle, timeout 600), run 2 `scripts/gpu-measure.sh measure` on the same warm machine.
#
# --cpu (any stage): a CPU build (-DGGML_CUDA=OFF) and profile `cpu`, to test this script where there
# is no GPU; LLAMA_BIN_DIR=<dir with llama-server and llama-fit-params> skips the build entirely.
# Environment: OUT, LAB (lab.yaml), PROFILES ("rtx5090-32g h100-80g"), JOBS (nproc), BUNDLE (.gpu-bundle).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUNDLE="${BUNDLE:-$ROOT/.gpu-bundle}"
OUT="${OUT:-$ROOT/gpu-out}"
BUILD_ROOT="${BUILD_ROOT:-$ROOT/.gpu-build}"
WORK="${WORK:-$(mktemp -d /tmp/gpu-measure.XXXXXX)}"
LAB="${LAB:-lab.yaml}"
JOBS="${JOBS:-$(nproc)}"
CPU=0
args=()
for a in "$@"; do
  if [[ "$a" == --cpu ]]; then CPU=1; else args+=("$a"); fi
done
set -- "${args[@]+"${args[@]}"}"
STAGE="${1:-all}"
shift || true
if ((CPU)); then PROFILES="${PROFILES:-cpu}"; else PROFILES="${PROFILES:-rtx5090-32g h100-80g}"; fi
mkdir -p "$OUT" "$WORK"
log() { printf '[gpu-measure %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ -f "$BUNDLE/llama.cpp/CMakeLists.txt" ]] || { log "no $BUNDLE/llama.cpp: run make gpu-bundle first"; exit 2; }
COMMIT="$(cat "$BUNDLE/COMMIT" 2>/dev/null || echo unknown)"

build() {  # build ARCH: llama-server + llama-fit-params into $BUNDLE/build-ARCH, timed
  local arch="$1" dir="$BUILD_ROOT/build-$1" t0 rc flags
  flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF
         -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON
         -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
         -DLLAMA_BUILD_COMMIT="$COMMIT")
  if [[ "$arch" == cpu ]]; then
    flags+=(-DGGML_CUDA=OFF)
  else
    # As lab.yaml configures the engine: CUDA, FA kernels for every cache-type pair (q8_0 K and V).
    flags+=(-DGGML_CUDA=ON -DGGML_CUDA_FA_ALL_QUANTS=ON -DCMAKE_CUDA_ARCHITECTURES="$arch")
  fi
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  log "building for $arch with $JOBS jobs in $dir"
  t0=$SECONDS
  rc=0
  {
    GIT_CEILING_DIRECTORIES="$BUNDLE" cmake -S "$BUNDLE/llama.cpp" -B "$dir" "${gen[@]}" "${flags[@]}" &&
    GIT_CEILING_DIRECTORIES="$BUNDLE" cmake --build "$dir" --target llama-server llama-fit-params -j "$JOBS"
  } >"$WORK/build-$arch.log" 2>&1 || rc=$?
  local secs=$((SECONDS - t0)) nvcc_v
  nvcc_v="$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo none)"
  printf '{"arch": "%s", "ok": %s, "exit": %d, "seconds": %d, "jobs": %d, "nvcc": "%s", "commit": "%s", "flags": "%s"}\n' \
    "$arch" "$([[ $rc == 0 ]] && echo true || echo false)" "$rc" "$secs" "$JOBS" "$nvcc_v" "$COMMIT" \
    "${flags[*]//\"/}" >"$WORK/build-$arch.json"
  log "build $arch: exit $rc after ${secs}s ($(tail -n 1 "$WORK/build-$arch.log"))"
  ((rc == 0)) || tail -n 30 "$WORK/build-$arch.log" >&2
  return "$rc"
}

python_env() {  # labctl's dependencies the GPU image lacks, from the carried wheels
  local site=/tmp/labctl-site
  if ! python3 -c 'import pydantic, ruamel.yaml, gguf, python_on_whales' 2>/dev/null; then
    rm -rf "$site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$BUNDLE"/whl/*.whl >&2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c 'import labctl.cli.app' || { log "labctl does not import with $(python3 -V)"; exit 1; }
}

measure() {
  local bindir="${LLAMA_BIN_DIR:-$BUILD_ROOT/build-$([[ $CPU == 1 ]] && echo cpu || echo 90)/bin}"
  [[ -x "$bindir/llama-server" ]] || { log "no llama-server in $bindir: run the build stage"; exit 2; }
  python_env
  { date -u; uname -a; nvidia-smi 2>/dev/null || echo "no nvidia-smi"; "$bindir/llama-server" --version 2>&1; } \
    >"$WORK/host.txt" 2>&1 || true
  local p rc=0 stem
  stem="$(basename "${LAB%.*}")"
  for p in $PROFILES; do
    log "labctl plan $LAB --profile $p --measure"
    PYTHONUNBUFFERED=1 LABCTL_LLAMA_FIT_PARAMS="$bindir/llama-fit-params" LABCTL_MEASURE_WORK="$WORK/$p" \
      python3 -m labctl plan "$LAB" --profile "$p" --measure --llama-server "$bindir/llama-server" --json \
      >"$WORK/plan-$p.json" 2>"$WORK/plan-$p.err" || rc=$?
    cp "$(dirname "$LAB")/$stem.measured.$p.json" "$OUT/measured-$p.json" 2>/dev/null || true
    COLUMNS=220 python3 -m labctl plan "$LAB" --profile "$p" 2>&1 | tee "$WORK/plan-$p.txt" || true
    log "profile $p: exit $rc; $(grep -c '"loaded": true' "$OUT/measured-$p.json" 2>/dev/null || echo 0) loaded"
    tail -n 5 "$WORK/plan-$p.err" >&2 || true
  done
  return "$rc"
}

pack() {  # everything but the twins into one file of $OUT
  cp "$WORK"/build-*.json "$OUT/" 2>/dev/null || true
  tar -C "$WORK" --exclude='*.gguf' -czf "$OUT/gpu-$STAGE.tgz" . || true
}
trap pack EXIT

case "$STAGE" in
  build)
    if ((CPU)); then build cpu; else for a in "${@:-90}"; do build "$a"; done; fi ;;
  measure) measure ;;
  all)
    if [[ -z "${LLAMA_BIN_DIR:-}" ]]; then build "$([[ $CPU == 1 ]] && echo cpu || echo 90)"; fi
    measure ;;
  *) log "unknown stage $STAGE (build, measure, all)"; exit 2 ;;
esac
