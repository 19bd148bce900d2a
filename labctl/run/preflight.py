"""The tool-call preflight where a round runs it: in the lab's own llama-server image (or on a host
binary), before the first model run of `labctl round` and for `labctl plan --probe`. The probe
itself (what is asked, how the answer is judged, the cache) is `labctl.plan.preflight`'s; this module
only finds the server to ask, which needs the lab's images and the container engine (layers above
the planner)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from labctl.engine.container import detect_engine
from labctl.errors import LabctlError
from labctl.gguf.store import Store
from labctl.images.specs import image_tags
from labctl.lock.lockfile import Lock
from labctl.plan.planner import Plan
from labctl.plan.preflight import LabPreflight, host_backend, image_backend, preflight_lab
from labctl.spec.load import LoadedLab


def run_preflight(loaded: LoadedLab, lock: Lock, plan: Plan, llama_server: Path | None, *,
                  only: str | None = None, use_cache: bool = True,
                  say: Callable[[str], None] = lambda s: None) -> LabPreflight:
    """The tool-call preflight of the lab's local contestants: on `llama_server` (a host binary) when
    given, else in the lab's own llama-server image (it must be built: `labctl build`)."""
    with tempfile.TemporaryDirectory(prefix="labctl-probe-") as tmp:
        if llama_server is not None:
            llama_cpp, server = host_backend(llama_server, Path(tmp))
        else:
            docker = detect_engine()
            image = image_tags(loaded, lock)["llama-server"]
            if not docker.image_present(image):
                raise LabctlError(f"the lab's llama-server image {image} is not built: run `labctl build` "
                                  "(or pass --llama-server PATH)")
            llama_cpp, server = image_backend(docker, image, loaded.profile)
        return preflight_lab(plan, lock, Store(), loaded.base_dir, llama_cpp=llama_cpp, server=server,
                             only=only, use_cache=use_cache, say=say)


__all__ = ["run_preflight"]
