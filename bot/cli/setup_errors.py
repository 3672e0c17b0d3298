"""Failures before the agent starts, said so a user can act on them, with the documented exit codes.

- An unwritable session directory names the directory and the two ways out (`--session-dir`,
  `--no-session`) instead of a raw `[Errno 30]`; it is a usage error (exit 2).
- A bad model spec names where it came from: `--model`, `OPI_MODEL`, or the config file that set it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.agent.config import ENV_VARS, Settings, SettingsError, config_files, read_toml
from bot.agent.runtime import SessionUnavailable
from bot.agent.session_store import sessions_dir
from bot.llm import errors

EXIT_FAILURE, EXIT_USAGE, EXIT_AUTH, EXIT_PROVIDER = 1, 2, 3, 4
MODEL_SPEC_PROBLEMS = ("invalid model spec", "unknown provider")


class SessionDirUnwritable(SettingsError):
    """The session directory cannot be created or written (exit code 2)."""


def error_exit_code(error: BaseException) -> int:
    """Map a failure to the documented exit codes."""
    if isinstance(error, errors.RetriesExhausted):
        return error_exit_code(error.last)
    if isinstance(error, errors.AuthError):
        return EXIT_AUTH
    if isinstance(error, errors.ConfigError | SettingsError | SessionUnavailable | ValueError | LookupError):
        return EXIT_USAGE  # bad spec, missing key, unknown tool, session not found
    if isinstance(error, errors.ModelError):
        return EXIT_PROVIDER
    return EXIT_FAILURE


def check_session_dir(settings: Settings) -> None:
    """Create the session directory now and make sure it is writable, so the problem is reported before
    the run, naming the directory."""
    if settings.no_session:
        return
    directory = sessions_dir(settings.session_path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(directory, exc.strerror or str(exc)) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _unwritable(directory, "not writable")


def _unwritable(directory: Path, why: str) -> SessionDirUnwritable:
    return SessionDirUnwritable(f"cannot write session files to {directory}: {why}; choose another directory "
                                "with --session-dir DIR (or OPI_SESSIONS_DIR), or run with --no-session")


def describe_setup_error(exc: BaseException, settings: Settings | None, *, flags: Mapping[str, Any],
                         cwd: Path, config_path: str | None,
                         env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(exit code, message) for a failure before the run."""
    env = os.environ if env is None else env
    message = str(exc)
    if isinstance(exc, OSError) and settings is not None and not settings.no_session:
        directory = sessions_dir(settings.session_path)
        if exc.filename and _related(Path(str(exc.filename)), directory):
            unwritable = _unwritable(directory, exc.strerror or str(exc))
            return EXIT_USAGE, str(unwritable)
    if isinstance(exc, errors.ConfigError) and exc.detail.startswith(MODEL_SPEC_PROBLEMS):
        message += f"; the model is set by {model_source(flags, cwd, config_path, env)}"
    return error_exit_code(exc), message


def _related(path: Path, directory: Path) -> bool:
    path, directory = path.absolute(), directory.absolute()
    return path == directory or path.is_relative_to(directory) or directory.is_relative_to(path)


def model_source(flags: Mapping[str, Any], cwd: Path, config_path: str | None, env: Mapping[str, str]) -> str:
    """Where the `model` setting came from, highest precedence first."""
    if "model" in flags:
        return "--model"
    variable = next(name for name, (keys, _) in ENV_VARS.items() if keys == ("model",))
    if env.get(variable) is not None:
        return f"the environment variable {variable}"
    try:
        files = config_files(cwd, Path(config_path) if config_path else None, env)
        for path in reversed(files):
            if "model" in read_toml(path):
                return str(path)
    except SettingsError:
        pass
    return "the default"
