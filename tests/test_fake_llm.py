"""The scripted model server itself, exercised with a plain httpx2 client over real sockets."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from bot.llm.messages import Usage
from tests.fake_llm import (
    ErrorReply,
    FakeLLMServer,
    RawReply,
    RecordedRequest,
    Reply,
    StreamErrorReply,
    split_evenly,
)


def _post(url: str, body: dict[str, Any]) -> httpx2.Response:
    with httpx2.Client(timeout=10) as client:
        return client.post(url, json=body)


def _events(response: httpx2.Response) -> list[tuple[str, str]]:
    """(event name, data) pairs of an SSE body."""
    found = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        found.append((name, data))
    return found


def test_split_evenly_covers_text_and_lands_mid_token() -> None:
    text = json.dumps({"path": "a.txt", "content": "x"})
    pieces = split_evenly(text, 3)
    assert "".join(pieces) == text
    assert len(pieces) == 3
    assert split_evenly("", 3) == []
    assert split_evenly("ab", 5) == ["a", "b"]


def test_anthropic_dialect_text_thinking_and_tool(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="Hello world", thinking="hmm", tool_calls=[("t1", "read", {"path": "a"})],
                           usage=Usage(input=10, output=7, cache_read=3, cache_write=2)))
    response = _post(f"{fake_llm.anthropic_base_url}/v1/messages", {"model": "claude-x", "messages": []})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    start = json.loads(events[0][1])["message"]
    assert start["model"] == "claude-x"
    assert start["usage"]["cache_read_input_tokens"] == 3
    assert start["usage"]["cache_creation_input_tokens"] == 2
    deltas = [json.loads(d)["delta"] for n, d in events if n == "content_block_delta"]
    assert "".join(d["text"] for d in deltas if d["type"] == "text_delta") == "Hello world"
    assert len([d for d in deltas if d["type"] == "text_delta"]) == 3
    assert "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta") == "hmm"
    assert any(d["type"] == "signature_delta" for d in deltas)
    args = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(args) == {"path": "a"}
    message_delta = json.loads(next(d for n, d in events if n == "message_delta"))
    assert message_delta["delta"]["stop_reason"] == "tool_use"
    assert message_delta["usage"]["output_tokens"] == 7
    assert fake_llm.requests[0].dialect == "anthropic"
    assert fake_llm.requests[0].body == {"model": "claude-x", "messages": []}


def test_openai_dialect_with_usage_chunk(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="Hi there", thinking="reason", tool_calls=[("c1", "ls", {"path": "."}),
                                                                           ("c2", "ls", {"path": "b"})],
                           usage=Usage(input=10, output=4, cache_read=6)))
    response = _post(f"{fake_llm.openai_base_url}/chat/completions",
                     {"model": "gpt-x", "stream": True, "stream_options": {"include_usage": True}})
    datas = [d for _, d in _events(response)]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Hi there"
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "reason"
    calls: dict[int, str] = {}
    for delta in deltas:
        for call in delta.get("tool_calls", []):
            calls[call["index"]] = calls.get(call["index"], "") + call["function"].get("arguments", "")
    assert {i: json.loads(a) for i, a in calls.items()} == {0: {"path": "."}, 1: {"path": "b"}}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 16
    assert usage["usage"]["prompt_tokens_details"]["cached_tokens"] == 6


def test_openai_usage_chunk_only_when_asked(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="x"))
    response = _post(f"{fake_llm.url}/chat/completions", {"model": "m"})
    chunks = [json.loads(d) for _, d in _events(response) if d != "[DONE]"]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_error_reply_renders_dialect_envelope_and_headers(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(ErrorReply(429, "slow down", headers={"retry-after": "7"}))
    fake_llm.enqueue(ErrorReply(400, "bad", error_type="invalid_request_error"))
    first = _post(f"{fake_llm.url}/v1/messages", {})
    assert first.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert first.json() == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    second = _post(f"{fake_llm.openai_base_url}/chat/completions", {})
    assert second.json()["error"]["message"] == "bad"


def test_stream_error_event(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(StreamErrorReply(text_before="par"))
    events = _events(_post(f"{fake_llm.url}/v1/messages", {}))
    assert events[-1][0] == "error"
    assert json.loads(events[-1][1])["error"]["type"] == "overloaded_error"


def test_cut_stream_breaks_the_connection(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="hello", cut_after=3))
    with httpx2.Client(timeout=10) as client, pytest.raises(httpx2.RemoteProtocolError):
        client.post(f"{fake_llm.url}/v1/messages", json={})


def test_clean_cut_ends_body_without_message_stop(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(Reply(text="hello", cut_after=3, clean_cut=True))
    events = _events(_post(f"{fake_llm.url}/v1/messages", {}))
    assert len(events) == 3
    assert "message_stop" not in [n for n, _ in events]


def test_raw_reply_is_verbatim(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue(RawReply(b"data: {not json\n\n"))
    assert _post(f"{fake_llm.url}/v1/messages", {}).content == b"data: {not json\n\n"


def test_responder_computes_replies(fake_llm: FakeLLMServer) -> None:
    def respond(request: RecordedRequest) -> Reply:
        return Reply(text=f"turn {len(request.body['messages'])}")

    fake_llm.responder = respond
    for turn in range(3):
        events = _events(_post(f"{fake_llm.url}/v1/messages", {"messages": [0] * turn}))
        texts = [json.loads(d)["delta"].get("text", "") for n, d in events if n == "content_block_delta"]
        assert "".join(texts) == f"turn {turn}"
    assert len(fake_llm.requests) == 3


def test_unexpected_request_gets_500_and_fails_verify() -> None:
    with FakeLLMServer() as server:
        response = _post(f"{server.url}/v1/messages", {"model": "m"})
        assert response.status_code == 500
        assert "nothing scripted" in response.json()["error"]["message"]
        with pytest.raises(AssertionError, match="unexpected request #1"):
            server.verify()


def test_unused_replies_fail_verify_unless_allowed() -> None:
    with FakeLLMServer() as server:
        server.enqueue_many(["a", "b"])
        with pytest.raises(AssertionError, match="2 scripted"):
            server.verify()
        server.allow_unused = True
        server.verify()


def test_unknown_path_is_recorded_as_unexpected() -> None:
    with FakeLLMServer() as server:
        assert _post(f"{server.url}/v1/embeddings", {}).status_code == 404
        with pytest.raises(AssertionError, match="unknown path"):
            server.verify()


def test_default_usage_grows_with_request_size(fake_llm: FakeLLMServer) -> None:
    fake_llm.enqueue_many(["a", "b"])
    small = _events(_post(f"{fake_llm.url}/v1/messages", {"messages": []}))
    large = _events(_post(f"{fake_llm.url}/v1/messages", {"messages": ["x" * 4000]}))

    def input_tokens(events: list[tuple[str, str]]) -> int:
        return int(json.loads(events[0][1])["message"]["usage"]["input_tokens"])

    assert input_tokens(large) > input_tokens(small) + 900
