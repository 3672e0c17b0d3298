"""The runner's file commands: step outputs, the step summary, and state shared with the post step.

Outputs use the multiline-safe heredoc form (`name<<DELIM`), with a random delimiter that cannot occur in
the value. Run state lives in a JSON file under RUNNER_TEMP whose path is also saved with
`$GITHUB_STATE`, so the post step finds it either way, and it is rewritten atomically at each phase.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
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


# Delivery facts `RunState.record` accepts: each is saved the moment it happens, so whatever stops the
# main step afterwards (a 502 on the final edit, SIGKILL, a timeout), the post step can say exactly what
# was delivered and post the report the main step could not.
FACTS = frozenset({
    "phase", "conclusion", "session_path", "session_id", "tracking_comment_id",
    "pushing_branch",  # a push to this branch started (it may or may not have landed)
    "pushed_sha", "pushed_branch",  # the push landed
    "pr_url",
    "artifact_id", "artifact_url", "artifact_name",
    "report_body",  # the final report, rendered and redacted, held for the post step
    "report_posted",  # True once the final report is on GitHub, False when posting it failed
    "report_error",  # why it could not be posted (for the log; never echoed in a comment)
})


class StateError(Exception):
    """A state file that must not be trusted or cannot be written."""


@dataclass
class RunState:
    """What the post step needs to finish a run the main step could not, and the facts of what happened."""

    phase: str = "started"  # started -> running -> finished
    repo: str = ""
    number: int | None = None
    tracking_comment_id: int | None = None
    session_path: str = ""
    session_id: str = ""
    run_url: str = ""
    conclusion: str = ""
    pushing_branch: str = ""
    pushed_sha: str = ""
    pushed_branch: str = ""
    pr_url: str = ""
    artifact_id: int | None = None
    artifact_url: str = ""
    artifact_name: str = ""
    report_body: str = ""
    report_posted: bool | None = None  # None: no final report attempted yet
    report_error: str = ""
    # When the run started (seconds since the epoch): the post step's duration for a run that died.
    started_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Where `record` saves; not part of the file.
    path: Path | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path) -> RunState | None:
        """The state at `path`, or None when it is missing, unreadable or not trustworthy.

        Only a file owned by this process's user and writable by no one else is read: the agent runs as
        another (unprivileged) user, and a state file it could write would let it dictate what the post
        step posts under the bot's name."""
        try:
            info = path.stat()
            if info.st_uid != os.geteuid() or info.st_mode & 0o022:
                return None
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "path"}
        try:
            state = cls(**known)
        except TypeError:
            return None
        state.path = path
        return state

    @property
    def pushed(self) -> bool:
        return bool(self.pushed_sha)

    @property
    def needs_post_step(self) -> bool:
        """The post step has work: the run never finished, or its final report is not on GitHub."""
        return self.phase != "finished" or self.report_posted is False

    def record(self, **facts: Any) -> None:
        """Set delivery facts and save at once (atomically), e.g. `state.record(pushed_sha=sha,
        pushed_branch="feature")`. Unknown names are a programming error and raise ValueError."""
        unknown = set(facts) - FACTS
        if unknown:
            raise ValueError(f"unknown run-state facts: {', '.join(sorted(unknown))}")
        for name, value in facts.items():
            setattr(self, name, value)
        if self.path is not None:
            self.save(self.path)

    def save(self, path: Path) -> None:
        """Write the whole state atomically (a reader, the post step, sees the old state or the new one,
        never half of either), readable by its owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        write_file_atomically(path, json.dumps(data, indent=2).encode("utf-8"))
        self.path = path


def write_file_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """A new file with `data`, fsynced, renamed over `path`: never written through a link or a file
    someone else put there, and never seen half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp creates it 0600, with O_EXCL
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def state_path(temp_dir: Path, run_id: str) -> Path:
    return temp_dir / (f"opi-action-state-{run_id}.json" if run_id else STATE_FILE_NAME)


def publish_state_path(github_state: Path | None, path: Path) -> None:
    if github_state is None:
        return
    with github_state.open("a", encoding="utf-8") as out:
        out.write(f"{STATE_KEY}={path}\n")
