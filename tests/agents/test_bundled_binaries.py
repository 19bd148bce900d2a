"""Binaries an npm runtime bundles are executable in its image (issue #25: qwen-code 0.24.4 ships
`vendor/ripgrep/x64-linux/rg` mode 0644 and its search tool failed with `rg EACCES`).

The install script's own node program runs here on a tree shaped like qwen-code's, with the host's
node (the image runs the pinned one); the images themselves are checked in
tests/images/test_runtime_images.py.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from labctl.agents import adapter
from labctl.agents.install import EXECUTABLE_ELF

NODE = shutil.which("node")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.mark.skipif(NODE is None, reason="needs node on the host")
def test_every_elf_file_of_the_tree_becomes_executable(tmp_path: Path) -> None:
    tree = tmp_path / "node_modules"
    vendor = tree / "@qwen-code" / "qwen-code" / "vendor" / "ripgrep" / "x64-linux"
    vendor.mkdir(parents=True)
    rg = vendor / "rg"
    shutil.copyfile("/bin/true", rg)  # a real ELF executable, packed 0644 as the tarball has it
    rg.chmod(0o644)
    text = tree / "@qwen-code" / "qwen-code" / "cli.js"
    text.write_text("#!/usr/bin/env node\n")
    text.chmod(0o644)
    (tree / ".bin").mkdir()
    (tree / ".bin" / "qwen").symlink_to("../@qwen-code/qwen-code/cli.js")
    script = tmp_path / "elf.cjs"
    script.write_text(EXECUTABLE_ELF)
    assert NODE is not None
    done = subprocess.run([NODE, str(script), str(tree)], capture_output=True, text=True, check=True)
    assert _mode(rg) == 0o755 and subprocess.run([str(rg)]).returncode == 0
    assert _mode(text) == 0o644  # not an ELF file: left as packed
    assert done.stdout.splitlines() == ["made executable: @qwen-code/qwen-code/vendor/ripgrep/x64-linux/rg"]


@pytest.mark.parametrize("runtime", ["qwen-code", "claude-code", "codex", "opencode"])
def test_npm_install_makes_bundled_binaries_executable_after_the_install(runtime: str) -> None:
    script = adapter(runtime).install_script(["n.tgz", "m.tgz"])
    chmod = script.index("executable-elf.cjs /opt/labctl/agents/")
    assert script.index(" ci --ignore-scripts") < chmod  # after npm put the files there
    assert "rebuild" not in script or script.index("rebuild") < chmod  # and after the install scripts
    assert f"/opt/labctl/agents/{runtime}/node_modules" in script[chmod:]
