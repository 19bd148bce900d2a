"""A cloud contestant end to end (issue #6): a sealed round whose one contestant is
`kind: cloud, provider: anthropic`, driven by mini-swe-agent through the real runner, against a
stand-in upstream that speaks the real Anthropic messages format (tests/fake_upstream.py).

The stand-in runs in a container of its own (the labctl image, tests/ mounted read-only), on a
labelled network of the test's; once the runner has created the run's egress network the test
connects the stand-in to it under the alias the contestant's `base_url` names, and disconnects it
before the runner's own cleanup removes that network. Nothing here contacts anything but loopback
and these containers. The scripted replies do the task: one bash tool call that writes, commits and
pushes hello.txt, then one that submits.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.round.layout import read_result
from labctl.run.runner import open_round, run_round
from tests.fake_upstream import MODEL as FAKE_MODEL
from tests.run.test_runner import build, derived_lab, labelled_now, runner_env, seal  # noqa: F401 (fixture)
from tests.scripted_round import PORT, upstream_container

pytestmark = pytest.mark.docker

TESTS = Path(__file__).resolve().parents[2]  # the checkout: the container imports `tests.fake_upstream`
ALIAS = "fake-anthropic"
KEY_ENV = "LABCTL_TEST_KEY"
PLACEHOLDER = "labctl-proxy-placeholder"  # the agent's dummy key (labctl/agents/mini_swe_agent.py)
WORK = ("printf 'Hello, lab!\\n' > hello.txt && git add hello.txt && git commit -qm hi"
        " && git push -q origin HEAD")
SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
REPLIES = [
    {"text": "I will write the greeting, commit it and push the branch.",
     "calls": [["bash", {"command": WORK}]]},
    {"text": "Pushed. Submitting.", "calls": [["bash", {"command": SUBMIT}]]},
]

# Served inside the upstream container: FakeUpstream on 0.0.0.0, every request it receives appended
# to /out/received.jsonl (the test reads it from the mounted directory).
SERVE = f"""
import asyncio, json, os, sys
sys.path.insert(0, "/tests")
from tests.fake_upstream import FakeUpstream, Reply, start_fake

class Recording(FakeUpstream):
    async def _receive(self, request, dialect):
        # /out/fail.json, while it exists: answer every call with its status (an upstream outage)
        fail = "/out/fail.json"
        self.fail_status = json.load(open(fail))["status"] if os.path.exists(fail) else None
        got = await super()._receive(request, dialect)
        r = self.received[-1]
        with open("/out/received.jsonl", "a") as f:
            f.write(json.dumps({{"path": r.path, "headers": r.headers, "body": r.body}}) + "\\n")
        return got

fake = Recording(require_key=os.environ["{KEY_ENV}"])
for r in json.load(open("/out/replies.json")):
    fake.replies.append(Reply(text=r["text"], tool_calls=[tuple(c) for c in r["calls"]]))
fake.default = Reply(text="Submitting.", tool_calls=[("bash", {{"command": "{SUBMIT}"}})])

async def main():
    await start_fake(fake, "0.0.0.0", {PORT})
    print("listening", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.contextmanager
def upstream(image: str, out: Path, labels: dict[str, str], monkeypatch: pytest.MonkeyPatch,
             fail_status: int | None = None) -> Iterator[str]:
    """The stand-in upstream's container (its name), healthy, from the labctl `image`; the runner
    patched to put it on each run's egress network as `ALIAS` and take it off before cleanup."""
    out.mkdir()
    out.chmod(0o777)  # the labctl image runs as its own user
    (out / "serve.py").write_text(SERVE)
    (out / "replies.json").write_text(json.dumps(REPLIES))
    if fail_status is not None:
        (out / "fail.json").write_text(json.dumps({"status": fail_status}))
    with upstream_container(image, out, labels, argv=["/out/serve.py"], mount=TESTS, key_env=KEY_ENV,
                            alias=ALIAS, kind="upstream") as name:
        yield name


CLOUD = ("  - id: claude\n    kind: cloud\n    provider: anthropic\n    model: claude-sonnet-4-20250514\n"
         f"    api_key_env: {KEY_ENV}\n    base_url: http://{ALIAS}:{PORT}\n")


def test_cloud_contestant_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     labctl_labels: dict[str, str]) -> None:
    """One anthropic contestant, mini-swe-agent, the real runner: the run is done and Complete, the
    upstream saw only the real key (never the agent's placeholder), and the transcript holds every
    exchange with its usage."""
    t0 = time.monotonic()
    lab = derived_lab(tmp_path, CLOUD)
    build(lab)
    key = f"sk-ant-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, key)
    rd = seal(lab, tmp_path)
    ctx = open_round(rd, lab)
    out = tmp_path / "upstream"
    with upstream(ctx.images["labctl"], out, labctl_labels, monkeypatch):
        [summary] = run_round(ctx)
    run = rd / "runs" / summary.run_id
    agent_log = (run / "agent.log").read_text(errors="replace") if (run / "agent.log").is_file() else ""
    assert summary.status == "done", (summary.reason, agent_log[-3000:])

    received = [json.loads(x) for x in (out / "received.jsonl").read_text().splitlines()]
    assert len(received) == len(REPLIES), [r["body"].get("messages", [])[-1:] for r in received]
    for r in received:
        headers = {k.lower(): v for k, v in r["headers"].items()}
        assert r["path"] == "/v1/messages"
        assert headers.get("x-api-key") == key  # the meter's key, injected the Anthropic way
        assert PLACEHOLDER not in json.dumps(r)  # the agent's dummy key never left the meter
        assert r["body"]["model"] == "claude-sonnet-4-20250514"
    # The second request carries the first command's output back as a tool result.
    assert "tool_result" in json.dumps(received[1]["body"]["messages"])

    records = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    exchanges = [r for r in records if r.get("kind") == "exchange"]
    assert len(exchanges) == len(REPLIES)
    for r in exchanges:
        assert r["dialect"] == "anthropic" and r["path"] == "/v1/messages"
        assert r["usage"]["prompt_tokens"] > 0 and r["usage"]["completion_tokens"] > 0, r["usage"]
    # Neither the key nor the upstream's model names reach anything the agent or a reader sees.
    seen = (run / "transcript.jsonl").read_text() + agent_log
    assert key not in seen and FAKE_MODEL not in seen and "claude-sonnet" not in seen

    assert summary.outcome == "Complete", (summary.outcome, summary.metrics)
    reward = json.loads((run / "verifier" / "reward.json").read_text())
    assert reward["reward"] == 1 and all(reward["checks"].values()), reward
    assert labelled_now(ctx.sealed.round) == {"containers": [], "networks": [], "volumes": []}
    print(f"cloud round took {time.monotonic() - t0:.1f}s")


def test_upstream_outage_errors_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        labctl_labels: dict[str, str]) -> None:
    """The provider answers 500 to everything: the harness could not get the model's answers, so
    the run is `errored` and ungraded (not a model that Failed), stopped at once; once the provider
    is back, `--retry-errored` runs it again to Complete."""
    lab = derived_lab(tmp_path, CLOUD, wall="2m")
    build(lab)
    monkeypatch.setenv(KEY_ENV, f"sk-ant-test-{uuid.uuid4().hex}")
    rd = seal(lab, tmp_path)
    ctx = open_round(rd, lab)
    out = tmp_path / "upstream"
    with upstream(ctx.images["labctl"], out, labctl_labels, monkeypatch, fail_status=500):
        [summary] = run_round(ctx)
        [skipped] = run_round(ctx)  # a plain resume leaves an errored run alone
        (out / "fail.json").unlink()  # the provider is back
        [again] = run_round(ctx, retry_errored=True)
    assert skipped.skipped and skipped.status == "errored"
    assert again.status == "done" and again.outcome == "Complete", (again.reason, again.metrics)
    assert read_result(rd, again.run_id).attempts == 2
    assert summary.status == "errored", (summary.status, summary.reason)
    assert summary.reason and summary.reason.startswith("upstream error:"), summary.reason
    assert summary.outcome is None  # ungraded: the model never had its chance
    # stopped at the outage (by the meter's error), not by the 2-minute wall-time budget
    assert summary.metrics.upstream_errored is True and summary.metrics.stopped_by == "upstream_error"
    assert labelled_now(ctx.sealed.round) == {"containers": [], "networks": [], "volumes": []}
