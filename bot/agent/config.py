"""Settings: defaults, then TOML files, then environment variables, then command-line flags.

Files are read in this order, each overriding the one before key by key (tables merge):

1. the global file, `$OPI_CONFIG_DIR/config.toml`, else `$XDG_CONFIG_HOME/opi/config.toml`, else
   `~/.config/opi/config.toml`;
2. every `.opi/config.toml` from the git root down to the working directory (the closest wins);
3. the file named by `--config PATH`.

Every problem (unknown key, wrong type, unreadable TOML, bad environment value) is reported as a
`SettingsError` naming the file or variable, the key and what is wrong; the CLI exits with code 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.llm.base import ThinkingLevel
from bot.llm.models import EndpointConfig
from bot.llm.retry import RetryPolicy

DEFAULT_MODEL = "anthropic:claude-sonnet-4-5"
PROJECT_CONFIG = Path(".opi") / "config.toml"


class SettingsError(Exception):
    """A configuration problem the user must fix (exit code 2)."""


class _Section(BaseModel):
    # strict: a TOML string "10" where a number belongs is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", strict=True)


class CompactionSettings(_Section):
    """The `[compaction]` table, and what the compactor runs with (one definition for both)."""

    enabled: bool = True
    # None: the model's context window minus `reserve_tokens`.
    threshold_tokens: int | None = Field(default=None, gt=0)
    keep_recent_tokens: int = Field(default=20_000, gt=0)
    reserve_tokens: int = Field(default=16_384, ge=0)
    summary_max_tokens: int = Field(default=4_096, gt=0)

    @classmethod
    def from_settings(cls, settings: Any) -> CompactionSettings:
        """A copy of `settings` (a `CompactionSettings`, or any object with the same attribute names)."""
        if isinstance(settings, CompactionSettings):
            return settings.model_copy()
        defaults = cls()
        return cls(**{name: getattr(settings, name, getattr(defaults, name)) for name in cls.model_fields})

    def threshold(self, context_window: int) -> int:
        """The bound on the tokens of one request."""
        if self.threshold_tokens is not None:
            return self.threshold_tokens
        return max(1, context_window - self.reserve_tokens)

    def summary_budget(self, threshold: int) -> int:
        return max(64, min(self.summary_max_tokens, threshold // 8))


class Settings(_Section):
    model: str = DEFAULT_MODEL
    thinking: ThinkingLevel = "off"
    max_turns: int | None = Field(default=50, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    timeout_seconds: float | None = Field(default=None, gt=0)
    tools: list[str] | None = None  # None: every tool the policy allows
    no_tools: bool = False
    allow_mutating: bool = False
    system_prompt: str | None = None
    append_system_prompt: list[str] = Field(default_factory=list)
    endpoints: dict[str, EndpointConfig] = Field(default_factory=dict)
    session_dir: str | None = None
    no_session: bool = False
    bash_timeout: float = Field(default=120.0, gt=0)
    compaction: CompactionSettings = Field(default_factory=CompactionSettings)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @property
    def session_path(self) -> Path | None:
        return Path(self.session_dir).expanduser() if self.session_dir else None


# -- where files live --------------------------------------------------------------------------------
def config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("OPI_CONFIG_DIR"):
        return Path(env["OPI_CONFIG_DIR"]).expanduser()
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]).expanduser() / "opi"
    return Path.home() / ".config" / "opi"


def git_root(start: Path) -> Path | None:
    """The nearest directory at or above `start` holding `.git` (a directory, or a file in a worktree)."""
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


def dirs_from_root(cwd: Path) -> list[Path]:
    """The git root down to `cwd` (outermost first); just `cwd` outside a repository."""
    cwd = cwd.resolve()
    root = git_root(cwd)
    if root is None:
        return [cwd]
    chain = [cwd]
    while chain[-1] != root:
        chain.append(chain[-1].parent)
    return list(reversed(chain))


def config_files(cwd: Path, explicit: Path | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    """The config files that exist, in the order they apply. An explicit file must exist."""
    files = [config_dir(env) / "config.toml"]
    files += [directory / PROJECT_CONFIG for directory in dirs_from_root(cwd)]
    found = [path for path in files if path.is_file()]
    if explicit is not None:
        if not explicit.is_file():
            raise SettingsError(f"--config {explicit}: no such file")
        found.append(explicit)
    return found


# -- loading -----------------------------------------------------------------------------------------
def read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # here, not at the top: most runs have no config file, and it costs 2 ms to import

    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    _check(data, str(path))
    _resolve_relative_paths(data, path.parent)
    return data


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    # A relative session_dir in a file means relative to that file, not to wherever opi was started.
    value = data.get("session_dir")
    if isinstance(value, str) and value:
        path = Path(value).expanduser()
        data["session_dir"] = str(path if path.is_absolute() else (base / path).resolve())


def _check(data: Mapping[str, Any], source: str) -> None:
    """Validate one layer on its own so an error names the file that holds the bad key."""
    try:
        Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            problem = "unknown key"
        else:
            problem = f"{error['msg']} (got {error['input']!r})"
        lines.append(f"{source}: {key}: {problem}")
    return "\n".join(lines)


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: tables merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_settings(cwd: Path, *, config_path: Path | None = None, env: Mapping[str, str] | None = None,
                  flags: Mapping[str, Any] | None = None) -> Settings:
    """Defaults < global file < project files < --config < environment < flags."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    for path in config_files(cwd, config_path, env):
        data = merge(data, read_toml(path))
    data = merge(data, settings_from_env(env))
    if flags:
        _check(flags, "command line")
        flags = dict(flags)
        # --append-system-prompt adds to what the config files append instead of replacing it.
        if "append_system_prompt" in flags:
            flags["append_system_prompt"] = [*data.get("append_system_prompt", []),
                                             *flags["append_system_prompt"]]
        data = merge(data, flags)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:  # layers are valid alone; this catches cross-layer surprises
        raise SettingsError(_describe(exc, "merged configuration")) from None


# -- environment -------------------------------------------------------------------------------------
def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _optional_limit(parse: Any) -> Any:
    # "0" or "none" lifts a limit set in a config file.
    def convert(value: str) -> Any:
        return None if value.strip().lower() in {"0", "none", ""} else parse(value)

    return convert


# variable -> (key path, converter). Documented in docs/config.md.
ENV_VARS: dict[str, tuple[tuple[str, ...], Any]] = {
    "OPI_MODEL": (("model",), str),
    "OPI_THINKING": (("thinking",), str),
    "OPI_MAX_TURNS": (("max_turns",), _optional_limit(_int)),
    "OPI_MAX_COST": (("max_cost_usd",), _optional_limit(_float)),
    "OPI_TIMEOUT": (("timeout_seconds",), _optional_limit(_float)),
    "OPI_TOOLS": (("tools",), _names),
    "OPI_NO_TOOLS": (("no_tools",), _bool),
    "OPI_ALLOW_MUTATING": (("allow_mutating",), _bool),
    "OPI_SYSTEM_PROMPT": (("system_prompt",), str),
    "OPI_SESSIONS_DIR": (("session_dir",), str),
    "OPI_NO_SESSION": (("no_session",), _bool),
    "OPI_BASH_TIMEOUT": (("bash_timeout",), _float),
    "OPI_MAX_RETRIES": (("retry", "max_retries"), _int),
    "OPI_COMPACTION_THRESHOLD": (("compaction", "threshold_tokens"), _optional_limit(_int)),
}


def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, (key_path, convert) in ENV_VARS.items():
        raw = env.get(name)
        if raw is None:
            continue
        try:
            value = convert(raw)
        except ValueError as exc:
            raise SettingsError(f"environment variable {name}={raw!r}: {exc}") from None
        layer: dict[str, Any] = {key_path[-1]: value}
        for key in reversed(key_path[:-1]):
            layer = {key: layer}
        _check(layer, f"environment variable {name}")
        data = merge(data, layer)
    return data


def parse_tool_names(values: Sequence[str]) -> list[str]:
    """`--tools a,b --tools c` -> [a, b, c]."""
    return [name for value in values for name in _names(value)]
