"""The one place a run is set up: `prepare_run()` turns `Settings` into a ready `Agent` with its session,
for print mode, the REPL and the action's agent worker alike.

It owns the policy decisions that must not differ between the shells: which tools the model is
offered, which environment variables a tool subprocess may see, the system prompt, limits and retries,
and what happens when setup fails (the empty session file is deleted, whatever the failure). Nothing
here knows about terminals or GitHub.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.agent.config import Settings, SettingsError, config_dir
from bot.agent.loop import Agent, Approver, Compactor, Conversation, Limits
from bot.agent.prompt import build_system_prompt
from bot.agent.session import Entry, Session, SessionConversation, SessionError
from bot.llm.base import Model
from bot.llm.errors import ConfigError, ModelError
from bot.llm.messages import Cost, Usage
from bot.tools.base import Tool, ToolContext, scrubbed_env

ToolWrapper = Callable[[Tool], Tool]


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
    copied_entries: int = 0  # a fork's file starts with its parent's entries; this run's own come after

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def discard_if_unused(self) -> None:
        """Close, and forget a session this run created in which the model never answered (setup
        failed, or every request failed: a bad key, a wrong URL, a refused connection): its file is
        deleted, so `-c` and listings never land on a run with nothing in it."""
        self.close()
        resumed_in_place = self.resumed and not self.copied_entries  # a fork writes a new file of this run
        if resumed_in_place or self.session is None or self.path is None:
            return
        if _answered(self.session.entries[self.copied_entries:]):
            return
        self.path.unlink(missing_ok=True)
        self.path = None


def _answered(entries: Sequence[Entry]) -> bool:
    return any(entry["type"] == "message" and isinstance(entry.get("message"), dict)
               and entry["message"].get("role") == "assistant" for entry in entries)


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


def resolve_settings_model(settings: Settings, env: Mapping[str, str], *,
                           workspace: Path | None = None) -> Model:
    """The model the settings name. `replay:SESSION` is read here, through the session reader, so the
    replay model is handed the recorded messages and never parses a file itself."""
    from bot.llm.models import parse_spec, resolve_model

    provider, path = parse_spec(settings.model)
    if provider == "replay":
        from bot.agent.replay_source import replay_model

        return replay_model(path, workspace=workspace)
    model: Model = resolve_model(settings.model, settings.endpoints, env, settings.thinking)
    return model


def build_agent(settings: Settings, workspace: Path, *, interactive: bool = False,
                approver: Approver | None = None, conversation: Conversation | None = None,
                compactor: Compactor | None = None, session: SessionHandle | None = None,
                model: Model | None = None, env: Mapping[str, str] | None = None,
                wrap_tool: ToolWrapper | None = None, extra_tools: Sequence[Tool] = ()) -> Agent:
    """Everything an agent run needs, from settings. Raises `bot.llm.errors.ConfigError` for a bad
    model spec or missing key and `ValueError` for an unknown tool name. `extra_tools` are offered
    besides the selected ones (the action's `ci_log`); `wrap_tool` wraps each tool the model is offered
    (the action's worker masks token shapes in their output with it)."""
    env = os.environ if env is None else env
    workspace = workspace.resolve()
    model = model or resolve_settings_model(settings, env, workspace=workspace)
    tools = [*select_agent_tools(settings, interactive=interactive), *extra_tools]
    if wrap_tool is not None:
        tools = [wrap_tool(tool) for tool in tools]
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
        retry=settings.retry,
        compactor=compactor,
        # With allow_mutating nobody is asked; otherwise the shell's approver decides each call.
        approver=None if settings.allow_mutating else approver,
        usage=session.usage if session else None,
        cost=session.cost if session else None,
    )


def build_compactor(settings: Settings) -> Compactor | None:
    if not settings.compaction.enabled:
        return None
    from bot.agent.compaction import Compactor as SummaryCompactor

    compactor: Compactor = SummaryCompactor(settings.compaction)
    return compactor


_HEADER_KEYS = ("repo", "git_commit", "origin")


def open_session(settings: Settings, cwd: Path, *, resume: str | None = None, continue_: bool = False,
                 fork: str | None = None, metadata: Mapping[str, Any] | None = None) -> SessionHandle:
    """The session this run writes to: new, resumed (`resume`: id prefix or path), the latest for `cwd`
    (`continue_`), or a fork (`fork`: a new file whose header names its parent). With `no_session`
    nothing is written (a resumed session is copied into memory). `metadata` keys `repo`, `git_commit`
    and `origin` go to the header's own fields, the rest into its `metadata`.

    Raises `SessionUnavailable` (a usage error) when the session to resume or fork cannot be found or
    read, or when the sessions directory cannot be written (the message names it)."""
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
                         resumed=resumed, copied_entries=len(session.entries) if fork else 0)


# -- one run setup for every shell --------------------------------------------------------------------

# What can go wrong before the agent starts: bad settings, model spec or key, an unknown tool, a session
# that cannot be found, read or written, an unwritable directory.
SETUP_ERRORS: tuple[type[Exception], ...] = (SettingsError, ConfigError, ModelError, SessionError, ValueError,
                                              LookupError, OSError)


class RunSetupError(Exception):
    """Setup failed; `error` is the original failure (one of SETUP_ERRORS), which callers map to exit
    codes. By the time this is raised, a session file the setup created is gone again."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class SessionOptions:
    """Which session a run writes to: new (the default), `resume` (id prefix or path), `continue_` (the
    latest answered one for the workspace) or `fork` (a copy naming its parent). `metadata` keys `repo`,
    `git_commit` and `origin` go to the header's own fields, the rest into its `metadata`."""

    resume: str | None = None
    continue_: bool = False
    fork: str | None = None
    metadata: Mapping[str, Any] | None = None


# Picks the model from the opened session (e.g. the one a resumed session last used): returns the
# settings to run with and a model already built from them, or None to build the configured one.
ModelChooser = Callable[[Settings, SessionHandle], tuple[Settings, Model | None]]
# Builds the agent on the opened session instead of `build_agent` (the REPL, which rebuilds it later).
AgentMaker = Callable[[Settings, SessionHandle], Agent]


@dataclass
class PreparedRun:
    agent: Agent
    handle: SessionHandle
    settings: Settings  # with the model actually used


@contextmanager
def prepare_run(settings: Settings, workspace: Path, *, session: SessionOptions | None = None,
                interactive: bool = False, approver: Approver | None = None,
                wrap_tool: ToolWrapper | None = None, env: Mapping[str, str] | None = None,
                model: Model | None = None, choose_model: ModelChooser | None = None,
                make_agent: AgentMaker | None = None, extra_tools: Sequence[Tool] = ()) -> Iterator[PreparedRun]:
    """Open the session and build the agent; on leaving, close the session, deleting it when this run
    created it and the model never answered. Raises `RunSetupError` (wrapping the original failure)
    when setup fails, after removing what it created; anything raised inside the block passes through.

    `env` holds the model's keys and base URLs (default: `os.environ`); tools never see those, whatever
    it holds. `wrap_tool` wraps every tool (see `build_agent`). `choose_model` runs once the session is
    open (see `ModelChooser`); `model` skips resolving one at all; `make_agent` replaces `build_agent`."""
    options = session or SessionOptions()
    handle: SessionHandle | None = None
    try:
        handle = open_session(settings, workspace, resume=options.resume, continue_=options.continue_,
                              fork=options.fork, metadata=options.metadata)
        if model is None and choose_model is not None:
            settings, model = choose_model(settings, handle)
        if make_agent is not None:
            agent = make_agent(settings, handle)
        else:
            agent = build_agent(settings, workspace, interactive=interactive, approver=approver,
                                session=handle, model=model, env=env, wrap_tool=wrap_tool,
                                extra_tools=extra_tools)
    except SETUP_ERRORS as exc:
        if handle is not None:
            handle.discard_if_unused()
        raise RunSetupError(exc) from exc
    try:
        yield PreparedRun(agent, handle, settings)
    finally:
        handle.discard_if_unused()
