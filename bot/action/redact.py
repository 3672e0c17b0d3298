"""One redaction function for every output path: comments, commits, outputs, logs and session files.

Secrets come from three places: environment variables whose names mark them as secret (the same rule
that scrubs tool subprocess environments), values the action itself masks with `::add-mask::`, and
well-known token shapes (defence in depth for a token that reached the run some other way).
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from bot.tools.base import is_secret_env_name

MASK = "***"

# Shorter values are too likely to be ordinary words or numbers; GitHub applies a similar floor.
_MIN_SECRET_LENGTH = 6

_TOKEN_SHAPES = re.compile(
    r"\b(?:"
    r"gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub classic/OAuth/user-to-server/server/refresh tokens
    r"|github_pat_[A-Za-z0-9_]{20,}"  # fine-grained PATs
    r"|sk-ant-[A-Za-z0-9_\-]{16,}"  # Anthropic
    r"|sk-(?:proj-)?[A-Za-z0-9_\-]{20,}"  # OpenAI-style
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r")"
)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Redactor:
        source = os.environ if env is None else env
        return cls(value for name, value in source.items() if is_secret_env_name(name))

    def add(self, secret: str) -> None:
        """Register a value; multi-line values are also masked line by line, as GitHub does."""
        for value in (secret, *secret.splitlines()):
            value = value.strip()
            if len(value) < _MIN_SECRET_LENGTH:
                continue
            self._secrets.add(value)
            # actions/checkout stores the token as basic-auth base64 in .git/config; mask that form too.
            self._secrets.add(base64.b64encode(f"x-access-token:{value}".encode()).decode())

    def mask(self, secret: str, stream: IO[str] | None = None) -> None:
        """Register a value and tell the runner to mask it in the log as well."""
        self.add(secret)
        for line in secret.splitlines() or [secret]:
            if line.strip():
                print(f"::add-mask::{line.strip()}", file=stream or sys.stdout, flush=True)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def __call__(self, text: str) -> str:
        # Longest first, so a secret that contains another is masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        return _TOKEN_SHAPES.sub(MASK, text)

    def value(self, data: Any) -> Any:
        """Redact every string inside a JSON-like value (keys included)."""
        if isinstance(data, str):
            return self(data)
        if isinstance(data, list):
            return [self.value(item) for item in data]
        if isinstance(data, dict):
            return {self(str(k)): self.value(v) for k, v in data.items()}
        return data

    def file_jsonl(self, path: Path) -> bool:
        """Rewrite a JSONL file with every string redacted; True when something changed.

        Lines are parsed so that a secret which JSON escaping altered is still found; a line that is
        not JSON (a torn last write) is redacted as text rather than dropped.
        """
        try:
            original = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        out: list[str] = []
        for line in original.splitlines():
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                out.append(self(line))
                continue
            redacted_value = self.value(parsed)
            # Untouched lines keep their exact bytes; only lines holding a secret are re-serialised.
            out.append(line if redacted_value == parsed else json.dumps(redacted_value, ensure_ascii=False))
        redacted = "\n".join(out) + ("\n" if original.endswith("\n") else "")
        if redacted == original:
            return False
        tmp = path.with_name(path.name + ".redacting")
        tmp.write_text(redacted, encoding="utf-8")
        tmp.replace(path)
        return True
