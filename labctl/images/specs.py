"""The images a lab needs, named by the hash of everything that determines them.

`lab_images(loaded, lock)` turns a lab and its lock into `ImageSpec`s: llama-server (CPU or CUDA
from the profile, at the locked llama.cpp source), the task environment (its Harbor Dockerfile,
bases pinned by digest), one agent image per runtime (task image + pinned runtime + non-root user),
and labctl itself. Each spec's tag is `<namespace>/<name>:<input hash>`; the input hash covers the
Dockerfile text, build args, locked digests and commits, the context's tree hash and the runtime
version — and nothing else, so transport settings (CA bundle, mirrors, package index) and
bookkeeping labels (lab name, lock hash) never force a rebuild. `labctl.images.build` builds them.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from labctl import __version__
from labctl.agents import adapter as agent_adapter
from labctl.agents.base import BUILD_DIR
from labctl.images.context import build_context, dependency_pins, pin_dockerfile, stage_context
from labctl.images.model import (
    BUNDLED_IMAGES,
    CA_BUNDLE_ENV,
    L_LAB,
    L_LLAMA_VERSION,
    L_LOCK,
    NAMESPACE_ENV,
    NPM_REGISTRY_ENV,
    PIP_INDEX_ENV,
    BuildSettings,
    ImageError,
    ImageSpec,
    Log,
    VersionProbe,
)
from labctl.lock.gitref import fetch_source, lock_path_source
from labctl.lock.lockfile import Lock
from labctl.lock.mirrors import describe, how_to_fix, mirror_target, suggestion
from labctl.lock.reference import RegistryError, parse_reference
from labctl.lock.registry import dockerfile_bases, images_dir
from labctl.lock.sdist import changelog_commit, fetch_sdist, sdist_dir
from labctl.spec.dataset import agent_image_name, environment_key, image_groups, image_slug
from labctl.spec.load import LoadedLab
from labctl.spec.profiles import Profile
from labctl.spec.task import prebuilt_image
from labctl.treehash import tree_sha256

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
GATEWAY_IMAGE = "egress-gateway"
"""The image name of a run's egress gateway (built when the lab's network policy is `allowlist`)."""


def settings_for(loaded: LoadedLab, *, ca_bundle: Path | None = None, namespace: str | None = None,
                 extra_labels: dict[str, str] | None = None) -> BuildSettings:
    """Settings from the command line, the environment, and (when the spec has them) the lab's
    `build:` section and the profile's `image_mirrors` (proposed fields, read defensively)."""
    lab_build = getattr(loaded.lab, "build", None)
    mirrors = dict(getattr(lab_build, "image_mirrors", None) or {})
    mirrors.update(getattr(loaded.profile, "image_mirrors", None) or {})
    ca = ca_bundle or (Path(os.environ[CA_BUNDLE_ENV]) if os.environ.get(CA_BUNDLE_ENV) else None)
    lab_ca = getattr(lab_build, "ca_bundle", None)
    if ca is None and lab_ca is not None:
        ca = loaded.resolve(Path(lab_ca))
    if ca is None and CA_BUNDLE_ENV not in os.environ and HOST_CA_BUNDLE.is_file():
        # The host's trust store: public CAs plus whatever a corporate or sandbox TLS proxy needs.
        # It never changes an image tag; LABCTL_CA_BUNDLE= (empty) turns it off.
        ca = HOST_CA_BUNDLE
    if ca is not None and not ca.is_file():
        raise ImageError(f"CA bundle {ca} does not exist")
    index = os.environ.get(PIP_INDEX_ENV) or getattr(lab_build, "pip_index_url", None)
    npm = os.environ.get(NPM_REGISTRY_ENV) or getattr(lab_build, "npm_registry", None)
    return BuildSettings(namespace=namespace or os.environ.get(NAMESPACE_ENV) or "labctl", mirrors=mirrors,
                         ca_bundle=ca, pip_index_url=index, npm_registry=npm,
                         extra_labels=dict(extra_labels or {}))


def images_root(loaded: LoadedLab) -> Path:
    """images/ of the lab (same lookup as the lock uses for base images), else labctl's own."""
    env = os.environ.get("LABCTL_IMAGES_DIR")
    return Path(env) if env else (images_dir(loaded.base_dir) or BUNDLED_IMAGES)


class _Pinner:
    """Looks up image references in lab.lock and says how a build must name them."""

    def __init__(self, lock: Lock, mirrors: dict[str, str]) -> None:
        self.lock, self.mirrors = lock, mirrors

    def __call__(self, ref: str, spec: ImageSpec) -> str:
        pinned = self.lock.images.get(ref)
        if pinned is None:
            raise ImageError(f"image {ref} is not in lab.lock: run `labctl lock`")
        try:
            target = mirror_target(ref, self.mirrors)
        except RegistryError as e:
            raise ImageError(str(e)) from None
        if pinned.mirror is not None and target != pinned.mirror:
            raise ImageError(f"image {ref} was locked through the mirror {pinned.mirror}, but the mirror map "
                             f"now says {target or 'nothing'} ({describe(self.mirrors)}): run `labctl lock`")
        spec.inputs[f"base:{ref}"] = pinned.digest
        if pinned.source == "local":
            built = pinned.mirror or ref  # the local image the build names (an id works too)
            spec.local_bases[built] = pinned.digest
        else:
            qualified = parse_reference(target or ref)
            built = f"{qualified.registry}/{qualified.repository}@{pinned.digest}"
        via = f" through the mirror {target}" if target else ""
        fix = how_to_fix(ref, self.mirrors, suggestion(target, True))
        spec.pull_help[built] = f"image {ref}{via}: {fix}"
        return built


def lab_images(loaded: LoadedLab, lock: Lock, profile: Profile | None = None,
               settings: BuildSettings | None = None) -> list[ImageSpec]:
    """Every image the lab needs, in build order (a dependency before its dependents).

    No network and no engine: sources are only fetched by each spec's `prepare` at build time,
    so `labctl images` can list tags offline.
    """
    settings = settings or BuildSettings()
    profile = profile or loaded.profile
    lab = loaded.lab
    if lock.lab != lab.lab.name:
        raise ImageError(f"lab.lock is for lab {lock.lab!r}, not {lab.lab.name!r}: run `labctl lock`")
    pin = _Pinner(lock, settings.mirrors)
    root = images_root(loaded)
    meta = {L_LAB: lab.lab.name, L_LOCK: lock.sha256(), **settings.extra_labels}
    kinds = {c.kind for c in lab.contestants}
    specs: list[ImageSpec] = []
    if "local" in kinds:
        specs.append(_llama_spec(loaded, lock, profile, settings, root, pin))
    runtimes: list[str] = list(dict.fromkeys(a.runtime for c in lab.contestants
                                             if (a := lab.agent_for(c)) is not None))
    runtimes += [k for k in ("oracle", "nop") if k in kinds]
    if loaded.is_dataset:
        # One task image per distinct environment (tasks sharing one share its image), named after
        # the first task of its group, and the agent images on it: `labctl.spec.dataset.image_groups`.
        for group in sorted(set(image_groups(loaded.tasks).values())):
            task = _task_spec(loaded.for_task(group), lock, settings, pin)
            specs.append(task)
            for rt in runtimes:
                agent = _agent_spec(rt, loaded, lock, settings, root, task, agent_image_name(rt, group))
                specs.append(agent)
    else:
        task = _task_spec(loaded, lock, settings, pin)
        specs.append(task)
        specs += [_agent_spec(rt, loaded, lock, settings, root, task) for rt in runtimes]
    specs.append(_labctl_spec(settings, root, pin))
    if lab.network.egress == "allowlist":
        specs.append(_gateway_spec(settings, root, pin))
    for spec in specs:
        spec.meta_labels = {**meta, **spec.meta_labels}
    return specs


def _repo(settings: BuildSettings, name: str) -> str:
    return f"{settings.namespace}/{name}"


# Lowest CUDA toolkit that compiles for an architecture (NVIDIA's release notes): Blackwell
# (sm_100/sm_120) arrived in 12.8, Hopper and Ada in 11.8; CUDA 13.0 dropped everything below Turing.
_CUDA_FIRST = {120: (12, 8), 121: (12, 9), 110: (13, 0), 103: (12, 9), 101: (12, 8), 100: (12, 8),
               90: (11, 8), 89: (11, 8), 87: (11, 4), 86: (11, 1), 80: (11, 0), 75: (10, 0)}
_CUDA13_FLOOR = 75


def check_cuda_arch(cuda_version: str, profile: Profile) -> None:
    """Refuse a build nvcc would refuse: the profile's arch must be one the lab's CUDA version knows."""
    arch = profile.cuda_arch
    have = tuple(int(x) for x in cuda_version.split(".")[:2])
    if arch is None:
        return
    first = _CUDA_FIRST.get(arch)
    if first is not None and have < first:
        raise ImageError(f"profile {profile.name} needs sm_{arch}, which CUDA {cuda_version} cannot build "
                         f"(needs CUDA ≥ {first[0]}.{first[1]}): raise engine.cuda.version")
    if have >= (13, 0) and arch < _CUDA13_FLOOR:
        raise ImageError(f"profile {profile.name} needs sm_{arch}, which CUDA {cuda_version} no longer "
                         f"supports (CUDA 13 dropped architectures below sm_{_CUDA13_FLOOR}): "
                         "use a CUDA 12 image")


def _llama_spec(loaded: LoadedLab, lock: Lock, profile: Profile, settings: BuildSettings, root: Path,
                pin: _Pinner) -> ImageSpec:
    engine, src = loaded.lab.engine, lock.llama_cpp
    want = engine.llama_cpp
    if (want.sdist, want.git) != (src.sdist, src.git) or (want.path is not None) != (src.path is not None):
        raise ImageError("lab.lock's llama.cpp source differs from the lab's: run `labctl lock`")
    bad = [f for f in engine.cmake_flags if re.search(r"\s", f)]
    if bad:
        raise ImageError(f"cmake flag {bad[0]!r} contains whitespace (one -DNAME=VALUE per entry)")
    spec = ImageSpec(name="llama-server", repository=_repo(settings, "llama-server"),
                     dockerfile=root / "llama-server" / "Dockerfile", context=Path("."), target="labelled",
                     probe=VersionProbe("server", ["--version"], "LLAMA_SERVER_VERSION", L_LLAMA_VERSION))
    if profile.is_gpu:
        if engine.cuda is None:
            raise ImageError(f"profile {profile.name} has a GPU but the lab has no engine.cuda images")
        check_cuda_arch(engine.cuda.version, profile)
        build, run = pin(engine.cuda.build_image, spec), pin(engine.cuda.runtime_image, spec)
        spec.build_args.update(VARIANT="cuda", CUDA_ARCHITECTURES=str(profile.cuda_arch))
    else:
        build = run = pin(engine.cpu_image, spec)
        spec.build_args.update(VARIANT="cpu")
    spec.build_args.update(BUILD_IMAGE=build, RUNTIME_IMAGE=run,
                           EXTRA_CMAKE_FLAGS=" ".join(engine.cmake_flags))
    if src.sdist is not None:
        if not (src.sdist_sha256 and src.subdir):
            raise ImageError("lab.lock pins the sdist without sdist_sha256/subdir: run `labctl lock`")
        sha, subdir = src.sdist_sha256, src.subdir
        spec.context = sdist_dir(sha, settings.cache) / subdir
        spec.context_id = f"sdist:{sha}:{subdir}"
        spec.inputs["llama.cpp"] = f"{src.sdist} sha256:{sha}"

        def prepare(log: Log) -> dict[str, str]:
            tree = fetch_sdist(src.sdist or "", sha, subdir, filename=src.sdist_file,
                               tree_sha256_expected=src.tree_sha256, cache=settings.cache, log=log)
            assert tree == spec.context
            commit = changelog_commit(sdist_dir(sha, settings.cache) / "CHANGELOG.md",
                                      (src.sdist or "").partition("==")[2])
            return {"LLAMA_BUILD_COMMIT": commit or "unknown"}

        spec.prepare = prepare
    elif src.git is not None:
        commit = src.commit
        if commit is None:
            raise ImageError("lab.lock has no commit for the llama.cpp git source: run `labctl lock`")
        spec.context = settings.cache / "src" / f"git-{commit}"
        spec.context_id = f"git:{commit}"
        spec.inputs["llama.cpp"] = f"{src.git}@{commit}"
        spec.build_args["LLAMA_BUILD_COMMIT"] = commit[:9]
        if src.ref and re.fullmatch(r"b\d+", src.ref):
            spec.build_args["LLAMA_BUILD_NUMBER"] = src.ref[1:]
        spec.prepare = lambda log: (fetch_source(src.git or "", commit, spec.context), {})[1]
    else:
        assert want.path is not None
        spec.context = loaded.resolve(want.path)
        now = lock_path_source(spec.context).tree_sha256
        if src.tree_sha256 is not None and now != src.tree_sha256:
            raise ImageError(f"llama.cpp source {spec.context} changed since lab.lock "
                             f"(tree {now[:12]}…, locked {src.tree_sha256[:12]}…): run `labctl lock`")
        spec.context_id = f"tree:{now}"
        spec.build_args["LLAMA_BUILD_COMMIT"] = f"{src.commit[:9]}+local" if src.commit else "local"
    return spec


def _task_spec(loaded: LoadedLab, lock: Lock, settings: BuildSettings, pin: _Pinner) -> ImageSpec:
    task_dir = loaded.task_dir
    now = tree_sha256(task_dir)
    pinned = (lock.tasks or {}).get(loaded.only) if loaded.only is not None else lock.task
    if pinned is None or now != pinned.tree_sha256:
        was = f"locked {pinned.tree_sha256[:12]}…" if pinned else "not in lab.lock"
        raise ImageError(f"task {task_dir} changed since lab.lock (tree {now[:12]}…, {was}): "
                         "run `labctl lock`")
    name = image_slug(loaded.only or task_dir.name)
    spec = ImageSpec(name=f"task-{name}", repository=_repo(settings, f"task-{name}"),
                     dockerfile=Path("."), context=task_dir / "environment")
    original = task_dir / "environment" / "Dockerfile"
    prebuilt = prebuilt_image(task_dir, loaded.lab.build.task_image == "prebuilt")
    if prebuilt:
        text = f"FROM {pin(prebuilt, spec)}\n"
        spec.context, spec.context_id = stage_context(settings.cache, "empty", {".keep": b""})
    elif original.is_file():
        bases = dockerfile_bases(original)
        text = pin_dockerfile(original.read_text(encoding="utf-8"), {b: pin(b, spec) for b in bases})
    else:
        raise ImageError(f"task {task_dir} has neither environment/Dockerfile nor a docker_image")
    out = settings.cache / "dockerfiles" / f"{hashlib.sha256(text.encode()).hexdigest()}.Dockerfile"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        out.write_text(text, encoding="utf-8")
    spec.dockerfile = out
    if loaded.only is not None:
        # A dataset task's image is its environment's: what the other tasks of its group share.
        spec.inputs["task.environment"] = environment_key(task_dir)
    else:
        spec.inputs["task.tree_sha256"] = lock.task.tree_sha256
    if not prebuilt:
        # A staged copy, so the build never writes into the task directory (its tree hash is locked)
        # and the Dockerfile can COPY the lab's CA bundle as `ca.crt` (empty when none), like
        # labctl's own images: `COPY ca.cr[t] …` keeps it optional for other Harbor builders.
        spec.context, spec.context_id = stage_context(settings.cache, f"task-{name}",
                                                      {p.name: p for p in original.parent.iterdir()})
        staged = spec.context

        def prepare(log: Log) -> dict[str, str]:
            spec.build_dir = build_context(staged, settings.ca_bundle)
            return {}

        spec.prepare = prepare
    if settings.pip_index_url:
        spec.unhashed_args["PIP_INDEX_URL"] = settings.pip_index_url
    if settings.npm_registry:
        spec.unhashed_args["NPM_CONFIG_REGISTRY"] = settings.npm_registry
    return spec


def _agent_spec(runtime: str, loaded: LoadedLab, lock: Lock, settings: BuildSettings, root: Path,
                task: ImageSpec, name: str | None = None) -> ImageSpec:
    from labctl.lock.runtime import BuildInputs, TreeError, build_inputs

    adapter = agent_adapter(runtime)
    lab = loaded.lab
    named = lab.agents().get(runtime)
    version = named.version if named else None
    tree = BuildInputs()
    for pkg in adapter.packages(version):
        own = lab.agent is None or lab.agent.runtime != runtime
        pinned = (lock.agents or {}).get(runtime) if own else lock.agent
        if pinned is None or (pinned.registry, pinned.name, pinned.version) != (pkg.registry, pkg.name,
                                                                                  pkg.version):
            raise ImageError(f"lab.lock does not pin {pkg.registry} package {pkg.name}=={pkg.version}: "
                             "run `labctl lock`")
        try:
            tree = build_inputs(pinned)
        except TreeError as e:
            raise ImageError(str(e)) from None
    install = adapter.install_script([f"{BUILD_DIR}/dist/{f}" for f in tree.install_files])
    name = name or f"agent-{runtime}"
    context, digest = stage_context(settings.cache, f"agent-{runtime}", {
        "base-setup.sh": root / "agent" / "base-setup.sh",
        "ensure-python.sh": root / "agent" / "ensure-python.sh",
        "install.sh": install.encode(),
        **tree.context,
    })
    spec = ImageSpec(name=name, repository=_repo(settings, name),
                     dockerfile=root / "agent" / "Dockerfile", context=context, context_id=digest,
                     depends_on=[task.name], build_args={"AGENT_RUNTIME": runtime},
                     unhashed_args={"TASK_IMAGE": task.tag},
                     labels={"org.labctl.agent.runtime": runtime, "org.labctl.agent.version": version or ""},
                     inputs={"task.input_hash": task.input_hash(), **tree.inputs})
    # No index overrides: the install reads only the verified files in the context (`--no-index`,
    # `npm ci --offline`), so a package index has nothing to do with an agent image any more.

    def prepare(log: Log) -> dict[str, str]:
        spec.build_dir = build_context(context, settings.ca_bundle, tree.fetch(settings.cache, log))
        return {}

    spec.prepare = prepare
    return spec


def _labctl_spec(settings: BuildSettings, root: Path, pin: _Pinner) -> ImageSpec:
    dockerfile = root / "labctl" / "Dockerfile"
    package = Path(__file__).resolve().parent.parent  # the labctl package, Dockerfiles included
    requirements = "".join(f"{p}\n" for p in dependency_pins("labctl"))
    context, digest = stage_context(settings.cache, "labctl", {
        "requirements.txt": requirements.encode(), "src/labctl": package})
    spec = ImageSpec(name="labctl", repository=_repo(settings, "labctl"), dockerfile=dockerfile,
                     context=context, context_id=digest,
                     labels={"org.opencontainers.image.version": __version__})
    bases = dockerfile_bases(dockerfile)
    spec.build_args["BASE_IMAGE"] = pin(bases[0], spec)
    if settings.pip_index_url:
        spec.unhashed_args["PIP_INDEX_URL"] = settings.pip_index_url
    def prepare(log: Log) -> dict[str, str]:
        spec.build_dir = build_context(context, settings.ca_bundle)
        return {}

    spec.prepare = prepare
    return spec


def _gateway_spec(settings: BuildSettings, root: Path, pin: _Pinner) -> ImageSpec:
    """The egress gateway (`labctl.run.egress`): squid on the locked Debian base; nothing else in
    its context, so only its Dockerfile and the base's digest name it."""
    dockerfile = root / "egress-gateway" / "Dockerfile"
    context, digest = stage_context(settings.cache, "egress-gateway", {"Dockerfile": dockerfile})
    spec = ImageSpec(name=GATEWAY_IMAGE, repository=_repo(settings, GATEWAY_IMAGE), dockerfile=dockerfile,
                     context=context, context_id=digest)
    spec.build_args["BASE_IMAGE"] = pin(dockerfile_bases(dockerfile)[0], spec)
    return spec


def image_tags(loaded: LoadedLab, lock: Lock) -> dict[str, str]:
    """Image name → tag for the lab on its profile: what a round seals and its runs use."""
    return {s.name: s.tag for s in lab_images(loaded, lock, loaded.profile, settings_for(loaded))}
