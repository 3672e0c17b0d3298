"""The last check before anything leaves a run: is a secret, in any form we know, in what would go out?

The broker calls `scan(secrets, items)` with every secret of the run (labelled for the notice) and
everything a push, a pull request or a comment would publish: each changed file's full new content as
bytes (binary files included), its path, the commit message, the PR title and body, comment bodies,
branch names. Each secret is searched for in every form `bot.action.redact.encoded_forms` lists (raw,
base64 at every alignment, URL-safe base64, base64 twice, percent-encoded, basic-auth, JSON-escaped)
and as UTF-16; base64 forms are also searched with line breaks removed, so `base64 .git/config`
(wrapped at 76 columns, and holding the already base64-encoded checkout credential) is still caught. A value encoded some other way (hex, reversed, XOR-ed) is not: the scan is the second
line of defence, after the agent never holding a secret at all.

A `Hit` says where (item, line or byte offset) and what (the secret's label, the encoding), never the
value; `describe(hits)` turns hits into a short public notice.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.action.redact import MASK, encoded_forms, secret_lines

# What the broker publishes; "file" items also have their path scanned (as a "file path").
ITEM_KINDS = ("file", "file path", "commit message", "pull request title", "pull request body", "comment",
              "branch name")

_BASE64_FAMILY = frozenset({"base64", "base64 twice", "basic-auth"})
_HITS_PER_NEEDLE = 5  # per item: enough to say where, bounded however often a value repeats
_HITS_PER_ITEM = 50
_BINARY_SNIFF = 8000  # git's rule: a NUL in the first 8000 bytes makes a file binary
_NAME_LIMIT = 120
_LINE_BREAKS = re.compile(rb"[\r\n]")


@dataclass(frozen=True)
class Item:
    """One thing that would leave the run. `name` is the file path, or a label such as "PR body"."""

    kind: str
    name: str
    data: bytes | str

    def __post_init__(self) -> None:
        if self.kind not in ITEM_KINDS:
            raise ValueError(f"unknown outgoing item kind {self.kind!r}: use one of {', '.join(ITEM_KINDS)}")


@dataclass(frozen=True)
class Hit:
    """Where a secret was found. `name` is already safe to show (secrets masked, clipped, no backticks).

    `line` (1-based) is set for text, `offset` (a byte offset) for binary data.
    """

    kind: str
    name: str
    secret: str  # the label the secret was given, e.g. "GitHub token"
    encoding: str  # "raw", "base64", "base64 twice", "basic-auth", "URL-encoded", "JSON-escaped", "UTF-16"
    line: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class _Needle:
    label: str
    encoding: str
    data: bytes


def scan(secrets: Mapping[str, str], items: Iterable[Item]) -> list[Hit]:
    """Every place in `items` where a secret of `secrets` (label -> value) appears, in item order."""
    needles = _needles(secrets)
    if not needles:
        return []
    hits: list[Hit] = []
    for item in items:
        if item.kind == "file":
            hits += _scan_item(Item("file path", item.name, item.name), needles)
        hits += _scan_item(item, needles)
    return hits


def _needles(secrets: Mapping[str, str]) -> list[_Needle]:
    """Every byte string to look for, built once per scan, longest first, each kept for its first label."""
    seen: dict[bytes, _Needle] = {}
    for label, secret in secrets.items():
        for value in secret_lines(secret):
            forms = [(form.encoding, form.text.encode()) for form in encoded_forms(value)]
            forms.append(("UTF-16", value.encode("utf-16-le")))
            for encoding, data in forms:
                seen.setdefault(data, _Needle(label, encoding, data))
    return sorted(seen.values(), key=lambda needle: len(needle.data), reverse=True)


@dataclass(frozen=True)
class _Found:
    start: int  # offset in the original data
    end: int
    needle: _Needle


def _scan_item(item: Item, needles: Sequence[_Needle]) -> list[Hit]:
    data = item.data.encode("utf-8", "surrogatepass") if isinstance(item.data, str) else item.data
    found = _find_all(data, needles)
    if not found:
        return []
    binary = _is_binary(data)
    name = _display_name(item.name, needles)
    hits: list[Hit] = []
    line, counted_to = 1, 0
    for match in sorted(found, key=lambda f: f.start):
        if binary:
            hits.append(Hit(item.kind, name, match.needle.label, match.needle.encoding, offset=match.start))
            continue
        # Sorted offsets: each newline is counted once, so line numbers cost one pass over the data.
        line += data.count(b"\n", counted_to, match.start)
        counted_to = match.start
        hits.append(Hit(item.kind, name, match.needle.label, match.needle.encoding, line=line))
    return hits


def _find_all(data: bytes, needles: Sequence[_Needle]) -> list[_Found]:
    """Matches of every needle, longest needle first; a match inside an earlier (longer) one is dropped."""
    unwrapped = _Unwrapped(data)
    found: list[_Found] = []
    for needle in needles:
        wrapped = needle.encoding in _BASE64_FAMILY
        haystack = unwrapped.data if wrapped else data
        start = haystack.find(needle.data)
        count = 0
        while start >= 0 and count < _HITS_PER_NEEDLE and len(found) < _HITS_PER_ITEM:
            begin, end = ((unwrapped.original(start), unwrapped.original(start + len(needle.data) - 1) + 1)
                          if wrapped else (start, start + len(needle.data)))
            if not any(other.start <= begin and end <= other.end for other in found):
                found.append(_Found(begin, end, needle))
                count += 1
            start = haystack.find(needle.data, start + 1)
    return found


class _Unwrapped:
    """The data without CR/LF (base64 tools wrap lines), mapping offsets back to the original."""

    def __init__(self, data: bytes) -> None:
        self.source = data
        self.data = data.translate(None, b"\r\n") if b"\n" in data or b"\r" in data else data
        self._removed: list[int] | None = None  # stripped index of the byte after each removed one

    def original(self, offset: int) -> int:
        if self.data is self.source:
            return offset
        if self._removed is None:
            self._removed = [m.start() - i for i, m in enumerate(_LINE_BREAKS.finditer(self.source))]
        return offset + bisect.bisect_right(self._removed, offset)


def _is_binary(data: bytes) -> bool:
    if b"\0" in data[:_BINARY_SNIFF]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _display_name(name: str, needles: Sequence[_Needle]) -> str:
    """The name with every secret form masked, made safe for a Markdown code span, and clipped."""
    for needle in needles:
        text = needle.data.decode("utf-8", "replace")
        if text in name:
            name = name.replace(text, MASK)
    name = "".join(ch if ch.isprintable() and ch != "`" else "?" for ch in name)
    return name if len(name) <= _NAME_LIMIT else name[:_NAME_LIMIT - 1] + "…"


_ENCODING_NOTE = {
    "raw": "",
    "base64": " (base64-encoded)",
    "base64 twice": " (base64-encoded twice)",
    "basic-auth": " (as a base64 basic-auth credential)",
    "URL-encoded": " (URL-encoded)",
    "JSON-escaped": " (JSON-escaped)",
    "UTF-16": " (UTF-16-encoded)",
}


def describe(hits: Sequence[Hit], *, action: str = "push blocked", limit: int = 1500) -> str:
    """A public notice naming where each secret was found, never the value, at most `limit` characters.

    For example: "push blocked: `config/x.txt` line 3 contains the GitHub token (base64-encoded)".
    """
    if not hits:
        return ""
    parts: list[str] = []
    for hit in _distinct(hits):
        parts.append(f"{_where(hit)} contains {_label(hit.secret)}{_ENCODING_NOTE.get(hit.encoding, '')}")
    text = f"{action}: "
    for shown, part in enumerate(parts):
        later = len(parts) - shown - 1
        room_for_more = len(f"; and {later} more") if later else 0
        candidate = part if shown == 0 else f"; {part}"
        if shown > 0 and len(text) + len(candidate) + room_for_more > limit:
            return text + f"; and {len(parts) - shown} more"
        text += candidate
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _distinct(hits: Sequence[Hit]) -> list[Hit]:
    """One hit per (place, line, secret): the same line found through two encodings is said once."""
    seen: set[tuple[str, str, int | None, int | None, str]] = set()
    kept: list[Hit] = []
    for hit in hits:
        key = (hit.kind, hit.name, hit.line, hit.offset, hit.secret)
        if key not in seen:
            seen.add(key)
            kept.append(hit)
    return kept


def _where(hit: Hit) -> str:
    if hit.kind == "file":
        place = f"`{hit.name}`"
    elif hit.kind == "file path":
        return f"the path of a changed file (`{hit.name}`)"
    elif hit.kind == "branch name":
        return f"the branch name `{hit.name}`"
    else:
        place = f"the {hit.kind}" if hit.name in ("", hit.kind) else f"the {hit.kind} (`{hit.name}`)"
    if hit.offset is not None:
        return f"{place} (binary) at byte {hit.offset}"
    return f"{place} line {hit.line}" if hit.line is not None else place


def _label(secret: str) -> str:
    clean = "".join(ch if ch.isprintable() and ch != "`" else "?" for ch in secret)[:_NAME_LIMIT]
    return f"the {clean}" if " " in clean else f"the value of `{clean}`"
