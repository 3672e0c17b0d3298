"""Greetings for the opi demo."""


def greet(name: str) -> str:
    """Say hello to `name`."""
    return f"Hello, {name}!"
