"""What the agent is asked to do: settings from the inputs, the task prompt, the session's metadata.

Settings are built from the action's inputs only: a project's `.opi/config.toml` is not read, because in
a pull request it is content the requester controls (an endpoint pointing elsewhere would receive model
traffic). The agent runs non-interactively with mutating tools allowed: editing the repository is the
job. It runs in a separate worker process that holds no secret (`bot.action.launch`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.action.events import Task
from bot.action.inputs import ActionInputs, RunnerContext

if TYPE_CHECKING:
    from bot.agent.config import Settings

_BODY_LIMIT = 6000  # characters of an issue/PR body put into the prompt


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


