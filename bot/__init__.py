"""opi-bot: a coding agent for the terminal and for GitHub Actions."""

__version__ = "0.1.0"
