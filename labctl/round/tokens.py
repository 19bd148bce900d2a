"""A run's token figures made whole: the meter's records reconciled with llama-server's own counters.

Why: the meter counts the usage each answer carries, and an answer cut mid-stream (the agent stopped
at its wall time, a stop intervention, a human's Ctrl-C) never carries one: such a run used to read
"0 tokens". The meter now records what a cut stream carried, marked partial (labctl/meter/reassembly.py),
and for a local contestant the run's own llama-server (started for this run alone) has counted
everything it did. What the pinned llama.cpp counts (tools/server, `--metrics`):

* `llamacpp:prompt_tokens_total` — prompt tokens *evaluated*, cached ones excluded, added per batch
  (a prompt cut mid-way counts what was evaluated);
* `llamacpp:prompt_tokens_cached_total` — prompt tokens reused from the cache;
* `llamacpp:tokens_predicted_total` — generated tokens, added when a slot is released, so a
  cancelled answer (the meter hung up) counts too;
* `llamacpp:requests_processing` — slots still working (read until 0, so nothing is in flight).

An answer's usage counts the whole prompt (`prompt_tokens` = timings' prompt_n + cache_n), so over a
run the server's evaluated + cached equals the meter's prompt_tokens, and predicted equals its
completion_tokens, whenever every answer came whole.

The rule (`reconcile`): each figure is the meter's records plus what the server counted that no
record carried — i.e. the larger of the two, per figure (the server never counts less than the
records it answered; the meter's partial lower bounds never exceed what the server counted). With
the server's counters read, the figures are whole (`tokens_source: server`, `tokens_partial`
false) unless a request was still in flight when they were read. Without them (a cloud contestant,
a server that died), the meter's figures stand, partial when a call was cut (`tokens_partial`).
metrics.json keeps the server's counters and the meter's own figures beside the result.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from labctl.engine.container import Engine
from labctl.meter.state import MeterState
from labctl.round.records import RunMetrics, ServerCounters, TokenFigures

_SAMPLE = re.compile(r"^llamacpp:(\w+)(?:\{[^}]*\})?\s+(\S+)\s*$", re.M)


def parse_metrics(text: str) -> ServerCounters | None:
    """llama-server's Prometheus text as counters; None when it lacks the token counters (not
    llama-server, or a build without them)."""
    values: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        try:
            values[name] = float(value)
        except ValueError:
            continue
    need = ("prompt_tokens_total", "tokens_predicted_total")
    if not all(k in values for k in need):
        return None
    return ServerCounters(prompt_processed=int(values["prompt_tokens_total"]),
                          prompt_cached=int(values.get("prompt_tokens_cached_total", 0)),
                          predicted=int(values["tokens_predicted_total"]),
                          busy=values.get("requests_processing", 0) > 0)


SETTLE_S = 180.0
"""How long llama-server may take to release a slot whose client left (its answer's tokens are
counted then) before the counters are taken as they are (`busy`). llama.cpp sees a cancelled task
only between batches (`-b`, 2048 tokens): one batch of a long prompt took 33 s on this project's
2-core CI (SmolLM2-135M, qwen-code's 9.3k-token first prompt, cut by the wall time mid-prompt), so
15 s read the counters before the release. The wait only runs while a request is in flight."""

POLL_S = 2.5
"""Between two reads of /metrics while a request is in flight: well over llama.cpp's
`HTTP_POLLING_SECONDS` (1 s). Why it matters: a handler waiting for its answer checks whether its
client left only when a whole second passes with no result for *anyone*
(`server_response::recv_with_timeout` restarts its 1 s wait on every result it is woken by), and
each /metrics read is a task whose result wakes it. Read faster than once a second, the counters
themselves kept the server from ever noticing the meter had hung up: it went on generating a cut
answer to its end (minutes), and the run's figures came out `busy` (CI, twice)."""


def settle(read: Callable[[], ServerCounters | None], settle_s: float = SETTLE_S, poll_s: float = POLL_S
           ) -> ServerCounters | None:
    """`read()` until no request is in flight, it cannot say (None), or `settle_s` passed."""
    deadline = time.monotonic() + settle_s
    while True:
        counters = read()
        if counters is None or not counters.busy or time.monotonic() > deadline:
            return counters
        time.sleep(poll_s)


def server_counters(docker: Engine, container: str, port: int, settle_s: float = SETTLE_S
                    ) -> ServerCounters | None:
    """The counters of the llama-server in `container` (read from inside it, as its health check
    is: the host cannot reach a run's fenced network), once no request is in flight or `settle_s`
    passed; None when it cannot say (stopped, crashed, no --metrics)."""
    def read() -> ServerCounters | None:
        done = docker("exec", container, "curl", "-fsS", "-m", "5", f"http://127.0.0.1:{port}/metrics",
                      check=False)
        return parse_metrics(done.stdout) if done.returncode == 0 else None
    return settle(read, settle_s)


def reconcile(m: RunMetrics, server: ServerCounters | None, state: MeterState | None) -> RunMetrics:
    """`m` (metrics.json with the meter's token figures) with the figures made whole where the
    server's counters allow, the sources recorded and partial figures marked (the module's rule).
    A run without a model (no token figures) is left as it is."""
    if m.total_tokens is None:
        return m
    partial_calls = state.partial_exchanges if state else 0
    m.output_clamped = state.clamped if state else 0
    meter = TokenFigures(prompt_tokens=m.prompt_tokens or 0, completion_tokens=m.completion_tokens or 0,
                         cached_tokens=m.cached_tokens or 0, total_tokens=m.total_tokens or 0)
    m.partial_calls = partial_calls
    if server is None:
        m.tokens_source, m.tokens_partial = "meter", partial_calls > 0
        return m
    m.server_tokens, m.meter_tokens = server, meter
    m.prompt_tokens = max(meter.prompt_tokens, server.prompt)
    m.completion_tokens = max(meter.completion_tokens, server.predicted)
    m.cached_tokens = max(meter.cached_tokens, server.prompt_cached)
    m.total_tokens = m.prompt_tokens + m.completion_tokens
    m.tokens_source, m.tokens_partial = "server", server.busy
    return m


__all__ = ["POLL_S", "ServerCounters", "parse_metrics", "reconcile", "server_counters", "settle"]
