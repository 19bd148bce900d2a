"""The preflight of a whole lab: every planned local contestant probed (`labctl.plan.probe`), the result
kept as `preflight.json` in the round directory (hashed into its manifest like every round file).

Blindness: the file and every line printed from it name contestants, never run ids. The contestant
list is public (the round's lab.yaml holds it), so saying "contestant coder: tool calling: not
supported" before unseal reveals nothing about which run is whose.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from labctl.engine.container import Engine
from labctl.gguf.store import Store
from labctl.gguf.template import local_tool_section
from labctl.lock.fetch import model_files
from labctl.lock.hub import HubError
from labctl.lock.lockfile import Lock
from labctl.plan.planner import ContestantPlan, Plan
from labctl.plan.probe import Preflight, Request, binary_id, host_server, image_server, probe
from labctl.spec.profiles import Profile

PREFLIGHT_FILE = "preflight.json"
Server = Callable[[ContestantPlan, Path], AbstractContextManager[Request]]
"""Serves one planned contestant's model file; yields the request function (`labctl.plan.probe`)."""


class LabPreflight(BaseModel):
    """`preflight.json`: the preflight of every local contestant, by contestant id."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    version: int = 1
    llama_cpp: str
    """The llama-server that answered (image tag or binary sha256)."""
    contestants: dict[str, Preflight]


def image_backend(docker: Engine, image: str, profile: Profile) -> tuple[str, Server]:
    """(llama_cpp id, server) for the round's own llama-server image (GPUs as the profile has them)."""
    gpu = docker.gpu_run_args(profile) if profile.is_gpu else []
    return image, lambda plan, model: image_server(docker, image, model, plan, gpu)


def host_backend(binary: Path, log_dir: Path) -> tuple[str, Server]:
    """(llama_cpp id, server) for a llama-server binary on this host, on loopback."""
    return binary_id(binary), lambda plan, model: host_server(binary, model, plan, log_dir / f"{plan.id}.log")


def preflight_lab(plan: Plan, lock: Lock, store: Store, base_dir: Path, *, llama_cpp: str, server: Server,
                  only: str | None = None, use_cache: bool = True,
                  say: Callable[[str], None] = lambda s: None) -> LabPreflight:
    """Probe each planned local contestant (or only `only`); one that cannot be served gets an error row."""
    rows: dict[str, Preflight] = {}
    for p in plan.contestants:
        if p.status != "planned" or p.id not in lock.models or (only and p.id != only):
            continue
        model = lock.models[p.id]
        try:
            files = model_files(model, store, contestant=p.id, base_dir=base_dir)
        except HubError as e:
            rows[p.id] = Preflight(contestant=p.id, llama_cpp=llama_cpp, args=p.llama_args, error=str(e))
            continue
        section = local_tool_section(files[0])
        got, hit = probe(p, files[0], model_sha256=model.files[0].sha256, llama_cpp=llama_cpp,
                         serve=partial(server, p, files[0]), template_tool_section=section,
                         use_cache=use_cache)
        say(f"preflight {p.id}: {got.verdict()}{' (cached)' if hit else ''}")
        if problem := got.context_problem():
            say(f"preflight {p.id}: {problem}")
        rows[p.id] = got
    return LabPreflight(llama_cpp=llama_cpp, contestants=rows)


def write_preflight(round_dir: Path, pre: LabPreflight) -> Path:
    path = round_dir / PREFLIGHT_FILE
    path.write_text(json.dumps(pre.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return path


def read_preflight(round_dir: Path) -> LabPreflight | None:
    """The round's preflight, None when it has none (a round from `labctl seal` + `run`, or older)."""
    path = round_dir / PREFLIGHT_FILE
    if not path.is_file():
        return None
    try:
        return LabPreflight.model_validate_json(path.read_text())
    except ValueError:
        return None
