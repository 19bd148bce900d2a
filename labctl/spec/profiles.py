"""Hardware profiles: what a GPU box offers, so the same lab can be planned for a 5090 or an H100.

Built-in profiles ship as YAML in `labctl/spec/builtin_profiles/`. Users add their own as YAML files (one
profile per file) in any directory on the search path; the first profile with a name wins:
  1. `profiles/` next to the lab file
  2. each entry of $LABCTL_PROFILE_PATH (directories or files, separated by `:`)
  3. `$XDG_CONFIG_HOME/labctl/profiles` (default `~/.config/labctl/profiles`)
  4. the built-in profiles
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labctl.spec.located import Document, SpecError, load_yaml, plain, validate
from labctl.spec.network import LAB_ONLY
from labctl.spec.units import Size, format_size

BUILTIN_DIR = Path(str(resources.files("labctl.spec") / "builtin_profiles"))


class Profile(BaseModel):
    """A hardware profile: the GPUs, their memory and CUDA architecture, and host memory."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    __lab_only__ = LAB_ONLY

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """Short name used with `--profile`, e.g. `rtx5090-32g`."""
    description: str = ""
    """One line for humans."""
    gpu: str | None = None
    """GPU model as `nvidia-smi` names it; empty for a CPU-only profile."""
    gpu_count: int = Field(default=1, ge=0)
    """Number of GPUs; 0 for CPU only."""
    vram_per_gpu: Size = 0
    """Memory of one GPU, e.g. `32GiB`."""
    cuda_arch: int | None = Field(default=None, ge=30, le=200)
    """CMAKE_CUDA_ARCHITECTURES number, e.g. 120 for an RTX 5090, 90 for H100/H200."""
    host_ram: Size
    """System memory available for offloaded layers, e.g. `64GiB`."""
    driver_min: str | None = Field(default=None, pattern=r"^\d+(\.\d+)*$")
    """Lowest NVIDIA driver this profile expects (a CUDA image newer than the driver fails at start)."""
    vram_reserve: Size = 0
    """VRAM the planner keeps free (display, CUDA context, fragmentation)."""
    cpu_threads: int | None = Field(default=None, ge=1)
    """Threads for llama-server on this host; default: what llama.cpp picks."""
    image_mirrors: dict[str, str] = {}
    """Image → mirror for this site, keyed like `build.image_mirrors` (wins over the lab's, per key)."""

    @model_validator(mode="after")
    def _gpu_fields_agree(self) -> Profile:
        if self.gpu_count > 0:
            missing = [n for n in ("gpu", "cuda_arch") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"a GPU profile needs {' and '.join(missing)}")
            if self.vram_per_gpu <= 0:
                raise ValueError("a GPU profile needs vram_per_gpu > 0 (use gpu_count: 0 for CPU only)")
            if self.vram_reserve >= self.vram_per_gpu * self.gpu_count:
                raise ValueError("vram_reserve leaves no VRAM to use")
        elif self.vram_per_gpu or self.cuda_arch:
            raise ValueError("gpu_count is 0 but vram_per_gpu or cuda_arch is set")
        return self

    @property
    def is_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def compute_capability(self) -> str | None:
        """`120` → `12.0`."""
        return None if self.cuda_arch is None else f"{self.cuda_arch // 10}.{self.cuda_arch % 10}"

    @property
    def total_vram(self) -> int:
        return self.vram_per_gpu * self.gpu_count

    def summary(self) -> str:
        if not self.is_gpu:
            return f"CPU only, {format_size(self.host_ram)} RAM"
        n = f"{self.gpu_count}× " if self.gpu_count > 1 else ""
        return f"{n}{self.gpu} {format_size(self.vram_per_gpu)} (sm_{self.cuda_arch})"


class FoundProfile(BaseModel):
    profile: Profile
    source: str
    """Where it came from: `builtin` or a file path."""


def search_path(lab_dir: Path | None = None) -> list[Path]:
    out: list[Path] = []
    if lab_dir is not None:
        out.append(lab_dir / "profiles")
    out += [Path(p) for p in os.environ.get("LABCTL_PROFILE_PATH", "").split(os.pathsep) if p]
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    out.append(config / "labctl" / "profiles")
    out.append(BUILTIN_DIR)
    return out


def load_profile_file(path: Path) -> Profile:
    """One profile from a YAML file; its name defaults to the file's stem."""
    doc: Document = load_yaml(path)
    data = dict(doc.root)
    data.setdefault("name", re.sub(r"\.ya?ml$", "", path.name))
    return validate(Profile, doc, plain(data))


def _files(entry: Path) -> list[Path]:
    if entry.is_file():
        return [entry]
    if entry.is_dir():
        return sorted(p for p in entry.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return []


def all_profiles(lab_dir: Path | None = None) -> dict[str, FoundProfile]:
    """Every profile on the search path, first name wins; a broken file is a SpecError."""
    found: dict[str, FoundProfile] = {}
    for entry in search_path(lab_dir):
        for f in _files(entry):
            p = load_profile_file(f)
            source = "builtin" if entry == BUILTIN_DIR else str(f)
            found.setdefault(p.name, FoundProfile(profile=p, source=source))
    return found


def find_profile(name: str, lab_dir: Path | None = None) -> Profile | None:
    hit = all_profiles(lab_dir).get(name)
    return hit.profile if hit else None


__all__ = ["Profile", "FoundProfile", "all_profiles", "find_profile", "search_path", "SpecError"]
