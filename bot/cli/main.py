"""`opi` entry point (placeholder until the CLI lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:
        from bot import __version__

        print(f"opi {__version__}")
        return 0
    print("opi: not implemented yet", file=sys.stderr)
    return 2
