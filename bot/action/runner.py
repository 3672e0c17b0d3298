"""Running the agent for the action: settings from the inputs, the task prompt, a redacted session.

Settings are built from the action's inputs only: a project's `.opi/config.toml` is not read, because in
a pull request it is content the requester controls (an endpoint pointing elsewhere would receive the
API key). The agent runs non-interactively with mutating tools allowed: editing the repository is the
job. Every tool result is redacted before the model (and the session file) sees it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bot.action.events import Task
from bot.action.inputs import ActionInputs, RunnerContext
from bot.action.redact import Redactor
from bot.tools.base import Tool, ToolContext, ToolOutput

if TYPE_CHECKING:
    from bot.agent.config import Settings
    from bot.agent.events import Event
    from bot.agent.loop import RunResult

_BODY_LIMIT = 6000  # characters of an issue/PR body put into the prompt


@dataclass
class AgentOutcome:
    result: RunResult | None
    session_path: Path | None
    model: str
    error: str = ""


def settings_for(inputs: ActionInputs, context: RunnerContext, *, model_override: str | None = None) -> Settings:
    from bot.agent.config import DEFAULT_MODEL, Settings

    data: dict[str, Any] = {
        "model": model_override or inputs.model or os.environ.get("OPI_MODEL") or DEFAULT_MODEL,
        "max_turns": inputs.max_turns,
        "max_cost_usd": inputs.max_cost_usd,
        "timeout_seconds": inputs.timeout_minutes * 60 if inputs.timeout_minutes else None,
        "allow_mutating": True,
        "session_dir": str(session_dir(context)),
    }
    if inputs.allowed_tools is not None:
        data["tools"] = list(inputs.allowed_tools)
    if inputs.max_context_tokens is not None:
        data["compaction"] = {"threshold_tokens": inputs.max_context_tokens}
    return Settings.model_validate(data)


def session_dir(context: RunnerContext) -> Path:
    # RUNNER_TEMP is outside the workspace, so the session can never be committed.
    return context.temp_dir / "opi-sessions"


def build_prompt(task: Task, *, branch: str, feedback: str = "") -> str:
    parts = [f"You are opi, running non-interactively in GitHub Actions on the repository {task.repo}. "
             "Nobody can answer questions during this run: decide, act, and explain your choices at the end."]
    if task.kind == "scheduled":
        parts.append(f"Scheduled task ({task.event_name}):\n\n{task.instructions}")
    else:
        what = "pull request" if task.on_pull_request else "issue"
        body = task.body.strip()
        if len(body) > _BODY_LIMIT:
            body = body[:_BODY_LIMIT] + "\n[... truncated]"
        parts.append(f"The {what} #{task.number}: {task.title}\n\n{body or '(no description)'}")
        if task.review is not None:
            review = task.review
            lines = (f"lines {review.start_line}-{review.line}" if review.start_line and review.line
                     else f"line {review.line}" if review.line else "the file")
            parts.append(f"The request is a review comment on `{review.path}`, {lines}"
                         f"{f' ({review.side} side)' if review.side else ''}. The diff hunk it refers to:\n\n"
                         f"```diff\n{review.diff_hunk}\n```")
        if feedback:
            parts.append(feedback)
        who = f"@{task.requester.login}" if task.requester else "A maintainer"
        parts.append(f"{who} asks: {_request(task)}")
    if branch:
        parts.append(f"You are on the branch `{branch}`.")
    parts.append("Make the changes in the working tree. Do not commit, push, switch branches or rewrite "
                 "history: the action commits and publishes your changes when you finish. Run the project's "
                 "tests or checks when they exist. End with a short summary of what you changed and why; "
                 "it is posted as a comment.")
    return "\n\n".join(parts)


def _request(task: Task) -> str:
    if task.is_fix and task.on_pull_request:
        extra = f" Instructions: {task.instructions}" if task.instructions else ""
        return ("fix this pull request: make its checks pass (run the tests and linters and fix what "
                f"fails) and address the review feedback.{extra}")
    if task.is_fix:
        extra = f" Instructions: {task.instructions}" if task.instructions else ""
        return f"resolve this issue.{extra}"
    return task.instructions or "(no instructions given: look at the context above and do what it needs)"


class _RedactingTool(Tool):
    """Wraps a tool so its output is redacted before the model, the log or the session sees it."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, inner: Tool, redact: Redactor) -> None:
        self.inner = inner
        self.redact = redact

    def schema(self) -> dict[str, Any]:
        return self.inner.schema()

    def execute(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        output = self.inner.execute(arguments, ctx)
        output.text = self.redact(output.text)
        if output.details is not None:
            output.details = self.redact.value(output.details)
        return output


def redacting(tool: Tool, redact: Redactor) -> Tool:
    cls = type(f"Redacting{type(tool).__name__}", (_RedactingTool,),
               {"name": tool.name, "description": tool.description, "Params": tool.Params,
                "mutating": tool.mutating})
    wrapped: Tool = cls(tool, redact)
    return wrapped


def session_metadata(task: Task, context: RunnerContext, branch: str, head_sha: str = "") -> dict[str, Any]:
    """`repo`, `git_commit` and `origin` become the session header's own fields; the rest its metadata."""
    return {
        "repo": task.repo or None,
        "git_commit": head_sha or None,
        "origin": context.run_url or None,
        "source": "github-action",
        "number": task.number,
        "kind": task.kind,
        "event": task.event_name,
        "run_id": context.run_id,
        "branch": branch,
        "requester": task.requester.login if task.requester else None,
    }


def run_agent(task: Task, inputs: ActionInputs, context: RunnerContext, redact: Redactor, *, plan_branch: str,
              model_override: str | None, on_session: Callable[[Path], None],
              log: Callable[[str], None], head_sha: str = "",
              previous_session: Path | None = None, feedback: str = "") -> AgentOutcome:
    from bot.agent.runtime import build_agent, open_session

    settings = settings_for(inputs, context, model_override=model_override)
    try:
        # A follow-up on the same thread forks the earlier session: new file, `parent_session` set.
        handle = open_session(settings, context.workspace,
                              fork=str(previous_session) if previous_session is not None else None,
                              metadata=session_metadata(task, context, plan_branch, head_sha))
        if handle.path is not None:
            on_session(handle.path)
        agent = build_agent(settings, context.workspace, interactive=False, session=handle)
    except Exception as exc:  # ConfigError (bad model, missing key), unknown tool names, unwritable dir
        return AgentOutcome(None, None, settings.model, error=redact(f"{type(exc).__name__}: {exc}"))
    agent.tools = {name: redacting(tool, redact) for name, tool in agent.tools.items()}
    agent.subscribe(_progress_logger(log, redact))
    log(f"opi: running {agent.model.info.spec} with tools {', '.join(sorted(agent.tools)) or 'none'}")
    result = agent.run(redact(build_prompt(task, branch=plan_branch, feedback=feedback)))
    result.final_text = redact(result.final_text)
    if result.error:
        result.error = redact(result.error)
    log(f"opi: agent finished: {result.outcome.value} after {result.turns} turns")
    return AgentOutcome(result, handle.path, agent.model.info.spec)


def _progress_logger(log: Callable[[str], None], redact: Redactor) -> Callable[[Event], None]:
    from bot.agent import events as ev

    def on_event(event: Event) -> None:
        if isinstance(event, ev.ToolStart):
            args = redact(str(event.tool_call.arguments))
            log(f"opi: tool {event.tool_call.name} {args[:200]}")
        elif isinstance(event, ev.ToolEnd) and event.is_error:
            log(f"opi: tool {event.tool_name} failed: {redact(event.text)[:300]}")
        elif isinstance(event, ev.Retry):
            log(f"opi: retrying the model (attempt {event.attempt}): {redact(event.error)}")
        elif isinstance(event, ev.CompactionEnd):
            log(f"opi: compacted the context: {event.tokens_before} -> {event.tokens_after} tokens")
        elif isinstance(event, ev.Warning):
            log(f"opi: warning: {redact(event.message)}")

    return on_event
