"""What a lock pins, one short line per entry: shown by `labctl lock` and by the first run of
`labctl round`, which locks the lab as `labctl lock` would."""

from __future__ import annotations

from labctl.lock.lockfile import Lock


def lock_entries(lock: Lock) -> dict[str, str]:
    """Entry name → one short line saying what it is pinned to, for people (`labctl lock`'s table, the
    first run of `labctl round`)."""
    src = lock.llama_cpp
    rows = {"llama_cpp": (f"{src.ref} → {src.commit}" if src.git else
                          f"{src.sdist} sha256:{src.sdist_sha256}" if src.sdist else
                          f"tree sha256:{src.tree_sha256}")}
    for ref, img in lock.images.items():
        via = f", via {img.mirror}" if img.mirror else ""
        rows[f"images.{ref}"] = f"{img.digest} ({img.source}{via})"
    for cid, m in lock.models.items():
        first = m.files[0]
        more = f" (+{len(m.files) - 1} shards)" if len(m.files) > 1 else ""
        rows[f"models.{cid}"] = f"{first.name} sha256:{first.sha256[:16]}… {first.size:,} B{more}"
    pins = {"agent": lock.agent} if lock.agent else {}
    pins.update({f"agents.{name}": a for name, a in (lock.agents or {}).items()})
    for entry, a in pins.items():
        tree = ""
        if a.wheels:
            tree = f" +{len(a.wheels)} wheels"
        elif a.npm_packages and a.node:
            tree = f" +{len(a.npm_packages) - 1} npm packages, node {a.node.version}"
        head = f"{a.name}=={a.version} {a.filename or ''} {a.sha256 or a.integrity or ''}".strip()
        rows[entry] = head + tree
    for cid, p in (lock.prices or {}).items():
        rows[f"prices.{cid}"] = (f"${p.input:g} in, ${p.output:g} out, ${p.cache_read:g} cache read, "
                                 f"${p.cache_write:g} cache write per M tokens, as of {p.as_of}")
    rows["task"] = f"{lock.task.path} tree sha256:{lock.task.tree_sha256[:16]}…"
    return rows
