"""Helpers the tool tests share."""

from __future__ import annotations

from pathlib import Path


def recording_wrapper(directory: Path, name: str, real: str) -> tuple[Path, Path]:
    """A `name` script in `directory/bin` that appends the environment it was given to a file, then runs
    the real program: (the script, the file). To see what a tool hands its subprocesses."""
    dump = directory / f"{name}-env.txt"
    script = directory / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!/bin/sh\nenv >> '{dump}'\nexec '{real}' \"$@\"\n")
    script.chmod(0o755)
    return script, dump
