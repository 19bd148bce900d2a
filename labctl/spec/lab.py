"""The lab spec: pydantic models for `lab.yaml`.

Every field carries a docstring; they become descriptions in the JSON Schema (`labctl schema`)
that editors show on hover. Unknown keys are errors everywhere (`extra="forbid"`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from labctl.gguf.meta import GGUFMeta
from labctl.gguf.tinyparams import TinyModelParams
from labctl.spec.base import ID, Spec
from labctl.spec.interventions import Interventions
from labctl.spec.network import LAB_ONLY, Network
from labctl.spec.options import Budgets, BuildOptions, Round, VerifierOptions
from labctl.spec.pathology import PathologyThresholds
from labctl.spec.price import Price
from labctl.spec.profiles import Profile
from labctl.spec.published import (
    BuildResult as BuildResult,  # re-exported: labctl.spec.lab is where records look
)
from labctl.spec.published import Outcome as Outcome
from labctl.spec.published import Published, PublishedSetup, TokenGap
from labctl.spec.taskref import TaskRef
from labctl.spec.units import COUNT_PATTERN, Count, Size, parse_count

CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
"""KV cache element types llama-server accepts for `-ctk` / `-ctv`."""


class LabInfo(Spec):
    """What this lab is and where its published counterpart lives."""

    name: ID
    """Short machine name, used in round ids and image labels."""
    title: str = ""
    """Human title, e.g. `Model Showdown Round 7`."""
    source: str | None = None
    """URL of the published round this lab reproduces."""
    published: str | None = None
    """Publication date of that round (YYYY-MM-DD)."""
    notes: str = ""
    """Anything a reader of the results should know (deviations from the published setup)."""
    setup: PublishedSetup | None = None
    """The published round's setup (machine, server, agent platform, method), as data."""
    token_gap: TokenGap | None = None
    """The published headline ratio of tokens, local models that tried over the cloud model."""


class LlamaCppSource(Spec):
    """Where llama.cpp's source comes from: a git URL + ref, a local path, or a PyPI sdist that
    vendors it (llama-cpp-python ships the full tree; reachable where GitHub is not)."""

    git: str | None = None
    """Git URL of llama.cpp (or a fork)."""
    ref: str | None = None
    """Tag, branch or commit of `git`, e.g. `b9660`; `labctl lock` pins it to a commit."""
    path: Path | None = None
    """A local source tree (relative to the lab file) instead of git; locked by tree hash."""
    sdist: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+$")
    """A PyPI source distribution that vendors llama.cpp, e.g. `llama-cpp-python==0.3.36`;
    locked by the sdist's sha256 and the tree hash of `subdir`."""
    subdir: str = "vendor/llama.cpp"
    """Where the llama.cpp tree sits inside the sdist."""

    @model_validator(mode="after")
    def _one_source(self) -> LlamaCppSource:
        given = [n for n in ("git", "path", "sdist") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one llama.cpp source: git (+ ref), path, or sdist")
        if self.git is not None and not self.ref:
            raise ValueError("git needs a ref (tag, branch or commit)")
        if self.git is None and self.ref is not None:
            raise ValueError("ref only applies to git; path and sdist are locked by content hash")
        return self


class CudaImages(Spec):
    """The CUDA images llama-server is built on (devel) and runs on (runtime)."""

    version: str = Field(pattern=r"^\d+\.\d+(\.\d+)?$")
    """CUDA toolkit version, e.g. `13.1`."""
    build_image: str
    """Image with nvcc, e.g. `nvidia/cuda:13.1.0-devel-ubuntu24.04`; locked by digest."""
    runtime_image: str
    """Slim image the server runs on, e.g. `nvidia/cuda:13.1.0-runtime-ubuntu24.04`."""


class Engine(Spec):
    """The inference engine: llama.cpp's llama-server, built from pinned source."""

    llama_cpp: LlamaCppSource
    """The pinned llama.cpp source."""
    cmake_flags: list[str] = []
    """Extra cmake flags, e.g. `-DGGML_CUDA_FA_ALL_QUANTS=ON`."""
    cuda: CudaImages | None = None
    """CUDA build/runtime images; needed for GPU profiles."""
    cpu_image: str = "debian:bookworm-slim"
    """Base image of the CPU build (CPU profile, CI)."""

    @field_validator("cmake_flags")
    @classmethod
    def _flags_are_defines(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not f.startswith("-D")]
        if bad:
            raise ValueError(f"cmake flags must look like -DNAME=VALUE, got {bad[0]!r}")
        return v


def _flash(v: Any) -> Any:
    # `flash_attention: true` is natural to write; llama-server wants on/off/auto.
    return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


def _context(v: Any) -> int | str:
    if v == "max":
        return "max"
    try:
        n = parse_count(v)
    except ValueError:
        raise ValueError(f"expected `max` or a number of tokens like 65536 or 64k, got {v!r}") from None
    if not 256 <= n <= 16_777_216:
        raise ValueError(f"context {n} is out of range (256 … 16M tokens)")
    return n


ContextSize = Annotated[
    int | Literal["max"],
    PlainValidator(_context),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 256}, {"const": "max"},
                              {"type": "string", "pattern": COUNT_PATTERN}]}),
]
"""Tokens of context, `64k`, or `max` (the largest that fits the profile)."""


class Serve(Spec):
    """llama-server settings. At lab level they are the defaults; a contestant may override any."""

    flash_attention: Literal["on", "off", "auto"] | None = None
    """`-fa`: on, off or auto (default auto)."""
    cache_type_k: CacheType | None = None
    """`-ctk`: K cache type, e.g. q8_0 (default f16)."""
    cache_type_v: CacheType | None = None
    """`-ctv`: V cache type; a quantized V cache needs flash attention on."""
    context: ContextSize | None = None
    """`-c`: context in tokens, or `max` for the largest that fits the profile (default max)."""
    max_output: Count | None = None
    """`-n`: most tokens per response (default: context / 4)."""
    parallel: int | None = Field(default=None, ge=1, le=64)
    """`-np`: server slots (default 1: one agent at a time)."""
    gpu_layers: int | Literal["auto", "all"] | None = None
    """`-ngl`: layers on the GPU; `auto` lets the planner decide (default)."""
    allow_rope_scaling: bool | None = None
    """Allow a context beyond the model's training context (default false)."""
    extra_args: list[str] | None = None
    """More llama-server arguments, passed as they are (e.g. `--temp 0.7`)."""

    @field_validator("flash_attention", mode="before")
    @classmethod
    def _fa(cls, v: Any) -> Any:
        return _flash(v)

    def over(self, base: Serve) -> Serve:
        """These settings with `base` filling what is unset."""
        mine = self.model_dump(exclude_none=True)
        return base.model_copy(update=mine)


SERVE_DEFAULTS = Serve(
    flash_attention="auto", cache_type_k="f16", cache_type_v="f16", context="max", parallel=1,
    gpu_layers="auto", allow_rope_scaling=False, extra_args=[],
)
"""What an unset serve field means (llama.cpp's own defaults, except context = max)."""

class ContestantBase(Spec):
    id: ID
    """Stable id (never shown before unseal), e.g. `qwen3-coder-30b-a3b`."""
    name: str = ""
    """Display name, e.g. `Qwen3-Coder 30B-A3B`."""
    published: Published | None = None
    """The published figures for this contestant, when the lab reproduces a round."""


class DeclaredMeta(GGUFMeta):
    """GGUF metadata declared in the lab (from a model card or a published load log)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    source: Literal["declared"] = "declared"
    """Always `declared`."""
    file_size: Size | None = None
    """Size of the GGUF (all shards), e.g. `17.7GB`; stands in for the weights until locked."""


class ModelSource(Spec):
    """A GGUF: on Hugging Face (repo + file + revision), a local file, or generated."""

    repo: str | None = Field(default=None, pattern=r"^[\w.-]+/[\w.-]+$")
    """Hugging Face repo id, e.g. `unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF`."""
    file: str | None = None
    """File in the repo; for a sharded GGUF the first shard (`…-00001-of-00003.gguf`)."""
    revision: str = "main"
    """Branch, tag or commit; `labctl lock` pins it to a commit sha."""
    path: Path | None = None
    """A local GGUF file (relative to the lab file) instead of Hugging Face."""
    generate: TinyModelParams | None = None
    """Generate a tiny deterministic model with these parameters (same parameters, same bytes)."""
    declared: DeclaredMeta | None = None
    """Architecture numbers from the model card, so `labctl plan` works before the lock reaches the
    hub; `labctl lock` checks them against the real GGUF header and fails on any mismatch."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        given = [n for n, v in (("repo", self.repo), ("path", self.path), ("generate", self.generate))
                 if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one source: repo + file (Hugging Face), path, or generate")
        if self.repo is not None and not self.file:
            raise ValueError("repo needs file: the GGUF file inside the repo")
        if self.repo is None and self.file is not None:
            raise ValueError("file only applies with repo")
        if self.file is not None and not self.file.endswith(".gguf"):
            raise ValueError(f"file must be a .gguf file, got {self.file!r}")
        return self


class LocalContestant(ContestantBase):
    """A GGUF served by llama-server on the profile's hardware."""

    kind: Literal["local"]
    model: ModelSource
    """Where the GGUF comes from."""
    agent: AgentRuntime | None = None
    """This contestant's own agent runtime (else the lab's `agent:`): one model under two harnesses is
    two contestants, sealed and blind like any other pair."""
    serve: Serve = Serve()
    """Overrides of the lab's serve settings for this model."""


class CloudContestant(ContestantBase):
    """A provider's API, reached through the metering proxy (the key never enters the agent)."""

    kind: Literal["cloud"]
    provider: Literal["anthropic", "openai"]
    """API dialect and default endpoint."""
    agent: AgentRuntime | None = None
    """This contestant's own agent runtime (else the lab's `agent:`)."""
    model: str
    """Provider model id, e.g. `claude-sonnet-4-20250514`."""
    api_key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    """Name of the environment variable on the host that holds the API key."""
    base_url: str | None = None
    """Override the provider's endpoint (a gateway, or a test server)."""
    context: int | None = None
    """The model's context window, for the report."""
    max_output: Count | None = None
    """Most tokens per response."""
    price: Price | None = None
    """What the provider charges, declared with its date and source; the meter prices every exchange
    from it (`cost_usd`), `budgets.cost` is spent in it, and `labctl lock` pins it. Unset: the
    contestant's cost is reported as not priced, never as 0."""


class OracleContestant(ContestantBase):
    """Runs the task's reference solution; must reach Complete or the task is broken."""

    kind: Literal["oracle"]


class NopContestant(ContestantBase):
    """Does nothing; must not pass, or the checks are too weak."""

    kind: Literal["nop"]


_KINDS = (LocalContestant, CloudContestant, OracleContestant, NopContestant)
for _cls in _KINDS:
    # Lets an error say "'provider' belongs to kind 'cloud'" instead of just "unknown key"; read back
    # with getattr by spec/located.py, so set the same dynamic way.
    setattr(_cls, "__kind_siblings__",  # noqa: B010
            {get_args(c.model_fields["kind"].annotation)[0]: set(c.model_fields) for c in _KINDS})
    setattr(_cls, "__lab_only__", LAB_ONLY)  # noqa: B010

Contestant = Annotated[
    LocalContestant | CloudContestant | OracleContestant | NopContestant, Discriminator("kind")
]


class AgentRuntime(Spec):
    """The agent program that drives local and cloud contestants (oracle and nop need none)."""

    runtime: Literal["mini-swe-agent", "aider", "claude-code", "codex", "opencode", "qwen-code"]
    """Agent runtime (one adapter file each under labctl/agents/); its whole install set is locked."""
    version: str = Field(pattern=r"^\d+(\.\d+)*([a-z0-9.+-]*)$")
    """Exact version of the runtime's package; locked to its distribution sha256."""
    options: dict[str, Any] = {}
    """Runtime-specific options (e.g. a config file or template settings)."""


class Lab(Spec):
    """A lab: one round of contestants on one task or a dataset of tasks, fully pinned by `lab.lock`."""

    version: Literal[1] = 1
    """Version of this file format."""
    lab: LabInfo
    engine: Engine
    profile: Annotated[
        Annotated[str, Tag("name")] | Annotated[Profile, Tag("inline")],
        Discriminator(lambda v: "name" if isinstance(v, str) else "inline"),
    ] = "cpu"
    """Hardware profile: a name (`labctl profiles`) or an inline profile; `--profile` overrides."""
    serve: Serve = Serve()
    """Default llama-server settings for every local contestant."""
    contestants: list[Contestant] = Field(min_length=1)
    agent: AgentRuntime | None = None
    """Agent runtime for local and cloud contestants."""
    task: TaskRef
    round: Round = Round()
    budgets: Budgets = Budgets()
    verifier: VerifierOptions = VerifierOptions()
    interventions: Interventions = Interventions()
    pathology: PathologyThresholds = PathologyThresholds()
    """Thresholds of the pathology flags in metrics.json and the report."""
    build: BuildOptions = BuildOptions()
    """Image build options for offline and corporate environments."""
    network: Network = Network()
    """What the task container (agent and verifier) may reach besides the meter: `none`, `allowlist`
    (default: package registries + `allow`, through a logging gateway) or `open`."""

    def agent_for(self, c: Contestant) -> AgentRuntime | None:
        """The runtime that drives `c`: its own `agent:`, else the lab's (None for oracle and nop)."""
        if c.kind not in ("local", "cloud"):
            return None
        return getattr(c, "agent", None) or self.agent

    def agents(self) -> dict[str, AgentRuntime]:
        """Every runtime the lab uses, by name (one version each), the lab's own first."""
        found = [self.agent] if self.agent else []
        found += [a for c in self.contestants if (a := self.agent_for(c)) is not None]
        out: dict[str, AgentRuntime] = {}
        for a in found:
            out.setdefault(a.runtime, a)
        return out

    def serve_for(self, c: LocalContestant) -> Serve:
        """Effective serve settings of a local contestant: its own, then the lab's, then defaults."""
        return c.serve.over(self.serve.over(SERVE_DEFAULTS))
