"""A round on disk: its layout, the file formats the seal, the runner and the grader share, and the
manifest that lets anyone re-check every byte afterwards.

```
rounds/<round-id>/
  lab.yaml  lab.lock      byte-identical copies of the lab and its lock at seal time
  sealed.json             SealedRound: run ids, order, commitment, outcome rules — no identities
  runs/<run-id>/          written by the runner: result.json (RunResult), metrics.json,
                          transcript.jsonl, verifier/{reward.json | reward.txt, stdout.txt,
                          stderr.txt, exit_code.txt, what else test.sh wrote}, egress.jsonl
                          (every request through the egress gateway: EgressRecord), …
  unsealed.json           Unsealed: the revealed salt and mapping (only after `labctl unseal`)
  report.*                written by `labctl report`
  manifest.json           {"files": {relpath: sha256}} of every other file in the round
```

The manifest is written at seal time and rewritten by whoever adds files afterwards (the runner
after each run, unseal, report), each time by `write_manifest`. `labctl verify` checks that every
listed file still has its hash and that no file is unlisted. lab.yaml, lab.lock and sealed.json
never change after the seal: unseal refuses a round where they differ from the manifest
(`IMMUTABLE`), so rewriting the manifest at unseal cannot bless a tampered seal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from labctl.errors import LabctlError
from labctl.spec.lab import Outcome
from labctl.spec.task import OutcomeRules
from labctl.treehash import file_sha256, files_below

LAB_FILE = "lab.yaml"
LOCK_FILE = "lab.lock"
SEALED_FILE = "sealed.json"
UNSEALED_FILE = "unsealed.json"
MANIFEST_FILE = "manifest.json"
RUNS_DIR = "runs"
EGRESS_FILE = "egress.jsonl"
IMMUTABLE = (LAB_FILE, LOCK_FILE, SEALED_FILE)
"""Files fixed by the seal; they must match the seal-time manifest until the end of the round."""

SCHEME = "sha256(salt || canonical_mapping)"
"""How the commitment is computed; `canonical_mapping` is `canonical(mapping)` below."""

RunStatus = Literal["pending", "running", "done", "errored", "killed"]
FINISHED: frozenset[str] = frozenset({"done", "errored", "killed"})
"""Statuses after which a run will not change any more: unseal waits for all runs to reach one."""

SHA256 = r"^[0-9a-f]{64}$"


class Record(BaseModel):
    """Round files are contracts between developers: unknown keys are errors, so drift is loud."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Slot(Record):
    """What one run id stands for: a contestant and which of its repeats."""

    contestant: str
    """Contestant id from lab.yaml."""
    repeat: int = Field(ge=1)
    """1-based repeat number (1 … round.repeats)."""
    task: str | None = None
    """The task of this run in a dataset round (None: the lab's one task)."""

    @model_serializer(mode="wrap")
    def _without_task(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A one-task round's slot has no `task` key at all: its committed bytes, the envelope and
        # unsealed.json read exactly as they did before datasets existed.
        data: dict[str, Any] = handler(self)
        if data.get("task") is None:
            data.pop("task", None)
        return data


Mapping = dict[str, Slot]
"""Run id → slot."""


class SealedTask(Record):
    """One task of a dataset round, as sealed: its pin and its grading rules."""

    tree_sha256: str = Field(pattern=SHA256)
    """The lock's tree hash of the task, checked against its directory at seal time."""
    outcome_rules: OutcomeRules | None = None
    """The task's `[labctl.outcome]`; None: the numeric reward decides."""


class SealedRound(Record):
    """`sealed.json`: everything public about a round before unseal. Never a contestant id."""

    version: Literal[1] = 1
    round: str
    """Round id: `<lab name>-<UTC yyyymmdd-HHMMSS>-<4 hex>`."""
    lab: str
    """The lab's name."""
    created: datetime
    """When the round was sealed (UTC)."""
    labctl_version: str
    lock_sha256: str = Field(pattern=SHA256)
    """`Lock.sha256()` of lab.lock (hash of its canonical text)."""
    lock_file_sha256: str = Field(pattern=SHA256)
    """sha256 of lab.lock's bytes as copied (equal to lock_sha256 for a lock labctl wrote)."""
    task_tree_sha256: str = Field(pattern=SHA256)
    """The lock's task tree hash, checked against the task directory at seal time."""
    run_ids: list[str] = Field(min_length=1)
    """Every run id, in number order."""
    order: list[str]
    """Execution order (a CSPRNG permutation of run_ids, or run_ids when randomize_order is false)."""
    repeats: int = Field(ge=1)
    sealed: bool = True
    """False when the lab has `round.seal: false`: the mapping is then published below."""
    mapping: Mapping | None = None
    """Only when `sealed` is false: the open mapping."""
    commitment: str = Field(pattern=SHA256)
    """sha256(salt ‖ canonical(mapping)), hex; published before any run."""
    scheme: str = SCHEME
    salt_bits: int = 256
    outcome_rules: OutcomeRules | None = None
    """The task's outcome rules; None: the numeric reward decides (1 Complete, >0 Partial)."""
    tasks: dict[str, SealedTask] | None = None
    """A dataset round's tasks by name (None: a one-task round, graded by `outcome_rules`)."""
    run_tasks: dict[str, str] | None = None
    """A dataset round's run id → task name. Public: which task a run works on says nothing about
    which contestant runs it (every contestant runs every task equally often); the mapping in the
    envelope repeats it, under the commitment."""
    lab_dir: str | None = None
    """Absolute directory of the lab file at seal time: the round's own lab.yaml keeps its relative
    paths (task.path, models, profiles), so `labctl run` resolves them from here, wherever it runs."""
    images: dict[str, str] = {}
    """Image name → tag (an input hash) the runs use, fixed at seal time on the lab's profile:
    `labctl run` reads them instead of deriving every image spec again (empty in older rounds)."""

    def rules_for(self, run_id: str) -> OutcomeRules | None:
        """The outcome rules that grade `run_id`: its task's in a dataset round, else the round's."""
        task = (self.run_tasks or {}).get(run_id)
        if task is not None and self.tasks and task in self.tasks:
            return self.tasks[task].outcome_rules
        return self.outcome_rules


class Unsealed(Record):
    """`unsealed.json`: the reveal. Anyone can recompute the commitment from salt and mapping."""

    version: Literal[1] = 1
    round: str
    salt: str = Field(pattern=r"^[0-9a-f]{64}$")
    """The salt, hex (32 bytes)."""
    mapping: Mapping
    commitment: str = Field(pattern=SHA256)
    """The commitment recomputed from salt + mapping at unseal (equal to sealed.json's)."""
    scheme: str = SCHEME
    forced: bool = False
    """True when unsealed with --force before every run finished."""
    unfinished: list[str] = []
    """Run ids not finished at a forced unseal."""
    unsealed_at: datetime


class RunResult(Record):
    """`runs/<run-id>/result.json`, written by the runner; outcome re-derived by `labctl verify`."""

    run_id: str
    status: RunStatus = "pending"
    outcome: Outcome | None = None
    """Grade from the verifier output and metrics (`labctl.round.grading.derive_outcome`); None: ungraded."""
    attempts: int = Field(default=0, ge=0)
    """How many times the run was started (a resumed or retried run counts each start)."""
    started: datetime | None = None
    ended: datetime | None = None
    reason: str | None = None
    """Why the run ended as it did when not plainly done (an error, a budget, an interrupt)."""
    task: str | None = None
    """The run's task in a dataset round (from sealed.json's public `run_tasks`)."""
    host: str | None = None
    """Where the run's last attempt ran: a host name (and the Ray node for `labctl run --ray`).
    Public: it names a machine, never a contestant."""
    control: Literal["oracle", "nop"] | None = None
    """Set for the control runs only, so the round's controls can be judged before unseal
    (`labctl.round.controls`). Public on purpose: oracle and nop are no model, and a run without a model is
    already told apart by its metrics (no tool calls); which model ran where stays sealed."""


class EgressRecord(Record):
    """One request through a run's egress gateway (`labctl.run.egress`): a line of egress.jsonl."""

    time: datetime
    """When the gateway finished the request (UTC)."""
    method: str
    """HTTP method; `CONNECT` for an HTTPS tunnel."""
    host: str
    """The host asked for (empty when the request named none)."""
    port: int | None
    """The port asked for."""
    url: str
    """The URL as the gateway saw it (`host:port` for CONNECT)."""
    status: int
    """The HTTP status the gateway answered with (403: denied; 0: none)."""
    bytes: int = Field(ge=0)
    """Bytes sent back to the task container (a tunnel's whole download)."""
    request_bytes: int = Field(ge=0)
    """Bytes the task container sent (a tunnel's whole upload)."""
    allowed: bool
    """False when the policy denied it (not on the allowlist, a port or address never allowed)."""
    result: str
    """squid's own result code, e.g. `TCP_MISS`, `TCP_TUNNEL`, `TCP_DENIED`."""


def read_egress(path: Path) -> list[EgressRecord]:
    return read_jsonl(EgressRecord, path)  # egress.jsonl's records


def read_jsonl(model: type[R], path: Path) -> list[R]:
    """A JSON-lines file of `model` records; ValueError names the first line that is not one."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            out.append(model.model_validate_json(line))
        except ValueError as e:
            raise ValueError(f"line {n}: {str(e).splitlines()[0]}") from None
    return out


# --- paths ---------------------------------------------------------------------------------------


def run_dir(round_dir: Path, run_id: str) -> Path:
    return round_dir / RUNS_DIR / run_id


def result_path(round_dir: Path, run_id: str) -> Path:
    return run_dir(round_dir, run_id) / "result.json"


def metrics_path(round_dir: Path, run_id: str) -> Path:
    return run_dir(round_dir, run_id) / "metrics.json"


def transcript_path(round_dir: Path, run_id: str) -> Path:
    return run_dir(round_dir, run_id) / "transcript.jsonl"


def egress_path(round_dir: Path, run_id: str) -> Path:
    return run_dir(round_dir, run_id) / EGRESS_FILE


def verifier_dir(round_dir: Path, run_id: str) -> Path:
    return run_dir(round_dir, run_id) / "verifier"


VERIFIER_STDOUT, VERIFIER_STDERR, VERIFIER_EXIT = "stdout.txt", "stderr.txt", "exit_code.txt"
"""labctl's record of tests/test.sh in a run's verifier/: its stdout, its stderr (always, also when it
exits 0 after writing reward 0), its exit status (a number, or `timeout`); in the manifest like every
file of the round."""


def verifier_tail(run: Path, lines: int = 5, chars: int = 600) -> str | None:
    """The last `lines` non-blank lines of the verifier's stderr, then of its stdout, and its exit
    status, as one line (`stderr: … ⏎ … ; stdout: … ; exit 0`); None when it left no output."""
    parts: list[str] = []
    for name, label in ((VERIFIER_STDERR, "stderr"), (VERIFIER_STDOUT, "stdout")):
        try:
            text = (run / "verifier" / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        last = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
        if last:
            parts.append(f"{label}: " + " ⏎ ".join(last)[-chars:])
    if not parts:
        return None
    with contextlib.suppress(OSError):
        parts.append(f"exit {(run / 'verifier' / VERIFIER_EXIT).read_text(encoding='utf-8').strip()}")
    return "; ".join(parts)


# --- reading and writing -------------------------------------------------------------------------


def canonical(mapping: Mapping | dict[str, Any]) -> bytes:
    """The committed bytes: sorted keys, no whitespace, so anyone re-serializes them identically."""
    plain = {k: (v.model_dump() if isinstance(v, Slot) else v) for k, v in mapping.items()}
    return json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()


def commitment_of(salt: bytes, mapping: Mapping | dict[str, Any]) -> str:
    return hashlib.sha256(salt + canonical(mapping)).hexdigest()


def json_text(data: Any) -> str:
    """Stable, diff-friendly JSON (like lab.lock): indented, sorted keys, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a record."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", exclude_none=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json_text(data), encoding="utf-8")
    tmp.replace(path)


R = TypeVar("R", bound="Record")


class RoundFileError(LabctlError, ValueError):
    """A round file that does not parse (its message is the validation's own). Still a ValueError:
    every reader of a round catches that for a file that does not read."""


def _read(model: type[R], path: Path) -> R:
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as e:
        raise RoundFileError(str(e)) from e


def read_sealed(round_dir: Path) -> SealedRound:
    return _read(SealedRound, round_dir / SEALED_FILE)


def read_unsealed(round_dir: Path) -> Unsealed:
    return _read(Unsealed, round_dir / UNSEALED_FILE)


def read_result(round_dir: Path, run_id: str) -> RunResult:
    return _read(RunResult, result_path(round_dir, run_id))


def write_result(round_dir: Path, result: RunResult) -> None:
    """The one writer of result.json (runner, parallel and ray runs alike), atomic."""
    path = result_path(round_dir, result.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)


# --- manifest ------------------------------------------------------------------------------------


def _entry_sha256(path: Path) -> str:
    """A file's sha256; a symlink is never followed (it could point out of the round), its target
    text is hashed under a prefix so it cannot collide with a file holding the same text."""
    if path.is_symlink():
        return hashlib.sha256(b"symlink\0" + os.fsencode(os.readlink(path))).hexdigest()
    return file_sha256(path)


def round_files(round_dir: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file in the round except the manifest itself."""
    skip = {MANIFEST_FILE, MANIFEST_FILE + ".tmp"}
    found = {rel: _entry_sha256(path) for rel, path in files_below(round_dir) if rel not in skip}
    return dict(sorted(found.items()))


def write_manifest(round_dir: Path) -> dict[str, str]:
    """Hash every file of the round into manifest.json; returns the listing."""
    files = round_files(round_dir)
    write_json(round_dir / MANIFEST_FILE, {"files": files})
    return files


def read_manifest(round_dir: Path) -> dict[str, str]:
    """The manifest's {relpath: sha256}; raises ValueError when it is not a manifest."""
    data = json.loads((round_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ValueError('expected {"files": {path: sha256}}')
    return files


def manifest_differences(round_dir: Path, listed: dict[str, str]) -> list[tuple[str, str]]:
    """(relpath, what) for every listed file changed or missing and every unlisted file."""
    actual = round_files(round_dir)
    out: list[tuple[str, str]] = []
    for rel, want in listed.items():
        got = actual.get(rel)
        if got is None:
            out.append((rel, "missing (listed in manifest.json)"))
        elif got != want:
            out.append((rel, f"changed: sha256 {got[:12]}…, manifest.json says {want[:12]}…"))
    out += [(rel, "not in manifest.json (added after it was written)") for rel in actual if rel not in listed]
    return out
