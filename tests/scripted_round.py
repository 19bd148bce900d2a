"""The scripted model (tests/scripted_model.py) as a cloud contestant's upstream inside a real,
sealed round — the harness any runtime's end-to-end test uses to reach Complete.

The model runs in a container of its own (the labctl image's venv has aiohttp; tests/ mounted
read-only), on a labelled internal network of the test's. The runner is patched for the duration:
once it has created a run's egress network (a cloud contestant's only way out of the meter), the
model's container joins it under the alias the contestant's `base_url` names; it leaves before the
runner's own cleanup removes that network. Nothing but these containers and loopback is contacted.

    with scripted_upstream(labctl_image(lab), tmp / "model", labctl_labels) as model: ...
    lab = derived_lab(tmp, cloud_contestant("scripted", agent="  agent: ...\\n"))

`model.received()` is every model call the model saw (path, headers, body), in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labctl.engine.container import detect_engine
from labctl.engine.names import label_flags
from labctl.run.runner import RunSession
from tests.scripted_model import Plan

TESTS = Path(__file__).resolve().parent
ALIAS = "scripted-upstream"
PORT = 8080
KEY_ENV = "LABCTL_SCRIPTED_KEY"
VENV_PY = "/opt/labctl/venv/bin/python"


def labctl_image(lab: Path) -> str:
    """The tag of the lab's labctl image (meter and helpers; the model's container runs it)."""
    from labctl.images.specs import lab_images, settings_for
    from labctl.lock.resolve import require_lock
    from labctl.spec.load import load_lab

    loaded = load_lab(lab)
    return {s.name: s.tag for s in lab_images(loaded, require_lock(loaded), loaded.profile,
                                              settings_for(loaded))}["labctl"]


def cloud_contestant(cid: str = "scripted", provider: str = "openai", extra: str = "") -> str:
    """A `contestants:` entry for the scripted model (`extra`: more lines, e.g. an `agent:` block,
    indented by four spaces)."""
    return (f"  - id: {cid}\n    kind: cloud\n    provider: {provider}\n    model: scripted-model-1\n"
            f"    api_key_env: {KEY_ENV}\n    base_url: http://{ALIAS}:{PORT}\n{extra}")


@dataclass
class RunningModel:
    container: str
    out: Path

    def received(self) -> list[dict[str, Any]]:
        path = self.out / "received.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def logs(self) -> str:
        done = detect_engine()("logs", self.container, check=False)
        return done.stdout + done.stderr


@contextlib.contextmanager
def upstream_container(image: str, out: Path, labels: dict[str, str], *, argv: list[str], mount: Path,
                       key_env: str, alias: str, kind: str) -> Iterator[str]:
    """A cloud contestant's stand-in upstream (its container's name), healthy: `argv` run by the
    labctl `image`'s venv Python with `mount` at /tests (read-only), `out` at /out and `key_env`
    passed from this process (as the runner gives it the meter), on a labelled internal network of
    the test's. The runner is patched meanwhile: once it has created a run's egress network the
    container joins it as `alias`, and leaves before the runner's own cleanup removes that network."""
    d = detect_engine()
    suffix = labels["labctl.test"][:12]
    net, name = f"labctl-test-{kind}net-{suffix}", f"labctl-test-{kind}-{suffix}"
    d("network", "create", "--internal", *label_flags(labels), net)
    patch = pytest.MonkeyPatch()
    try:
        d("run", "-d", "--name", name, "--network", net, *label_flags(labels), "-e", key_env,
          "-v", f"{mount}:/tests:ro", "-v", f"{out}:/out", "--entrypoint", VENV_PY, image, *argv)
        probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/health', timeout=2)"
        deadline = time.monotonic() + 60
        while not d.ok("exec", name, VENV_PY, "-c", probe):
            logs = d("logs", name, check=False)
            assert d.running(name) and time.monotonic() < deadline, logs.stdout + logs.stderr
            time.sleep(0.3)

        start_model, cleanup = RunSession._start_model, RunSession.cleanup

        def joined(self: RunSession) -> tuple[str, list[str], list[str], list[str]]:
            got = start_model(self)  # a cloud contestant: creates the run's egress network
            d("network", "connect", "--alias", alias, self.names["net-egress"], name)
            return got

        def left(self: RunSession) -> None:
            # The runner removes its egress network by label; a foreign container on it would keep it.
            d("network", "disconnect", "-f", self.names["net-egress"], name, check=False)
            cleanup(self)

        patch.setattr(RunSession, "_start_model", joined)
        patch.setattr(RunSession, "cleanup", left)
        yield name
    finally:
        patch.undo()
        d("rm", "-f", name, check=False)
        d("network", "rm", net, check=False)


@contextlib.contextmanager
def scripted_upstream(image: str, out: Path, labels: dict[str, str], plan: Plan | None = None
                      ) -> Iterator[RunningModel]:
    """The scripted model's container, healthy, from the labctl `image`, requiring the key in
    $LABCTL_SCRIPTED_KEY (set it first: the meter injects it); the runner patched to put the model
    on each run's egress network as `ALIAS`."""
    plan = plan or Plan()
    out.mkdir(parents=True)
    out.chmod(0o777)  # the labctl image runs as its own user
    (out / "plan.json").write_text(json.dumps(dataclasses.asdict(plan)))
    argv = ["/tests/scripted_model.py", "--host", "0.0.0.0", "--port", str(PORT), "--plan", "/out/plan.json",
            "--record", "/out/received.jsonl", "--key-env", KEY_ENV]
    with upstream_container(image, out, labels, argv=argv, mount=TESTS, key_env=KEY_ENV, alias=ALIAS,
                            kind="scripted") as name:
        yield RunningModel(name, out)
