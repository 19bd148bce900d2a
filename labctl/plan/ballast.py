"""GPU ballast: `python -m labctl.plan.ballast FREE_BYTES` holds GPU 0's free memory down to FREE_BYTES.

Why: to prove a plan for a 32 GB card on an 80 or 141 GB one, the bigger card must look like the
smaller one to llama.cpp. CUDA memory is per device, not per process, so memory this process
allocates is gone for llama-server too. It talks to the CUDA runtime through ctypes (libcudart ships
with every CUDA toolkit and runtime), allocates in chunks until `cudaMemGetInfo` says the target is
reached, prints `ready free=<bytes>`, and holds the memory until its stdin closes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import sys

CHUNK = 256 << 20


def _cudart() -> ctypes.CDLL:
    found = glob.glob("/usr/local/cuda*/lib64/libcudart.so*") + glob.glob("/usr/lib/*/libcudart.so*")
    names = [ctypes.util.find_library("cudart"), *sorted(found, reverse=True)]
    for n in names:
        if n:
            try:
                return ctypes.CDLL(n)
            except OSError:
                continue
    raise OSError("libcudart not found (install the CUDA runtime or set LD_LIBRARY_PATH)")


def hold(free_target: int) -> int:
    """Allocate until free memory ≤ free_target (never below it by more than one small step)."""
    rt = _cudart()
    free, total = ctypes.c_size_t(), ctypes.c_size_t()

    def free_now() -> int:
        if rt.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
            raise OSError("cudaMemGetInfo failed")
        return free.value

    keep, chunk = [], CHUNK
    while (excess := free_now() - free_target) > 0 and chunk >= 1 << 20:
        ptr = ctypes.c_void_p()
        if rt.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(min(chunk, excess))) != 0:
            chunk //= 2  # fragmentation or the allocator's own granularity: smaller steps
            continue
        keep.append(ptr)
    hold.keep = keep  # type: ignore[attr-defined]  # alive until the process exits
    return free_now()


def main() -> None:
    try:
        left = hold(int(sys.argv[1]))
    except (OSError, ValueError, IndexError) as e:
        print(f"error: {e}", flush=True)
        sys.exit(1)
    print(f"ready free={left}", flush=True)
    sys.stdin.read()  # hold until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()
