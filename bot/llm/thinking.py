"""The reasoning-effort levels: the one definition, for settings, flags and providers alike. No imports
beyond `typing`, so the argument parser (on the path of `opi --version`) can use it cheaply."""

from __future__ import annotations

from typing import Literal, get_args

ThinkingLevel = Literal["off", "low", "medium", "high"]
THINKING_LEVELS: tuple[ThinkingLevel, ...] = get_args(ThinkingLevel)
