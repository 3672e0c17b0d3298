"""Retries through `bot.llm.retry.complete` with both real providers against the scripted server.

Delays are asserted through the `on_retry` callback (what the policy decided), never by wall time.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bot.llm.base import Model, ModelRequest
from bot.llm.errors import (
    AuthError,
    BadRequestError,
    ConnectionFailed,
    ContextOverflowError,
    ModelError,
    OverloadedError,
    RateLimitError,
    RetriesExhausted,
    ServerError,
    StreamInterrupted,
)
from bot.llm.http import error_for_status, parse_retry_after
from bot.llm.messages import UserMessage
from bot.llm.models import resolve_model
from bot.llm.retry import RetryPolicy, complete
from tests.fake_llm import ErrorReply, FakeLLMServer, Reply, StreamErrorReply

FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.005)
DIALECTS = ["anthropic", "openai"]
SPECS = {"anthropic": "anthropic:claude-sonnet-4-5", "openai": "openai:gpt-4o"}


def model_for(server: FakeLLMServer, dialect: str) -> Model:
    return resolve_model(SPECS[dialect], env=server.env())


def request() -> ModelRequest:
    return ModelRequest(system="", messages=[UserMessage(content="hi")])


class Retries:
    def __init__(self) -> None:
        self.calls: list[tuple[int, float, ModelError]] = []

    def __call__(self, attempt: int, delay: float, error: ModelError) -> None:
        self.calls.append((attempt, delay, error))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_429_honours_retry_after_then_succeeds(fake_llm: FakeLLMServer, dialect: str) -> None:
    fake_llm.enqueue(ErrorReply(429, "rate limited", headers={"retry-after": "0.03"}))
    fake_llm.enqueue(ErrorReply(429, "rate limited", headers={"retry-after-ms": "20"}))
    fake_llm.enqueue(Reply(text="finally"))
    retries = Retries()
    message = complete(model_for(fake_llm, dialect), request(), FAST, on_retry=retries)
    assert message.text == "finally"
    assert [(a, d) for a, d, _ in retries.calls] == [(1, 0.03), (2, 0.02)]
    assert all(isinstance(e, RateLimitError) and e.status == 429 for _, _, e in retries.calls)
    assert len(fake_llm.requests) == 3


@pytest.mark.parametrize("dialect", DIALECTS)
def test_stream_cut_mid_message_then_success(fake_llm: FakeLLMServer, dialect: str) -> None:
    fake_llm.enqueue(Reply(text="this will break", cut_after=4))
    fake_llm.enqueue(Reply(text="this will end early", cut_after=4, clean_cut=True))
    fake_llm.enqueue(Reply(text="whole"))
    retries = Retries()
    deltas: list[object] = []
    message = complete(model_for(fake_llm, dialect), request(), FAST, on_event=deltas.append, on_retry=retries)
    assert message.text == "whole"
    assert [type(e) for _, _, e in retries.calls] == [StreamInterrupted, StreamInterrupted]
    assert deltas  # the broken attempts' deltas were delivered; on_retry told the consumer to drop them


@pytest.mark.parametrize("dialect", DIALECTS)
def test_overloaded_and_5xx_are_retried(fake_llm: FakeLLMServer, dialect: str) -> None:
    fake_llm.enqueue(StreamErrorReply())
    fake_llm.enqueue(ErrorReply(529, "Overloaded", error_type="overloaded_error"))
    fake_llm.enqueue(ErrorReply(503, "unavailable"))
    fake_llm.enqueue(Reply(text="ok"))
    retries = Retries()
    assert complete(model_for(fake_llm, dialect), request(), FAST, on_retry=retries).text == "ok"
    assert [type(e) for _, _, e in retries.calls] == [OverloadedError, OverloadedError, ServerError]
    for attempt, delay, _ in retries.calls:  # exponential backoff with "equal jitter"
        backoff = min(FAST.max_delay, FAST.base_delay * 2 ** (attempt - 1))
        assert backoff / 2 <= delay <= backoff


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("status", "error"), [(401, AuthError), (403, AuthError), (400, BadRequestError),
                                               (404, BadRequestError)])
def test_client_errors_are_not_retried(fake_llm: FakeLLMServer, dialect: str, status: int,
                                       error: type[ModelError]) -> None:
    fake_llm.enqueue(ErrorReply(status, "nope"))
    retries = Retries()
    with pytest.raises(error, match="nope"):
        complete(model_for(fake_llm, dialect), request(), FAST, on_retry=retries)
    assert retries.calls == []
    assert len(fake_llm.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_context_overflow_is_classified_and_not_retried(fake_llm: FakeLLMServer, dialect: str) -> None:
    fake_llm.enqueue(ErrorReply(400, "prompt is too long: 250000 tokens > 200000 maximum"))
    with pytest.raises(ContextOverflowError):
        complete(model_for(fake_llm, dialect), request(), FAST)
    assert len(fake_llm.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_retries_exhausted_names_provider_status_and_message(fake_llm: FakeLLMServer, dialect: str) -> None:
    policy = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.002)
    fake_llm.enqueue_many([ErrorReply(500, "internal meltdown")] * 3)
    with pytest.raises(RetriesExhausted) as caught:
        complete(model_for(fake_llm, dialect), request(), policy)
    text = str(caught.value)
    assert "gave up after 3 attempts" in text
    assert f"{dialect} HTTP 500: internal meltdown" in text
    assert caught.value.status == 500 and caught.value.provider == dialect


def test_retry_after_beyond_the_policy_limit_gives_up_at_once(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(ErrorReply(429, "come back tomorrow", headers={"retry-after": "86400"}))
    with pytest.raises(RetriesExhausted, match="come back tomorrow"):
        complete(model_for(fake_llm, "anthropic"), request(), FAST)
    assert len(fake_llm.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_connection_refused_is_retried_then_reported(dialect: str) -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k", "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
           "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    retries = Retries()
    policy = RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.001)
    with pytest.raises(RetriesExhausted, match="cannot connect") as caught:
        complete(resolve_model(SPECS[dialect], env=env), request(), policy, on_retry=retries)
    assert isinstance(caught.value.last, ConnectionFailed)
    assert len(retries.calls) == 1


# -- retry-after parsing and status classification ------------------------------------------------------------
def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"Retry-After": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now.timestamp()) == pytest.approx(30.0)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now.timestamp()) == 0.0


@pytest.mark.parametrize(("status", "body", "expected", "retryable"), [
    (429, '{"error": {"message": "slow"}}', RateLimitError, True),
    (529, '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', OverloadedError, True),
    (500, "", ServerError, True),
    (502, "<html>bad gateway</html>", ServerError, True),
    (408, "", ServerError, True),
    (401, '{"error": {"message": "bad key"}}', AuthError, False),
    (422, '{"error": "unprocessable"}', BadRequestError, False),
    (413, '{"error": {"message": "Input is too long for requested model."}}', ContextOverflowError, False),
])
def test_error_for_status(status: int, body: str, expected: type[ModelError], retryable: bool) -> None:
    error = error_for_status("prov", status, body, {})
    assert type(error) is expected
    assert error.retryable is retryable
    assert str(error).startswith(f"prov HTTP {status}: ")


def test_error_message_keeps_the_provider_text_and_type() -> None:
    body = '{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}'
    error = error_for_status("anthropic", 400, body, {})
    assert str(error) == "anthropic HTTP 400: max_tokens: too large (invalid_request_error)"
    empty = error_for_status("openai", 400, "", {})
    assert "empty body" in str(empty)
