"""The grep tool's Python search, run as its own process so that it can be killed.

A regex such as `(a+)+$` on a long line makes Python's `re` backtrack for hours inside one C call that
neither a signal handler nor a thread can interrupt; in a child process, cancel and the timeout are a
SIGKILL. The grep tool runs this file as a script with `python -I` (no PYTHONPATH, no user site, no
current directory on sys.path), so it imports the standard library only.

Input on stdin, one JSON object: {"pattern", "ignore_case", "literal", "context", "root", "files"}.
Output on stdout, one JSON object a line: {"path", "line", "text", "match"} for each matching or context
line, in order; a bad pattern is {"error": "..."} and exit code 2. Symlinks are skipped (ripgrep does not
follow them either), so a link in the workspace cannot make this read a file outside it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

_SNIFF_BYTES = 8192


def _compile(request: dict[str, Any]) -> re.Pattern[str]:
    pattern = str(request["pattern"])
    source = re.escape(pattern) if request.get("literal") else pattern
    return re.compile(source, re.IGNORECASE if request.get("ignore_case") else 0)


def _regular_file(path: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode)  # lstat: a symlink is not a regular file


def search_file(path: str, relative: str, regex: re.Pattern[str], context: int) -> Iterator[dict[str, Any]]:
    """One file's matches with their context, read a line at a time."""
    if not _regular_file(path):
        return
    try:
        f = open(path, "rb", opener=_no_follow)  # noqa: SIM115 - closed by the `with` below
    except OSError:
        return  # unreadable or replaced by a link meanwhile: skipped, as ripgrep does
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return
        if b"\x00" in f.read(_SNIFF_BYTES):
            return  # binary
        f.seek(0)
        before: deque[dict[str, Any]] = deque(maxlen=context)
        after_left = 0
        for number, raw in enumerate(f, 1):
            if b"\x00" in raw:
                return  # ripgrep stops at the first NUL it meets
            text = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
            line = {"path": relative, "line": number, "text": text, "match": False}
            if regex.search(text) is not None:
                yield from before
                before.clear()
                yield {**line, "match": True}
                after_left = context
            elif after_left:
                yield line
                after_left -= 1
            elif context:
                before.append(line)


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def run(request: dict[str, Any], out: IO[str]) -> int:
    try:
        regex = _compile(request)
    except re.error as exc:
        out.write(json.dumps({"error": str(exc)}) + "\n")
        return 2
    root = str(request["root"])
    context = int(request.get("context", 0))
    for relative in request["files"]:
        for line in search_file(os.path.join(root, relative), relative, regex, context):
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    out.flush()
    return 0


def main() -> int:
    request = json.load(sys.stdin)
    try:
        return run(request, sys.stdout)
    except BrokenPipeError:  # the tool stopped reading: it has all the matches it wants
        return 0


if __name__ == "__main__":
    sys.exit(main())
