"""Retrying a model call: exponential backoff with jitter, `retry-after` honoured, bounded attempts."""

from __future__ import annotations

import random
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from bot.llm.base import Done, Model, ModelRequest, StreamEvent
from bot.llm.errors import Aborted, ModelError, RetriesExhausted, StreamInterrupted
from bot.llm.messages import AssistantMessage


class RetryPolicy(BaseModel):
    """How model calls are retried; also the config file's `[retry]` table (one definition for both)."""

    # strict: a TOML string "10" where a number belongs is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_retries: int = Field(default=4, ge=0)
    base_delay: float = Field(default=1.0, ge=0)
    max_delay: float = Field(default=60.0, ge=0)
    # A server asking for longer than this is treated as a failure, not waited out.
    max_retry_after: float = Field(default=300.0, ge=0)

    def delay(self, attempt: int, error: ModelError) -> float:
        if error.retry_after is not None:
            return max(0.0, error.retry_after)
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        jitter: float = 0.5 + random.random() / 2  # "equal jitter": spreads clients, keeps a floor
        return backoff * jitter


OnEvent = Callable[[StreamEvent], None]
OnRetry = Callable[[int, float, ModelError], None]


def complete(model: Model, request: ModelRequest, policy: RetryPolicy,
             on_event: OnEvent | None = None, on_retry: OnRetry | None = None) -> AssistantMessage:
    """Stream one assistant message, retrying retryable failures. Deltas of a failed attempt were
    already delivered to `on_event`; `on_retry` tells the consumer to discard them."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _stream_once(model, request, on_event)
        except ModelError as error:
            if not error.retryable:
                raise
            if attempt > policy.max_retries:
                raise RetriesExhausted(error, attempt) from error
            delay = policy.delay(attempt, error)
            if delay > policy.max_retry_after:
                raise RetriesExhausted(error, attempt) from error
            if on_retry is not None:
                on_retry(attempt, delay, error)
            if request.cancel.wait(delay):
                raise Aborted("cancelled while waiting to retry") from error


def _stream_once(model: Model, request: ModelRequest, on_event: OnEvent | None) -> AssistantMessage:
    for event in model.stream(request):
        if request.cancel.is_set():
            raise Aborted("cancelled")
        if isinstance(event, Done):
            return event.message
        if on_event is not None:
            on_event(event)
    raise StreamInterrupted("stream ended without a final message", provider=model.info.provider)
