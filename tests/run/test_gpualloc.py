"""GPU allocation for `--parallel` (no Docker): whole devices, never shared; what each contestant
needs from its plan; the `--gpus` flag docker parses; and the live table's cells."""

from __future__ import annotations

import dataclasses
import io
import threading
from pathlib import Path

from rich.console import Console

from labctl.run.gpualloc import GpuPool, default_parallel, device_flags, gpus_needed
from labctl.spec.load import load_lab
from labctl.spec.profiles import Profile

ROOT = Path(__file__).resolve().parents[2]


def gpu_profile(count: int, vram: str, reserve: str = "0") -> Profile:
    return Profile(name="test-gpus", gpu="NVIDIA Test", gpu_count=count, vram_per_gpu=vram,
                   vram_reserve=reserve, cuda_arch=90, host_ram="64GiB")


def test_pool_hands_out_whole_free_devices_only() -> None:
    pool = GpuPool(4)
    assert pool.take(2) == [0, 1]
    assert pool.take(3) is None  # two are free: a three-GPU model waits
    assert pool.take(1) == [2]
    pool.give([0, 1])
    assert pool.take(3) == [0, 1, 3]
    assert pool.free == 0 and pool.take(1) is None and pool.take(0) == []


def test_pool_never_gives_one_device_twice_under_contention() -> None:
    pool, held, lock = GpuPool(3), [], threading.Lock()

    def grab() -> None:
        for _ in range(200):
            got = pool.take(1)
            if got is None:
                continue
            with lock:
                assert got[0] not in held
                held.append(got[0])
            with lock:
                held.remove(got[0])
            pool.give(got)

    threads = [threading.Thread(target=grab) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pool.free == 3


def test_device_flags_quote_the_list_for_docker() -> None:
    assert device_flags([]) == []
    assert device_flags([0]) == ["--gpus", '"device=0"']
    assert device_flags([2, 3]) == ["--gpus", '"device=2,3"']  # the CLI splits unquoted commas


def test_gpus_needed_follow_the_plan() -> None:
    """The smoke lab's tiny model takes one GPU on a GPU profile; the controls none; a CPU profile
    gives nobody a GPU."""
    from tests.images.test_images import LOCAL_ID
    from tests.run.test_runner import smoke_lock

    loaded = load_lab(ROOT / "labs" / "smoke.yaml")
    lock = smoke_lock(loaded, LOCAL_ID)  # made here, offline: no labs/smoke.lock needed
    assert set(gpus_needed(loaded, lock).values()) == {0}  # the lab's own cpu profile
    loaded = dataclasses.replace(loaded, profile=gpu_profile(4, "24GiB", "1GiB"))
    need = gpus_needed(loaded, lock)
    assert need == {"tiny-llama": 1, "oracle": 0, "nop": 0}
    assert default_parallel(loaded.profile) == 4
    assert default_parallel(Profile(name="c", gpu_count=0, host_ram="8GiB")) == 1


def test_live_table_shows_status_elapsed_tokens_and_no_contestant() -> None:
    from types import SimpleNamespace

    from labctl.run.parallel import Progress

    ctx = SimpleNamespace(sealed=SimpleNamespace(round="r-1", order=["run-1", "run-2"]))
    buf = io.StringIO()
    progress = Progress(ctx, Console(file=buf, force_terminal=True, width=120), lambda s: None)  # type: ignore[arg-type]
    with progress.shown():
        progress.set("run-1", status="running", host="this host gpu 0", elapsed="12s", tokens="3456")
        progress.set("run-2", status="done, Complete")
        progress.refresh()
    text = buf.getvalue()
    for cell in ("run-1", "running", "gpu 0", "12s", "3456", "run-2", "done, Complete"):
        assert cell in text, text
