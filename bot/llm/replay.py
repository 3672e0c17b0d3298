"""A model that replays a recorded session: `--model replay:SESSION.jsonl`.

The recorded assistant messages of the session's active branch come back in order while the agent runs
the tool calls for real. Before answering turn N+1 the model checks the tool results the agent actually
got for turn N (the tool_result messages after the last assistant message in the request) against the
recorded ones, and stops with `ReplayDivergence` when they differ in a way that matters:

- a result is missing, or `is_error` flipped, or
- the texts differ after normalising the parts that legitimately change between runs: line endings and
  trailing whitespace, the recorded and the current workspace path, temp paths (``/tmp/...``,
  ``$RUNNER_TEMP``, macOS ``/var/folders/...``), durations (``0.03s``, ``12 ms``), ISO timestamps and
  hex ids of 7+ characters containing a digit (git commit hashes differ on every run).

This module never reads a file: the agent layer (`bot.agent.replay_source`) reads the session with the
one session reader and hands over the active branch as a `Recording`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.llm.base import (
    Done,
    ModelInfo,
    ModelRequest,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from bot.llm.errors import ConfigError, ModelError
from bot.llm.messages import (
    AssistantMessage,
    Cost,
    Message,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    now_ms,
)

PROVIDER = "replay"
_EXCERPT = 400  # characters of expected/actual text quoted in a divergence error


class ReplayError(ModelError):
    """The replay cannot go on (recording exhausted, or it stopped where the recorded run stopped)."""

    retryable = False


class ReplayDivergence(ReplayError):
    """A real tool result differs from the recorded one in a way that matters."""

    def __init__(self, message: str, *, tool_call: ToolCall, expected: str, actual: str) -> None:
        self.tool_call = tool_call
        self.expected = expected
        self.actual = actual
        super().__init__(message)  # the message already starts with "replay"


@dataclass
class Recording:
    """The active branch of a recorded session, as the replay needs it."""

    path: Path
    header: dict[str, Any]
    assistants: list[AssistantMessage]
    results: dict[str, ToolResultMessage]  # by tool_call_id
    summaries: list[str] = field(default_factory=list)  # compaction summaries, in order
    # (text of a user message, number of recorded assistant messages before it)
    user_turns: list[tuple[str, int]] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)  # 1-based line numbers

    @property
    def cwd(self) -> str | None:
        value = self.header.get("cwd")
        return value if isinstance(value, str) and value else None

    @classmethod
    def from_branch(cls, path: Path, header: dict[str, Any], branch: Iterable[Message | str],
                    skipped_lines: Iterable[int] = ()) -> Recording:
        """The recording of an active branch, oldest first: its messages, and each compaction as its
        summary text. Raises ConfigError when there is no assistant message to replay."""
        recording = cls(path=path, header=header, assistants=[], results={}, skipped_lines=list(skipped_lines))
        for item in branch:
            if isinstance(item, str):
                recording.summaries.append(item)
            elif isinstance(item, AssistantMessage):
                recording.assistants.append(item)
            elif isinstance(item, UserMessage):
                recording.user_turns.append((item.text, len(recording.assistants)))
            else:
                recording.results[item.tool_call_id] = item
        if not recording.assistants:
            raise ConfigError(f"replay: {path} has no assistant messages on its active branch, so there is "
                              "nothing to replay")
        return recording


# -- normalisation ---------------------------------------------------------------------------------

_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")
_DURATION = re.compile(r"\b\d+(\.\d+)?\s?(ms|s|sec|secs|seconds|m|min)\b")
_HEX_ID = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,64}\b")
_TEMP_PATH = re.compile(r"(/private)?(/tmp|/var/tmp|/var/folders)/[^\s'\"`:,)\]]*")


def _volatile_roots(recorded_cwd: str | None, workspace: Path) -> list[str]:
    roots = {str(workspace), str(workspace.resolve())}
    if recorded_cwd:
        roots.add(recorded_cwd.rstrip("/") or recorded_cwd)
    # Longest first so that /github/workspace/sub is replaced before /github.
    return sorted((root for root in roots if root not in ("", "/")), key=len, reverse=True)


def normalise(text: str, roots: list[str]) -> str:
    """The text with its run-to-run volatile parts replaced by placeholders (see the module docstring)."""
    for root in roots:
        text = text.replace(root, "<workspace>")
    for temp_root in {os.environ.get("RUNNER_TEMP", ""), tempfile.gettempdir()} - {"", "/"}:
        text = text.replace(temp_root, "/tmp")
    text = _TEMP_PATH.sub("<tmp>", text)
    text = _ISO_TIME.sub("<time>", text)
    text = _DURATION.sub("<duration>", text)
    text = _HEX_ID.sub("<hex>", text)
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + f"… [{len(text) - _EXCERPT} more chars]"


# -- the model ---------------------------------------------------------------------------------------

class ReplayModel:
    """Implements the `Model` protocol by replaying a recorded session (see the module docstring)."""

    def __init__(self, recording: Recording, *, workspace: Path | None = None,
                 context_window: int = 200_000) -> None:
        self.recording = recording
        self.workspace = workspace or Path.cwd()
        recorded_model = str(self.recording.header.get("model") or self.recording.assistants[0].model)
        self.info = ModelInfo(provider=PROVIDER, id=recorded_model, api="replay",
                              context_window=context_window)
        self._roots = _volatile_roots(self.recording.cwd, self.workspace)
        self._cursor: int | None = None  # index of the next recorded assistant message
        self._summaries_used = 0

    @property
    def replayed(self) -> int:
        return self._cursor or 0

    @property
    def remaining(self) -> int:
        return len(self.recording.assistants) - self.replayed

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        if _is_summary_request(request):
            yield from self._stream_message(self._summary_message())
            return
        if self._cursor is None:
            self._cursor = self._start_position(request.messages)
        elif self._cursor > 0:
            self._check_results(self.recording.assistants[self._cursor - 1], request.messages)
        message = self._next_recorded()
        self._cursor += 1
        yield from self._stream_message(message)

    def _start_position(self, messages: list[Message]) -> int:
        """Where this run starts in the recording. A continued session already holds the earlier turns:
        start after the recorded user message this request ends with (or after the turns in context)."""
        in_context = sum(1 for m in messages if isinstance(m, AssistantMessage))
        last = messages[-1] if messages else None
        if isinstance(last, UserMessage):
            for text, position in self.recording.user_turns:
                if position >= in_context and text == last.text:
                    return position
        return in_context

    def _next_recorded(self) -> AssistantMessage:
        assert self._cursor is not None
        total = len(self.recording.assistants)
        if self._cursor >= total:
            raise ReplayError(f"replay: the recorded session {self.recording.path} has no more assistant messages "
                              f"(all {total} were replayed) but the agent asked for another turn")
        recorded = self.recording.assistants[self._cursor]
        if recorded.stop_reason == "aborted":
            raise ReplayError(f"replay: the recorded run was aborted at assistant message {self._cursor + 1} of "
                              f"{total}; the replay stops where it stopped")
        return recorded

    def _stream_message(self, recorded: AssistantMessage) -> Iterator[StreamEvent]:
        message = recorded.model_copy(deep=True)
        message.provider, message.api, message.timestamp = PROVIDER, "replay", now_ms()
        message.cost = Cost.zero()  # a replay spends nothing; the recorded usage is kept for the bounds
        for index, block in enumerate(message.content):
            if isinstance(block, TextContent):
                yield TextDelta(index=index, delta=block.text)
            elif isinstance(block, ThinkingContent):
                yield ThinkingDelta(index=index, delta=block.thinking)
            elif isinstance(block, ToolCall):
                yield ToolCallDelta(index=index, id=block.id, name=block.name, delta=json.dumps(block.arguments))
        yield Done(message=message)

    def _summary_message(self) -> AssistantMessage:
        summaries = self.recording.summaries
        if self._summaries_used < len(summaries):
            text = summaries[self._summaries_used]
            self._summaries_used += 1
        else:
            # The live run compacts where the recorded one did not: summarise deterministically.
            text = "Replayed session: the earlier turns were compacted during the replay."
        return AssistantMessage(content=[TextContent(text=text)], provider=PROVIDER, model=self.info.id,
                                api="replay")

    def _check_results(self, previous: AssistantMessage, messages: list[Message]) -> None:
        last = next((m for m in reversed(messages) if isinstance(m, AssistantMessage)), None)
        if last is None or [c.id for c in last.tool_calls] != [c.id for c in previous.tool_calls]:
            return  # a compaction just cut the replayed turn out of the context: nothing left to compare
        actual = _results_since_last_assistant(messages)
        for call in previous.tool_calls:
            expected = self.recording.results.get(call.id)
            if expected is None:
                continue  # the recorded run stopped before this result existed: nothing to compare with
            got = actual.get(call.id)
            if got is None:
                raise ReplayDivergence(
                    f"replay diverged at tool call {call.name} ({call.id}, args {_args(call)}): "
                    "the agent sent no result for it", tool_call=call, expected=expected.text, actual="")
            self._compare(call, expected, got)

    def _compare(self, call: ToolCall, expected: ToolResultMessage, got: ToolResultMessage) -> None:
        where = f"tool call {call.name} ({call.id}, args {_args(call)})"
        if expected.is_error != got.is_error:
            state = {True: "an error", False: "a success"}
            raise ReplayDivergence(
                f"replay diverged at {where}: the recorded result was {state[expected.is_error]}, the real "
                f"one is {state[got.is_error]}.\nexpected: {_excerpt(expected.text)}\nactual: "
                f"{_excerpt(got.text)}", tool_call=call, expected=expected.text, actual=got.text)
        want, have = normalise(expected.text, self._roots), normalise(got.text, self._roots)
        if want != have:
            raise ReplayDivergence(
                f"replay diverged at {where}: the result differs from the recording "
                f"(after normalising paths, times and hashes).\n{_first_difference(want, have)}",
                tool_call=call, expected=expected.text, actual=got.text)


def _results_since_last_assistant(messages: list[Message]) -> dict[str, ToolResultMessage]:
    results: dict[str, ToolResultMessage] = {}
    for message in reversed(messages):
        if isinstance(message, AssistantMessage):
            break
        if isinstance(message, ToolResultMessage):
            results.setdefault(message.tool_call_id, message)
    return results


def _is_summary_request(request: ModelRequest) -> bool:
    """Compaction asks the model for a summary without offering tools; an agent turn always offers them
    (an agent without tools has nothing to replay against, so the ambiguity does not arise)."""
    return not request.tools and bool(request.messages) and "summar" in (request.system or "").lower()


def _args(call: ToolCall) -> str:
    text = json.dumps(call.arguments, ensure_ascii=False)
    return text if len(text) <= 200 else text[:200] + "…"


def _first_difference(want: str, have: str) -> str:
    want_lines, have_lines = want.split("\n"), have.split("\n")
    for number, (a, b) in enumerate(zip(want_lines, have_lines, strict=False), start=1):
        if a != b:
            return f"first difference at line {number}:\nexpected: {_excerpt(a)}\nactual:   {_excerpt(b)}"
    shorter, longer = ("expected", "actual") if len(want_lines) < len(have_lines) else ("actual", "expected")
    return (f"the {shorter} text ends after line {min(len(want_lines), len(have_lines))} while the {longer} "
            f"goes on:\nexpected: {_excerpt(want)}\nactual:   {_excerpt(have)}")
