"""Live progress in the tracking comment: rendering from real agent events, throttling (only on change,
at most every interval), GitHub's secondary rate limit honoured (403 with retry-after, against the fake
GitHub), hostile tool arguments kept inert, the final report replacing the progress, and a real timer
thread fed from another thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bot.action.github_api import GitHubClient, GitHubError
from bot.action.progress import ProgressReporter, inline_code
from bot.action.redact import Redactor
from bot.agent.events import AgentStart, MessageEnd, ToolEnd, ToolStart, TurnStart
from bot.llm.messages import AssistantMessage, Cost, ToolCall, Usage
from tests.fake_github import FakeGitHub


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _events(turn: int, call_id: str, tool: str, arguments: dict[str, Any], *, cost: float | None = 0.01,
            is_error: bool = False) -> list[dict[str, Any]]:
    """One turn as the worker streams it: the same shapes as `opi --json` (Event.model_dump)."""
    message = AssistantMessage(provider="anthropic", model="m", api="anthropic-messages",
                               content=[ToolCall(id=call_id, name=tool, arguments=arguments)],
                               usage=Usage(input=1000, output=200), cost=Cost(total=cost))
    return [event.model_dump(mode="json") for event in (
        TurnStart(turn=turn), MessageEnd(message=message),
        ToolStart(tool_call=ToolCall(id=call_id, name=tool, arguments=arguments)),
        ToolEnd(tool_call_id=call_id, tool_name=tool, is_error=is_error, text="..."),
    )]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _reporter(edits: list[str], clock: Clock, **kwargs: Any) -> ProgressReporter:
    return ProgressReporter(edits.append, header="<!-- opi-bot -->\nopi is on it ([run](https://x/run))",
                            clock=clock, sleep=lambda _: None, **kwargs)


def test_the_comment_shows_step_checklist_turns_and_cost(clock: Clock) -> None:
    edits: list[str] = []
    progress = _reporter(edits, clock)
    progress.feed(AgentStart(model="anthropic:m").model_dump(mode="json"))
    for event in _events(1, "c1", "read", {"path": "src/app.py"}) + \
            _events(2, "c2", "bash", {"command": "pytest -q\necho done"}, is_error=True):
        progress.feed(event)
    progress.feed(ToolStart(tool_call=ToolCall(id="c3", name="edit", arguments={"path": "src/app.py"}))
                  .model_dump(mode="json"))
    clock.now += 10
    assert progress.tick()
    body = edits[-1]
    assert body.startswith("<!-- opi-bot -->\nopi is on it")
    assert "**Working…** turn 2 · 2.4k tokens · $0.0200 so far" in body
    assert "Now: running `edit` `src/app.py`" in body
    assert body.endswith("- ✅ `read` `src/app.py`\n- ❌ `bash` `pytest -q`\n- ⏳ `edit` `src/app.py`")


def test_edits_only_on_change_and_at_most_every_interval(clock: Clock) -> None:
    edits: list[str] = []
    progress = _reporter(edits, clock)
    for event in _events(1, "c1", "read", {"path": "a.py"}):
        progress.feed(event)
    assert not progress.tick()  # the tracking comment was just posted
    clock.now += 9.9
    assert not progress.tick()
    clock.now += 0.1
    assert progress.tick() and len(edits) == 1
    clock.now += 60
    assert not progress.tick() and len(edits) == 1  # nothing changed
    for event in _events(2, "c2", "grep", {"pattern": "TODO"}):
        progress.feed(event)
    assert progress.tick() and len(edits) == 2  # changed, and the interval has long passed
    for event in _events(3, "c3", "grep", {"pattern": "FIXME"}):
        progress.feed(event)
    clock.now += 5
    assert not progress.tick()  # changed, but only 5 s after the last edit
    for turn in range(4, 50):  # a burst of events still makes one edit per interval
        for event in _events(turn, f"c{turn}", "read", {"path": f"f{turn}.py"}):
            progress.feed(event)
    clock.now += 5
    assert progress.tick() and len(edits) == 3 and "turn 49" in edits[-1]


def test_the_checklist_is_bounded(clock: Clock) -> None:
    edits: list[str] = []
    progress = _reporter(edits, clock, max_items=5)
    for turn in range(1, 41):
        for event in _events(turn, f"c{turn}", "read", {"path": f"f{turn}.py"}):
            progress.feed(event)
    text = progress.render()
    assert "- … 35 earlier tool calls" in text and text.count("- ✅") == 5 and "`f40.py`" in text


def test_an_unknown_price_is_never_shown_as_a_number(clock: Clock) -> None:
    progress = _reporter([], clock)
    for event in _events(1, "c1", "read", {"path": "a"}) + _events(2, "c2", "read", {"path": "b"}, cost=None):
        progress.feed(event)
    assert "unknown price so far" in progress.render() and "$" not in progress.render()


def test_hostile_tool_arguments_stay_inert(clock: Clock) -> None:
    progress = _reporter([], clock)
    hostile = "x``` </details> @octocat\n## Approved <img src=x onerror=alert(1)>"
    for event in _events(1, "c1", "bash", {"command": hostile}):
        progress.feed(event)
    text = progress.render()
    line = next(line for line in text.splitlines() if line.startswith("- ❌") or line.startswith("- ✅"))
    assert line == "- ✅ `bash` ````x``` </details> @octocat````"
    assert "## Approved" not in text and "\n## " not in text


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "`plain`"), ("a`b", "``a`b``"), ("`edge`", "`` `edge` ``"), ("", "` `"),
    ("line1\nline2", "`line1 line2`"), ("x" * 100, "`" + "x" * 59 + "…`"),
])
def test_inline_code_cannot_be_closed(text: str, expected: str) -> None:
    assert inline_code(text) == expected


def test_a_rate_limited_edit_backs_off_for_retry_after(clock: Clock) -> None:
    calls: list[str] = []

    def edit(body: str) -> None:
        calls.append(body)
        if len(calls) == 1:
            raise GitHubError("rate limit", status=403, retry_after=45.0)

    progress = ProgressReporter(edit, clock=clock)
    for event in _events(1, "c1", "read", {"path": "a"}):
        progress.feed(event)
    clock.now += 10
    assert not progress.tick() and len(calls) == 1
    clock.now += 44
    assert not progress.tick() and len(calls) == 1  # GitHub said 45 s
    clock.now += 1
    assert progress.tick() and len(calls) == 2


def test_repeated_failures_stop_progress_but_not_the_report(clock: Clock) -> None:
    calls: list[str] = []
    logs: list[str] = []

    def edit(body: str) -> None:
        calls.append(body)
        if body != "REPORT":
            raise GitHubError("could not edit comment 1: HTTP 502", status=502)

    progress = ProgressReporter(edit, clock=clock, log=logs.append)
    for turn in range(1, 20):
        for event in _events(turn, f"c{turn}", "read", {"path": f"{turn}"}):
            progress.feed(event)
        clock.now += 11
        progress.tick()
    assert len(calls) == 5 and any("progress updates stop" in line for line in logs)
    progress.finish("REPORT")
    assert calls[-1] == "REPORT"


def test_finish_waits_out_a_rate_limit_then_replaces_the_progress() -> None:
    calls: list[str] = []
    sleeps: list[float] = []

    def edit(body: str) -> None:
        calls.append(body)
        if len(calls) == 1:
            raise GitHubError("secondary rate limit", status=429, retry_after=20.0)

    progress = ProgressReporter(edit, sleep=sleeps.append)
    progress.finish("final report")
    assert calls == ["final report", "final report"] and sleeps == [20.0]
    progress.feed(_events(1, "c", "read", {"path": "a"})[0])
    assert not progress.tick()  # closed: no progress edit can overwrite the report


def test_finish_raises_other_failures_for_the_caller() -> None:
    def edit(body: str) -> None:
        raise GitHubError("could not edit comment 1: HTTP 404: Not Found", status=404)

    with pytest.raises(GitHubError, match="HTTP 404"):
        ProgressReporter(edit).finish("report")


# -- against the fake GitHub and with the real timer thread ---------------------------------------------------
def test_a_403_secondary_rate_limit_from_github_is_honoured(github: FakeGitHub, clock: Clock) -> None:
    client = GitHubClient(github.token, "o/r", api_url=github.url, redact=Redactor(), sleep=lambda _: None)
    comment = client.create_comment(1, "working…")
    github.fail("PATCH", r"/repos/o/r/issues/comments/\d+", 403,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                headers={"Retry-After": "30"})
    progress = ProgressReporter(lambda body: client.edit_comment(comment.id, body, retry=False), clock=clock)
    for event in _events(1, "c1", "read", {"path": "a.py"}):
        progress.feed(event)
    clock.now += 10
    assert not progress.tick()
    patches = github.calls("PATCH")
    assert len(patches) == 1 and github.comments[comment.id]["body"] == "working…"
    clock.now += 29
    assert not progress.tick() and len(github.calls("PATCH")) == 1
    clock.now += 1
    assert progress.tick() and "`a.py`" in github.comments[comment.id]["body"]
    progress.finish("## Done")
    assert github.comments[comment.id]["body"] == "## Done"


def test_the_timer_thread_edits_while_events_arrive_from_another_thread(github: FakeGitHub) -> None:
    client = GitHubClient(github.token, "o/r", api_url=github.url, redact=Redactor())
    comment = client.create_comment(1, "working…")
    edited = threading.Event()

    def edit(body: str) -> None:
        client.edit_comment(comment.id, body, retry=False)
        edited.set()

    progress = ProgressReporter(edit, min_interval=0.0)
    progress.start(poll=0.01)
    reader = threading.Thread(target=lambda: [progress.feed(event) for event in
                                              _events(1, "c1", "read", {"path": "a.py"})])
    reader.start()
    reader.join()
    assert edited.wait(30)
    progress.finish("## Done")
    assert github.comments[comment.id]["body"] == "## Done"
    edits = github.comments[comment.id]["edits"]
    progress.tick()
    assert github.comments[comment.id]["edits"] == edits  # nothing after the report
