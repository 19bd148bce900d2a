"""`labctl build` with nothing to do vs a plain `docker build` of the same images with a full cache.

labctl decides "nothing changed" from input hashes without asking the builder to walk any layer;
the baseline is what a Makefile of `docker build` calls would cost for the same images, every layer
a cache hit. Run from the repository root: `python benchmarks/build_cached.py [LAB]` (default
labs/smoke.yaml, locked and built first if needed). Prints both times and the ratio.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labctl.engine.container import BuildRequest, Engine, detect_engine
from labctl.images.build import prepare
from labctl.images.model import ImageSpec
from labctl.images.specs import lab_images, settings_for
from labctl.lock.resolve import require_lock
from labctl.spec.load import load_lab

LABCTL = [os.environ["LABCTL"]] if os.environ.get("LABCTL") else [sys.executable, "-m", "labctl"]


def labctl(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([*LABCTL, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    lab = Path(sys.argv[1] if len(sys.argv) > 1 else "labs/smoke.yaml")
    if not lab.with_suffix(".lock").exists():
        labctl("lock", str(lab))
    print(f"making sure every image of {lab} is built (may take minutes the first time) …", flush=True)
    labctl("build", str(lab))
    ours = min(labctl("build", str(lab), "--json") for _ in range(3))

    loaded = load_lab(lab)
    lock = require_lock(loaded)
    engine = detect_engine()
    specs = lab_images(loaded, lock, loaded.profile, settings_for(loaded))
    late = prepare(engine, specs, lambda msg: None)  # downloads verified already: not timed
    total = 0.0
    try:
        total = sum(_plain_build(engine, spec, late[spec.name]) for spec in specs)
    finally:
        for spec in specs:
            if spec.build_dir is not None:
                shutil.rmtree(spec.build_dir, ignore_errors=True)
    print(f"images: {len(specs)}")

    print(f"labctl build, nothing to do (best of 3): {ours:.2f} s  (goal <= 1 s)")
    print(f"plain docker build, full cache, same images: {total:.2f} s")
    print(f"ratio labctl / docker build: {ours / total:.2f}")
    return 0 if ours <= 1.0 else 1


def _plain_build(engine: Engine, spec: ImageSpec, late: dict[str, str]) -> float:
    """Seconds of one `docker build` of `spec` (same context, Dockerfile and args) on a full cache."""
    args = {**spec.build_args, **spec.unhashed_args, **late}
    if spec.probe is not None:  # the version label the real build recorded: same layers, cache hits
        info = engine.image(spec.tag)
        args[spec.probe.build_arg] = info.labels.get(spec.probe.label, "") if info else ""
    req = BuildRequest(spec.build_dir or spec.context, spec.dockerfile, f"labctl-bench/{spec.name}:cached",
                       args, {}, spec.target)
    with tempfile.NamedTemporaryFile("w", suffix=".log") as log:  # the engine streams its log to a file
        t = time.perf_counter()
        engine.build(req, log)
        took = time.perf_counter() - t
    engine.remove_image(req.tag)
    return took


if __name__ == "__main__":
    raise SystemExit(main())
