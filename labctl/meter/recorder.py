"""The meter's file writer (`Recorder`: transcript.jsonl and status.json, off the event loop) and the
pace of status.json (`StatusPublisher`). Apart from labctl/meter/state.py, which says what a meter
is told and keeps: a runner reads those without a thread or a file of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from labctl.meter import blobs
from labctl.meter.names import replace_names
from labctl.meter.state import MeterState

STATUS_INTERVAL_S = 0.1
"""Longest delay of status.json behind the live state (a stop or an error is written at once)."""


class StatusPublisher:
    """Hands the live state to the recorder for status.json: at once when it changes what a runner
    acts on (stopped, errored), otherwise at most every STATUS_INTERVAL_S. Why: replacing the file
    on every call cost more CPU than the call itself, and the runner polls at 0.25 s."""

    def __init__(self, state: MeterState, recorder: Recorder) -> None:
        self.state, self.recorder = state, recorder
        self.loop: asyncio.AbstractEventLoop | None = None
        """The meter's loop, once it runs: the deferred publish is a timer on it."""
        self._timer: asyncio.TimerHandle | None = None
        self._published = (False, False)

    def publish(self, now: bool = False) -> None:
        st = self.state
        if self.recorder.failed and not st.errored:
            st.errored, st.last_error = True, self.recorder.failed
        if not now and (st.stopped, st.errored) == self._published:
            if self._timer is None and self.loop is not None:
                self._timer = self.loop.call_later(STATUS_INTERVAL_S, self.publish, True)
            if self._timer is not None:
                return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        st.updated_at = time.time()
        self._published = (st.stopped, st.errored)
        self.recorder.publish(st)

    def flush(self) -> None:
        """Publish a state still waiting for its turn (drain, shutdown)."""
        if self._timer is not None:
            self.publish(now=True)


BATCH_S = 0.05
"""How long the recorder lets records gather before writing them. Why: waking the writer thread for
each record made it take the GIL (and a CPU) right when the agent's next call arrived; profiled,
that cost the event loop more than the call itself on a busy 2-core machine."""


class Recorder:
    """Writes transcript.jsonl (append-only, one record per line, flushed when the queue empties) and
    status.json (replaced atomically, so a poller never reads half a file) on its own thread.

    Why a thread: replacing a file costs 0.2–1 ms on ext4 (the rename forces a data flush) and a
    long conversation's record takes as long to serialise; on the event loop that would be added
    to the agent's next call. It writes in batches (`BATCH_S`), and status writes coalesce: only
    the newest state is written.
    Every line passes through `redact`: secrets (the real API key) become `[REDACTED]` and upstream
    model names become the alias, in whatever field they hid.
    """

    def __init__(self, path: Path, status_path: Path, alias: str, secrets: list[str] | None = None,
                 blob_bytes: int | None = None) -> None:
        self.path, self.status_path, self.alias = Path(path), Path(status_path), alias
        self.blob_bytes = blob_bytes
        """A record's `request` whose body (`request_bytes`) is larger goes to a blob."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        self.secrets = [s for s in (secrets or []) if s]
        self.hidden: dict[str, str] = {}
        """Other text to replace (the upstream's URL and host, which name a provider)."""
        self.names: set[str] = set()
        """Upstream model names seen so far (the meter adds to it)."""
        self.failed: str | None = None
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._q: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._status: tuple[str, frozenset[str]] = ("{}", frozenset())
        self._status_queued = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labctl-meter-recorder", daemon=True)
        self._thread.start()

    def redact(self, line: str, names: frozenset[str] | None = None) -> str:
        """`names`: a snapshot taken on the loop thread (the live set may grow meanwhile)."""
        for s in self.secrets:
            line = line.replace(s, "[REDACTED]")
        for old, new in self.hidden.items():
            line = line.replace(old, new)
        return replace_names(line, frozenset(self.names) if names is None else names, self.alias)

    def write(self, record: dict[str, Any]) -> None:
        """Queue a record; the caller must not change it afterwards."""
        self._put(("record", (record, frozenset(self.names))))

    def publish(self, state: MeterState) -> None:
        with self._lock:
            self._status = (state.model_dump_json(indent=1), frozenset(self.names))
            if self._status_queued:
                return
            self._status_queued = True
        self._put(("status", None))

    def _put(self, item: tuple[str, Any] | None) -> None:
        self._q.put(item)
        if not self._wake.is_set():  # the batch's first item wakes the thread; the rest just queue
            self._wake.set()

    def drain(self) -> None:
        """Wait until everything queued is on disk."""
        self._q.join()

    def close(self) -> None:
        self._put(None)
        self._thread.join(60)
        self._f.close()

    def _blob(self, record: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
        """A request body over `blob_bytes` written as a blob, its record holding the reference."""
        size = record.get("request_bytes")
        if self.blob_bytes is None or not isinstance(size, int) or size <= self.blob_bytes \
                or record.get("request") is None:
            return record
        text = self.redact(json.dumps(record["request"], ensure_ascii=False, default=str), names)
        return {**record, "request": blobs.store(blobs.blob_dir(self.path), text.encode())}

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(BATCH_S)  # let the batch gather (the GIL is free meanwhile)
            self._wake.clear()
            if not self._write_batch():
                return

    def _write_batch(self) -> bool:
        """Everything queued so far; False once the closing None was reached."""
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                self._q.task_done()
                return False
            try:
                kind, payload = item
                if kind == "record":
                    record, names = payload
                    record = self._blob(record, names)
                    line = json.dumps(record, ensure_ascii=False, default=str)
                    self._f.write(self.redact(line, names) + "\n")
                    if self._q.empty():  # a burst of records: one write, once the burst is queued out
                        self._f.flush()
                else:
                    self._f.flush()  # the records a state counts are on disk before it
                    with self._lock:
                        text, self._status_queued = self._status, False
                    tmp = self.status_path.with_name(f".{self.status_path.name}.{os.getpid()}.tmp")
                    tmp.write_text(self.redact(*text))
                    os.replace(tmp, self.status_path)
            except Exception as e:  # noqa: BLE001 - a full disk must not kill the proxy; the state says so
                self.failed = f"recording failed: {type(e).__name__}: {e}"
            finally:
                self._q.task_done()

__all__ = ["BATCH_S", "STATUS_INTERVAL_S", "Recorder", "StatusPublisher"]
