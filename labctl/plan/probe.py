"""The tool-call preflight: serve a local model with its planned flags and ask it for one tool call.

Why: an agent runtime acts through tool calls. A chat template that drops `tools` (SmolLM2's), or a
model that answers prose where a call was asked for, makes every run of that contestant a Total
failure, found out hours later. The preflight finds out in seconds, before the round's first run:

1. `POST /apply-template` with one declared tool (`record_word`): does the rendered prompt name the
   tool? (`carries_tools`; the user message never names it, so only the template can have put it there);
2. `POST /v1/chat/completions` with that tool, `tool_choice` `auto` then `required`, temperature 0:
   did a structured `tool_calls` entry for the tool come back?
3. `/props`: the slot context llama-server really serves (`served_context`), against the plan.

It warns and never refuses: a round may mean to show exactly that model failing. Results are cached
per model sha256, llama.cpp build (the image tag or the binary's sha256) and flags
(`~/.cache/labctl/preflight/`), so a round does not ask again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from labctl.engine.container import Engine
from labctl.engine.spec import ContainerSpec, Mount
from labctl.plan import llamaserver as ls
from labctl.plan.planner import ContestantPlan

PROBE_VERSION = 1
"""Part of the cache key: bump when the questions change."""
TOOL_NAME = "record_word"
TOOL = {"type": "function", "function": {
    "name": TOOL_NAME, "description": "Record one word in the log.",
    "parameters": {"type": "object", "properties": {"word": {"type": "string", "description": "The word."}},
                   "required": ["word"]}}}
MESSAGES = [{"role": "user", "content": "Put the word ready in the log with the function you have. "
                                        "Call it; do not answer in text."}]
MAX_TOKENS = 96
"""Enough for one call's JSON from a real model; a model that rambles is cut here (finish: length)."""
START_TIMEOUT_S = 600
PORT = 8080
Request = Callable[[str, str, "dict[str, Any] | None"], "tuple[int, dict[str, Any]]"]


class CallTry(BaseModel):
    """One chat completion asked for a call of the declared tool."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    tool_choice: Literal["auto", "required"]
    status: int
    """HTTP status of llama-server's answer."""
    tool_call: bool
    """A structured `tool_calls` entry naming the declared tool came back."""
    finish_reason: str | None = None
    content: str | None = None
    """The answer's text (first 200 characters), when it answered prose."""
    error: str | None = None


class Preflight(BaseModel):
    """What the preflight found for one local contestant."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    contestant: str
    model_sha256: str | None = None
    llama_cpp: str
    """The llama-server it ran: the image tag, or `binary:<sha256>`."""
    args: list[str]
    """The planned llama-server flags it was served with."""
    template_tool_section: bool | None = None
    """From the GGUF header: the chat template reads `tools` (None: no template found)."""
    carries_tools: bool | None = None
    """`/apply-template` rendered the declared tool into the prompt (None: not asked)."""
    calls: list[CallTry] = []
    planned_context: int | None = None
    """The slot context the plan says."""
    served_context: int | None = None
    """The slot context `/props` reports."""
    error: str | None = None
    """Why it could not be asked (the server did not start, …)."""

    @property
    def structured_call(self) -> bool:
        return any(c.tool_call for c in self.calls)

    def verdict(self) -> str:
        """One line for `round`, `plan --probe` and the report: `tool calling: …`."""
        if self.error:
            return f"tool calling: not probed ({self.error})"
        if self.carries_tools is False:
            return "tool calling: not supported by the chat template (tools never reach the model)"
        by = {c.tool_choice: c.tool_call for c in self.calls}
        if by.get("auto"):
            return "tool calling: works (a structured call with tool_choice auto)"
        if by.get("required"):
            return "tool calling: only when forced (tool_choice required); with auto it answered text"
        if self.carries_tools is None:
            return "tool calling: no structured call came back (the template could not be rendered)"
        return "tool calling: the template carries tools, but no structured call came back"

    def context_problem(self) -> str | None:
        if self.served_context is not None and self.planned_context not in (None, self.served_context):
            return f"served context {self.served_context:,} ≠ planned {self.planned_context:,}"
        return None


def ask(request: Request, plan: ContestantPlan, base: Preflight) -> Preflight:
    """The three questions, through `request(method, path, body) -> (status, json)`."""
    got = base.model_copy(deep=True)
    status, body = request("POST", "/apply-template", {"messages": MESSAGES, "tools": [TOOL]})
    prompt = body.get("prompt") if status == 200 else None
    got.carries_tools = TOOL_NAME in prompt if isinstance(prompt, str) else None
    for choice in ("auto", "required"):
        req = {"model": "probe", "messages": MESSAGES, "tools": [TOOL], "tool_choice": choice,
               "temperature": 0, "max_tokens": MAX_TOKENS, "stream": False}
        status, body = request("POST", "/v1/chat/completions", req)
        got.calls.append(_call(choice, status, body))
    status, props = request("GET", "/props", None)
    settings = props.get("default_generation_settings") if status == 200 else None
    n = settings.get("n_ctx") if isinstance(settings, dict) else None
    got.served_context = n if isinstance(n, int) else None
    got.planned_context = plan.slot_context
    return got


def _call(choice: Literal["auto", "required"], status: int, body: dict[str, Any]) -> CallTry:
    if status != 200:
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return CallTry(tool_choice=choice, status=status, tool_call=False, error=str(msg)[:300])
    choice0 = (body.get("choices") or [{}])[0]
    msg = choice0.get("message") or {}
    calls = msg.get("tool_calls") or []
    named = any(isinstance(c, dict) and (c.get("function") or {}).get("name") == TOOL_NAME for c in calls)
    text = msg.get("content")
    end = choice0.get("finish_reason")
    return CallTry(tool_choice=choice, status=status, tool_call=named, finish_reason=end,
                   content=text[:200] if isinstance(text, str) and text else None)


# --- where it is served ------------------------------------------------------------------------------

def cache_key(model_sha256: str | None, llama_cpp: str, args: list[str]) -> str:
    raw = json.dumps({"v": PROBE_VERSION, "model": model_sha256, "llama": llama_cpp, "args": args},
                     sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labctl" / "preflight"


def cached(key: str) -> Preflight | None:
    path = cache_dir() / f"{key}.json"
    with contextlib.suppress(OSError, ValueError):
        return Preflight.model_validate_json(path.read_text())
    return None


def store(key: str, result: Preflight) -> None:
    if result.error:  # a server that did not start is asked again next time
        return
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(result.model_dump_json(indent=2))
    os.replace(tmp, d / f"{key}.json")


def binary_id(binary: Path) -> str:
    h = hashlib.sha256()
    with open(binary, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"binary:{h.hexdigest()}"


@contextlib.contextmanager
def host_server(binary: Path, model: Path, plan: ContestantPlan, log: Path) -> Iterator[Request]:
    """llama-server on loopback, run from the host binary (as `plan --measure` runs it)."""
    argv = ls.server_argv(binary, model, plan, alias="probe")
    with ls.serve(argv, log, timeout=START_TIMEOUT_S) as url:
        yield lambda method, path, body: ls.http_json(method, url + path, body, timeout=300)


@contextlib.contextmanager
def image_server(docker: Engine, image: str, model: Path, plan: ContestantPlan, gpu_args: list[str]
                 ) -> Iterator[Request]:
    """llama-server in the round's own image, with no network at all: every request is a `curl` run
    inside the container (`--network none`), as the run's health check asks."""
    name = f"lc-probe-{secrets.token_hex(4)}"
    argv = ls.server_argv("llama-server", "/models/model.gguf", plan, "127.0.0.1", PORT, alias="probe")[1:]
    docker(*ContainerSpec(image, (str(START_TIMEOUT_S + 600), "llama-server", *argv), name=name,
                          entrypoint="timeout", network="none", labels={"labctl.role": "probe"},
                          devices=tuple(gpu_args),
                          mounts=(Mount(model.resolve(), "/models/model.gguf", read_only=True),),
                          detach=True).argv("run"))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not docker.ok("exec", name, "curl", "-fsS", "-m", "2", f"http://127.0.0.1:{PORT}/health"):
            if not docker.running(name) or time.monotonic() > deadline:
                logs = docker("logs", name, check=False)
                kind, line = ls.classify_failure(logs.stdout + logs.stderr)
                raise ls.ServerStartError(kind, line)
            time.sleep(0.3)

        def request(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
            data = [] if body is None else ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
            done = docker("exec", name, "curl", "-sS", "-m", "300", "-X", method, *data, "-w",
                          "\n%{http_code}", f"http://127.0.0.1:{PORT}{path}", check=False, timeout=330)
            text, _, code = done.stdout.rpartition("\n")
            try:
                return int(code), json.loads(text or "{}")
            except ValueError:
                return int(code) if code.isdigit() else 0, {"error": text[:300]}
        yield request
    finally:
        docker("rm", "-f", name, check=False)


def probe(plan: ContestantPlan, model: Path, *, model_sha256: str | None, llama_cpp: str,
          serve: Callable[[], contextlib.AbstractContextManager[Request]],
          template_tool_section: bool | None = None, use_cache: bool = True) -> tuple[Preflight, bool]:
    """(result, from_cache) for one planned contestant served by `serve()`."""
    base = Preflight(contestant=plan.id, model_sha256=model_sha256, llama_cpp=llama_cpp, args=plan.llama_args,
                     template_tool_section=template_tool_section, planned_context=plan.slot_context)
    key = cache_key(model_sha256, llama_cpp, plan.llama_args)
    if use_cache and model_sha256 and (hit := cached(key)) is not None:
        return hit.model_copy(update={"contestant": plan.id}), True
    try:
        with serve() as request:
            got = ask(request, plan, base)
    except ls.ServerStartError as e:
        got = base.model_copy(update={"error": f"llama-server did not start ({e.kind}): {e.message}"})
    if model_sha256:
        store(key, got)
    return got, False
