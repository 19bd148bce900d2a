"""How each published Round 7 contestant left its repository, as fixtures for the real verifier.

The Round 7 article ("What Each Model Actually Did") says where each model's run ended; each function
here leaves a fresh run workspace (`labctl.run.parts.make_workspace`: the task's base commit, branch
run-NN, its own bare origin) in that state, with the reference solution's files standing in for the
model's code, changed where the article names the model's mistake:

| run | model | how it ended (published) | class |
|---|---|---|---|
| run-14 | Claude Sonnet 4 | everything; 4 commits pushed (the published messages); screenshot | Complete |
| run-15 | Qwen3-Coder 30B-A3B | all files; build passes; ONE commit pushed; no screenshot | Partial |
| run-13 | Qwen 3.6 35B-A3B | all files; build passes; never committed | Failed |
| run-11 | Gemma 4 12B | gray-matter `stringify` arguments reversed (a type error); no commit | Failed |
| run-12 | Hermes 4 14B | the route imports `../../../lib/tags` (one level short); no commit | Failed |
| run-10 | Devstral 24B | no tool call at all: the base commit as cloned | Total failure |

Nothing is graded here: tests/run/test_tag_manager.py runs the task's own tests/test.sh in the task image
on these workspaces and derives the class with the runner's `run_metrics` and `derive_outcome`.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labctl.run.parts import Workspace

ROOT = Path(__file__).resolve().parents[1]
TAG = ROOT / "tasks" / "tag-manager"
SOLUTION = TAG / "solution" / "files"
LIB, ROUTE = "src/lib/tags.ts", "src/app/api/admin/tags/route.ts"
PAGE = ["src/app/admin/tags/page.tsx", "src/app/admin/tags/TagTable.tsx",
        "src/app/admin/tags/TagTable.module.css"]
NAV = "src/components/AdminNav.tsx"
IDENTITY = {"GIT_AUTHOR_NAME": "Round 7", "GIT_AUTHOR_EMAIL": "agent@quillpost.invalid",
            "GIT_COMMITTER_NAME": "Round 7", "GIT_COMMITTER_EMAIL": "agent@quillpost.invalid"}


def git(ws: Workspace, *args: str) -> str:
    env = {**os.environ, **IDENTITY}
    return subprocess.run(["git", "-C", str(ws.clone), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def put(ws: Workspace, *rels: str) -> None:
    for rel in rels:
        (ws.clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SOLUTION / rel, ws.clone / rel)


def add_nav_entry(ws: Workspace) -> None:
    """The Tags entry after Posts in AdminNav's items (what solution/solve.sh does with sed)."""
    nav = ws.clone / NAV
    posts = '  { href: "/admin/posts", label: "Posts" },\n'
    text = nav.read_text()
    assert posts in text, "AdminNav changed: update round7_endings"
    nav.write_text(text.replace(posts, posts + '  { href: "/admin/tags", label: "Tags" },\n'))


def all_files(ws: Workspace) -> None:
    put(ws, LIB, ROUTE, *PAGE)
    add_nav_entry(ws)


def commit(ws: Workspace, message: str, *paths: str) -> None:
    git(ws, "add", "--", *paths)
    git(ws, "commit", "-q", "-m", message)


def push(ws: Workspace) -> None:
    """`git push origin HEAD` as the agent would; the clone's origin URL is the container's path, so
    the host pushes to the bare repository by its host path."""
    git(ws, "push", "-q", str(ws.origin), f"HEAD:refs/heads/{ws.branch}")


def png(path: Path, width: int = 1280, height: int = 800) -> None:
    """A real PNG of the given size (a light page with a darker column band): the screenshot file."""
    row = bytes([0]) + b"".join(bytes([200 if 150 < x < 650 else 245] * 3) for x in range(width))
    raw = row * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                     + chunk(b"IEND", b""))


# --- the six endings ---------------------------------------------------------------------------------


def sonnet(ws: Workspace) -> None:
    """Every requirement; the four published commit messages, oldest first; a screenshot; pushed."""
    put(ws, LIB)
    commit(ws, "feat: add tags.ts lib with stats, rename, and remove helpers", LIB)
    put(ws, ROUTE, *PAGE)
    commit(ws, "feat: add /admin/tags page with inline rename, delete, and sort", ROUTE, *PAGE)
    add_nav_entry(ws)
    commit(ws, "feat: add Tags link to AdminNav", NAV)
    config = ws.clone / "next.config.ts"
    text = config.read_text()
    assert "  typedRoutes: false,\n" in text
    config.write_text(text.replace("  typedRoutes: false,\n",
                                   "  typedRoutes: false,\n  turbopack: { root: process.cwd() },\n"))
    commit(ws, "fix: set turbopack.root to avoid workspace lockfile detection in dev", "next.config.ts")
    png(ws.clone / "screenshots" / "admin-tags.png")
    push(ws)


def qwen3_coder(ws: Workspace) -> None:
    """All four files, the build passes, one commit, pushed; no screenshot."""
    all_files(ws)
    commit(ws, "Add admin tag manager", LIB, ROUTE, *PAGE, NAV)
    push(ws)


def qwen36(ws: Workspace) -> None:
    """All files and a passing build, never committed (77 messages spent on Playwright instead)."""
    all_files(ws)


def gemma(ws: Workspace) -> None:
    """Its own front-matter writer with gray-matter's `stringify(content, data)` arguments reversed: a
    type error at build time; nothing committed."""
    all_files(ws)
    lib = ws.clone / LIB
    text = lib.read_text()
    imports = 'import { getAllPosts, listPostSlugs, readPostFile, writePostFrontMatter } from "@/lib/posts";'
    call = "await writePostFrontMatter(slug, { ...file.data, tags: after });"
    assert imports in text and call in text, "solution/files/src/lib/tags.ts changed: update round7_endings"
    text = text.replace(imports, 'import fs from "node:fs/promises";\nimport path from "node:path";\n'
                        'import matter from "gray-matter";\n'
                        'import { getAllPosts, listPostSlugs, readPostFile } from "@/lib/posts";')
    lib.write_text(text.replace(call, (
        'const mdx = path.join(process.cwd(), "content", "posts", `${slug}.mdx`);\n'
        "    await fs.writeFile(mdx, matter.stringify({ ...file.data, tags: after }, file.content), "
        '"utf8");')))


def hermes(ws: Workspace) -> None:
    """The route imports the library three levels up instead of four: the build cannot resolve it;
    nothing committed."""
    all_files(ws)
    route = ws.clone / ROUTE
    text = route.read_text()
    assert 'from "@/lib/tags";' in text, "solution/files route.ts changed: update round7_endings"
    route.write_text(text.replace('from "@/lib/tags";', 'from "../../../lib/tags";'))


def devstral(ws: Workspace) -> None:
    """Tool invocations as plain text inside its messages: nothing ever ran, the workspace is as cloned."""


@dataclass(frozen=True)
class Ending:
    contestant: str
    """The contestant's id in lab.yaml."""
    run: str
    """The published run id."""
    tool_calls: int
    """Structured tool calls, as published (the meter's count in a real run)."""
    outcome: str
    """The published class (the Results table)."""
    leave: Callable[[Workspace], None]


ENDINGS = [
    Ending("claude-sonnet-4", "run-14", 88, "Complete", sonnet),
    Ending("qwen3-coder-30b-a3b", "run-15", 60, "Partial", qwen3_coder),
    Ending("qwen3.6-35b-a3b", "run-13", 76, "Failed", qwen36),
    Ending("gemma-4-12b", "run-11", 34, "Failed", gemma),
    Ending("hermes-4-14b", "run-12", 40, "Failed", hermes),
    Ending("devstral-24b", "run-10", 0, "Total failure", devstral),
]
