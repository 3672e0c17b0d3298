"""The tool contract. A tool is a pydantic parameter model plus a `run` function.

The parameter model's JSON schema is exactly what the model sees, so the same class both documents
and validates the arguments.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError


class ToolError(Exception):
    """A failure to report to the model as an error result (bad path, no match, ...)."""


@dataclass
class ToolOutput:
    text: str
    is_error: bool = False
    # For renderers and sessions (diffs, exit codes, full-log paths); never sent to the model.
    details: dict[str, Any] | None = None


# Never hand these to a subprocess the model controls: it could print or exfiltrate them.
_SECRET_NAMES = frozenset({
    "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "GROQ_API_KEY", "DEEPSEEK_API_KEY",
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "MISTRAL_API_KEY", "XAI_API_KEY", "GITHUB_TOKEN", "GH_TOKEN",
    "INPUT_GITHUB_TOKEN",
})
_SECRET_PREFIXES = ("ACTIONS_",)
_SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_SECRET_ACCESS_KEY", "_PRIVATE_KEY")


def is_secret_env_name(name: str) -> bool:
    upper = name.upper()
    return (
        upper in _SECRET_NAMES
        or upper.startswith(_SECRET_PREFIXES)
        or (upper.startswith("INPUT_") and upper.endswith(("_KEY", "_TOKEN")))
        or upper.endswith(_SECRET_SUFFIXES)
    )


def scrubbed_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if not is_secret_env_name(k)}


DEFAULT_OUTPUT_CAP_BYTES = 50 * 1024 * 1024


@dataclass
class ToolContext:
    """What every tool call gets. Call `cleanup()` when the run ends: it deletes the run's temp directory
    (bash's full-output logs, which results refer to, live there until then)."""

    workspace: Path
    env: dict[str, str] = field(default_factory=scrubbed_env)
    cancel: threading.Event = field(default_factory=threading.Event)
    bash_timeout: float = 120.0
    extra_env_names: tuple[str, ...] = ()  # additional names to scrub (e.g. configured endpoints' key vars)
    # bash: a command whose output reaches this many bytes on disk is killed.
    output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES
    # grep: a search running longer than this is stopped (the Python fallback runs arbitrary regexes).
    search_timeout: float = 120.0
    # Where this run keeps temporary files; created on first use by `run_temp_dir()`.
    temp_dir: Path | None = None

    def command_env(self) -> dict[str, str]:
        """The environment for every tool subprocess: `env` scrubbed again together with
        `extra_env_names`, so a careless caller cannot leak a key. Never os.environ."""
        extra = {name.upper() for name in self.extra_env_names}
        env = {k: v for k, v in self.env.items() if not is_secret_env_name(k) and k.upper() not in extra}
        env.setdefault("GIT_TERMINAL_PROMPT", "0")  # never wait for credentials nobody can type
        return env

    def run_temp_dir(self) -> Path:
        """This run's private temp directory (mode 0700), created on first use."""
        if self.temp_dir is None or not self.temp_dir.is_dir():
            self.temp_dir = Path(tempfile.mkdtemp(prefix="opi-run-"))
            # A safety net for a caller that forgets cleanup(); it cannot run after os._exit or SIGKILL.
            atexit.register(shutil.rmtree, self.temp_dir, ignore_errors=True)
        return self.temp_dir

    def cleanup(self) -> None:
        """Delete the run's temp directory and everything in it. Safe to call more than once."""
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


_SCHEMA_CACHE: dict[type[BaseModel], dict[str, Any]] = {}


class Tool:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    mutating: ClassVar[bool] = False

    def run(self, params: Any, ctx: ToolContext) -> ToolOutput:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        # Generating a schema costs about a millisecond per tool and the loop asks on every turn, so it
        # is built once per parameter class; callers get a copy they may change.
        cached = _SCHEMA_CACHE.get(self.Params)
        if cached is None:
            cached = self.Params.model_json_schema()
            cached.pop("title", None)
            _SCHEMA_CACHE[self.Params] = cached
        return copy.deepcopy(cached)

    def execute(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Validate and run; every failure becomes an error result rather than an exception."""
        try:
            params = self.Params.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            )
            return ToolOutput(f"Invalid arguments for {self.name}: {problems}", is_error=True)
        try:
            return self.run(params, ctx)
        except ToolError as exc:
            return ToolOutput(str(exc), is_error=True)
