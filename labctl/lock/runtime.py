"""An agent runtime pinned completely: its install set in the lock, its bytes in the host cache.

`pin_tree` (for `labctl lock`) adds the whole dependency tree to the runtime's PackageLock: every
wheel by sha256 (PyPI), or the pinned node, npm and the package-lock `packages` map (npm).
`BuildInputs` (for `labctl build`) turns that lock entry into what an agent image's context needs:
files that enter the image's input hash (requirements files, package.json + package-lock.json), the
verified host-side distributions (transport: already pinned by hash), and the hash inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import LabctlError
from labctl.lock.lockfile import PackageLock
from labctl.lock.npmtree import fetch_tarball, fill_cache, pin_toolchain, project_files, resolve_tree
from labctl.lock.sdist import Log
from labctl.lock.wheeltree import REQUIREMENTS_DIR, fetch_wheels, requirements, resolve_wheels


class TreeError(LabctlError, ValueError):
    """The lock's agent entry lacks its dependency tree (an older lock): relock."""


def pin_tree(pkg: PackageLock) -> PackageLock:
    """`pkg` with its whole install set recorded (network: the registries, pip, the pinned npm)."""
    if pkg.registry == "pypi":
        return pkg.model_copy(update={"wheels": resolve_wheels(pkg.name, pkg.version)})
    if pkg.registry == "npm":
        node, npm = pin_toolchain()
        packages = resolve_tree(pkg.name, pkg.version, node, npm)
        return pkg.model_copy(update={"node": node, "npm": npm, "npm_packages": packages})
    return pkg


@dataclass
class BuildInputs:
    """What an agent image's build context gets from the locked runtime."""

    context: dict[str, bytes] = field(default_factory=dict)
    """Relative path → bytes; hashed with the context."""
    inputs: dict[str, str] = field(default_factory=dict)
    """Pins not visible in the context files (node/npm tarball integrities)."""
    install_files: list[str] = field(default_factory=list)
    """Names under dist/ the adapter's install script receives, in order."""
    fetch: Callable[[Path, Log], dict[str, Path]] = lambda cache, log: {}
    """Fill the host cache; returns dist/ name → verified host path (a file or the npm cache dir)."""


def build_inputs(pkg: PackageLock) -> BuildInputs:
    if pkg.registry == "pypi":
        if not pkg.wheels:
            raise TreeError(f"lab.lock pins {pkg.name}=={pkg.version} without its wheels: run `labctl lock`")
        wheels = pkg.wheels
        ctx = {f"{REQUIREMENTS_DIR}/{name}": text.encode() for name, text in requirements(wheels).items()}
        return BuildInputs(context=ctx, fetch=lambda cache, log: fetch_wheels(wheels, cache=cache, log=log))
    if pkg.registry == "npm":
        node, npm, packages = pkg.node, pkg.npm, pkg.npm_packages
        if node is None or npm is None or not packages:
            raise TreeError(f"lab.lock pins {pkg.name}@{pkg.version} without node, npm and its package tree: "
                            "run `labctl lock`")
        project = project_files(pkg.name, pkg.version, packages)
        ctx = {f"npm/{name}": text.encode() for name, text in project.items()}
        names = [node.url.rsplit("/", 1)[-1], npm.url.rsplit("/", 1)[-1]]

        def fetch(cache: Path, log: Log) -> dict[str, Path]:
            return {names[0]: fetch_tarball(node, cache, log), names[1]: fetch_tarball(npm, cache, log),
                    "npm-cache": fill_cache(pkg.name, pkg.version, node, npm, packages, cache=cache, log=log)}

        toolchain = {"node": f"{node.name}@{node.version} {node.integrity}",
                     "npm": f"{npm.name}@{npm.version} {npm.integrity}"}
        return BuildInputs(context=ctx, inputs=toolchain, install_files=names, fetch=fetch)
    return BuildInputs()


def tree_digest(pkg: PackageLock) -> str:
    """One hash of the install set, for labels and messages."""
    data = pkg.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
