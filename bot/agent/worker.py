"""The agent worker (`python -I -m bot.agent.worker`): the agent half of the action's broker/agent split.

The broker (`opi action`) holds every secret and starts this process under an unprivileged uid with a
scrubbed environment. It reads one JSON request on stdin (the prompt, the settings, where the session goes)
and runs the agent loop; the model is reached through the broker's loopback proxy with a per-run token that
is worthless anywhere else. It writes the agent's events to stdout as JSON lines, as `opi --json` does, then
one `worker_result` line. Nothing here knows about GitHub, and nothing here may import the broker.

The request and the result are plain JSON so that the broker can treat what comes back as untrusted data:
tool subprocesses run as the same uid as this process and could, in principle, tamper with it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from bot.agent import events as ev
from bot.agent.loop import Agent, RunResult
from bot.tools.base import Tool, ToolContext, ToolOutput
from bot.tools.shapes import mask_token_shapes

WORKER_RESULT = "worker_result"
WORKER_SESSION = "worker_session"
# Streamed deltas would multiply the broker's reading work for nothing it shows.
_SKIPPED_EVENTS = frozenset({"message_update"})


class WorkerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace: str
    prompt: str
    settings: dict[str, Any]
    fork_session: str | None = None
    session_metadata: dict[str, Any] = Field(default_factory=dict)
    ci_logs_dir: str | None = None


class WorkerResult(BaseModel):
    """What the broker reports: `usage` and `cost` are this run's spend (`Usage`, `Cost` as JSON; a cost
    component is None when the price is unknown, never 0)."""

    model_config = ConfigDict(extra="ignore")

    type: str = WORKER_RESULT
    outcome: str
    final_text: str = ""
    error: str = ""
    model: str = ""
    turns: int = 0
    compactions: int = 0
    duration_seconds: float = 0.0
    usage: dict[str, int] = Field(default_factory=dict)
    cost: dict[str, float | None] = Field(default_factory=dict)
    session_path: str | None = None
    setup_failed: bool = False


class _EventWriter:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.lock = threading.Lock()  # parallel read-only tools emit from worker threads

    def write(self, data: dict[str, Any]) -> None:
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def __call__(self, event: ev.Event) -> None:
        if event.type not in _SKIPPED_EVENTS:
            self.write(event.model_dump(mode="json"))


def run_worker(request: WorkerRequest, out: IO[str]) -> int:
    from bot.agent.config import Settings
    from bot.agent.runtime import RunSetupError, SessionOptions, prepare_run

    writer = _EventWriter(out)
    settings = Settings.model_validate(request.settings)
    options = SessionOptions(fork=request.fork_session, metadata=request.session_metadata)
    try:
        with prepare_run(settings, Path(request.workspace), session=options, wrap_tool=mask_shapes,
                         extra_tools=_extra_tools(request)) as run:
            if run.handle.path is not None:
                writer.write({"type": WORKER_SESSION, "path": str(run.handle.path)})
            run.agent.subscribe(writer)
            result = _run(run.agent, request.prompt)
            writer.write(WorkerResult(
                outcome=result.outcome.value, final_text=result.final_text, error=result.error or "",
                model=run.agent.model.info.spec, turns=result.turns, compactions=result.compactions,
                duration_seconds=result.duration_seconds, usage=result.run_usage.model_dump(mode="json"),
                cost=result.run_cost.model_dump(mode="json"),
                session_path=str(run.handle.path) if run.handle.path else None,
            ).model_dump(mode="json"))
    except RunSetupError as exc:  # bad model, missing key, unknown tool, unwritable directory
        writer.write(WorkerResult(outcome="error", error=f"{type(exc.error).__name__}: {exc.error}",
                                  model=settings.model, setup_failed=True).model_dump(mode="json"))
        return 1
    return 0


def _run(agent: Agent, prompt: str) -> RunResult:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return agent.run(prompt)
    finally:
        signal.signal(signal.SIGTERM, previous)
        agent.tool_context.cleanup()  # bash logs and other per-run temp files


def _extra_tools(request: WorkerRequest) -> list[Tool]:
    """`ci_log` when the broker lent the run the logs of failing CI jobs."""
    if request.ci_logs_dir is None:
        return []
    from bot.tools.ci_log import CiLogTool

    return [CiLogTool(Path(request.ci_logs_dir))]


def mask_shapes(tool: Tool) -> Tool:
    """The tool, with well-known token shapes masked in what it returns to the model."""
    inner_execute = tool.execute

    def execute(arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        output = inner_execute(arguments, ctx)
        output.text = mask_token_shapes(output.text)
        return output

    tool.execute = execute  # type: ignore[method-assign]
    return tool


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # The broker stops a cancelled or timed-out run with SIGTERM; the loop treats this as an abort and
    # still saves the partial answer.
    raise KeyboardInterrupt(f"received signal {signum}")


def main(argv: list[str]) -> int:
    from bot.tools.proc import harden_current_process

    if argv:
        print("usage: python -I -m bot.agent.worker < REQUEST.json", file=sys.stderr)
        return 2
    harden_current_process()  # tool subprocesses (same uid) must not read this process's memory
    try:
        request = WorkerRequest.model_validate_json(sys.stdin.read())
    except ValueError as exc:
        print(f"agent-worker: bad request: {exc}", file=sys.stderr)
        return 2
    return run_worker(request, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
