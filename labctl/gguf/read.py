"""Read a GGUF's header into `GGUFMeta`: from local files, or from the first bytes of a remote one.

Why two readers: a local file is read with the `gguf` package's own `GGUFReader` (memory-mapped, so
a 20 GB model costs nothing), but `labctl lock` must learn a model's architecture *before* anyone
downloads it. The header (magic, version, counts, key/values, tensor infos) sits at the start of the
file, so `read_prefix` fetches a prefix (1 MiB, doubled until it parses) with HTTP Range requests
and parses it with the small bounds-checked parser below, built on gguf's constants. Both readers
produce the same `Header`, and `meta_from_headers` turns the headers of all shards into one meta:
metadata from the first shard, parameter and byte counts summed over all of them.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, Keys, LlamaFileType

from labctl.errors import LabctlError
from labctl.gguf.meta import GGUFMeta, SSMState

__all__ = ["ArrayLen", "GGUFError", "Header", "TensorInfo", "meta_from_headers", "parse_header",
           "quant_from_filename", "read_header_local", "read_local", "read_prefix"]

BIG_ARRAY = 4096
"""Arrays longer than this (vocabularies, merges, scores) are kept as their length only."""
FIRST_PREFIX = 1 << 20
MAX_PREFIX = 1 << 30
MAX_DIAGNOSE = 256 << 20

_SCALAR: dict[int, str] = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?", GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(?:UD-)?(I?Q\d_(?:K_[A-Z]+|K|[A-Z]+|\d)|BF16|F16|F32|MXFP4(?:_MOE)?|TQ\d_\d)"
    r"(?![A-Za-z0-9])", re.IGNORECASE)


class GGUFError(LabctlError):
    """Not a GGUF, a damaged one, or one without the keys labctl needs; one-line message."""


class Truncated(GGUFError):
    """The buffer ends inside the header: read more."""


@dataclass(frozen=True)
class ArrayLen:
    """A big array of the header, kept as its element count."""

    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int | None:
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(self.ggml_type)]
        except (ValueError, KeyError):
            return None
        return self.n_elements // block * size


@dataclass
class Header:
    version: int
    kv: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    size: int = 0
    """Bytes from the start of the file to the end of the tensor infos."""
    raw: bytes | None = None
    """The header's own bytes (`size` of them), when read by `read_prefix`: what a shape twin copies."""


# --------------------------------------------------------------------------- parser


class _Cursor:
    def __init__(self, buf: bytes | bytearray | memoryview, endian: str) -> None:
        self.buf, self.off, self.e = memoryview(buf), 0, endian

    def take(self, n: int) -> memoryview:
        if self.off + n > len(self.buf):
            raise Truncated(f"header needs more than {len(self.buf)} bytes")
        v = self.buf[self.off:self.off + n]
        self.off += n
        return v

    def scalar(self, t: int) -> Any:
        fmt = _SCALAR[t]
        return struct.unpack(self.e + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar(GGUFValueType.UINT64)
        return bytes(self.take(n)).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(self.scalar(GGUFValueType.UINT64))

    def value(self, t: int) -> Any:
        if t == GGUFValueType.STRING:
            return self.string()
        if t == GGUFValueType.ARRAY:
            sub, n = self.scalar(GGUFValueType.UINT32), self.scalar(GGUFValueType.UINT64)
            if sub in _SCALAR:
                fmt = _SCALAR[sub]
                raw = self.take(n * struct.calcsize(fmt))
                return ArrayLen(n) if n > BIG_ARRAY else list(struct.unpack(f"{self.e}{n}{fmt}", raw))
            if sub == GGUFValueType.STRING and n > BIG_ARRAY:
                for _ in range(n):
                    self.skip_string()
                return ArrayLen(n)
            if sub in (GGUFValueType.STRING, GGUFValueType.ARRAY):
                return [self.value(sub) for _ in range(n)]
            raise GGUFError(f"unknown GGUF array element type {sub}")
        if t in _SCALAR:
            return self.scalar(t)
        raise GGUFError(f"unknown GGUF value type {t}")


def parse_header(buf: bytes | bytearray | memoryview) -> Header:
    """Parse magic, version, counts, key/values and tensor infos; `Truncated` when `buf` is too short."""
    if len(buf) < 4:
        raise Truncated("header needs more than 4 bytes")
    if bytes(buf[:4]) != b"GGUF":
        raise GGUFError(f"not a GGUF file (starts with {bytes(buf[:4])!r})")
    c = _Cursor(buf, "<")
    c.take(4)
    version = c.scalar(GGUFValueType.UINT32)
    if version & 0xFFFF == 0:  # a big-endian file, as gguf.GGUFReader detects it
        c.e, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = c.scalar(GGUFValueType.UINT64), c.scalar(GGUFValueType.UINT64)
    if n_tensors > 1 << 24 or n_kv > 1 << 20:  # a damaged header: do not go on reading for ever
        raise GGUFError(f"implausible GGUF header: {n_tensors} tensors, {n_kv} keys")
    kv: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string()
        kv[key] = c.value(c.scalar(GGUFValueType.UINT32))
    tensors = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.scalar(GGUFValueType.UINT32)
        shape = struct.unpack(f"{c.e}{n_dims}Q", c.take(8 * n_dims))
        ggml_type = c.scalar(GGUFValueType.UINT32)
        c.scalar(GGUFValueType.UINT64)  # data offset: not needed
        tensors.append(TensorInfo(name, tuple(shape), ggml_type))
    return Header(version, kv, tensors, c.off)


def read_prefix(fetch_range: Callable[[int, int], bytes], *, total_size: int | None = None,
                first: int = FIRST_PREFIX, limit: int = MAX_PREFIX) -> Header:
    """Parse a header from a remote file: `fetch_range(start, end)` returns bytes [start, end).

    Starts with `first` bytes and doubles the prefix (fetching only the new part) until it parses.
    """
    buf = bytearray()
    want = first
    while True:
        end = min(want, total_size) if total_size is not None else want
        if end > len(buf):
            start = len(buf)
            chunk = fetch_range(start, end)
            buf += chunk
            eof = len(chunk) < end - start
        else:
            eof = True
        try:
            header = parse_header(buf)
            header.raw = bytes(buf[:header.size])
            return header
        except Truncated:
            if eof or (total_size is not None and len(buf) >= total_size):
                raise GGUFError(f"file ends inside its GGUF header ({len(buf)} bytes)") from None
            if want >= limit:
                raise GGUFError(f"GGUF header larger than {limit} bytes") from None
            want *= 2


def _diagnose(path: Path) -> str | None:
    """A clear reason why GGUFReader failed, from our own parser (its messages are numpy's)."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_DIAGNOSE)
        parse_header(head)
    except Truncated:
        return "file ends inside its GGUF header" if len(head) < MAX_DIAGNOSE else None
    except GGUFError as e:
        return str(e)
    except OSError:
        return None
    return None


def read_header_local(path: Path) -> Header:
    """The header of a local file, read with gguf.GGUFReader."""
    try:
        r = gguf.GGUFReader(path)
    except FileNotFoundError:
        raise
    except (ValueError, IndexError, struct.error, OSError, KeyError) as e:
        raise GGUFError(_diagnose(path) or f"cannot read GGUF: {e}") from None
    kv: dict[str, Any] = {}
    version = 0
    for name, f in r.fields.items():
        if name == "GGUF.version":
            version = int(f.contents())
        if name.startswith("GGUF."):
            continue
        if f.types and f.types[0] == GGUFValueType.ARRAY and len(f.data) > BIG_ARRAY:
            kv[name] = ArrayLen(len(f.data))
        else:
            kv[name] = f.contents()
    tensors = [TensorInfo(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type)) for t in r.tensors]
    return Header(version, kv, tensors, 0)


# ----------------------------------------------------------------------- meta


def quant_from_filename(name: str) -> str | None:
    """`Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_XL.gguf` → `UD-Q4_K_XL`."""
    found = [m.group(0) for m in _QUANT_RE.finditer(Path(name).stem)]
    return found[-1].upper() if found else None


def _quant(file_type: int | None, name_hint: str | None) -> str | None:
    # The file name says what the publisher calls it (`UD-Q4_K_XL`); the header only knows the
    # nearest llama.cpp file type (`Q4_K_M`), so the name wins when it names a quant.
    named = quant_from_filename(name_hint) if name_hint else None
    if named:
        return named
    if file_type is not None:
        try:
            ft = LlamaFileType(file_type & ~LlamaFileType.GUESSED)
        except ValueError:
            ft = None
        if ft is not None:
            return ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return None


def _int(v: Any, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise GGUFError(f"{key} should be an integer, got {v!r}")
    return v


def _per_layer(v: Any, key: str) -> int | list[int]:
    if isinstance(v, list):
        return [_int(x, key) for x in v]
    return _int(v, key)


def meta_from_headers(headers: Sequence[Header], name_hint: str | None = None) -> GGUFMeta:
    """One `GGUFMeta` for a model: keys from the first shard, tensors of all shards summed."""
    if not headers:
        raise GGUFError("no GGUF header to read")
    ordered = sorted(headers, key=lambda h: h.kv.get(Keys.Split.LLM_KV_SPLIT_NO, 0))
    first = ordered[0].kv
    count = first.get(Keys.Split.LLM_KV_SPLIT_COUNT)
    if count is not None and count != len(headers):
        raise GGUFError(f"split.count says {count} shards, got {len(headers)}")
    arch = first.get(Keys.General.ARCHITECTURE)
    if not isinstance(arch, str):
        raise GGUFError("no general.architecture key")

    def get(template: str) -> Any:
        return first.get(template.format(arch=arch))

    def need(template: str) -> int:
        v = get(template)
        if v is None:
            raise GGUFError(f"missing key {template.format(arch=arch)}")
        return _int(v, template.format(arch=arch))

    def opt(template: str) -> int | None:
        v = get(template)
        return None if v is None else _int(v, template.format(arch=arch))

    head_count = get(Keys.Attention.HEAD_COUNT)
    head_count = 0 if head_count is None else _per_layer(head_count, "head_count")
    head_count_kv = get(Keys.Attention.HEAD_COUNT_KV)
    head_count_kv = head_count if head_count_kv is None else _per_layer(head_count_kv, "head_count_kv")
    pattern = get(Keys.Attention.SLIDING_WINDOW_PATTERN)
    if isinstance(pattern, list):
        pattern = [bool(x) for x in pattern]
    elif pattern is not None:
        pattern = _int(pattern, "sliding_window_pattern")
    ssm_keys = {"conv_kernel": Keys.SSM.CONV_KERNEL, "state_size": Keys.SSM.STATE_SIZE,
                "group_count": Keys.SSM.GROUP_COUNT, "time_step_rank": Keys.SSM.TIME_STEP_RANK,
                "inner_size": Keys.SSM.INNER_SIZE}
    ssm_vals = {k: opt(t) for k, t in ssm_keys.items()}
    ssm = SSMState(**{k: v or 0 for k, v in ssm_vals.items()}) if any(
        v is not None for v in ssm_vals.values()) else None

    tensors = [t for h in ordered for t in h.tensors]
    n_params = sum(t.n_elements for t in tensors)
    sizes = [t.n_bytes for t in tensors]
    tensor_bytes = None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
    expert_count, expert_used = opt(Keys.LLM.EXPERT_COUNT), opt(Keys.LLM.EXPERT_USED_COUNT)
    n_active = n_params
    if expert_count and expert_used:
        experts = sum(t.n_elements for t in tensors if "_exps" in t.name)
        n_active = n_params - experts + experts * expert_used // expert_count
    tokens = first.get(Keys.Tokenizer.LIST)
    vocab = (tokens.length if isinstance(tokens, ArrayLen) else len(tokens) if isinstance(tokens, list)
             else opt(Keys.LLM.VOCAB_SIZE))
    file_type = first.get(Keys.General.FILE_TYPE)
    file_type = None if file_type is None else _int(file_type, Keys.General.FILE_TYPE)
    try:
        return GGUFMeta(
            source="header", architecture=arch,
            block_count=need(Keys.LLM.BLOCK_COUNT), context_length=need(Keys.LLM.CONTEXT_LENGTH),
            embedding_length=need(Keys.LLM.EMBEDDING_LENGTH),
            head_count=head_count, head_count_kv=head_count_kv,
            key_length=opt(Keys.Attention.KEY_LENGTH), value_length=opt(Keys.Attention.VALUE_LENGTH),
            key_length_swa=opt(Keys.Attention.KEY_LENGTH_SWA),
            value_length_swa=opt(Keys.Attention.VALUE_LENGTH_SWA),
            sliding_window=opt(Keys.Attention.SLIDING_WINDOW), sliding_window_pattern=pattern,
            full_attention_interval=opt(Keys.LLM.FULL_ATTENTION_INTERVAL), ssm=ssm,
            expert_count=expert_count, expert_used_count=expert_used,
            feed_forward_length=None if get(Keys.LLM.FEED_FORWARD_LENGTH) is None else _per_layer(
                get(Keys.LLM.FEED_FORWARD_LENGTH), "feed_forward_length"),
            expert_feed_forward_length=opt(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH),
            expert_shared_feed_forward_length=opt(Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH),
            file_type=file_type, quant=_quant(file_type, name_hint),
            n_params=n_params, n_params_active=n_active, tensor_bytes=tensor_bytes, vocab_size=vocab,
        )
    except ValueError as e:  # pydantic: a value out of range (block_count 0, …)
        first_error = str(e).splitlines()
        raise GGUFError(f"implausible header values: {' '.join(first_error[:3])}") from None


def read_local(paths: Sequence[Path]) -> GGUFMeta:
    """`GGUFMeta` of a local model: one file, or all shards of a split GGUF."""
    paths = [Path(p) for p in paths]
    hint = paths[0].name if paths else None
    return meta_from_headers([read_header_local(p) for p in paths], name_hint=hint)
