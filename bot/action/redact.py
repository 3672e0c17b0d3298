"""One redaction function for every output path: comments, commits, outputs, logs and session files.

Secrets come from three places: environment variables whose names mark them as secret (the same rule
that scrubs tool subprocess environments), values registered with `add`/`mask` (the action's own
tokens), and well-known token shapes (defence in depth for a token that reached the run some other way).

Each registered value is masked in every form `encoded_forms` lists: raw, base64 (alone and at each of
the three byte alignments inside longer data, standard and URL-safe alphabet; and base64 of that
base64 again), percent-encoded, the basic-auth header forms that actions/checkout and git write, and
JSON-escaped. Another encoding (hex, compression, a reversed or split value, ...) is not recognised
here; the protection against that is that the agent never holds a secret at all. `mask_commands()` gives the `::add-mask::` lines that make the runner
hide the same forms in the job log; `mask()` prints them for one new value. The same forms are what
`bot.action.leakscan` searches outgoing data for.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, quote_plus

from bot.tools.base import is_secret_env_name
from bot.tools.shapes import mask_token_shapes

MASK = "***"

# Shorter values are too likely to be ordinary words or numbers; GitHub applies a similar floor. Encoded
# forms shorter than this (the aligned base64 of a very short value) are skipped for the same reason.
_MIN_SECRET_LENGTH = 6

# The user names git and actions/checkout put in front of a token in a basic-auth header, and the
# password GitHub documents for a token used as the user name.
_BASIC_AUTH_USERS = ("x-access-token", "x-oauth-basic", "oauth2", "git")

@dataclass(frozen=True)
class EncodedForm:
    """One string a secret can appear as; `encoding` names the form ("raw", "base64", ...)."""

    encoding: str
    text: str


def secret_lines(secret: str) -> list[str]:
    """The values to look for: the whole secret and, for a multi-line one, each line (as GitHub does)."""
    values: list[str] = []
    for value in (secret, *secret.splitlines()):
        value = value.strip()
        # PEM armour (`-----BEGIN RSA PRIVATE KEY-----`) is in every key file of the world, not a secret.
        if value.startswith("-----") and value.endswith("-----"):
            continue
        if len(value) >= _MIN_SECRET_LENGTH and value not in values:
            values.append(value)
    return values


def encoded_forms(value: str) -> list[EncodedForm]:
    """Every form of `value` that is masked and scanned for, each string once, the raw value first.

    The aligned base64 forms are the characters of base64(prefix + value + suffix) that depend on the
    value alone, for a prefix of 0, 1 or 2 bytes mod 3: whatever surrounds the value (a user name in
    `user:token`, other text in a base64-encoded file), one of the three is a substring of the encoding.
    """
    raw = value.encode()
    candidates: list[tuple[str, str]] = [("raw", value)]
    for user in _BASIC_AUTH_USERS:
        candidates.append(("basic-auth", _b64(f"{user}:{value}".encode())))
    candidates.append(("basic-auth", _b64(f"{value}:x-oauth-basic".encode())))
    candidates.append(("basic-auth", _b64(f"{value}:".encode())))
    candidates.append(("base64", _b64(raw)))
    candidates.extend(("base64", form) for form in _aligned_base64(raw))
    # `base64 .git/config` encodes the already base64-encoded header a second time.
    candidates.extend(("base64 twice", form) for inner in _aligned_base64(raw)
                      for form in _aligned_base64(inner.encode()))
    candidates.extend(("URL-encoded", form) for form in _percent_forms(value))
    candidates.extend(("JSON-escaped", form) for form in _json_forms(value))
    forms: list[EncodedForm] = []
    seen: set[str] = set()
    for encoding, text in candidates:
        url_safe = text.replace("+", "-").replace("/", "_") if encoding in ("base64", "basic-auth") else text
        for variant in (text, url_safe):
            if len(variant) >= _MIN_SECRET_LENGTH and variant not in seen:
                seen.add(variant)
                forms.append(EncodedForm(encoding, variant))
    return forms


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _aligned_base64(raw: bytes) -> list[str]:
    forms = []
    for prefix in range(3):
        encoded = _b64(b"\0" * prefix + raw).rstrip("=")
        # Characters that carry any bit of the prefix, or of whatever follows the value, are dropped.
        first = -(-8 * prefix // 6)
        last = 8 * (prefix + len(raw)) // 6
        forms.append(encoded[first:last])
    return forms


def _percent_forms(value: str) -> list[str]:
    forms = [quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="/")]
    # Some encoders write lower-case hex digits (%2f); both spellings decode to the same value.
    forms += [re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), form) for form in forms]
    return [form for form in forms if form != value]


def _json_forms(value: str) -> list[str]:
    forms = [json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]]
    forms += [form.replace("/", "\\/") for form in forms]  # PHP and some others escape the slash too
    return [form for form in forms if form != value]


def add_mask_lines(text: str) -> list[str]:
    """`::add-mask::` commands that make the runner mask exactly `text` in the job log.

    The runner unescapes %25, %0D and %0A in a command's data, so a value holding `%` (every
    percent-encoded form) is sent escaped. Older runners do not unescape %25, so the value is also sent
    as is; a mask that matches nothing costs nothing.
    """
    escaped = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    lines = [f"::add-mask::{escaped}"]
    if escaped != text and "\n" not in text and "\r" not in text:
        lines.append(f"::add-mask::{text}")
    return lines


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        # Ordered, so mask_commands prints each value before its encodings.
        self._forms: dict[str, None] = {}
        self._longest_first: list[str] = []
        self._told: set[str] = set()  # forms the runner was given `::add-mask::` for
        for secret in secrets:
            self.add(secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Redactor:
        source = os.environ if env is None else env
        return cls(value for name, value in source.items() if is_secret_env_name(name))

    def add(self, secret: str) -> list[str]:
        """Register a value and every encoded form of it; returns the forms that were new.

        Multi-line values are also registered line by line, as GitHub does.
        """
        new: list[str] = []
        for value in secret_lines(secret):
            self._secrets.add(value)
            for form in encoded_forms(value):
                if form.text not in self._forms:
                    self._forms[form.text] = None
                    new.append(form.text)
        if new:
            # Longest first, so a form that contains another (a basic-auth header holds the base64 of
            # the token at one alignment) is masked whole.
            self._longest_first = sorted(self._forms, key=len, reverse=True)
        return new

    def mask(self, secret: str, stream: IO[str] | None = None) -> None:
        """Register a value and tell the runner to mask it, and each encoded form, in the log as well
        (also when it was registered before: registering is not telling the runner; what it was already
        told is not repeated)."""
        self.add(secret)
        for value in secret_lines(secret):
            for form in encoded_forms(value):
                if form.text in self._told:
                    continue
                self._told.add(form.text)
                for line in add_mask_lines(form.text):
                    print(line, file=stream or sys.stdout, flush=True)

    def mask_commands(self) -> list[str]:
        """`::add-mask::` lines for every registered value and each of its encoded forms (the caller prints
        them: from then on the runner counts as told)."""
        self._told.update(self._forms)
        return [line for form in self._forms for line in add_mask_lines(form)]

    @property
    def secrets(self) -> frozenset[str]:
        """The registered values themselves (not their encoded forms)."""
        return frozenset(self._secrets)

    def __call__(self, text: str) -> str:
        for form in self._longest_first:
            if form in text:
                text = text.replace(form, MASK)
        return mask_token_shapes(text)

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
        # Only "\n" ends a line: splitlines() would also cut at U+2028, U+2029 and U+0085, which JSON keeps
        # raw inside strings, and the halves would be written back as two corrupt lines.
        lines = original.split("\n")
        for line in lines[:-1] if original.endswith("\n") else lines:
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
