"""The runner's file commands: step outputs, the step summary, and state shared with the post step.

Outputs use the multiline-safe heredoc form (`name<<DELIM`), with a random delimiter that cannot occur in
the value. Run state lives in a JSON file under RUNNER_TEMP whose path is also saved with
`$GITHUB_STATE`, so the post step finds it either way, and it is rewritten atomically at each phase.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.action.redact import Redactor

STATE_FILE_NAME = "opi-action-state.json"
STATE_KEY = "opi_state_file"


def write_output(path: Path | None, name: str, value: str, redact: Redactor) -> None:
    if path is None:
        return
    value = redact(value)
    delimiter = f"opi_{secrets.token_hex(8)}"
    while delimiter in value:
        delimiter = f"opi_{secrets.token_hex(8)}"
    with path.open("a", encoding="utf-8") as out:
        out.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def append_summary(path: Path | None, markdown: str, redact: Redactor) -> None:
    if path is None:
        return
    with path.open("a", encoding="utf-8") as out:
        out.write(redact(markdown).rstrip("\n") + "\n")


@dataclass
class RunState:
    """What the post step needs to finish a run the main step could not."""

    phase: str = "started"  # started -> running -> finished
    repo: str = ""
    number: int | None = None
    tracking_comment_id: int | None = None
    session_path: str = ""
    run_url: str = ""
    conclusion: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RunState | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(path)


def state_path(temp_dir: Path, run_id: str) -> Path:
    return temp_dir / (f"opi-action-state-{run_id}.json" if run_id else STATE_FILE_NAME)


def publish_state_path(github_state: Path | None, path: Path) -> None:
    if github_state is None:
        return
    with github_state.open("a", encoding="utf-8") as out:
        out.write(f"{STATE_KEY}={path}\n")
