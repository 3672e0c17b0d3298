"""The one factory that turns `Settings` into a ready `Agent`, used by both the CLI and the action.

It owns the policy decisions that must not differ between the two shells: which tools the model is
offered, which environment variables a tool subprocess may see, the system prompt, limits and retries.
Nothing here knows about terminals or GitHub.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.agent.config import Settings, config_dir
from bot.agent.loop import Agent, Approver, Compactor, Conversation, Limits
from bot.agent.prompt import build_system_prompt
from bot.agent.session import Session, SessionConversation, SessionError
from bot.llm.base import Model
from bot.llm.messages import Cost, Usage
from bot.llm.retry import RetryPolicy
from bot.tools.base import Tool, ToolContext, scrubbed_env


class SessionUnavailable(SessionError, LookupError):
    """A session to resume or fork cannot be found or read (a usage error: exit code 2)."""


@dataclass
class SessionHandle:
    """Where this run's messages go. `session` is the store's object; with `--no-session` it lives in
    memory only and `path` is None. `usage`/`cost` are what the session had already spent."""

    conversation: Conversation
    session: Session | None = None
    path: Path | None = None
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost.zero)
    warnings: list[str] = field(default_factory=list)
    resumed: bool = False

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def discard_if_unused(self) -> None:
        """Close, and delete the file of a session this run created but never wrote an entry to (setup
        failed after it was opened: a missing key, an unknown tool), so listings show no empty runs."""
        self.close()
        if self.resumed or self.session is None or self.session.entries or self.path is None:
            return
        self.path.unlink(missing_ok=True)
        self.path = None


def endpoint_key_env_names(settings: Settings) -> tuple[str, ...]:
    names = (getattr(endpoint, "api_key_env", None) for endpoint in settings.endpoints.values())
    return tuple(sorted({name for name in names if name}))


def tool_environment(settings: Settings, env: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The environment tool subprocesses get: no provider keys, tokens, or configured endpoint keys."""
    extra = endpoint_key_env_names(settings)
    scrubbed = {name: value for name, value in scrubbed_env(env).items() if name not in extra}
    return scrubbed, extra


def select_agent_tools(settings: Settings, *, interactive: bool) -> list[Tool]:
    """Non-interactive runs are neither offered nor able to run write/edit/bash without allow_mutating;
    interactive runs offer them and ask the approver before each call."""
    from bot.tools.registry import select_tools

    allow = settings.allow_mutating or interactive
    tools: list[Tool] = select_tools(settings.tools, allow_mutating=allow, no_tools=settings.no_tools)
    return tools


def resolve_settings_model(settings: Settings, env: Mapping[str, str]) -> Model:
    from bot.llm.models import resolve_model

    model: Model = resolve_model(settings.model, settings.endpoints, env, settings.thinking)
    return model


def build_agent(settings: Settings, workspace: Path, *, interactive: bool = False,
                approver: Approver | None = None, conversation: Conversation | None = None,
                compactor: Compactor | None = None, session: SessionHandle | None = None,
                model: Model | None = None, env: Mapping[str, str] | None = None) -> Agent:
    """Everything an agent run needs, from settings. Raises `bot.llm.errors.ConfigError` for a bad
    model spec or missing key and `ValueError` for an unknown tool name."""
    env = os.environ if env is None else env
    workspace = workspace.resolve()
    model = model or resolve_settings_model(settings, env)
    tools = select_agent_tools(settings, interactive=interactive)
    tool_env, extra_names = tool_environment(settings, env)
    context = ToolContext(workspace=workspace, env=tool_env, bash_timeout=settings.bash_timeout,
                          extra_env_names=extra_names)
    system_prompt = build_system_prompt(tools=tools, cwd=workspace, global_dir=config_dir(env),
                                        custom=settings.system_prompt, append=settings.append_system_prompt)
    if session is not None and conversation is None:
        conversation = session.conversation
    if compactor is None and session is not None:
        compactor = build_compactor(settings)
    return Agent(
        model, tools, context, system_prompt,
        limits=Limits(max_turns=settings.max_turns, max_cost_usd=settings.max_cost_usd,
                      max_wall_seconds=settings.timeout_seconds),
        conversation=conversation,
        thinking=settings.thinking,
        retry=RetryPolicy(max_retries=settings.retry.max_retries, base_delay=settings.retry.base_delay,
                          max_delay=settings.retry.max_delay),
        compactor=compactor,
        # With allow_mutating nobody is asked; otherwise the shell's approver decides each call.
        approver=None if settings.allow_mutating else approver,
        usage=session.usage if session else None,
        cost=session.cost if session else None,
    )


def build_compactor(settings: Settings) -> Compactor | None:
    if not settings.compaction.enabled:
        return None
    from bot.agent.compaction import CompactionConfig
    from bot.agent.compaction import Compactor as SessionCompactor

    compactor: Compactor = SessionCompactor(CompactionConfig.from_settings(settings.compaction))
    return compactor


_HEADER_KEYS = ("repo", "git_commit", "origin")


def open_session(settings: Settings, cwd: Path, *, resume: str | None = None, continue_: bool = False,
                 fork: str | None = None, metadata: Mapping[str, Any] | None = None) -> SessionHandle:
    """The session this run writes to: new, resumed (`resume`: id prefix or path), the latest for `cwd`
    (`continue_`), or a fork (`fork`: a new file whose header names its parent). With `no_session`
    nothing is written (a resumed session is copied into memory). `metadata` keys `repo`, `git_commit`
    and `origin` go to the header's own fields, the rest into its `metadata`.

    Raises `SessionUnavailable` when the session to resume or fork cannot be found or read."""
    from bot.agent.session_store import open_session as store_open_session

    given = dict(metadata or {})
    header: dict[str, Any] = {key: given.pop(key) for key in _HEADER_KEYS if key in given}
    header = {key: value for key, value in header.items() if value is not None}
    try:
        session = store_open_session(cwd=cwd, directory=settings.session_path, resume=resume,
                                     continue_=continue_, fork=fork, no_session=settings.no_session,
                                     model=settings.model, metadata=given, **header)
    except SessionError as exc:
        raise SessionUnavailable(str(exc)) from exc
    totals = session.totals()
    resumed = bool(resume or fork or continue_) and bool(session.entries)
    return SessionHandle(conversation=SessionConversation(session), session=session, path=session.path,
                         usage=totals.usage, cost=totals.cost, warnings=list(session.warnings),
                         resumed=resumed)
