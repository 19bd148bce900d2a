"""`labctl init`: a commented lab.yaml, its JSON Schema and a Harbor task skeleton."""

from __future__ import annotations

import io
import re
import shutil
from importlib import resources
from pathlib import Path

from ruamel.yaml import YAML

from labctl.errors import LabctlError
from labctl.spec.schema import SCHEMA_FILE, lab_schema_text

TEMPLATE = Path(str(resources.files("labctl.spec") / "templates" / "init"))


class ScaffoldError(LabctlError):
    pass


def lab_name_for(directory: Path) -> str:
    """A valid lab id from a directory name: `My Lab!` → `my-lab`."""
    name = re.sub(r"[^a-z0-9._-]+", "-", directory.resolve().name.lower()).strip("-._")
    return name[:63] or "my-lab"


def scaffold(directory: Path, *, name: str | None = None, force: bool = False) -> list[Path]:
    """Write the template into `directory`; refuses to overwrite unless `force`."""
    files = sorted(p for p in TEMPLATE.rglob("*") if p.is_file())
    targets = {src: directory / src.relative_to(TEMPLATE) for src in files}
    targets[TEMPLATE / SCHEMA_FILE] = directory / SCHEMA_FILE
    existing = [t for t in targets.values() if t.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3])
        raise ScaffoldError(f"{shown} already exist{'s' if len(existing) == 1 else ''}; "
                            "use --force to overwrite")
    written: list[Path] = []
    for src, dst in targets.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.name == SCHEMA_FILE:
            dst.write_text(lab_schema_text(), encoding="utf-8")
        elif dst.name == "lab.yaml":
            dst.write_text(_named(src.read_text(encoding="utf-8"), name or lab_name_for(directory)),
                           encoding="utf-8")
        else:
            shutil.copy2(src, dst)
        written.append(dst)
    return written


def _named(text: str, name: str) -> str:
    """Set lab.name through ruamel's round trip, so every comment of the template survives."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 110
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(text)
    doc["lab"]["name"] = name
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()
