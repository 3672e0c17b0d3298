"""One agent run, isolated: the broker's side of the broker/agent split.

The broker starts the model proxy (the only holder of the provider key), prepares fresh directories and a
scrubbed environment for the agent's uid, locks the runner's directories against it, runs the worker, and
then kills whatever it left behind. The session file the agent writes is mirrored as it grows, through a
descriptor that refuses links, redacted, into a directory the broker (not the agent) controls.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import site
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bot
from bot.action.agent_process import AgentProcess, WorkerOutcome
from bot.action.redact import Redactor
from bot.action.sandbox import (
    AgentDirs,
    AgentIdentity,
    agent_environment,
    choose_identity,
    chown_tree,
    grant_traversal,
    locked_dirs,
    make_agent_dirs,
    reachable_for,
    remove_agent_dirs,
    runner_dirs_to_lock,
)
from bot.agent.config import Settings
from bot.agent.worker import WORKER_SESSION, WorkerRequest, WorkerResult
from bot.llm.errors import ConfigError

MAX_SESSION_BYTES = 512 * 1024 * 1024
# Events after which the session file has grown: the copy follows (the worker writes before it emits).
_SYNC_AFTER = frozenset({"message_end", "turn_end", "compaction_end", "agent_end"})
# After the agent's own time limit: time to save the partial answer before the broker kills it.
_TIMEOUT_GRACE_SECONDS = 60.0


@dataclass
class AgentRunSpec:
    settings: Settings
    prompt: str
    workspace: Path
    session_dir: Path  # where the broker keeps the (redacted) session
    metadata: dict[str, Any]
    fork: Path | None = None
    ci_logs: Path | None = None  # a directory of logs the broker downloaded, for the agent to read


@dataclass
class LaunchResult:
    result: WorkerResult | None
    session_path: Path | None
    model: str
    identity: AgentIdentity
    error: str = ""


def run_isolated(spec: AgentRunSpec, *, secrets: Mapping[str, str], redact: Redactor,
                 on_event: Callable[[dict[str, Any]], None], log: Callable[[str], None],
                 cancelled: threading.Event, on_locked: Callable[[Any], None] | None = None,
                 on_lent: Callable[[list[Any]], None] | None = None) -> LaunchResult:
    """Run the agent in a worker process that holds no secret. `secrets` maps names to values (every
    provider key, token and runner credential); none of them reaches the worker."""
    identity = choose_identity(spec.workspace)
    log(f"opi: the agent runs as {identity.describe()}, without any secret")
    dirs = make_agent_dirs(identity)
    mirror = SessionMirror(spec.session_dir, redact, log)

    def mirrored(event: dict[str, Any]) -> None:
        if event.get("type") == WORKER_SESSION and isinstance(event.get("path"), str):
            event = {**event, "path": str(mirror.attach(Path(event["path"])))}
        elif event.get("type") in _SYNC_AFTER:
            mirror.sync()
        on_event(event)

    try:
        return _launch(spec, identity, dirs, mirror, mirrored, secrets=secrets, log=log, cancelled=cancelled,
                       on_locked=on_locked, on_lent=on_lent)
    except ConfigError as exc:  # no key for the model's provider, a bad base URL: the maintainer's to fix
        return LaunchResult(None, None, spec.settings.model, identity, error=f"{type(exc).__name__}: {exc}")
    finally:
        remove_agent_dirs(dirs)


def _launch(spec: AgentRunSpec, identity: AgentIdentity, dirs: AgentDirs, mirror: SessionMirror,
            on_event: Callable[[dict[str, Any]], None], *, secrets: Mapping[str, str], log: Callable[[str], None],
            cancelled: threading.Event, on_locked: Callable[[Any], None] | None,
            on_lent: Callable[[list[Any]], None] | None) -> LaunchResult:
    with _model_route(spec.settings, secrets, log) as (settings, model_env), \
            _workspace_lent(spec.workspace, identity, log, on_lent):
        request = _request(spec, settings, dirs, identity)
        env = agent_environment(os.environ, secrets.values(), home=dirs.home, tmp=dirs.tmp)
        env.update(model_env)
        lock = runner_dirs_to_lock(os.environ, [spec.workspace, dirs.root, *_agent_code()])
        with locked_dirs(lock, identity, log) as locked:
            if on_locked is not None:
                on_locked(locked)
            outcome = AgentProcess(request, identity, env, on_event=on_event, log=log).run(
                timeout=_hard_timeout(settings), cancelled=cancelled)
    mirror.sync()
    kept = mirror.target if mirror.target is not None and mirror.target.is_file() else None
    return LaunchResult(outcome.result, kept, _model(outcome, spec.settings), identity, error=_failure(outcome))


@contextlib.contextmanager
def _model_route(settings: Settings, secrets: Mapping[str, str],
                 log: Callable[[str], None]) -> Iterator[tuple[Settings, dict[str, str]]]:
    """Settings whose model talks to a loopback proxy holding the real key, and the worker's env for it."""
    from bot.action.model_proxy import ModelProxy, agent_endpoints, agent_env, resolve_upstream

    upstream = resolve_upstream(settings.model, settings.endpoints, {**os.environ, **secrets})
    if upstream is None:  # replay: and mock: make no HTTP calls
        yield settings, {}
        return
    if not upstream.api_key:  # a keyless endpoint (a local Ollama): nothing to hide
        yield settings, {}
        return
    with ModelProxy(upstream.endpoint.base_url, upstream.endpoint.api, upstream.api_key, log=log) as proxy:
        endpoints = {**settings.endpoints, **agent_endpoints(upstream, proxy)}
        yield settings.model_copy(update={"endpoints": endpoints}), agent_env(proxy)


def _agent_code() -> list[Path]:
    """What the agent's uid must reach to start: this interpreter (and where its links lead), its
    site-packages and this package."""
    python = Path(sys.executable)
    return [python, python.resolve(), *map(Path, site.getsitepackages()), Path(bot.__file__).resolve()]


@contextlib.contextmanager
def _workspace_lent(workspace: Path, identity: AgentIdentity, log: Callable[[str], None],
                    on_lent: Callable[[list[Any]], None] | None = None) -> Iterator[None]:
    """A root-owned workspace is handed to the dedicated uid for the run and handed back afterwards; the
    workspace, the interpreter and the package are made reachable for the agent's uid."""
    grant_traversal(_agent_code(), identity, log)
    if not identity.dedicated:
        with reachable_for(workspace, identity):
            yield
        return
    owner = workspace.stat()
    if on_lent is not None:  # should this process be killed, the post step hands it back
        on_lent([str(workspace), owner.st_uid, owner.st_gid])
    chown_tree(workspace, identity.uid or 0, identity.gid or 0)
    try:
        with reachable_for(workspace, identity):
            yield
    finally:
        chown_tree(workspace, owner.st_uid, owner.st_gid)


def _request(spec: AgentRunSpec, settings: Settings, dirs: AgentDirs, identity: AgentIdentity) -> WorkerRequest:
    fork = None
    if spec.fork is not None:  # the previous session, readable by the agent's uid
        fork = dirs.sessions / "previous.jsonl"
        shutil.copyfile(spec.fork, fork)
        if identity.separate:
            os.chown(fork, identity.uid or 0, identity.gid or 0)
    data = settings.model_dump(mode="json", exclude_none=False)
    data["session_dir"] = str(dirs.sessions)
    logs = None
    if spec.ci_logs is not None and spec.ci_logs.is_dir():
        shutil.copytree(spec.ci_logs, dirs.logs, dirs_exist_ok=True)
        os.chmod(dirs.logs, 0o755)  # copytree copied the broker's private 0700: readable, not writable
        logs = str(dirs.logs)
    return WorkerRequest(workspace=str(spec.workspace), prompt=spec.prompt, settings=data,
                         fork_session=str(fork) if fork else None, session_metadata=spec.metadata,
                         ci_logs_dir=logs)


def _hard_timeout(settings: Settings) -> float | None:
    return settings.timeout_seconds + _TIMEOUT_GRACE_SECONDS if settings.timeout_seconds else None


class SessionMirror:
    """The agent's session, copied out as it grows: redacted, line by line, into a directory the broker
    controls. The copy survives the agent's directories, and if this process is killed the post step
    finds the conversation up to the last turn. The source is opened without following links and must be
    a regular file: the broker must not be made to read, and then publish, another file."""

    def __init__(self, directory: Path, redact: Redactor, log: Callable[[str], None]) -> None:
        self.directory = directory
        self.redact = redact
        self.log = log
        self.source: Path | None = None
        self.target: Path | None = None
        self._offset = 0
        self._lock = threading.Lock()

    def attach(self, source: Path) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.source, self.target = source, self.directory / Path(source.name).name
        return self.target

    def sync(self) -> None:
        with self._lock:
            if self.source is None or self.target is None:
                return
            try:
                data = self._read_new()
            except OSError as exc:
                if not isinstance(exc, FileNotFoundError):  # created with its first message
                    self.log(f"opi: warning: the agent's session could not be read: {exc}")
                return
            complete = data[:data.rfind(b"\n") + 1]
            if complete:
                self._append(complete)
                self._offset += len(complete)

    def _read_new(self) -> bytes:
        fd = os.open(self.source or "", os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{self.source} is not a regular file")
            if info.st_size > MAX_SESSION_BYTES:
                raise OSError(f"{self.source} is larger than {MAX_SESSION_BYTES} bytes")
            f.seek(self._offset)
            return f.read(MAX_SESSION_BYTES - self._offset)

    def _append(self, lines: bytes) -> None:
        # Complete lines, ending in "\n", the only line end: splitlines() also breaks at U+2028, U+2029 and
        # U+0085, which JSON keeps raw inside strings, and would cut such an entry into two corrupt halves.
        redacted = [self._redact_line(line) for line in lines.decode("utf-8", "replace").split("\n")[:-1]]
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(self.target or "", flags, 0o644), "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in redacted))

    def _redact_line(self, line: str) -> str:
        try:
            parsed = json.loads(line)
        except ValueError:
            return self.redact(line)
        cleaned = self.redact.value(parsed)
        return line if cleaned == parsed else json.dumps(cleaned, ensure_ascii=False)


def _model(outcome: WorkerOutcome, settings: Settings) -> str:
    return outcome.result.model if outcome.result and outcome.result.model else settings.model


def _failure(outcome: WorkerOutcome) -> str:
    if outcome.result is not None:
        return outcome.result.error if outcome.result.setup_failed else ""
    if outcome.cancelled:
        return "the run was cancelled"
    if outcome.timed_out:
        return "the agent did not stop at its time limit and was killed"
    detail = "; ".join(line for line in outcome.stderr_tail[-3:] if line)
    return f"the agent process ended (exit {outcome.exit_code}) without a result" + (f": {detail}" if detail else "")
