"""YAML with positions: every problem in a lab file is reported as `file:line:col: field: message`.

ruamel.yaml keeps the line/column of each key and value; pydantic reports a `loc` tuple.
This module joins the two so no error ever reaches the user as a traceback.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from labctl.errors import LabctlError

M = TypeVar("M", bound=BaseModel)
"""What `validate` returns: the model class it was given, so callers need no annotation or cast."""

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Issue:
    """One problem, pinned to a place in a file."""

    file: str
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        # line 0: not in a file (a command-line option such as --profile)
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return " ".join(text.splitlines())

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col, "field": self.field,
                "message": self.message}


class SpecError(LabctlError):
    """A lab (or profile) file is wrong; carries every located issue found."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass
class Document:
    """A parsed YAML file: the round-trip tree (with positions) and the name to report."""

    path: Path
    shown: str
    root: Any = field(repr=False)

    def at(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the value at `loc` (or of its key), or of its nearest parent."""
        return locate(self.root, loc, key=key)

    def issue(self, loc: Loc, message: str, *, key: bool = False) -> Issue:
        line, col = self.at(loc, key=key)
        return Issue(self.shown, line, col, dotted(loc), message)


def dotted(loc: Loc) -> str:
    """('contestants', 2, 'model', 'file') → `contestants[2].model.file`."""
    out = ""
    for part in loc:
        if isinstance(part, int) or not re.fullmatch(r"[\w-]+", part):
            out += f"[{part!r}]"  # odd keys (spaces, newlines, dots) are quoted, so one issue is one line
        else:
            out += f".{part}" if out else part
    return out


def load_yaml(path: Path, shown: str | None = None) -> Document:
    """Parse a YAML file keeping positions; syntax, encoding and emptiness become SpecError."""
    shown = shown or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([Issue(shown, 1, 1, "", "file not found")]) from None
    except OSError as e:
        raise SpecError([Issue(shown, 1, 1, "", f"cannot read: {e.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        what = f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
        raise SpecError([Issue(shown, line, col, "", what)]) from None
    yaml = YAML(typ="rt")
    try:
        root = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = "; ".join(x for x in (e.context, e.problem) if x)
        if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
            # the parser notices late: also say where the construct it was reading began
            what += f" (it began at line {e.context_mark.line + 1}, column {e.context_mark.column + 1})"
        raise SpecError([Issue(shown, line, col, "", f"invalid YAML: {what}")]) from None
    except YAMLError as e:
        raise SpecError([Issue(shown, 1, 1, "", f"invalid YAML: {e}")]) from None
    if root is None:
        raise SpecError([Issue(shown, 1, 1, "", "empty file: expected a mapping of settings")])
    if not isinstance(root, CommentedMap):
        raise SpecError([Issue(shown, 1, 1, "", f"expected a mapping of settings at the top, "
                                                f"got {type(root).__name__}")])
    return Document(path, shown, root)


def locate(root: Any, loc: Loc, *, key: bool = False) -> tuple[int, int]:
    """Walk `loc` through CommentedMap/Seq, returning the deepest position that exists."""
    node, pos = root, _start(root)
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            lc = node.lc.key(part) if (key and last) else node.lc.value(part)
            pos = (lc[0] + 1, lc[1] + 1)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            lc = node.lc.item(part)
            pos = (lc[0] + 1, lc[1] + 1)
            node = node[part]
        else:
            break
    return pos


def _start(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return lc.line + 1, lc.col + 1
    return 1, 1


def plain(node: Any) -> Any:
    """ruamel's round-trip nodes → plain dict/list/str/int, so pydantic sees ordinary data."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str | int) else k: plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for t in (int, float, str):
        if isinstance(node, t):
            return t(node)
    return node


# --- pydantic errors → located issues ------------------------------------------------------------


def validate(model: type[M], doc: Document, data: Any | None = None, *, prefix: Loc = ()) -> M:
    """Validate `data` (default: the whole document) as `model`; raise SpecError on failure."""
    try:
        return model.model_validate(plain(doc.root) if data is None else data)
    except ValidationError as e:
        raise SpecError(issues_from(e, model, doc, prefix)) from None


def issues_from(err: ValidationError, model: type[BaseModel], doc: Document, prefix: Loc = ()) -> list[Issue]:
    seen: set[tuple[str, str]] = set()
    out: list[Issue] = []
    for e in err.errors(include_url=False):
        loc, owner, tag = _data_loc(model, tuple(e["loc"]))
        loc = prefix + loc
        kind = e["type"]
        if kind == "extra_forbidden":
            message = _unknown_key_message(str(loc[-1]), owner, tag)
            issue = doc.issue(loc, message, key=True)
        elif kind == "missing":
            issue = doc.issue(loc, "required field is missing")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            # A tagged union's tag (`kind:`): point at the tag itself, not at its whole mapping.
            field = str(e["ctx"]["discriminator"]).strip("'")
            issue = doc.issue(loc + (field,), "required field is missing" if kind == "union_tag_not_found"
                              else _tag_message(e["ctx"]))
        else:
            issue = doc.issue(loc, _message(e))
        if (issue.field, issue.message) not in seen:
            seen.add((issue.field, issue.message))
            out.append(issue)
    return out


_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "a string", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "literal_error": None, "enum": None,
}


def _message(e: Mapping[str, Any]) -> str:
    """pydantic's wording, made to say what was expected and what was found."""
    kind, got = e["type"], e.get("input")
    if kind in ("literal_error", "enum") and "expected" in e.get("ctx", {}):
        return f"expected one of {e['ctx']['expected']}, got {got!r}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(got)}"
    if kind == "string_pattern_mismatch" and e["ctx"]["pattern"].startswith("^[a-z0-9][a-z0-9._-]"):
        return f"{got!r} is not a valid id: use lowercase letters, digits, '.', '_' and '-'"
    if kind == "string_pattern_mismatch":
        return f"{got!r} does not match the pattern {e['ctx']['pattern']}"
    return e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _tag_message(ctx: dict[str, Any]) -> str:
    expected = [t.strip().strip("'") for t in str(ctx["expected_tags"]).split(",")]
    got = str(ctx["tag"])
    hint = difflib.get_close_matches(got, expected, n=1, cutoff=0.6)
    return (f"expected one of {', '.join(map(repr, expected))}, got {got!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else ""))


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "nothing" if value is None else repr(value)


def _data_loc(model: type[BaseModel], loc: Loc) -> tuple[Loc, type[BaseModel] | None, str | None]:
    """Drop union tags from pydantic's loc; also return the model owning the last key and its tag."""
    out: list[str | int] = []
    tp: Any = model
    owner: type[BaseModel] | None = None
    tag: str | None = None
    for part in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        if members and isinstance(part, str) and part in members:
            tp, tag = members[part], part
            continue
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            f = tp.model_fields.get(str(part))
            tp = f.annotation if f else None
        elif origin in (list, tuple) and isinstance(part, int):
            tp = typing.get_args(tp)[0] if typing.get_args(tp) else None
        elif origin is dict:
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else None
        else:
            tp = None
        out.append(part)
    return tuple(out), owner, tag


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return _unwrap(next(a for a in args if a is not type(None)))
    return tp


def _union_members(tp: Any) -> dict[str, Any]:
    """Members of a (tagged) union keyed by the tag pydantic puts in `loc`."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return {}
    out: dict[str, Any] = {}
    for arg in typing.get_args(tp):
        inner = _unwrap(arg)
        for meta in getattr(arg, "__metadata__", ()):
            if hasattr(meta, "tag"):
                out[meta.tag] = inner
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out.setdefault(inner.__name__, inner)
            kind = inner.model_fields.get("kind")
            if kind is not None:
                for value in typing.get_args(kind.annotation):
                    out[value] = inner
    return out


def field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _unknown_key_message(key: str, owner: type[BaseModel] | None, tag: str | None) -> str:
    if owner is None:
        return f"unknown key {key!r}"
    known = field_names(owner)
    if key in (lab_only := getattr(owner, "__lab_only__", {})):
        return f"{key!r} is not allowed here: {lab_only[key]}"
    elsewhere = getattr(owner, "__kind_siblings__", {})
    for other_kind, other_fields in elsewhere.items():
        if key in other_fields and other_kind != tag:
            return f"{key!r} belongs to kind {other_kind!r}, not {tag!r}"
    hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if hint:
        return f"unknown key {key!r}; did you mean {hint[0]!r}?"
    return f"unknown key {key!r}; expected one of: {', '.join(known)}"
