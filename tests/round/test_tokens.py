"""The reconciliation rule (labctl.round.tokens): llama-server's Prometheus text read as counters,
and a run's figures made whole from them — the meter's records plus what the server counted
that no record carried — with the source and a partial figure marked in metrics.json."""

from __future__ import annotations

from labctl.meter.state import MeterState
from labctl.round.records import RunMetrics, ServerCounters
from labctl.round.tokens import parse_metrics, reconcile

# as the pinned llama.cpp writes it (tools/server/server-task.cpp to_metrics)
METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 9322
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens reused from the cache
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 0
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 41.2
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 500
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
"""


def state(**kw: int) -> MeterState:
    return MeterState(alias="run-1", dialect="openai", started_at=0.0, **kw)


def test_parse_llama_server_metrics() -> None:
    got = parse_metrics(METRICS)
    assert got == ServerCounters(prompt_processed=9322, prompt_cached=0, predicted=500, busy=False)
    assert parse_metrics(METRICS.replace("requests_processing 0", "requests_processing 1")).busy  # type: ignore[union-attr]
    assert parse_metrics("# not llama-server\nup 1\n") is None


def test_the_issue_run_cut_mid_stream_counts_the_servers_tokens() -> None:
    """qwen-code stopped by its wall time during its first streamed answer: the meter has no usage
    (0, one partial call); the server counted a 9,322-token prompt and 500 generated tokens."""
    m = RunMetrics(prompt_tokens=0, completion_tokens=0, cached_tokens=0, total_tokens=0)
    reconcile(m, parse_metrics(METRICS), state(partial_exchanges=1))
    assert (m.prompt_tokens, m.completion_tokens, m.total_tokens) == (9322, 500, 9822)
    assert m.tokens_source == "server" and m.tokens_partial is False and m.partial_calls == 1
    assert m.meter_tokens is not None and m.meter_tokens.total_tokens == 0
    assert m.server_tokens is not None and m.server_tokens.predicted == 500


def test_whole_records_and_a_busy_server() -> None:
    """Every answer whole: meter and server agree and nothing changes. A server still generating
    when read (its counters miss the answer in flight) leaves the figure marked partial."""
    m = RunMetrics(prompt_tokens=9322, completion_tokens=500, cached_tokens=0, total_tokens=9822)
    reconcile(m, parse_metrics(METRICS), state(clamped=2))
    assert m.total_tokens == 9822 and m.tokens_partial is False and m.output_clamped == 2
    busy = ServerCounters(prompt_processed=100, prompt_cached=0, predicted=10, busy=True)
    m = RunMetrics(prompt_tokens=120, completion_tokens=30, cached_tokens=20, total_tokens=150)
    reconcile(m, busy, state())
    assert (m.prompt_tokens, m.completion_tokens, m.total_tokens) == (120, 30, 150)  # never below the meter
    assert m.tokens_partial is True


def test_without_server_counters_the_meters_figure_stands_marked() -> None:
    """A cloud contestant (or a server that died): the meter's figures, partial when a call was cut."""
    m = RunMetrics(prompt_tokens=1200, completion_tokens=37, cached_tokens=0, total_tokens=1237)
    reconcile(m, None, state(partial_exchanges=1))
    assert m.total_tokens == 1237 and m.tokens_source == "meter" and m.tokens_partial is True
    whole = RunMetrics(prompt_tokens=1, completion_tokens=1, cached_tokens=0, total_tokens=2)
    assert reconcile(whole, None, state()).tokens_partial is False
    no_model = RunMetrics(wall_time_s=3.0)  # oracle, nop: no token figures to make whole
    assert reconcile(no_model, None, None).tokens_source is None
