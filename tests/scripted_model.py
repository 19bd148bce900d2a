"""A deterministic scripted model: a real loopback HTTP server that drives any agent runtime
through a fixed plan of shell commands, in whichever wire protocol and tool schema it speaks.

Why: proving a runtime end to end (build, seal, meter, run, grade → Complete) needs a model that
does the task every time; the tiny random model never does, and a cloud key is never in CI. Unlike
tests/fake_upstream.py (replies queued by the test, for the meter's own tests), this stand-in reads
the conversation it is sent and answers by it, so it needs no knowledge of the runtime:

* it finds the shell tool among the tools the client declares, by name (`SHELL_TOOLS`: Bash,
  bash, shell, run_shell_command, execute, exec_command, …), and fills that tool's own parameter
  schema — the command as a string, or as an argv array (`["bash", "-lc", cmd]`) where the schema
  says array (codex's `shell`), required flags given their defaults;
* the step is the number of shell calls already in the conversation (assistant tool_calls /
  tool_use blocks / Responses function_call items), so the answer depends on the request alone:
  a retried request gets the same answer, and side requests a runtime makes without the shell
  tool (titles, summaries, quota probes) get the final text and change nothing;
* step n < len(commands) answers one call of commands[n]; after that, `final` text, no calls;
* a client that declares no tools at all (aider, text-protocol agents) gets each command as a
  fenced block in the text instead (```bash … ```), the step being the earlier assistant turns
  that hold one of the plan's fenced commands (aider's few-shot example turns are not steps).

Wire protocols, each as one JSON body or as SSE with the real event names and shapes:
OpenAI chat completions (`/v1/chat/completions`, tool_calls deltas, `stream_options.include_usage`),
Anthropic Messages (`/v1/messages`: tool_use blocks, input_json_delta, message_delta usage; plus
`/v1/messages/count_tokens`) and OpenAI Responses (`/v1/responses`: function_call items,
response.function_call_arguments.delta, response.completed with usage). Usage is derived from the
request and the answer's length, so the metered tokens are real numbers that differ per turn.
How each answer is written on each wire: tests/scripted_wires.py.

    with serve_scripted(Plan(commands=["ls"])) as model: model.url ...          # in tests
    python tests/scripted_model.py --host 0.0.0.0 --port 8080 --plan plan.json   # in a container
        [--record received.jsonl] [--key-env VAR]   (VAR: the key the meter must inject)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

try:  # imported by the tests, as part of the tests package
    from tests.fake_upstream import serve_in_thread, serve_until_killed
    from tests.scripted_wires import MODEL, WIRES, Answer, pieces
except ModuleNotFoundError:  # run as a script in a container, beside its two sibling files
    from fake_upstream import serve_in_thread, serve_until_killed  # type: ignore[no-redef]
    from scripted_wires import MODEL, WIRES, Answer, pieces  # type: ignore[no-redef]

__all__ = ["MODEL", "Plan", "ScriptedModel", "decide", "serve_scripted", "shell_arguments", "shell_tool",
           "tool_schemas"]

SHELL_TOOLS = ("bash", "shell", "run_shell_command", "execute", "exec_command", "shell_command",
               "run_terminal_cmd", "terminal", "run_command", "command")
"""Shell tool names of the runtimes, matched case-insensitively, in order of preference."""
COMMAND_KEYS = ("command", "cmd", "commands", "script", "code")
SMOKE_WORK = ("printf 'Hello, lab!\\n' > hello.txt && git add hello.txt && git commit -qm 'Add greeting'"
              " && git push -q origin HEAD")
SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
"""mini-swe-agent ends its run on this output line; to other runtimes it is a harmless echo."""


@dataclass
class Plan:
    """What the scripted model does: one shell command per turn, then the final text."""

    commands: list[str] = field(default_factory=lambda: [SMOKE_WORK, SUBMIT])
    """Default: the smoke task (tasks/smoke-hello) done and, for mini-swe-agent, submitted."""
    final: str = "Done: hello.txt is committed and pushed."
    fence: str = "bash"
    """Info string of the fenced block that carries a command to a client without tools."""

    @classmethod
    def load(cls, path: Path) -> Plan:
        data = json.loads(path.read_text())
        default = cls()
        return cls(commands=list(data.get("commands", default.commands)),
                   final=data.get("final", default.final), fence=data.get("fence", default.fence))


# ------------------------------------------------------------------ reading the request


def tool_schemas(dialect: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, JSON schema of the arguments) of every function tool the client declares."""
    out = []
    for t in body.get("tools") or []:
        if not isinstance(t, dict):
            continue
        if dialect == "openai":
            fn = t.get("function") or {}
            name, schema = fn.get("name"), fn.get("parameters")
        elif dialect == "anthropic":
            name, schema = t.get("name"), t.get("input_schema")
        else:
            name, schema = t.get("name"), t.get("parameters")
        if isinstance(name, str):
            out.append((name, schema if isinstance(schema, dict) else {}))
    return out


def shell_tool(tools: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]] | None:
    """The declared tool that runs shell commands, by name (first match in SHELL_TOOLS order)."""
    by_name = {name.lower(): (name, schema) for name, schema in tools}
    for want in SHELL_TOOLS:
        if want in by_name:
            return by_name[want]
    return None


def _default(prop: dict[str, Any], name: str) -> Any:
    if "default" in prop:
        return prop["default"]
    kind = prop.get("type")
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return 120000 if "ms" in name.lower() else 120
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "scripted step"


def shell_arguments(schema: dict[str, Any], command: str) -> dict[str, Any]:
    """Arguments for the shell tool: the command under its schema's key, as a string or (schema
    type array) an argv running it through bash; other required parameters at their defaults."""
    props: dict[str, Any] = schema.get("properties") or {}
    key = next((k for k in COMMAND_KEYS if k in props), "command")
    prop = props.get(key) or {}
    args: dict[str, Any] = {key: ["bash", "-lc", command] if prop.get("type") == "array" else command}
    for name in schema.get("required") or []:
        if name not in args:
            args[name] = _default(props.get(name) or {}, name)
    return args


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list (any wire)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(p.get("text") or "" for p in parts if isinstance(p, dict))


def steps_taken(dialect: str, body: dict[str, Any], tool: str | None, fenced: tuple[str, ...] = ()) -> int:
    """Shell calls already in the conversation: the turn this is. `tool` None (a client without
    tools): the assistant turns holding one of the `fenced` command blocks this model writes."""
    def own(msg: dict[str, Any]) -> bool:
        text = _text(msg.get("content"))
        return any(block in text for block in fenced)

    n = 0
    if dialect == "responses":
        items = body.get("input")
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if tool is None:
                n += item.get("role") == "assistant" and own(item)
            elif item.get("type") == "function_call" and item.get("name") == tool:
                n += 1
        return n
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict) or msg.get("role") != "assistant":
            continue
        if tool is None:
            n += own(msg)
        elif dialect == "openai":
            n += sum(1 for c in msg.get("tool_calls") or []
                     if (c.get("function") or {}).get("name") == tool)
        elif isinstance(msg.get("content"), list):
            n += sum(1 for b in msg["content"]
                     if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == tool)
    return n


def fenced_block(plan: Plan, command: str) -> str:
    return f"```{plan.fence}\n{command}\n```"


def decide(plan: Plan, dialect: str, body: dict[str, Any]) -> Answer:
    declared = tool_schemas(dialect, body)
    tool = shell_tool(declared)
    fenced = tuple(fenced_block(plan, c) for c in plan.commands)
    step = steps_taken(dialect, body, tool[0] if tool else None, fenced)
    prompt = 10 + len(json.dumps(body.get("input" if dialect == "responses" else "messages") or [])) // 4
    if not declared and step < len(plan.commands):  # no tools: the command as a fenced block
        text = f"Step {step + 1}:\n\n{fenced[step]}"
        return Answer(text, None, prompt, len(pieces(text)))
    if tool is not None and step < len(plan.commands):
        command = plan.commands[step]
        args = shell_arguments(tool[1], command)
        text = f"Step {step + 1}: running `{command[:60]}`."
        completion = len(pieces(text)) + len(pieces(json.dumps(args)))
        return Answer(text, (tool[0], args), prompt, completion)
    return Answer(plan.final, None, prompt, len(pieces(plan.final)))


# ------------------------------------------------------------------ server


class ScriptedModel:
    def __init__(self, plan: Plan | None = None, require_key: str | None = None,
                 record: Path | None = None) -> None:
        self.plan = plan or Plan()
        self.require_key = require_key
        self.record = record
        self.received: list[dict[str, Any]] = []
        """Every model call: {path, headers, body}; also appended to `record` (JSONL) when given."""
        self.end_after: int | None = None
        """A fault: end each stream after this many events, without its terminal event."""
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self._handler("openai"))
            app.router.add_post(f"{prefix}/messages", self._handler("anthropic"))
            app.router.add_post(f"{prefix}/responses", self._handler("responses"))
            app.router.add_post(f"{prefix}/messages/count_tokens", self.count_tokens)
            app.router.add_get(f"{prefix}/models", self.models)
        app.router.add_get("/health", self.health)
        return app

    def _authorized(self, request: web.Request) -> bool:
        if self.require_key is None:
            return True
        return (request.headers.get("x-api-key") == self.require_key
                or request.headers.get("Authorization") == f"Bearer {self.require_key}")

    def _handler(self, dialect: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            seen = {"path": request.path, "headers": dict(request.headers), "body": body}
            self.received.append(seen)
            if self.record is not None:
                with self.record.open("a") as f:
                    f.write(json.dumps(seen) + "\n")
            if not self._authorized(request):
                err = ({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}
                       if dialect == "anthropic" else
                       {"error": {"message": "bad key", "type": "invalid_request_error",
                                  "code": "invalid_api_key"}})
                return web.json_response(err, status=401)
            whole, events = WIRES[dialect](decide(self.plan, dialect, body), body)
            if whole is not None:
                return web.json_response(whole)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
            await resp.prepare(request)
            for ev in events[:self.end_after]:
                await resp.write(ev)
            await resp.write_eof()
            return resp
        return handle

    async def count_tokens(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append({"path": request.path, "headers": dict(request.headers), "body": body})
        return web.json_response({"input_tokens": 10 + len(json.dumps(body.get("messages") or [])) // 4})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list",
                                  "data": [{"id": MODEL, "object": "model", "owned_by": "labctl"}]})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


async def start_scripted(model: ScriptedModel, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    runner = web.AppRunner(model.app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    model.url = f"http://{host}:{runner.addresses[0][1]}"
    return runner


@contextlib.contextmanager
def serve_scripted(plan: Plan | None = None, **kwargs: Any) -> Iterator[ScriptedModel]:
    """A ScriptedModel on its own loop in a background thread; `.url` is its base URL."""
    model = ScriptedModel(plan, **kwargs)
    with serve_in_thread(lambda: start_scripted(model), "scripted-model"):
        yield model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--plan", type=Path, help="JSON {commands: [...], final: '...'}; default: the smoke task")
    ap.add_argument("--record", type=Path, help="append every model call here (JSONL)")
    ap.add_argument("--key-env", help="environment variable holding the key every call must carry")
    args = ap.parse_args()
    key = os.environ[args.key_env] if args.key_env else None
    model = ScriptedModel(Plan.load(args.plan) if args.plan else None, require_key=key, record=args.record)
    serve_until_killed(lambda: start_scripted(model, args.host, args.port), lambda: model.url)


if __name__ == "__main__":
    main()
