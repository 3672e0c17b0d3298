"""A scripted model server on loopback that speaks Anthropic Messages SSE and OpenAI Chat Completions SSE.

The `fake_llm` fixture is available in every test module: tests/conftest.py registers this module with
`pytest_plugins = ["tests.fake_llm"]` (a plain `from tests.fake_llm import fake_llm` would make ruff
report F811 on every test taking the fixture). Import the reply types as usual:

    from tests.fake_llm import FakeLLMServer, Reply

    def test_something(fake_llm: FakeLLMServer) -> None:
        fake_llm.enqueue(Reply(text="hello"))
        ...  # point a provider at fake_llm.anthropic_base_url or fake_llm.openai_base_url

Outside pytest (benchmarks/harness.py) use it as a context manager:

    with FakeLLMServer() as server:
        server.responder = lambda request: Reply(text="done")
        ...

Base URLs follow the official SDKs' conventions, which is also what users put in the env vars:
`ANTHROPIC_BASE_URL` is the host root (the client appends `/v1/messages`) and `OPENAI_BASE_URL` ends
in `/v1` (the client appends `/chat/completions`). The server routes on the path suffix, so
`/v1/messages`, `/messages`, `/v1/chat/completions` and `/chat/completions` all work.

Replies are dialect-neutral (`Reply`, `ErrorReply`, `StreamErrorReply`, `RawReply`) and are rendered into
the dialect of the request that consumes them. A request that arrives with nothing queued and no
`responder` gets a 500 with an explanatory body and is recorded in `unexpected`; `verify()` (run by the
fixture at teardown) fails on those and on replies left unused (unless `allow_unused` is set).
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

import pytest

from bot.llm.messages import Usage

Dialect = Literal["anthropic", "openai"]
ToolCallSpec = tuple[str, str, dict[str, Any]]

# Neutral stop reasons (bot.llm.messages.StopReason) to each dialect's; anything else is sent verbatim,
# so a test can script e.g. Anthropic's "refusal" or OpenAI's "content_filter".
_ANTHROPIC_STOP = {"stop": "end_turn", "tool_use": "tool_use", "length": "max_tokens"}
_OPENAI_FINISH = {"stop": "stop", "tool_use": "tool_calls", "length": "length"}


@dataclass
class Reply:
    """A successful streamed answer.

    `usage=None` derives plausible counts: input ≈ request body bytes / 4 (so long conversations grow,
    as compaction tests need), output ≈ generated characters / 4. `cut_after=N` sends at most N SSE
    events (so N below the total cuts before `message_stop` / `[DONE]`) and then drops the connection,
    leaving the chunked body unterminated; with `clean_cut` the HTTP body ends normally instead.
    `delay` sleeps before each event so a test can interrupt a slow stream.
    """

    text: str | None = None
    thinking: str | None = None
    thinking_signature: str | None = "sig-fake"
    redacted_thinking: str | None = None  # Anthropic only: the opaque `data` of a redacted block
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    usage: Usage | None = None
    stop_reason: str | None = None  # default: "tool_use" when there are tool calls, else "stop"
    chunks: int = 3  # text, thinking and tool arguments are each split into this many deltas
    delay: float = 0.0
    cut_after: int | None = None
    clean_cut: bool = False
    # OpenAI-compatible servers disagree on where reasoning goes; DeepSeek/vLLM use reasoning_content.
    openai_reasoning_field: str = "reasoning_content"


@dataclass
class ErrorReply:
    """An HTTP error. `body=None` renders the dialect's error envelope from `message` and `error_type`."""

    status: int
    message: str = "scripted error"
    error_type: str | None = None
    body: Any = None  # dict/list → JSON; str/bytes → sent verbatim
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamErrorReply:
    """A 200 stream that starts, optionally streams some text, then sends an in-stream error event
    (Anthropic `event: error`, OpenAI `data: {"error": ...}`) and ends."""

    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    text_before: str = ""


@dataclass
class RawReply:
    """Bytes sent verbatim as the response body (malformed-event tests)."""

    body: bytes
    status: int = 200
    content_type: str = "text/event-stream"
    delay: float = 0.0


ScriptedReply = Reply | ErrorReply | StreamErrorReply | RawReply


@dataclass
class RecordedRequest:
    method: str
    path: str
    dialect: Dialect | None
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when the body was not JSON
    raw: bytes


Responder = Callable[[RecordedRequest], ScriptedReply | None]


class FakeLLMServer:
    """A real ThreadingHTTPServer on 127.0.0.1 (ephemeral port) in a daemon thread."""

    def __init__(self, *, allow_unused: bool = False) -> None:
        self.replies: deque[ScriptedReply] = deque()
        self.requests: list[RecordedRequest] = []
        self.unexpected: list[str] = []
        # Called when the queue is empty; returning None counts as an unexpected request.
        self.responder: Responder | None = None
        self.allow_unused = allow_unused
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        # A short poll interval: shutdown() waits for the serving loop to notice, once per test.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-llm", daemon=True)
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._httpd.shutdown()
            self._started = False
        self._httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def env(self, api_key: str = "test-key") -> dict[str, str]:
        """Environment variables that point both built-in providers (and `opi` subprocesses) here."""
        return {"ANTHROPIC_API_KEY": api_key, "ANTHROPIC_BASE_URL": self.anthropic_base_url,
                "OPENAI_API_KEY": api_key, "OPENAI_BASE_URL": self.openai_base_url}

    # -- scripting ---------------------------------------------------------------------------------
    def enqueue(self, reply: ScriptedReply | str) -> None:
        """Queue one reply; a bare string is shorthand for `Reply(text=...)`."""
        with self._lock:
            self.replies.append(Reply(text=reply) if isinstance(reply, str) else reply)

    def enqueue_many(self, replies: Iterable[ScriptedReply | str]) -> None:
        for reply in replies:
            self.enqueue(reply)

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    def verify(self) -> None:
        """Raise AssertionError on unexpected requests or (unless allowed) unused replies."""
        with self._lock:
            problems = list(self.unexpected)
            if self.replies and not self.allow_unused:
                problems.append(f"{len(self.replies)} scripted repl(y/ies) never requested: "
                                f"{[type(r).__name__ for r in self.replies]}")
        if problems:
            raise AssertionError("fake LLM server: " + "; ".join(problems))

    def _next_reply(self, request: RecordedRequest) -> ScriptedReply | None:
        with self._lock:
            self.requests.append(request)
            if self.replies:
                return self.replies.popleft()
            responder = self.responder
        return responder(request) if responder is not None else None

    def _record_unexpected(self, note: str) -> None:
        with self._lock:
            self.unexpected.append(note)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (cancel, cut stream, closed pool) is routine here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client reuses connections as with a real API
    # TCP_NODELAY: otherwise Nagle's algorithm holds each small SSE chunk until the client's delayed ACK
    # (~40 ms on Linux loopback), which would make every scripted stream artificially slow.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": f"no such endpoint: GET {self.path}"}})

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0].rstrip("/")
        dialect: Dialect | None = (
            "anthropic" if path.endswith("/messages")
            else "openai" if path.endswith("/chat/completions") else None
        )
        request = RecordedRequest(
            method="POST", path=self.path, dialect=dialect,
            headers={k.lower(): v for k, v in self.headers.items()}, body=body, raw=raw,
        )
        if dialect is None:
            with owner._lock:
                owner.requests.append(request)
            owner._record_unexpected(f"request to unknown path {self.path}")
            self._send_json(404, {"error": {"message": f"fake LLM: no such endpoint: POST {self.path}"}})
            return
        reply = owner._next_reply(request)
        if reply is None:
            note = f"unexpected request #{len(owner.requests)} to {self.path}: nothing scripted"
            owner._record_unexpected(note)
            self._send_json(500, _error_body(dialect, "api_error", f"fake LLM: {note}"))
            return
        try:
            self._serve(dialect, reply, request)
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- rendering ---------------------------------------------------------------------------------
    def _serve(self, dialect: Dialect, reply: ScriptedReply, request: RecordedRequest) -> None:
        if isinstance(reply, ErrorReply):
            self._send_error_reply(dialect, reply)
        elif isinstance(reply, RawReply):
            self._send_raw(reply)
        elif isinstance(reply, StreamErrorReply):
            events = (_anthropic_stream_error(reply, request) if dialect == "anthropic"
                      else _openai_stream_error(reply, request))
            self._stream(events, delay=0.0, cut_after=None, clean_cut=False)
        else:
            events = (_anthropic_events(reply, request) if dialect == "anthropic"
                      else _openai_events(reply, request))
            self._stream(events, delay=reply.delay, cut_after=reply.cut_after, clean_cut=reply.clean_cut)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error_reply(self, dialect: Dialect, reply: ErrorReply) -> None:
        payload = reply.body if reply.body is not None else _error_body(
            dialect, reply.error_type or _default_error_type(dialect, reply.status), reply.message)
        self._send_json(reply.status, payload, reply.headers)

    def _send_raw(self, reply: RawReply) -> None:
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        if reply.delay:
            time.sleep(reply.delay)
        self.wfile.write(reply.body)
        self.wfile.flush()

    def _stream(self, events: Iterator[bytes], *, delay: float, cut_after: int | None,
                clean_cut: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for sent, event in enumerate(events):
            if cut_after is not None and sent >= cut_after:
                break
            if delay:
                time.sleep(delay)
            self._write_chunk(event)
        if cut_after is not None and not clean_cut:
            # No terminating chunk: the client sees a broken body (even if every event was sent).
            self.close_connection = True
            return
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


# -- dialect helpers -------------------------------------------------------------------------------
def _error_body(dialect: Dialect, error_type: str, message: str) -> dict[str, Any]:
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": error_type, "message": message}}
    return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


def _default_error_type(dialect: Dialect, status: int) -> str:
    anthropic = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                 529: "overloaded_error"}
    openai = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
              404: "invalid_request_error", 429: "rate_limit_exceeded"}
    table = anthropic if dialect == "anthropic" else openai
    return table.get(status, "api_error" if dialect == "anthropic" else "server_error")


def split_evenly(text: str, parts: int) -> list[str]:
    """Split into `parts` non-empty pieces at fixed offsets, which lands mid-token for JSON."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    bounds = [round(i * len(text) / parts) for i in range(parts + 1)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _sse(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _usage_for(reply: Reply, request: RecordedRequest) -> Usage:
    if reply.usage is not None:
        return reply.usage
    generated = (reply.text or "") + (reply.thinking or "") + "".join(
        json.dumps(args) for _, _, args in reply.tool_calls)
    return Usage(input=max(1, len(request.raw) // 4), output=max(1, len(generated) // 4))


def _stop_reason(reply: Reply) -> str:
    return reply.stop_reason or ("tool_use" if reply.tool_calls else "stop")


def _model_of(request: RecordedRequest) -> str:
    body = request.body if isinstance(request.body, dict) else {}
    return str(body.get("model", "fake-model"))


def _anthropic_message_start(request: RecordedRequest, usage: Usage) -> bytes:
    return _sse("message_start", {"type": "message_start", "message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "content": [],
        "model": _model_of(request), "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage.input, "cache_creation_input_tokens": usage.cache_write,
                  "cache_read_input_tokens": usage.cache_read, "output_tokens": 1}}})


def _anthropic_events(reply: Reply, request: RecordedRequest) -> Iterator[bytes]:
    usage = _usage_for(reply, request)
    yield _anthropic_message_start(request, usage)
    yield _sse("ping", {"type": "ping"})
    index = 0

    def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> Iterator[bytes]:
        yield _sse("content_block_start", {"type": "content_block_start", "index": index,
                                           "content_block": start})
        for delta in deltas:
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": delta})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})

    if reply.redacted_thinking is not None:
        yield from block({"type": "redacted_thinking", "data": reply.redacted_thinking}, [])
        index += 1
    if reply.thinking is not None:
        deltas = [{"type": "thinking_delta", "thinking": p} for p in split_evenly(reply.thinking, reply.chunks)]
        if reply.thinking_signature is not None:
            deltas.append({"type": "signature_delta", "signature": reply.thinking_signature})
        yield from block({"type": "thinking", "thinking": ""}, deltas)
        index += 1
    if reply.text is not None:
        yield from block({"type": "text", "text": ""},
                         [{"type": "text_delta", "text": p} for p in split_evenly(reply.text, reply.chunks)])
        index += 1
    for call_id, name, args in reply.tool_calls:
        pieces = split_evenly(json.dumps(args), reply.chunks)
        yield from block({"type": "tool_use", "id": call_id, "name": name, "input": {}},
                         [{"type": "input_json_delta", "partial_json": p} for p in pieces])
        index += 1
    stop = _ANTHROPIC_STOP.get(_stop_reason(reply), _stop_reason(reply))
    yield _sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": usage.output}})
    yield _sse("message_stop", {"type": "message_stop"})


def _anthropic_stream_error(reply: StreamErrorReply, request: RecordedRequest) -> Iterator[bytes]:
    yield _anthropic_message_start(request, Usage(input=1))
    if reply.text_before:
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": reply.text_before}})
    yield _sse("error", {"type": "error", "error": {"type": reply.error_type, "message": reply.message}})


def _openai_chunk(request: RecordedRequest, delta: dict[str, Any] | None,
                  finish_reason: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    chunk: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                             "model": _model_of(request), "system_fingerprint": "fp_fake", "choices": choices}
    if _wants_usage(request):
        chunk["usage"] = usage
    return _sse(None, chunk)


def _wants_usage(request: RecordedRequest) -> bool:
    body = request.body if isinstance(request.body, dict) else {}
    options = body.get("stream_options") or {}
    return bool(isinstance(options, dict) and options.get("include_usage"))


def _openai_events(reply: Reply, request: RecordedRequest) -> Iterator[bytes]:
    usage = _usage_for(reply, request)
    yield _openai_chunk(request, {"role": "assistant", "content": ""})
    for piece in split_evenly(reply.thinking or "", reply.chunks):
        yield _openai_chunk(request, {reply.openai_reasoning_field: piece})
    for piece in split_evenly(reply.text or "", reply.chunks):
        yield _openai_chunk(request, {"content": piece})
    for position, (call_id, name, args) in enumerate(reply.tool_calls):
        yield _openai_chunk(request, {"tool_calls": [{"index": position, "id": call_id, "type": "function",
                                                      "function": {"name": name, "arguments": ""}}]})
        for piece in split_evenly(json.dumps(args), reply.chunks):
            yield _openai_chunk(request, {"tool_calls": [{"index": position,
                                                          "function": {"arguments": piece}}]})
    finish = _OPENAI_FINISH.get(_stop_reason(reply), _stop_reason(reply))
    yield _openai_chunk(request, {}, finish_reason=finish)
    if _wants_usage(request):
        prompt = usage.input + usage.cache_read + usage.cache_write
        yield _openai_chunk(request, None, usage={
            "prompt_tokens": prompt, "completion_tokens": usage.output,
            "total_tokens": prompt + usage.output,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read},
            "completion_tokens_details": {"reasoning_tokens": 0}})
    yield _sse(None, "[DONE]")


def _openai_stream_error(reply: StreamErrorReply, request: RecordedRequest) -> Iterator[bytes]:
    yield _openai_chunk(request, {"role": "assistant", "content": ""})
    if reply.text_before:
        yield _openai_chunk(request, {"content": reply.text_before})
    yield _sse(None, {"error": {"message": reply.message, "type": reply.error_type, "code": None}})


# -- pytest fixture --------------------------------------------------------------------------------
_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if call.when == "call":
        item.stash[_CALL_FAILED] = bool(getattr(report, "failed", False))
    return report


@pytest.fixture
def fake_llm(request: pytest.FixtureRequest) -> Iterator[FakeLLMServer]:
    """A started server; at teardown, fails the test on unexpected calls or unused scripted replies
    (set `fake_llm.allow_unused = True` to opt out of the latter). When the test itself already failed,
    unused replies are its consequence and are not reported a second time."""
    with FakeLLMServer() as server:
        yield server
        if request.node.stash.get(_CALL_FAILED, False):
            server.allow_unused = True
        server.verify()
