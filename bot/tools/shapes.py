"""Well-known credential shapes, masked in what tools return to the model when the process holds no list
of secrets to look for (the action's agent worker holds none by design).

Defence in depth: a token that reached a file the agent can read (a careless earlier step) should not go
to the model in clear. Exact values and their encodings are the broker's job (`bot.action.redact`).
"""

from __future__ import annotations

import re

MASK = "***"

TOKEN_SHAPES = re.compile(
    r"\b(?:"
    r"gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub classic/OAuth/user-to-server/server/refresh tokens
    r"|github_pat_[A-Za-z0-9_]{20,}"  # fine-grained PATs
    r"|sk-ant-[A-Za-z0-9_\-]{16,}"  # Anthropic
    r"|sk-(?:proj-)?[A-Za-z0-9_\-]{20,}"  # OpenAI-style
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r")"
)


def mask_token_shapes(text: str) -> str:
    return TOKEN_SHAPES.sub(MASK, text)
