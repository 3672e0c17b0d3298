"""Cancelling a stream: the shared streaming loop honours `request.cancel` in both dialects."""

from __future__ import annotations

import threading

import pytest

from bot.llm.base import TextDelta, UsageReport
from bot.llm.errors import Aborted
from tests.fake_llm import FakeLLMServer, Reply
from tests.provider_support import model_for_dialect, request

DIALECTS = ["anthropic", "openai"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_cancel_between_events(fake_llm: FakeLLMServer, dialect: str) -> None:
    fake_llm.enqueue(Reply(text="a long answer " * 20, chunks=40, delay=0.01))
    req = request()
    received = []
    with pytest.raises(Aborted):
        for event in model_for_dialect(fake_llm, dialect).stream(req):
            received.append(event)
            if isinstance(event, TextDelta):
                req.cancel.set()
    assert [type(e) for e in received if not isinstance(e, UsageReport)] == [TextDelta]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_cancel_interrupts_a_read_blocked_on_a_silent_server(fake_llm: FakeLLMServer, dialect: str) -> None:
    # The server waits longer than the test timeout before its first event: only closing the socket on
    # cancel lets this test finish.
    fake_llm.enqueue(Reply(text="never sent", delay=600))
    req = request()
    threading.Timer(0.2, req.cancel.set).start()
    with pytest.raises(Aborted):
        list(model_for_dialect(fake_llm, dialect).stream(req))
