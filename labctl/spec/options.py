"""How a lab's round runs, apart from who competes: run ids and order, budgets, where the verifier
runs, how images are built: the `Lab` record (`labctl.spec.lab`) holds each as a field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from labctl.spec.base import Spec
from labctl.spec.units import Count, Duration


class BuildOptions(Spec):
    """How images are built where the public internet is not (corporate proxies, air-gapped labs).
    None of these change an image's input hash: they change where bytes come from, not which."""

    ca_bundle: Path | None = None
    """CA bundle (relative to the lab file) trusted by pip/npm/curl during image builds."""
    pip_index_url: str | None = None
    """A PyPI mirror for the agent runtime's dependencies."""
    npm_registry: str | None = None
    """An npm mirror for npm-based agent runtimes."""
    image_mirrors: dict[str, str] = {}
    """Image → the image to build from instead, keyed the way images are written (`ubuntu:24.04`,
    `library/ubuntu:24.04` and `docker.io/library/ubuntu:24.04` are one key), e.g.
    `"ubuntu:24.04": "debian:bookworm-slim"` (a local image works: lock pins its image id); a key
    without a tag maps every tag, one ending in `/` is a prefix (`"docker.io/": "registry.lan:5000/hub/"`).
    A profile's own mirrors win per key."""
    task_image: Literal["dockerfile", "prebuilt"] = "dockerfile"
    """Where a task's image comes from when task.toml names an `[environment] docker_image` beside its
    environment/Dockerfile: `dockerfile` (default) builds the Dockerfile; `prebuilt` builds from the
    named image instead (pinned by digest in lab.lock, like every base). A task without a Dockerfile
    always uses its docker_image."""


class Round(Spec):
    """How a round is laid out: run ids, blinding, repeats, order."""

    run_prefix: str = Field(default="run-", pattern=r"^[a-z][a-z0-9-]*$")
    """Run ids are prefix + number, e.g. `run-10`."""
    first_number: int = Field(default=10, ge=0)
    """Number of the first run id."""
    seal: bool = True
    """Shuffle contestants onto run ids and commit to the mapping before anything runs."""
    repeats: int = Field(default=1, ge=1, le=100)
    """Runs per contestant and task (pass@k in a dataset's report needs k ≤ repeats)."""
    randomize_order: bool = True
    """Execute runs in a random order (else in run id order)."""


class Budgets(Spec):
    """Limits of one run; a run past any of them is stopped."""

    wall_time: Duration = 3600.0
    """Wall time of the agent, e.g. `45m`; the agent is told its deadline."""
    tokens: Count | None = None
    """Total tokens (prompt + completion) across the run, enforced at the proxy."""
    steps: int | None = Field(default=None, ge=1)
    """Agent steps (model calls); always set one for agents that cannot price local models."""
    cost: float | None = Field(default=None, gt=0)
    """USD across the run, enforced at the meter from the contestant's declared `price`: the call
    that crosses it completes, the next is refused and the run stops (`cost_budget`). Only priced
    (cloud) contestants have a cost: local and unpriced ones are not limited by it."""


class VerifierOptions(Spec):
    """Where a plain Harbor task's tests/test.sh runs (repository tasks are always graded `fresh`)."""

    container: Literal["live", "fresh"] = "live"
    """`live` (Harbor's way): in the agent's own container after its session, what the solution
    started still up. `fresh`: a new container of the committed filesystem — nothing the agent left
    running touches the grade, but tests that probe a service the solution started fail."""
