"""What the HTTP providers share: the client, turning HTTP failures into `ModelError`s, the SSE loop,
the `HttpModel` skeleton every provider's `stream()` is, and the provider-neutral clean-up of a
conversation before it is converted to a wire format.

httpx2 is imported inside functions: this module is on the import path of `bot.llm.models`, which the
CLI imports at startup, and `opi --version` must stay fast.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from bot.llm.base import Done, ModelInfo, ModelRequest, StreamEvent, UsageReport
from bot.llm.errors import (
    Aborted,
    AuthError,
    BadRequestError,
    ConfigError,
    ConnectionFailed,
    ContextOverflowError,
    MalformedEventError,
    ModelError,
    OverloadedError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
    looks_like_context_overflow,
)
from bot.llm.messages import AssistantMessage, Cost, Message, ToolCall, ToolResultMessage, Usage
from bot.llm.pricing import compute_cost, prefetch
from bot.llm.wire import MISSING_RESULT_TEXT as MISSING_RESULT_TEXT
from bot.llm.wire import has_content as has_content
from bot.llm.wire import missing_result

if TYPE_CHECKING:
    import httpx2

# Slow streams are normal (long thinking, big tool arguments): the read timeout is the longest gap
# between two chunks we tolerate, not a budget for the whole response.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
WRITE_TIMEOUT = 60.0

_clients: dict[bool, httpx2.Client] = {}
_client_lock = threading.Lock()
_PROXY_VARS = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def shared_client(url: str | None = None) -> httpx2.Client:
    """One pooled client per process, so consecutive turns reuse the TLS connection.

    A plain `http://` URL with no proxy configured (a local server, the action's loopback model proxy)
    gets a second client that never loads the CA bundle: TLS is never used for such a URL (the client
    follows no redirects and goes through no proxy), and loading the bundle cost ~20 ms of a short run.
    """
    plain = url is not None and url.startswith("http://") and not any(os.environ.get(v) for v in _PROXY_VARS)
    with _client_lock:
        client = _clients.get(plain)
        if client is None:
            client = _clients[plain] = _new_client(plain=plain)
        return client


def _new_client(*, plain: bool) -> httpx2.Client:
    import httpx2

    timeout = httpx2.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=WRITE_TIMEOUT, pool=CONNECT_TIMEOUT)
    if plain:
        # verify=False only skips loading certificates: this client is used for http:// URLs only.
        return httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=False)
    # trust_env: HTTPS_PROXY/NO_PROXY and SSL_CERT_FILE apply, as users behind a corporate proxy
    # expect. No redirects: an API endpoint that redirects is misconfigured, and following it
    # would resend the API key to wherever it points.
    return httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=True)


def join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


# -- status → error ------------------------------------------------------------------------------------
def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date; None if absent
    or unparseable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_details(body: str) -> tuple[str, str]:
    """(error type, message) from an Anthropic or OpenAI error envelope, or ("", trimmed body)."""
    try:
        data = json.loads(body)
    except ValueError:
        return "", _trim(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        kind = error.get("type") or error.get("code") or ""
        message = error.get("message") or json.dumps(error)
        return str(kind), str(message)
    if isinstance(error, str):
        return "", error
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data.get("type") or ""), data["message"]
    return "", _trim(body)


def _trim(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def error_for_status(provider: str, status: int, body: str, headers: Mapping[str, str]) -> ModelError:
    """Classify a failed HTTP response. The message carries the provider's own explanation."""
    kind, message = error_details(body)
    message = message or f"HTTP {status} with an empty body"
    retry_after = parse_retry_after(headers)
    if kind:
        message = f"{message} ({kind})"
    if status == 429:
        return RateLimitError(message, provider=provider, status=status, retry_after=retry_after)
    if status == 529 or "overloaded" in kind:
        return OverloadedError(message, provider=provider, status=status, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(message, provider=provider, status=status)
    if status >= 500 or status == 408:  # 408: the server gave up waiting; a fresh request can succeed
        return ServerError(message, provider=provider, status=status, retry_after=retry_after)
    if looks_like_context_overflow(message):
        return ContextOverflowError(message, provider=provider, status=status)
    return BadRequestError(message, provider=provider, status=status)


def error_for_stream_event(provider: str, kind: str, message: str, code: Any = None) -> ModelError:
    """An error reported inside a 200 stream (Anthropic `event: error`, OpenAI `{"error": ...}`)."""
    text = f"{message} ({kind})" if kind else message
    if isinstance(code, int) and code >= 400:
        return error_for_status(provider, code, json.dumps({"error": {"type": kind, "message": message}}), {})
    if "overloaded" in kind:
        return OverloadedError(text, provider=provider)
    if "rate_limit" in kind:
        return RateLimitError(text, provider=provider)
    if looks_like_context_overflow(message):
        return ContextOverflowError(text, provider=provider)
    if kind in ("invalid_request_error", "authentication_error", "permission_error", "not_found_error"):
        return BadRequestError(text, provider=provider)
    return ServerError(text, provider=provider)  # api_error and unknown kinds: worth another attempt


# -- the provider skeleton --------------------------------------------------------------------------------
class StreamParser(Protocol):
    """Turns one provider's SSE events into stream events and, at the end, the assistant message."""

    usage: Usage  # as reported so far (meaningful once `usage_known`)

    def feed(self, name: str, data: str) -> Iterator[StreamEvent]: ...

    def complete(self) -> bool:
        """Whether everything arrived, so a connection dropped now lost nothing."""
        ...

    def finish(self, info: ModelInfo) -> AssistantMessage: ...

    def usage_known(self) -> bool:
        """False when the stream reported no usage: the cost is then unknown, never 0."""
        ...


class HttpModel:
    """One HTTP provider: how to address it (`url`, `auth_headers`), what to send (`encode_body`) and how
    to read the answer (`new_parser`). `stream` and the API-key check are the same for every provider."""

    default_base_url: ClassVar[str] = ""
    # Whether a request without a key is a configuration error (a keyless local server is fine for some).
    key_required: ClassVar[bool] = True

    def __init__(self, info: ModelInfo, *, api_key: str | None, base_url: str | None = None,
                 api_key_env: str | None = None) -> None:
        self.info = info
        self.api_key = api_key
        self.base_url = base_url or self.default_base_url
        self.api_key_env = api_key_env

    # -- what each provider supplies --------------------------------------------------------------------
    @property
    def url(self) -> str:
        raise NotImplementedError

    def auth_headers(self, api_key: str) -> dict[str, str]:
        raise NotImplementedError

    def encode_body(self, request: ModelRequest) -> bytes:
        raise NotImplementedError

    def new_parser(self) -> StreamParser:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if self.api_key:
            headers.update(self.auth_headers(self.api_key))
        elif self.api_key_env or self.key_required:
            raise ConfigError(f"no API key for {self.info.spec}: set {self.api_key_env or 'an API key'}",
                              provider=self.info.provider)
        return headers

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The request body as a dict (what `encode_body` sends)."""
        body: dict[str, Any] = json.loads(self.encode_body(request))
        return body

    def cost(self, message: AssistantMessage) -> Cost:
        return self._cost_of(message.usage)

    def _cost_of(self, usage: Usage) -> Cost:
        base_url = None if self.base_url == self.default_base_url else self.base_url
        return compute_cost(self.info.provider, self.info.id, usage, base_url=base_url)

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        headers = self.headers()
        body = self.encode_body(request)
        prefetch(self.info.provider, self.info.id)
        parser = self.new_parser()
        reported = Usage()
        try:
            for name, data in stream_events(self.info.provider, self.url, headers, body, request.cancel):
                yield from parser.feed(name, data)
                if parser.usage_known() and parser.usage != reported:
                    reported = parser.usage.model_copy()  # parsers update theirs in place
                    yield UsageReport(usage=reported, cost=self._cost_of(reported))
        except StreamInterrupted:
            if not parser.complete():
                raise
        message = parser.finish(self.info)
        message.cost = self.cost(message) if parser.usage_known() else Cost()
        yield Done(message=message)


# -- the SSE loop ----------------------------------------------------------------------------------------
def stream_events(provider: str, url: str, headers: Mapping[str, str], body: bytes | Mapping[str, Any],
                  cancel: threading.Event) -> Iterator[tuple[str, str]]:
    """POST `body` (JSON bytes, or a mapping to encode) and yield (event name, data) pairs of the SSE
    response. Every failure surfaces as a `ModelError`; a set `cancel` raises `Aborted` and closes the
    connection."""
    import httpx2

    client = shared_client(url)
    payload: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": dict(body)}
    try:
        with client.stream("POST", url, headers=dict(headers), **payload) as response:
            if response.status_code >= 400:
                response.read()
                raise error_for_status(provider, response.status_code, response.text, response.headers)
            if 300 <= response.status_code < 400:
                where = response.headers.get("location", "an unnamed location")
                raise BadRequestError(f"{url} redirects to {where}; use that as the base URL",
                                      provider=provider, status=response.status_code)
            _check_event_stream(provider, response)
            with _closed_on_cancel(response, cancel):
                for event in httpx2.EventSource(response):
                    if cancel.is_set():
                        raise Aborted("cancelled")
                    yield event.event, event.data
            if cancel.is_set():
                raise Aborted("cancelled")
    except httpx2.SSEError as exc:
        raise MalformedEventError(f"unreadable event stream: {exc}", provider=provider) from exc
    except httpx2.TimeoutException as exc:
        raise ConnectionFailed(f"timed out talking to {url}: {type(exc).__name__}",
                               provider=provider) from exc
    except httpx2.ConnectError as exc:
        raise ConnectionFailed(f"cannot connect to {url}: {exc}", provider=provider) from exc
    except (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError) as exc:
        if cancel.is_set():
            raise Aborted("cancelled") from exc
        raise StreamInterrupted(f"connection broke mid-response: {exc or type(exc).__name__}",
                                provider=provider) from exc
    except httpx2.TransportError as exc:
        if cancel.is_set():
            raise Aborted("cancelled") from exc
        raise ConnectionFailed(f"{type(exc).__name__}: {exc}", provider=provider) from exc


def _check_event_stream(provider: str, response: httpx2.Response) -> None:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "text/event-stream":
        response.read()
        if '"error"' in response.text:
            # Some proxies answer 200 with a JSON error envelope instead of a stream.
            kind, message = error_details(response.text)
            raise error_for_stream_event(provider, kind, message)
        raise MalformedEventError(
            f"expected an event stream, got {content_type or 'no content type'}: {_trim(response.text, 200)}",
            provider=provider, status=response.status_code)


class _CancelWatcher:
    """One daemon thread for the whole process (starting a thread per request cost about a millisecond a
    turn): while responses are being read, it waits on their cancel events and shuts a cancelled
    response's socket down, so a read blocked on a slow server returns at once instead of at the next
    event."""

    POLL = 0.05  # how often the events after the first are looked at, in seconds

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: dict[int, tuple[httpx2.Response, threading.Event]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def watch(self, response: httpx2.Response, cancel: threading.Event) -> int:
        with self._cond:
            self._next += 1
            self._active[self._next] = (response, cancel)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="opi-cancel-watch", daemon=True)
                self._thread.start()
            self._cond.notify()
            return self._next

    def unwatch(self, token: int) -> None:
        with self._cond:
            self._active.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._active:
                    self._cond.wait()
                watched = list(self._active.items())
            watched[0][1][1].wait(self.POLL)  # wakes at once when the (usually only) request is cancelled
            for token, (response, cancel) in watched:
                if cancel.is_set():
                    with self._cond:
                        still_reading = self._active.pop(token, None) is not None
                    if still_reading:
                        shutdown_socket(response)


_watcher = _CancelWatcher()


class _closed_on_cancel:
    """While active, a set `cancel` shuts the response's socket down (see `_CancelWatcher`)."""

    def __init__(self, response: httpx2.Response, cancel: threading.Event) -> None:
        self._response = response
        self._cancel = cancel
        self._token: int | None = None

    def __enter__(self) -> None:
        if self._cancel.is_set():
            raise Aborted("cancelled")
        self._token = _watcher.watch(self._response, self._cancel)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _watcher.unwatch(self._token)


def shutdown_socket(response: httpx2.Response) -> None:
    """Shut the response's connection down under a thread blocked reading it (the broker's model proxy too)."""
    import socket

    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed: the reader is finishing anyway
            sock.shutdown(socket.SHUT_RDWR)


def parse_json_object(provider: str, data: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise MalformedEventError(f"invalid JSON in {what}: {exc.msg} at {exc.pos}: {_trim(data, 200)}",
                                  provider=provider) from exc
    if not isinstance(value, dict):
        raise MalformedEventError(f"{what} is not a JSON object: {_trim(data, 200)}", provider=provider)
    return value


def parse_tool_arguments(provider: str, name: str, raw: str) -> dict[str, Any]:
    """The accumulated JSON arguments of a streamed tool call. Empty means no arguments."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedEventError(
            f"tool call {name!r} has invalid JSON arguments ({exc.msg} at {exc.pos}): {_trim(raw, 200)}",
            provider=provider) from exc
    if not isinstance(value, dict):
        raise MalformedEventError(f"tool call {name!r} arguments are not a JSON object: {_trim(raw, 200)}",
                                  provider=provider)
    return value


# -- history clean-up ------------------------------------------------------------------------------------
def prepare_history(messages: Sequence[Message]) -> list[Message]:
    """The conversation as the APIs accept it (the providers apply the same rules incrementally, message
    by message, in `bot.llm.wire.WireBuilder`):

    - an assistant message that ended in error/aborted with no usable content is dropped;
    - every tool call gets a result (a synthesized error result if none was recorded), placed with the
      other results of its turn, because both APIs reject a tool call without a result;
    - a tool result whose call is not in the preceding assistant message is dropped (it would 400).
    """
    prepared: list[Message] = []
    pending: list[ToolCall] = []  # calls of the last assistant message still waiting for a result

    def flush_pending() -> None:
        prepared.extend(missing_result(call) for call in pending)
        pending.clear()

    for message in messages:
        if isinstance(message, ToolResultMessage):
            match = next((c for c in pending if c.id == message.tool_call_id), None)
            if match is not None:
                pending.remove(match)
                prepared.append(message)
            continue
        flush_pending()
        if isinstance(message, AssistantMessage):
            if not has_content(message):
                continue
            pending.extend(message.tool_calls)
        prepared.append(message)
    flush_pending()
    return prepared


_TOOL_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def safe_tool_id(tool_id: str) -> str:
    """Anthropic requires tool ids matching ^[a-zA-Z0-9_-]+$ (max 64); ids from other providers may not."""
    cleaned = _TOOL_ID_BAD_CHARS.sub("_", tool_id)[:64]
    return cleaned or "tool_call"
