"""The action's inputs (`INPUT_*`) and the runner context (`GITHUB_*`, `RUNNER_*`) read from the environment.

Every malformed input is reported by name with the value that was given, before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["push", "pr", "comment"]
MODES: tuple[Mode, ...] = ("push", "pr", "comment")

DEFAULT_BOT_NAME = "opi-bot[bot]"
DEFAULT_BOT_EMAIL = "opi-bot[bot]@users.noreply.github.com"

# Provider keys accepted as inputs and exported under the name the providers read.
PROVIDER_KEY_INPUTS = {
    "anthropic_api_key": "ANTHROPIC_API_KEY",
    "openai_api_key": "OPENAI_API_KEY",
    "openrouter_api_key": "OPENROUTER_API_KEY",
}


class InputError(Exception):
    """An input has a value the action cannot use."""


@dataclass(frozen=True)
class ActionInputs:
    github_token: str = ""
    model: str = ""
    trigger: str = "/opi"
    prompt: str = ""
    max_turns: int | None = 30
    max_cost_usd: float | None = 2.0
    timeout_minutes: float | None = 30.0
    max_context_tokens: int | None = None
    allowed_tools: tuple[str, ...] | None = None
    mode: Mode = "push"
    base_branch: str = ""
    bot_name: str = DEFAULT_BOT_NAME
    bot_email: str = DEFAULT_BOT_EMAIL
    provider_keys: dict[str, str] = field(default_factory=dict)  # env name -> value
    app_id: str = ""
    app_private_key: str = ""
    app_installation_id: int | None = None
    allow_workflow_edits: bool = False
    autofix: str = "false"
    autofix_label: str = ""
    autofix_max_attempts: str = "3"

    @property
    def uses_app(self) -> bool:
        return bool(self.app_id or self.app_private_key)

    @property
    def identity_is_default(self) -> bool:
        return self.bot_name == DEFAULT_BOT_NAME and self.bot_email == DEFAULT_BOT_EMAIL


def _input(env: Mapping[str, str], name: str) -> str:
    # The runner upper-cases input names and keeps hyphens; spaces become underscores.
    return env.get(f"INPUT_{name.upper().replace(' ', '_')}", "").strip()


def _positive_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = _input(env, name)
    if not raw:
        return default
    if raw.lower() in ("0", "none", "unlimited"):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"input `{name}` must be a whole number, got {raw!r}") from None
    if value < 0:
        raise InputError(f"input `{name}` must not be negative, got {raw!r}")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = _input(env, name)
    if not raw:
        return default
    if raw.lower() in ("0", "none", "unlimited"):
        return None
    try:
        value = float(raw.lstrip("$"))
    except ValueError:
        raise InputError(f"input `{name}` must be a number, got {raw!r}") from None
    if value < 0 or value != value or value == float("inf"):  # NaN, inf
        raise InputError(f"input `{name}` must be a positive number, got {raw!r}")
    return value or None  # `0.0` and `$0` mean no limit, as `0` does


def _mode(raw: str) -> Mode:
    for mode in MODES:
        if raw == mode:
            return mode
    raise InputError(f"input `mode` must be one of {', '.join(MODES)}, got {raw!r}")


def read_inputs(env: Mapping[str, str] | None = None) -> ActionInputs:
    source = os.environ if env is None else env
    mode = _mode(_input(source, "mode").lower() or "push")
    trigger = _input(source, "trigger") or "/opi"
    if any(ch.isspace() for ch in trigger):
        raise InputError(f"input `trigger` must be one word, got {trigger!r}")
    tools_raw = _input(source, "allowed_tools")
    allowed = tuple(t.strip() for t in tools_raw.replace("\n", ",").split(",") if t.strip()) or None
    keys = {env_name: _input(source, name) for name, env_name in PROVIDER_KEY_INPUTS.items()
            if _input(source, name)}
    inputs = ActionInputs(
        github_token=_input(source, "github_token") or source.get("GITHUB_TOKEN", ""),
        model=_input(source, "model"),
        trigger=trigger,
        prompt=_input(source, "prompt"),
        max_turns=_positive_int(source, "max_turns", 30),
        max_cost_usd=_positive_float(source, "max_cost_usd", 2.0),
        timeout_minutes=_positive_float(source, "timeout_minutes", 30.0),
        max_context_tokens=_positive_int(source, "max_context_tokens", None),
        allowed_tools=allowed,
        mode=mode,
        base_branch=_input(source, "base_branch"),
        bot_name=_input(source, "bot_name") or DEFAULT_BOT_NAME,
        bot_email=_input(source, "bot_email") or DEFAULT_BOT_EMAIL,
        provider_keys=keys,
    )
    return _with_app_inputs(inputs, source)


def _with_app_inputs(inputs: ActionInputs, source: Mapping[str, str]) -> ActionInputs:
    app_id, key = _input(source, "app_id"), source.get("INPUT_APP_PRIVATE_KEY", "").strip()
    if bool(app_id) != bool(key):
        raise InputError("GitHub App authentication needs both inputs `app_id` and `app_private_key`"
                         f" (only `{'app_id' if app_id else 'app_private_key'}` is set)")
    return dataclasses.replace(
        inputs, app_id=app_id, app_private_key=key,
        app_installation_id=_positive_int(source, "app_installation_id", None),
        allow_workflow_edits=_boolean(source, "allow_workflow_edits"),
        autofix=_input(source, "autofix") or "false", autofix_label=_input(source, "autofix_label"),
        autofix_max_attempts=_input(source, "autofix_max_attempts") or "3",
    )


def _boolean(source: Mapping[str, str], name: str) -> bool:
    raw = _input(source, name).lower()
    if raw not in ("", "true", "false"):
        raise InputError(f"input `{name}` must be true or false, got {raw!r}")
    return raw == "true"


@dataclass(frozen=True)
class RunnerContext:
    event_name: str
    event_path: Path | None
    repository: str
    workspace: Path
    server_url: str
    api_url: str
    run_id: str
    run_attempt: str
    sha: str
    temp_dir: Path
    output_file: Path | None
    summary_file: Path | None
    state_file: Path | None

    @property
    def run_url(self) -> str:
        if not (self.repository and self.run_id):
            return ""
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value) if value else None


# In a container action the runner mounts its temp dir at /github/runner_temp, but only on runners that
# have that mapping; on others RUNNER_TEMP names a host path that does not exist in here, and anything
# written there dies with the container (the post step could not find its state). /github/home is
# mounted on every runner and lives for the whole job.
CONTAINER_HOME = Path("/github/home")


def runner_temp_dir(env: Mapping[str, str], container_home: Path = CONTAINER_HOME) -> Path:
    """Where sessions, patches and run state go. Never the workspace: whatever lands there could be
    committed."""
    runner_temp = _path(env, "RUNNER_TEMP")
    if runner_temp is not None and runner_temp.is_dir():
        return runner_temp
    if container_home.is_dir():
        fallback = container_home / ".opi-temp"
        fallback.mkdir(exist_ok=True)
        return fallback
    return runner_temp or Path(tempfile.gettempdir())


# Where the runner's own temp dir appears inside a container action, relative to `runner.temp` on the host.
_CONTAINER_MOUNTS = ((Path("/github/runner_temp"), ""), (CONTAINER_HOME, "_github_home"))


def host_relative_path(path: Path) -> str:
    """`path` relative to the host's `runner.temp`, for a later workflow step (which runs on the host and
    cannot see container paths); empty outside a container action, where `path` itself is usable."""
    for mount, host_prefix in _CONTAINER_MOUNTS:
        if path.is_relative_to(mount):
            return str(Path(host_prefix) / path.relative_to(mount)) if host_prefix else str(path.relative_to(mount))
    return ""


def read_context(env: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> RunnerContext:
    source = os.environ if env is None else env
    workspace = _path(source, "GITHUB_WORKSPACE") or cwd or Path.cwd()
    return RunnerContext(
        event_name=source.get("GITHUB_EVENT_NAME", "").strip(),
        event_path=_path(source, "GITHUB_EVENT_PATH"),
        repository=source.get("GITHUB_REPOSITORY", "").strip(),
        workspace=workspace,
        server_url=source.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/"),
        api_url=source.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
        run_id=source.get("GITHUB_RUN_ID", "").strip(),
        run_attempt=source.get("GITHUB_RUN_ATTEMPT", "1").strip(),
        sha=source.get("GITHUB_SHA", "").strip(),
        temp_dir=runner_temp_dir(source),
        output_file=_path(source, "GITHUB_OUTPUT"),
        summary_file=_path(source, "GITHUB_STEP_SUMMARY"),
        state_file=_path(source, "GITHUB_STATE"),
    )
