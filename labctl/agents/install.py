"""Build-time install scripts for locked runtimes: hash-pinned wheels (PyPI) or a locked npm tree.

Both run with no registry: everything they install was fetched and verified on the host and sits in
the build context (`dist/`: wheels, the node and npm tarballs, a filled npm cache), next to the files
that name it (`requirements/<python>.txt`, `npm/package-lock.json`). See labctl.lock.wheeltree and
labctl.lock.npmtree for how the lock and the host cache are made.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from labctl.agents.base import AGENTS_ROOT, BUILD_DIR, wrapper_script

NODE_ROOT = "/opt/labctl/node"
NPM_ROOT = "/opt/labctl/npm"

EXECUTABLE_ELF = r"""
const fs = require("fs"), path = require("path");
const root = process.argv[2], elf = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const walk = (dir) => {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const f = path.join(dir, e.name);
    if (e.isDirectory()) { walk(f); continue; }
    if (!e.isFile()) continue;  // symlinks point into the tree (npm's .bin links)
    const mode = fs.statSync(f).mode;
    if ((mode & 0o111) === 0o111) continue;
    const head = Buffer.alloc(4), fd = fs.openSync(f, "r");
    const n = fs.readSync(fd, head, 0, 4, 0);
    fs.closeSync(fd);
    if (n === 4 && head.equals(elf)) {
      fs.chmodSync(f, mode | 0o755);
      console.log("made executable: " + path.relative(root, f));
    }
  }
};
walk(root);
"""
"""node script (its argument: the tree's root): every ELF file of an installed npm tree made executable by
all. Why: npm keeps the mode a package's tarball gives a file, and only `bin` entries are made
executable; a native tool a package bundles and spawns itself arrives without its x bit when the
publisher packed it so (qwen-code 0.24.4 ships `vendor/ripgrep/x64-linux/rg` as 0644, and its
search tool then fails with `rg EACCES`). Shared objects (`*.node`, `*.so`) get the bit too:
harmless, and one rule with no list of packages to keep up to date."""


def wheels_install(runtime: str, entry_points: Mapping[str, str],
                   env: Mapping[str, str] | None = None) -> str:
    """sh installing the locked wheels for the image's python3 into a private venv, offline:
    `pip install --no-index --no-deps --require-hashes` from `dist/` with the running Python's
    requirements file; an image Python the lock did not resolve for is a clear error."""
    venv = shlex.quote(f"{AGENTS_ROOT}/{runtime}")
    lines = [
        f"sh {BUILD_DIR}/ensure-python.sh",
        "py=$(python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])')",
        f'req="{BUILD_DIR}/requirements/$py.txt"',
        f'[ -f "$req" ] || {{ echo "lab.lock has no wheels for Python $py (locked: '
        f'$(ls {BUILD_DIR}/requirements | tr "\\n" " "))" >&2; exit 1; }}',
        f"python3 -m venv {venv}",
        f'{venv}/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps '
        f'--require-hashes --find-links {BUILD_DIR}/dist -r "$req"',
    ]
    script = "\n".join(lines) + "\n"
    for command, target in entry_points.items():
        script += wrapper_script(f"/usr/local/bin/{command}", f"{AGENTS_ROOT}/{runtime}/bin/{target}",
                                 env or {})
    return script


def npm_install(runtime: str, files: Sequence[str], bins: Sequence[str], *,
                env: Mapping[str, str] | None = None, run_scripts_of: Sequence[str] = ()) -> str:
    """sh installing the pinned node and npm (`files`: their tarballs) and the locked tree with
    `npm ci --offline` from the host-filled cache; only `run_scripts_of` packages' install scripts
    run (e.g. the step that links a platform binary), offline, after the install."""
    node_tgz, npm_tgz = files
    home = f"{AGENTS_ROOT}/{runtime}"
    npm = f"{NODE_ROOT}/bin/node {NPM_ROOT}/bin/npm-cli.js"
    flags = "--offline --no-audit --no-fund --update-notifier=false --loglevel=warn"
    lines = [
        f"mkdir -p {NODE_ROOT} {NPM_ROOT} {shlex.quote(home)}",
        f"tar -xzf {shlex.quote(node_tgz)} -C {NODE_ROOT} --strip-components=1 --no-same-owner",
        f"tar -xzf {shlex.quote(npm_tgz)} -C {NPM_ROOT} --strip-components=1 --no-same-owner",
        f"cp {BUILD_DIR}/npm/package.json {BUILD_DIR}/npm/package-lock.json {shlex.quote(home)}/",
        f"cd {shlex.quote(home)}",
        # No user/global npmrc (a task image's must not redirect or add anything); the cache is the
        # host-filled one, and --offline makes a missing tarball an error instead of a download.
        f"printf '' > {BUILD_DIR}/npmrc",
        f"printf '' > {BUILD_DIR}/npmrc-global",
        f"export npm_config_userconfig={BUILD_DIR}/npmrc npm_config_globalconfig={BUILD_DIR}/npmrc-global",
        f"{npm} ci --ignore-scripts --cache {BUILD_DIR}/dist/npm-cache {flags}",
    ]
    for pkg in run_scripts_of:
        lines.append(f"PATH={NODE_ROOT}/bin:$PATH {npm} rebuild --foreground-scripts {flags} "
                     f"{shlex.quote(pkg)}")
    lines += [f"cat > {BUILD_DIR}/executable-elf.cjs <<'LABCTL_ELF'\n{EXECUTABLE_ELF.strip()}\nLABCTL_ELF",
              f"{NODE_ROOT}/bin/node {BUILD_DIR}/executable-elf.cjs {shlex.quote(home)}/node_modules",
              "cd /"]
    script = "\n".join(lines) + "\n"
    for command in bins:
        script += wrapper_script(f"/usr/local/bin/{command}", f"{home}/node_modules/.bin/{command}",
                                 env or {}, path_prefix=f"{NODE_ROOT}/bin")
    return script
