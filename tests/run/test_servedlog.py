"""The test-side reader of llama-server's log (tests/run/servedlog.py) on lines the pinned build printed."""

# ruff: noqa: E501  (the log lines exactly as llama-server prints them)
from __future__ import annotations

from tests.run.servedlog import served_context, served_requests

LOG = """\
0.06.385.237 I srv    load_model: initializing, n_slots = 1, n_ctx_slot = 8192, kv_unified = 'false'
5.03.663.301 I slot print_timing: id  0 | task 562 | n_gen =    152, tg =   3.80 t/s, tg_3s =   1.27 t/s
7.18.095.829 I slot print_timing: id  0 | task 562 | prompt eval time =      21.06 ms /     1 tokens (   21.06 ms per token,    47.49 tokens per second)
7.18.096.661 I slot print_timing: id  0 | task 562 |        eval time =  174135.09 ms /   256 tokens (  682.88 ms per token,     1.46 tokens per second)
7.18.098.681 I slot print_timing: id  0 | task 562 |       total time =  174156.15 ms /   257 tokens
7.18.103.311 I slot      release: id  0 | task 562 | stop processing: n_tokens = 303, truncated = 0
7.18.226.799 I slot launch_slot_: id  0 | task 819 | processing task, is_child = 0
8.20.271.001 W srv          stop: cancel task, id_task = 819
8.22.528.640 I slot      release: id  0 | task 819 | stop processing: n_tokens = 100, truncated = 0
9.00.000.000 I slot launch_slot_: id  0 | task 900 | processing task, is_child = 0
9.00.000.100 E srv    send_error: task id = 900, error: request (9322 tokens) exceeds the available context size (8192 tokens), try increasing it
9.00.000.200 I slot      release: id  0 | task 900 | stop processing: n_tokens = 0, truncated = 0
9.10.000.000 I slot launch_slot_: id  0 | task 901 | processing task, is_child = 0
"""


def test_requests_as_the_server_counted_them() -> None:
    done, cut, refused, in_flight = served_requests(LOG)
    assert (done.task, done.prompt_processed, done.generated, done.n_tokens) == (562, 1, 256, 303)
    assert not done.cut and done.usage_tokens == 304  # the request's usage: 48 prompt + 256 completion
    assert cut.cut and cut.generated is None and cut.usage_tokens == 101
    assert refused.released and refused.usage_tokens == 0 and not refused.cut
    assert in_flight.launched and not in_flight.released
    assert served_context(LOG) == 8192
