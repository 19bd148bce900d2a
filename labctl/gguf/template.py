"""A GGUF's chat template (`tokenizer.chat_template`) and whether it has a section for tools.

Why it matters: llama-server (`--jinja`) renders the request's `tools` only through the template. A
template that never reads `tools` (SmolLM2's, many base and older chat models') drops them: the model
is never told a tool exists, and an agent runtime that acts only through tool calls gets prose back
for the whole run. `labctl lock` notes it from the header; the preflight (`labctl.plan.probe`) asks the
served model itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from labctl.gguf.read import Header, read_header_local

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
_TOOLS = re.compile(r"\btools\b")
"""The template reads the `tools` variable (`{% if tools %}`, `tools is defined`, `for tool in tools`)."""


def chat_template(header: Header) -> str | None:
    """The default chat template the header carries, None when it has none."""
    value = header.kv.get(CHAT_TEMPLATE_KEY)
    return value if isinstance(value, str) and value.strip() else None


def has_tool_section(template: str | None) -> bool | None:
    """Whether the template renders `tools` at all (None: the GGUF has no chat template)."""
    if template is None:
        return None
    # Jinja comments and string literals may say "tools" without rendering them.
    code = re.sub(r"\{#.*?#\}", "", template, flags=re.S)
    code = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "''", code)
    return bool(_TOOLS.search(code))


def local_tool_section(path: Path) -> bool | None:
    """`has_tool_section` of a local GGUF's own template."""
    return has_tool_section(chat_template(read_header_local(path)))


def template_note(template: str | None) -> str | None:
    """The lock's note for a model whose template cannot carry tools; None when it can."""
    support = has_tool_section(template)
    if support is None:
        return "the GGUF has no chat template (llama-server falls back to its default; no tools)"
    if not support:
        return ("the GGUF's chat template has no tool section: tools a runtime declares never reach the "
                "model (see `labctl model probe`)")
    return None
