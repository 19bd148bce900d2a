"""Reading llama-server's counters must not keep it from noticing that its client left (marked
`llama`: the real server built from the pinned source).

The cause of a CI failure, reproduced: a non-streamed answer's handler checks for a closed
connection only after a whole second with no result for anyone, and every /metrics read is a task
whose result wakes it. Read every 0.3 s, the server never cancels the cut answer and stays busy
(the control); read as `labctl.round.tokens.settle` reads (`POLL_S` apart), it cancels and the slot
is released, its predicted tokens counted."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
from labctl.plan import llamaserver as ls
from labctl.round.records import ServerCounters
from labctl.round.tokens import POLL_S, parse_metrics, settle

pytestmark = pytest.mark.llama


@pytest.fixture
def talker(tmp_path: Path, llama_server: Path) -> Iterator[str]:
    """A llama-server whose every answer runs for minutes (`--ignore-eos`, 60,000 tokens)."""
    model = tmp_path / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams(seed=11, context_length=65536))
    settings = ls.ServerSettings(context=65536, max_output=60000, extra_args=("--ignore-eos",))
    with ls.serve(ls.server_argv(llama_server, model, settings, alias="m"), tmp_path / "server.log") as base:
        yield base


def read(base: str) -> ServerCounters | None:
    import httpx
    with httpx.Client(timeout=10, trust_env=False) as c:
        return parse_metrics(c.get(base + "/metrics").text)


def start_and_leave(base: str) -> None:
    """Post a non-streamed completion on a raw socket, wait until the server is generating, hang up."""
    u = urlsplit(base)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Talk."}]}).encode()
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    for _ in range(300):  # up to 30 s for the prompt to be taken in
        got = read(base)
        if got is not None and got.busy and got.predicted == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the server never took the request")
    sock.close()


def test_reading_metrics_fast_keeps_a_left_answer_running_and_settle_lets_it_go(talker: str) -> None:
    start_and_leave(talker)
    # the control: 20 reads 0.3 s apart (~6 s, far past the server's 1 s check) and it is still busy
    fast = [read(talker) for _ in range(20) if time.sleep(0.3) is None]
    assert all(c is not None and c.busy for c in fast), fast
    # settle's own pace: the server notices, cancels, releases the slot and counts what it made
    done = settle(lambda: read(talker), settle_s=60)
    assert done is not None and not done.busy, done
    assert done.predicted > 0, done
    assert POLL_S > 1.0  # llama.cpp's HTTP_POLLING_SECONDS, with a margin
