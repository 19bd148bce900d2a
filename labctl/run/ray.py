"""`labctl run ROUND --ray ADDRESS`: each run of a sealed round is a Ray task on a cluster's node;
where a round runs is not part of the lab, so the round and its seal are the same as a local one.

A run's task asks for the GPUs its plan needs (`labctl.run.gpualloc`) and one unit of the custom
resource `labctl_docker` (a node started with `--resources '{"labctl_docker": N}'` has a Docker
engine and takes N runs at once). On the node it:

1. writes the round's sealed files (lab.yaml, lab.lock, sealed.json) and the task directory into
   scratch, checking lab.lock's bytes and the task tree against sealed.json;
2. fetches the contestant's model into the node's store by the lock's sha256 (and builds any image
   the node lacks, pinned by the same lock);
3. executes the run with labctl's own local runner (`runner.execute_run`), on the GPUs Ray gave it;
4. returns the run directory as a tar with the sha256 of every file.

The machine that started the round checks every file against those hashes, puts the run directory
into the round and rewrites the manifest, as after a local run. The node learns one run's contestant
and nothing else of the envelope (no salt, no other run).

A lost node (the task's worker or node died) → the run starts again on another node with attempts
+ 1, up to `MAX_ATTEMPTS`; Ray's own retries are off so every attempt is counted here. An error
inside the run is the run's result (errored), as locally. Ctrl-C cancels the tasks in flight (each
cleans up on its node) and leaves them `running` for the next `labctl run`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from labctl.round.layout import (
    LAB_FILE,
    LOCK_FILE,
    SEALED_FILE,
    RunResult,
    read_result,
    result_path,
    run_dir,
    write_result,
)
from labctl.round.seal import sealed_files_changed
from labctl.run.context import RoundContext
from labctl.run.gpualloc import gpus_needed
from labctl.run.parts import RunError, work_root
from labctl.run.runner import RunSummary, next_attempt, now, summary
from labctl.treehash import file_sha256, files_below

Say = Callable[[str], None]
RESOURCE = "labctl_docker"
"""The custom Ray resource a node with a Docker engine offers (one unit per run it may hold)."""
MAX_ATTEMPTS = 3
"""Attempts per run when nodes are lost (a run that errors on its own is not retried here)."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# --- files in transit ----------------------------------------------------------------------------


def pack(directory: Path) -> bytes:
    """A gzipped tar of a directory's files and symlinks (relative names, never followed)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, path in files_below(directory):
            tar.add(path, arcname=rel, recursive=False)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> None:
    """Extract `pack`'s output; the `data` filter refuses absolute names, `..` and device files."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


def listing(directory: Path) -> dict[str, str]:
    from labctl.round.layout import _entry_sha256

    return {rel: _entry_sha256(path) for rel, path in files_below(directory)}


# --- on the node ---------------------------------------------------------------------------------


def node_name() -> str:
    """Where a task runs: the host name and the Ray node (several nodes may share a host)."""
    import ray

    return f"{socket.gethostname()}/ray-{ray.get_runtime_context().get_node_id()[:8]}"


def node_execute(job: dict[str, Any]) -> dict[str, Any]:
    """One run on this node (the body of the Ray task); see the module docstring."""
    import ray

    from labctl.run.runner import execute_run

    scratch = work_root() / "ray" / f"{job['round']}-{job['run']}-{job['attempts']}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        ctx = node_context(job, scratch)
        host = node_name()
        gpus = [int(g) for g in ray.get_gpu_ids()] if ctx.loaded.profile.is_gpu else None
        res = execute_run(ctx, job["run"], job["attempts"], lambda line: print(line, flush=True),
                          gpus=gpus, host=host)
        rd = run_dir(ctx.round_dir, job["run"])
        return {"tar": pack(rd), "files": listing(rd), "host": host, "status": res.status}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def node_context(job: dict[str, Any], scratch: Path) -> RoundContext:
    """The run's RoundContext on this node, from what the starting machine sent."""
    from labctl.engine.container import detect_engine
    from labctl.gguf.store import Store
    from labctl.images.specs import lab_images, settings_for
    from labctl.lock.fetch import fetch
    from labctl.plan.planner import plan_lab
    from labctl.round.layout import read_sealed
    from labctl.round.opened import opened_from, read_round_lock, sent_loaded
    from labctl.spec.lab import LocalContestant
    from labctl.spec.profiles import Profile

    round_dir = scratch / job["round"]
    round_dir.mkdir(parents=True)
    for name in (LAB_FILE, LOCK_FILE, SEALED_FILE):
        (round_dir / name).write_bytes(job[name])
    sealed = read_sealed(round_dir)
    if file_sha256(round_dir / LOCK_FILE) != sealed.lock_file_sha256:  # the bytes that travelled
        raise RunError("lab.lock does not match the round's sealed.json")
    task = scratch / "task"
    unpack(job["task"], task)
    loaded = sent_loaded(round_dir, task, Profile.model_validate(job["profile"]), scratch)
    lock = read_round_lock(round_dir)
    opened_from(round_dir, sealed, loaded, lock)  # open_round's checks: the sealed lock and task tree
    lab = loaded.lab
    store = Store()
    cid = job["contestant"]
    contestant = next(c for c in lab.contestants if c.id == cid)
    if isinstance(contestant, LocalContestant):
        if lock.models[cid].source == "path":
            raise RunError(f"{job['run']}: a model from a local path cannot be sent to a Ray node: "
                           "publish it (a hub or a mirror) and lock it from there")
        fetch(lock.model_copy(update={"models": {cid: lock.models[cid]}}), store, progress=False,
              base_dir=scratch)
    docker = detect_engine()
    specs = lab_images(loaded, lock, loaded.profile, settings_for(loaded))
    if any(not docker.image_present(s.tag) for s in specs):
        from labctl.engine.container import detect_engine
        from labctl.images.build import build_all

        results = build_all(detect_engine(), specs, log_dir=scratch / "build-logs")
        if failed := [r for r in results if r.status == "failed"]:
            raise RunError(f"image {failed[0].name} failed to build on {socket.gethostname()}")
    return RoundContext(round_dir=round_dir, sealed=sealed, loaded=loaded, lock=lock,
                        images={s.name: s.tag for s in specs}, docker=docker, store=store,
                        mapping={job["run"]: cid}, plan=plan_lab(loaded, lock))


# --- on the machine that started the round -------------------------------------------------------


def land(ctx: RoundContext, rid: str, out: dict[str, Any]) -> None:
    """Put a node's run directory into the round after checking every file against its hash."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{rid}-", dir=ctx.round_dir.parent))
    try:
        unpack(out["tar"], tmp)
        got = listing(tmp)
        if got != out["files"]:
            bad = sorted(set(got.items()) ^ set(out["files"].items()))
            raise RunError(f"{rid}: the run's files changed in transit ({bad[0][0]} and {len(bad) - 1} more)")
        dest = run_dir(ctx.round_dir, rid)
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def round_payload(ctx: RoundContext) -> dict[str, Any]:
    """What every run's task needs from the starting machine: the round's sealed files, the task
    directory and the profile. No envelope: each task gets its own run's contestant only."""
    files = {name: (ctx.round_dir / name).read_bytes() for name in (LAB_FILE, LOCK_FILE, SEALED_FILE)}
    try:
        task_dir = ctx.loaded.task_dir
    except ValueError as e:  # a dataset round: one task directory is all a node is sent
        raise RunError(str(e)) from None
    return {**files, "task": pack(task_dir), "profile": ctx.loaded.profile.model_dump(mode="json")}


def _connect(address: str) -> Any:
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    extra: dict[str, Any] = {}
    if host in LOOPBACK:
        # A cluster on this machine's loopback (tests, a one-box lab): Ray would otherwise swap
        # 127.0.0.1 for the host's outward address and look for the cluster there. Read at import.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        extra["_node_ip_address"] = "127.0.0.1"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise RunError("--ray needs Ray: pip install 'labctl[ray]'") from None
    ray.init(address=address, namespace="labctl", log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=True, **extra)
    return ray


def run_on_ray(ctx: RoundContext, address: str, say: Say = lambda s: None,
               retry_errored: bool = False) -> list[RunSummary]:
    """Every unfinished run of the round as a task on the Ray cluster at `address`."""
    if changed := sealed_files_changed(ctx.round_dir):
        raise RunError("the round changed since it was sealed: " + "; ".join(changed))
    ray = _connect(address)
    try:
        return _drive(ray, ctx, say, retry_errored)
    finally:
        ray.shutdown()


def _drive(ray: Any, ctx: RoundContext, say: Say, retry_errored: bool) -> list[RunSummary]:
    from ray.exceptions import RayError, RayTaskError, TaskCancelledError

    from labctl.run.parallel import safe_manifest

    need = gpus_needed(ctx.loaded, ctx.lock, ctx.plan)
    common = ray.put(round_payload(ctx))
    task = ray.remote(_task)
    pending: dict[Any, tuple[str, int]] = {}
    done: dict[str, RunSummary] = {}

    def submit(rid: str, attempts: int) -> None:
        prev = read_result(ctx.round_dir, rid) if result_path(ctx.round_dir, rid).is_file() else None
        write_result(ctx.round_dir, RunResult(run_id=rid, status="running", attempts=attempts, started=now(),
                                              control=prev.control if prev else None))
        cid = ctx.mapping[rid]
        ref = task.options(name=rid, num_cpus=0, num_gpus=need.get(cid, 0), max_retries=0,
                           resources={RESOURCE: 1}).remote(
            common, {"round": ctx.sealed.round, "run": rid, "attempts": attempts, "contestant": cid})
        pending[ref] = (rid, attempts)
        say(f"{rid}: submitted (attempt {attempts})")

    for rid in ctx.sealed.order:
        attempts = next_attempt(ctx, rid, retry_errored, say)
        if attempts is None:
            done[rid] = summary(ctx, rid, read_result(ctx.round_dir, rid), skipped=True)
        else:
            submit(rid, attempts)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                rid, attempts = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except RayTaskError as e:  # the run itself failed on its node: its result, not a lost node
                    _errored(ctx, rid, attempts, str(e).strip().splitlines()[-1])
                except RayError as e:
                    why = type(e).__name__
                    if attempts < MAX_ATTEMPTS:
                        say(f"{rid}: node lost ({why}); starting again elsewhere (attempt {attempts + 1})")
                        submit(rid, attempts + 1)
                        continue
                    _errored(ctx, rid, attempts, f"node lost {attempts} times (last: {why})")
                else:
                    land(ctx, rid, out)
                    say(f"{rid}: {out['status']} on {out['host']}")
                done[rid] = summary(ctx, rid, read_result(ctx.round_dir, rid), skipped=False)
                safe_manifest(ctx.round_dir)
    except KeyboardInterrupt:
        for ref in pending:  # not force: the task gets KeyboardInterrupt and removes its containers
            ray.cancel(ref)
        with contextlib.suppress(RayError, TaskCancelledError):
            ray.wait(list(pending), num_returns=len(pending), timeout=60)
        raise
    finally:
        safe_manifest(ctx.round_dir)
    return [done[rid] for rid in ctx.sealed.order if rid in done]


def _task(common: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    return node_execute({**common, **job})


def _errored(ctx: RoundContext, rid: str, attempts: int, reason: str) -> None:
    prev = read_result(ctx.round_dir, rid)
    write_result(ctx.round_dir, prev.model_copy(update={"status": "errored", "attempts": attempts,
                                                         "ended": now(), "reason": reason}))
