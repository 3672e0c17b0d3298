"""Errors raised by the model layer. Each names the provider, the HTTP status and the provider's message."""

from __future__ import annotations


class ModelError(Exception):
    """Base class. `retryable` drives the retry loop; nothing else inspects messages."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.detail = message
        if status is not None:
            prefix = f"{provider} HTTP {status}: " if provider else f"HTTP {status}: "
        else:
            prefix = f"{provider}: " if provider else ""
        super().__init__(f"{prefix}{message}".strip())


class ConfigError(ModelError):
    """A bad model spec, unknown provider, or missing API key (exit code 2)."""


class AuthError(ModelError):
    """401/403: wrong or missing key. Never retried (exit code 3)."""


class BadRequestError(ModelError):
    """400 and other 4xx that retrying cannot fix."""


class ContextOverflowError(BadRequestError):
    """The prompt is larger than the model's context window; compaction handles it."""


class RateLimitError(ModelError):
    retryable = True


class OverloadedError(ModelError):
    retryable = True


class ServerError(ModelError):
    retryable = True


class ConnectionFailed(ModelError):
    retryable = True


class StreamInterrupted(ModelError):
    """The stream ended or broke before the message was complete."""

    retryable = True


class MalformedEventError(ModelError):
    """The provider sent an event we cannot parse; retrying may get a clean stream."""

    retryable = True


class RetriesExhausted(ModelError):
    def __init__(self, last: ModelError, attempts: int) -> None:
        self.last = last
        self.attempts = attempts
        super().__init__(
            f"gave up after {attempts} attempts: {last}", provider=last.provider, status=last.status
        )


class Aborted(Exception):
    """The caller cancelled the request (Ctrl+C, timeout)."""


_OVERFLOW_MARKERS = (
    "prompt is too long",
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "too many tokens",
    "input is too long",
    "exceeds the context",
    "reduce the length",
)


def looks_like_context_overflow(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _OVERFLOW_MARKERS)
