"""`edit`: replace exact snippets of a file, one or several at once, all or nothing.

Each `old_text` must occur exactly once in the file as it was before the call (edits in one call do not
see each other's results and may not overlap). When no exact match exists, a fallback compares the
text with trailing whitespace, indentation, line endings and typographic quotes/dashes normalised away,
and Unicode NFKC normalisation applied (fullwidth `，` and `Ａ` match `,` and `A`; a decomposed `é`
matches a precomposed one, as in pi); it is used only if that normalised match is unique, and the
result says so. An old_text that occurs more than once once line endings are ignored is refused as
ambiguous, even when only one occurrence has its exact line endings.

The file keeps its UTF-8 BOM and line endings: replacement text is written with the line ending of the
text it replaces (or the file's dominant one).
"""

from __future__ import annotations

import difflib
import itertools
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bot.tools.base import Tool, ToolContext, ToolError, ToolOutput
from bot.tools.paths import display_path, resolve_for_write
from bot.tools.write import atomic_write, encode_text

_BOM = b"\xef\xbb\xbf"
MAX_DIFF_LINES = 300

# Typographic characters models and editors substitute for ASCII ones.
_FOLD = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033", '"'),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
    **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000", " "),
    "\u2026": "...",
    "\u200b": "",
    "\ufeff": "",
}


class EditItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old_text: str = Field(description="Exact text to replace.")
    new_text: str = Field(description="Replacement (may be empty).")


class EditParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="File path, relative to the workspace.")
    old_text: str | None = Field(
        default=None,
        description="Exact text to replace.",
    )
    new_text: str | None = Field(default=None, description="Replacement.")
    edits: list[EditItem] | None = Field(
        default=None,
        description="Several changes, each matched against the file as it was; they must not overlap.",
    )


@dataclass
class _Match:
    start: int
    end: int
    replacement: str
    fallback: bool


class EditTool(Tool):
    name: ClassVar[str] = "edit"
    description: ClassVar[str] = (
        "Replace text in a file: old_text/new_text for one change, or edits for several (all apply or none). "
        "Each old_text must match exactly once: copy it from the file with enough lines to be unique "
        "(indentation and quote differences are tolerated). Returns a diff. "
        "Only files inside the workspace may be edited."
    )
    Params: ClassVar[type[BaseModel]] = EditParams
    mutating: ClassVar[bool] = True

    def schema(self) -> dict[str, Any]:
        # Inline the edit item's definition: some OpenAI-compatible servers do not resolve $ref.
        schema = super().schema()
        definitions = schema.pop("$defs", {})
        item = dict(definitions["EditItem"])
        item.pop("title", None)
        edits = schema["properties"]["edits"]
        for option in edits.get("anyOf", [edits]):
            if option.get("type") == "array":
                option["items"] = item
        return schema

    def run(self, params: EditParams, ctx: ToolContext) -> ToolOutput:
        edits = _requested_edits(params)
        path = resolve_for_write(ctx.workspace, params.path)
        shown = display_path(ctx.workspace, path)
        raw = _read_existing(path, shown)
        bom = raw.startswith(_BOM)
        content = _decode(raw[len(_BOM):] if bom else raw, shown, len(_BOM) if bom else 0)

        matches = [_locate(content, item, shown, _label(i, len(edits))) for i, item in enumerate(edits)]
        _reject_overlaps(matches, shown)
        updated = content
        for match in sorted(matches, key=lambda m: m.start, reverse=True):
            updated = updated[:match.start] + match.replacement + updated[match.end:]
        if updated == content:
            raise ToolError(f"The edit would not change {shown}: the replacement equals the text it replaces")

        atomic_write(path, (_BOM if bom else b"") + updated.encode("utf-8"), shown)
        return _report(shown, content, updated, matches)


def _requested_edits(params: EditParams) -> list[EditItem]:
    single = params.old_text is not None or params.new_text is not None
    if single and params.edits is not None:
        raise ToolError("Give either old_text/new_text or edits, not both")
    if params.edits is not None:
        if not params.edits:
            raise ToolError("edits is empty; give at least one {old_text, new_text}")
        edits = params.edits
    elif params.old_text is None or params.new_text is None:
        missing = "old_text" if params.old_text is None else "new_text"
        raise ToolError(f"{missing} is missing; give old_text and new_text (or edits)")
    else:
        edits = [EditItem(old_text=params.old_text, new_text=params.new_text)]
    for i, item in enumerate(edits):
        label = _label(i, len(edits))
        if not item.old_text:
            raise ToolError(f"{label}old_text is empty; give the exact text to replace (to create or overwrite "
                            "a whole file use write)")
        if item.old_text == item.new_text:
            raise ToolError(f"{label}old_text and new_text are identical, so there is nothing to change")
        encode_text(item.new_text, f"{label}new_text")
    return edits


def _label(index: int, count: int) -> str:
    return f"edits[{index}]: " if count > 1 else ""


def _read_existing(path: Path, shown: str) -> bytes:
    if path.is_dir():
        raise ToolError(f"{shown} is a directory, not a file")
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ToolError(f"File not found: {shown}. edit changes existing files; use write to create one") from exc
    except PermissionError as exc:
        raise ToolError(f"Cannot read {shown}: permission denied") from exc
    except OSError as exc:
        raise ToolError(f"Cannot read {shown}: {exc.strerror or exc}") from exc


def _decode(data: bytes, shown: str, base_offset: int) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ToolError(f"{shown} is a binary file (NUL byte at offset {base_offset + nul}); edit only changes "
                        "UTF-8 text files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(
            f"{shown} is not UTF-8: invalid byte 0x{data[exc.start]:02x} at offset {base_offset + exc.start}. "
            "edit only changes UTF-8 text files; use bash to convert it (e.g. iconv) or write to replace it"
        ) from exc


# -- matching ----------------------------------------------------------------------------------------
def _locate(content: str, item: EditItem, shown: str, label: str) -> _Match:
    count, start, needle = _exact_occurrences(content, item.old_text)
    if count == 1:
        end = start + len(needle)
        return _Match(start, end, _with_line_endings(item.new_text, content, start, end), fallback=False)
    if count > 1:
        raise ToolError(f"{label}old_text matches {count} times in {shown}; add surrounding lines to make it "
                        "unique")
    return _fallback_match(content, item, shown, label)


def _exact_occurrences(content: str, old: str) -> tuple[int, int, str]:
    """(count, first index, the variant found) for old_text with any line endings: as given, LF, CRLF.
    The count adds up every variant, so `a\nb` in a file holding both `a\r\nb` and `a\nb` is two matches
    (ambiguous), not one."""
    lf = old.replace("\r\n", "\n")
    variants = dict.fromkeys([old, lf, lf.replace("\n", "\r\n")])
    total, found_at, found = 0, -1, old
    for variant in variants:
        count, first = _occurrences(content, variant)
        if count and found_at < 0:
            found_at, found = first, variant
        total += count
    return total, found_at, found


def _occurrences(haystack: str, needle: str) -> tuple[int, int]:
    """Overlapping occurrences: "aa" occurs twice in "aaa", which is ambiguous for an edit."""
    count, first, index = 0, -1, haystack.find(needle)
    while index >= 0:
        count += 1
        first = index if first < 0 else first
        index = haystack.find(needle, index + 1)
    return count, first


def _fallback_match(content: str, item: EditItem, shown: str, label: str) -> _Match:
    needle = _normalize(item.old_text)[0]
    if not needle.strip("\n"):
        raise ToolError(f"{label}old_text was not found in {shown}{_closest_hint(content, item.old_text)}")
    folded, index, ends = _normalize_spans(content)
    count, nstart = _occurrences(folded, needle)
    if count == 0:
        raise ToolError(f"{label}old_text was not found in {shown} (not even ignoring whitespace and quote "
                        f"differences){_closest_hint(content, item.old_text)}")
    if count > 1:
        raise ToolError(f"{label}old_text was not found exactly in {shown}, and ignoring whitespace and quote "
                        f"differences it matches {count} times; copy the exact text and add surrounding lines "
                        "to make it unique")
    nend = nstart + len(needle)
    at_line_start = nstart == 0 or folded[nstart - 1] == "\n"
    start = index[nstart]
    if at_line_start:  # take the file's own indentation too, so the replacement's indentation governs
        start = content.rfind("\n", 0, start) + 1 if folded[nstart] != "\n" else start
    end = ends[nend - 1]
    replacement = _reindent(item.new_text, item.old_text, content[start:end], at_line_start)
    return _Match(start, end, _with_line_endings(replacement, content, start, end), fallback=True)


def _normalize(text: str) -> tuple[str, list[int]]:
    folded, starts, _ = _normalize_spans(text)
    return folded, starts


def _normalize_spans(text: str) -> tuple[str, list[int], list[int]]:
    """Text with each line stripped of leading/trailing whitespace, typographic characters folded to
    ASCII and NFKC applied, plus, for every character of the result, where the characters it came from
    start and end (a base character and its combining marks are normalised together, as one unit)."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    while pos <= len(text):
        newline = text.find("\n", pos)
        line_end = len(text) if newline < 0 else newline
        line = text[pos:line_end]
        first = pos + len(line) - len(line.lstrip())
        last = pos + len(line.rstrip())
        for start, end in _clusters(text, first, last):
            piece = "".join(_FOLD.get(ch, ch) for ch in text[start:end])
            folded = unicodedata.normalize("NFKC", piece)
            out.append(folded)
            starts.extend([start] * len(folded))
            ends.extend([end] * len(folded))
        if newline < 0:
            break
        out.append("\n")
        starts.append(newline)
        ends.append(newline + 1)
        pos = newline + 1
    return "".join(out), starts, ends


def _clusters(text: str, first: int, last: int) -> list[tuple[int, int]]:
    """(start, end) of each base character with the combining marks that follow it."""
    spans: list[tuple[int, int]] = []
    for i in range(first, last):
        if spans and unicodedata.combining(text[i]):
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t"))]


def _reindent(new: str, old: str, matched: str, first_line_included: bool) -> str:
    """Shift new_text's indentation the way the file's indentation differs from old_text's, when that
    difference is one consistent prefix change (e.g. the model dropped a level or used 2 spaces for 4)."""
    old_lines = old.replace("\r\n", "\n").split("\n")
    file_lines = matched.replace("\r\n", "\n").split("\n")
    if len(old_lines) != len(file_lines):
        return new
    skip = 0 if first_line_included else 1
    pairs = [(o, f) for o, f in zip(old_lines[skip:], file_lines[skip:], strict=True) if o.strip() and f.strip()]
    if not pairs:
        return new
    old_prefix, file_prefix = _indent(pairs[0][0]), _indent(pairs[0][1])
    if old_prefix == file_prefix:
        return new
    for o, f in pairs:
        oi = _indent(o)
        if not oi.startswith(old_prefix) or _indent(f) != file_prefix + oi[len(old_prefix):]:
            return new
    lines = new.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if (i == 0 and not first_line_included) or not line.strip() or not line.startswith(old_prefix):
            continue
        lines[i] = file_prefix + line[len(old_prefix):]
    return "\n".join(lines)


def _with_line_endings(new: str, content: str, start: int, end: int) -> str:
    """new_text with the line ending of the text it replaces, or the file's dominant one."""
    replaced = content[start:end]
    if "\r\n" in replaced:
        eol = "\r\n"
    elif "\n" in replaced:
        eol = "\n"
    else:
        crlf = content.count("\r\n")
        eol = "\r\n" if crlf > content.count("\n") - crlf else "\n"
    lf = new.replace("\r\n", "\n")
    return lf.replace("\n", "\r\n") if eol == "\r\n" else lf


def _reject_overlaps(matches: list[_Match], shown: str) -> None:
    ordered = sorted(enumerate(matches), key=lambda pair: pair[1].start)
    for (i, a), (j, b) in itertools.pairwise(ordered):
        if b.start < a.end:
            first, second = sorted((i, j))
            raise ToolError(f"edits[{first}] and edits[{second}] overlap in {shown}; merge them into one edit")


def _closest_hint(content: str, old: str) -> str:
    wanted = next((line.strip() for line in old.splitlines() if line.strip()), "")
    if not wanted:
        return ""
    lines = content.split("\n")[:20000]  # bound the cost on huge files
    stripped = [line.strip() for line in lines]
    close = difflib.get_close_matches(wanted, stripped, n=1, cutoff=0.6)
    if not close:
        return ""
    number = stripped.index(close[0]) + 1
    return f". The most similar line is {number}: {lines[number - 1].rstrip()[:200]!r}; read the file to copy the exact text"


# -- result ------------------------------------------------------------------------------------------
def _report(shown: str, before: str, after: str, matches: list[_Match]) -> ToolOutput:
    diff = unified_diff(before, after, shown)
    added = sum(1 for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff.splitlines() if line.startswith("-") and not line.startswith("---"))
    fallback = [i for i, m in enumerate(matches) if m.fallback]
    first_changed = before[:min(m.start for m in matches)].count("\n") + 1
    summary = (f"Edited {shown}: {len(matches)} replacement{'s' if len(matches) != 1 else ''}, "
               f"+{added} -{removed} lines.")
    if fallback:
        which = "the edit" if len(matches) == 1 else "edits " + ", ".join(f"[{i}]" for i in fallback)
        summary += (f" Note: {which} had no exact match and matched after normalising whitespace, indentation "
                    "and quotes; check the diff.")
    shown_diff = diff.splitlines(keepends=True)
    text = "".join(shown_diff[:MAX_DIFF_LINES])
    if len(shown_diff) > MAX_DIFF_LINES:
        text += f"[diff cut at {MAX_DIFF_LINES} of {len(shown_diff)} lines; read the file to check the rest]\n"
    return ToolOutput(
        f"{summary}\n\n{text}".rstrip("\n"),
        details={"path": shown, "diff": diff, "added": added, "removed": removed, "replacements": len(matches),
                 "fallback": fallback, "first_changed_line": first_changed},
    )


def unified_diff(before: str, after: str, shown: str) -> str:
    """A unified diff as `diff -u` prints it, with line endings normalised to LF for readability."""
    a = _diff_lines(before.replace("\r\n", "\n"))
    b = _diff_lines(after.replace("\r\n", "\n"))
    return "".join(difflib.unified_diff(a, b, fromfile=f"a/{shown}", tofile=f"b/{shown}", n=3))


def _diff_lines(text: str) -> list[str]:
    lines = [line + "\n" for line in text.split("\n")]
    if lines[-1] == "\n":
        lines.pop()  # the text ended with a newline
    else:
        lines[-1] = lines[-1][:-1] + "\n\\ No newline at end of file\n"
    return lines
