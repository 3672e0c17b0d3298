"""The broker's loopback model proxy: the agent talks to 127.0.0.1 with a per-run token, the proxy
swaps it for the real provider key and relays the response as it streams.

Why: the agent process must hold no secret, yet its model client needs an API key. The token it gets
(`run_token`) is random per run and means nothing to any provider, so leaking it gains nothing outside
this machine and this run.

What the proxy enforces:
- It listens on 127.0.0.1 only and serves only requests that carry the run token in the dialect's own
  header (Anthropic `x-api-key`, OpenAI-compatible `Authorization: Bearer`), compared in constant time.
- Only POST to the paths the clients really call (`/v1/messages`; `/v1/chat/completions`) is forwarded;
  any other path is 404, any other method 405, a body above `max_body_bytes` 413.
- Upstream gets the request body and an allow-list of headers (content type, accept, Anthropic version
  and beta flags) plus the real key; never the client's credentials, cookies or hop-by-hop headers.
- The response streams back chunk by chunk (SSE events arrive as the provider produces them). Status
  codes, `retry-after` and error bodies pass through. The real key is replaced by `***` in response
  headers and bodies (also when split across network chunks); error bodies and headers also lose any
  word showing a masked form of it, as some providers echo (`sk-proj-****abcd`). A key split across
  two SSE events (two text deltas) is no longer one string and is not caught here (providers do not
  echo the key in successful responses; what the run sends out is scanned for secrets separately).
- At most `max_connections` connections at a time; an idle one is dropped after 15 minutes.
- A client that hangs up mid-stream closes the upstream connection; `stop()` ends in-flight streams.

`resolve_upstream` tells the broker which upstream and key a model spec needs (honouring
`ANTHROPIC_BASE_URL`/`OPENAI_BASE_URL` and configured `[endpoints]`); `agent_endpoints` and `agent_env`
are the settings that point the agent's model client at the proxy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import re
import secrets
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from bot.llm.errors import ConfigError
from bot.llm.http import shutdown_socket
from bot.llm.models import SPECIAL_PROVIDERS, EndpointConfig, all_endpoints, parse_spec

if TYPE_CHECKING:
    import httpx2

Api = Literal["anthropic", "openai"]

MAX_BODY_BYTES = 32 * 1024 * 1024  # a long conversation with images stays well below this
MAX_CONNECTIONS = 16  # the agent's client uses one or two; each may buffer a body of MAX_BODY_BYTES
MAX_ERROR_BODY_BYTES = 1024 * 1024  # error bodies are buffered (to redact them); real ones are tiny
# The agent's model client reads its key from this variable. Its `_TOKEN` suffix makes the tools scrub
# it from every subprocess environment, so bash cannot spend the run's model budget through the proxy.
PROXY_TOKEN_ENV = "OPI_MODEL_PROXY_TOKEN"
MASK = "***"

# Relative to the API root (`…/v1`): what bot/llm/anthropic.py and bot/llm/openai.py POST to.
DEFAULT_PATHS: dict[Api, tuple[str, ...]] = {"anthropic": ("messages",), "openai": ("chat/completions",)}

_FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "anthropic-version", "anthropic-beta")
_FORWARDED_RESPONSE_HEADERS = frozenset({
    "content-type", "cache-control", "retry-after", "retry-after-ms", "request-id", "x-request-id",
    "location",
})
_FORWARDED_RESPONSE_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-")
_UPSTREAM_CONNECT_TIMEOUT = 10.0
_UPSTREAM_READ_TIMEOUT = 300.0  # the longest gap between two chunks, as in bot/llm/http.py
_STOP_WAIT = 5.0
# A masked key as providers echo it in 401 bodies: `sk-proj-****…abcd`, `sk-ant-…abcd`.
_MASKED_KEY = re.compile(r"[A-Za-z0-9_\-]*(?:\*{3,}|\.\.\.|…)[A-Za-z0-9_\-]{2,}")
_WORD = re.compile(r"[^\s\"'<>\\]+")


@dataclass(frozen=True)
class ProxyStats:
    requests: int = 0  # every request received
    rejected: int = 0  # answered by the proxy itself: bad token, path, method or size
    forwarded: int = 0  # sent upstream (whatever upstream answered)
    bytes_up: int = 0  # request body bytes sent upstream
    bytes_down: int = 0  # response body bytes relayed to the agent
    client_disconnects: int = 0  # the agent hung up before the response ended
    upstream_failures: int = 0  # upstream unreachable, timed out or broke mid-response


class ModelProxy:
    """One upstream, one dialect, one run token. Use as a context manager or call start()/stop()."""

    def __init__(self, upstream_base_url: str, api: str, api_key: str, *,
                 allowed_paths: Iterable[str] | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                 max_connections: int = MAX_CONNECTIONS, log: Callable[[str], None] | None = None) -> None:
        if api not in DEFAULT_PATHS:
            raise ValueError(f"unknown model API {api!r}: expected 'anthropic' or 'openai'")
        if not upstream_base_url.startswith(("http://", "https://")):
            raise ValueError(f"the upstream base URL must be http:// or https://, got {upstream_base_url!r}")
        if any(c in api_key for c in "\r\n\0"):
            raise ValueError("the API key contains a line break or NUL")
        self.api: Api = api
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self._api_key = api_key
        self._token = secrets.token_urlsafe(32)
        self._routes = _routes(api, upstream_base_url.rstrip("/"), allowed_paths or DEFAULT_PATHS[api])
        self._log = log
        self._lock = threading.Lock()
        self._stats = ProxyStats()
        self._active: set[httpx2.Response] = set()
        self._stopping = threading.Event()
        self._client: httpx2.Client | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never the key, never the token
        return f"ModelProxy(api={self.api!r}, listening={self._server is not None})"

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> ModelProxy:
        if self._server is not None:
            return self
        import httpx2

        timeout = httpx2.Timeout(connect=_UPSTREAM_CONNECT_TIMEOUT, read=_UPSTREAM_READ_TIMEOUT,
                                 write=60.0, pool=_UPSTREAM_CONNECT_TIMEOUT)
        # As the agent's own client would: no redirects (they would carry the key elsewhere), and
        # HTTPS_PROXY/SSL_CERT_FILE apply for runners behind a corporate proxy.
        self._client = httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=True)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="opi-model-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, end in-flight streams and close upstream connections. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            active = list(self._active)
        for response in active:  # a handler blocked reading upstream returns at once
            shutdown_socket(response)
        server.close_connections(_STOP_WAIT)
        if self._client is not None:
            self._client.close()
        if self._thread is not None:
            self._thread.join(_STOP_WAIT)

    def __enter__(self) -> ModelProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what the broker hands to the agent --------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The base URL in the form the dialect's client expects: the host root for Anthropic (the
        client appends `/v1/messages`), `…/v1` for OpenAI (the client appends `/chat/completions`)."""
        if self._server is None:
            raise RuntimeError("the model proxy is not running; call start() first")
        port = self._server.server_address[1]
        root = f"http://127.0.0.1:{port}"
        return root if self.api == "anthropic" else f"{root}/v1"

    @property
    def run_token(self) -> str:
        return self._token

    def stats(self) -> ProxyStats:
        with self._lock:
            return self._stats

    # -- used by the handler --------------------------------------------------------------------------
    def _count(self, **increments: int) -> None:
        with self._lock:
            values = {name: getattr(self._stats, name) + n for name, n in increments.items()}
            self._stats = dataclasses.replace(self._stats, **values)

    def _note(self, message: str) -> None:
        if self._log is not None:
            self._log(self.redact(message))

    def authorized(self, headers: Any) -> bool:
        name = "x-api-key" if self.api == "anthropic" else "authorization"
        values = headers.get_all(name) or []
        if len(values) != 1:
            return False
        given = str(values[0]).strip()
        if self.api == "openai":
            scheme, _, given = given.partition(" ")
            if scheme.lower() != "bearer":
                return False
            given = given.strip()
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._token.encode())

    def upstream_headers(self, headers: Any) -> dict[str, str]:
        forwarded = {name: str(headers[name]) for name in _FORWARDED_REQUEST_HEADERS if headers.get(name)}
        # Identity: a compressed stream would be buffered by the decoder, and we relay what we read.
        forwarded["accept-encoding"] = "identity"
        if self._api_key:  # a keyless upstream (a local Ollama) gets no credentials at all
            if self.api == "anthropic":
                forwarded["x-api-key"] = self._api_key
            else:
                forwarded["authorization"] = f"Bearer {self._api_key}"
        return forwarded

    def redact(self, text: str) -> str:
        """The text with the real key, and any word showing a masked form or its tail, made `***`."""
        if not self._api_key:
            return text
        text = text.replace(self._api_key, MASK)
        tail = self._api_key[-4:] if len(self._api_key) >= 16 else None

        def mask_word(match: re.Match[str]) -> str:
            word = match.group(0)
            if (tail is not None and tail in word) or _MASKED_KEY.search(word):
                return MASK
            return word

        return _WORD.sub(mask_word, text)

    def stream_redactor(self) -> StreamRedactor:
        return StreamRedactor(self._api_key.encode())


def _routes(api: Api, upstream: str, paths: Iterable[str]) -> dict[str, str]:
    """Local path → upstream URL. Both dialects listen under `/v1/`; the upstream API root is the base
    URL for OpenAI and `<base>/v1` for Anthropic unless the base already ends in `/v1` (as the client)."""
    root = upstream if api == "openai" or upstream.endswith("/v1") else f"{upstream}/v1"
    routes: dict[str, str] = {}
    for path in paths:
        relative = path.strip("/")
        if not relative or "?" in relative or ".." in relative.split("/"):
            raise ValueError(f"invalid proxied path {path!r}")
        routes[f"/v1/{relative}"] = f"{root}/{relative}"
    return routes


class StreamRedactor:
    """Replaces `secret` in a byte stream fed in arbitrary chunks. Only a chunk's tail that could be the
    start of the secret is held back, so complete SSE events (which end in a blank line, and a key has
    no line break) are never delayed."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._secret:
            return chunk
        data = (self._held + chunk).replace(self._secret, MASK.encode())
        keep = _longest_prefix_suffix(data, self._secret)
        self._held = data[len(data) - keep:] if keep else b""
        return data[:len(data) - keep]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held


def _longest_prefix_suffix(data: bytes, secret: bytes) -> int:
    """Length of the longest proper prefix of `secret` that `data` ends with."""
    for length in range(min(len(secret) - 1, len(data)), 0, -1):
        if data.endswith(secret[:length]):
            return length
    return 0


# -- the HTTP side -----------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    proxy: ModelProxy

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._idle = threading.Condition()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup we neither need nor want.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        # Each connection is a thread and may buffer a request body: the agent gets a fixed number.
        with self._idle:
            refused = len(self._connections) >= self.proxy.max_connections
            if not refused:
                self._connections.add(request)
        if refused:
            self.proxy._count(requests=1, rejected=1)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._idle:
                self._connections.discard(request)
                self._idle.notify_all()

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection down (an idle kept-alive one would otherwise keep its thread
        waiting for a next request) and wait, at most `timeout`, for their threads to finish."""
        with self._idle:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._idle.wait_for(lambda: not self._connections, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # No traceback on stderr: a client hanging up is routine, and nothing else should print there.
        self.proxy._note("model proxy: a connection failed unexpectedly")


class _ClientGone(Exception):
    pass


class _Stopped(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the agent's pooled client reuses its connection
    disable_nagle_algorithm = True  # small SSE chunks go out at once
    server: _Server
    server_version = "opi-model-proxy"
    sys_version = ""
    # An idle kept-alive connection is dropped after this long (the agent's client reconnects), so a
    # client that opens connections and goes quiet does not hold threads forever.
    timeout = 900.0
    _started = False  # whether the response's status line is out (then errors can only cut it)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines go nowhere: the broker's log is the agent's business only in summary

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    # -- request checks ---------------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        proxy = self.server.proxy
        proxy._count(requests=1)
        path, _, query = self.path.partition("?")
        if not proxy.authorized(self.headers):
            self._refuse(401, "authentication_error", "invalid or missing model proxy token")
            return
        upstream_url = proxy._routes.get(path)
        if upstream_url is None or query:
            self._refuse(404, "not_found_error", f"the model proxy does not serve {method} {path}")
            return
        if method != "POST":
            self._refuse(405, "invalid_request_error", f"{path} accepts only POST", {"allow": "POST"})
            return
        body = self._read_body()
        if body is not None:
            self._forward(upstream_url, body)

    def _read_body(self) -> bytes | None:
        proxy = self.server.proxy
        if self.headers.get("transfer-encoding"):
            self._refuse(411, "invalid_request_error", "send the request body with a content-length")
            return None
        try:
            length = int(self.headers.get("content-length") or "0")
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(400, "invalid_request_error", "invalid content-length")
            return None
        if length > proxy.max_body_bytes:
            self._refuse(413, "request_too_large",
                         f"request body of {length} bytes exceeds the proxy's limit of {proxy.max_body_bytes}")
            return None
        return self.rfile.read(length)

    def _refuse(self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        self.server.proxy._count(rejected=1)
        # The body may be unread: close rather than parse what follows as the next request.
        self.close_connection = True
        self._send_buffered(status, _error_body(self.server.proxy.api, kind, message),
                            {"content-type": "application/json", "connection": "close", **(headers or {})})

    # -- relaying -----------------------------------------------------------------------------------------
    def _forward(self, url: str, body: bytes) -> None:
        import httpx2

        self._started = False  # per request: one handler serves every request of a kept-alive connection
        proxy = self.server.proxy
        client = proxy._client
        if client is None or proxy._stopping.is_set():
            self._fail(503, "the model proxy is stopping")
            return
        try:
            with client.stream("POST", url, content=body, headers=proxy.upstream_headers(self.headers)) as response:
                proxy._count(forwarded=1, bytes_up=len(body))
                with _tracked(proxy, response):
                    self._relay(response)
        except (_ClientGone, _Stopped):
            self.close_connection = True
        except httpx2.TimeoutException as exc:
            self._fail(504, f"the model API did not answer in time ({type(exc).__name__})")
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            self._fail(502, f"cannot reach the model API: {type(exc).__name__}: {exc}")

    def _relay(self, response: httpx2.Response) -> None:
        proxy = self.server.proxy
        headers = {name: proxy.redact(value) for name, value in response.headers.items()
                   if _forwarded_response_header(name)}
        if not 200 <= response.status_code < 300:
            raw = _read_bounded(response, MAX_ERROR_BODY_BYTES)
            text = proxy.redact(raw.decode("utf-8", "replace"))
            self._send_buffered(response.status_code, text.encode(), headers)
            return
        self._started = True
        self.send_response(response.status_code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        redactor = proxy.stream_redactor()
        for chunk in response.iter_bytes():
            if proxy._stopping.is_set():
                raise _Stopped  # stop(): end the relay, and the connection with it
            self._write_chunk(redactor.feed(chunk))
        self._write_chunk(redactor.flush())
        self._write_chunk(b"", last=True)

    def _write_chunk(self, data: bytes, *, last: bool = False) -> None:
        if not data and not last:
            return
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except OSError as exc:  # broken pipe, reset: counted before the upstream is closed
            self.server.proxy._count(client_disconnects=1)
            raise _ClientGone from exc
        self.server.proxy._count(bytes_down=len(data))

    def _fail(self, status: int, message: str) -> None:
        proxy = self.server.proxy
        proxy._count(upstream_failures=1)
        proxy._note(f"model proxy: {message}")
        self.close_connection = True
        if self._started:
            return  # headers are out: the client sees a broken chunked body, which it reports
        kind = "api_error" if proxy.api == "anthropic" else "server_error"
        self._send_buffered(status, _error_body(proxy.api, kind, proxy.redact(message)),
                            {"content-type": "application/json", "connection": "close"})

    def _send_buffered(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.server.proxy._count(client_disconnects=1)
            self.close_connection = True
            return
        self.server.proxy._count(bytes_down=len(body))


def _forwarded_response_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _FORWARDED_RESPONSE_HEADERS or lowered.startswith(_FORWARDED_RESPONSE_PREFIXES)


def _read_bounded(response: httpx2.Response, limit: int) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= limit:
            return bytes(data[:limit])
    return bytes(data)


def _error_body(api: Api, kind: str, message: str) -> bytes:
    """The dialect's error envelope, so the agent's client classifies the error as for the real API."""
    if api == "anthropic":
        payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return json.dumps(payload).encode()


class _tracked:
    """Registers an upstream response as in flight, so stop() can cut it."""

    def __init__(self, proxy: ModelProxy, response: httpx2.Response) -> None:
        self._proxy = proxy
        self._response = response

    def __enter__(self) -> None:
        with self._proxy._lock:
            self._proxy._active.add(self._response)

    def __exit__(self, *exc_info: object) -> None:
        with self._proxy._lock:
            self._proxy._active.discard(self._response)


# -- wiring a model spec through the proxy -----------------------------------------------------------------
@dataclass(frozen=True)
class Upstream:
    """Where a model spec's requests really go, and with which key (empty: the server needs none)."""

    provider: str
    endpoint: EndpointConfig  # base_url already reflects ANTHROPIC_BASE_URL / OPENAI_BASE_URL
    api_key: str = field(repr=False)

    def proxy(self, **kwargs: Any) -> ModelProxy:
        """A (not yet started) proxy for this upstream."""
        return ModelProxy(self.endpoint.base_url, self.endpoint.api, self.api_key, **kwargs)


def resolve_upstream(spec: str, endpoints: Mapping[str, EndpointConfig] | None = None,
                     env: Mapping[str, str] | None = None) -> Upstream | None:
    """The upstream a model spec names, resolved as `bot.llm.models.resolve_model` would, or None for
    `mock:`/`replay:` models, which make no HTTP calls. Raises ConfigError for an unknown provider, a
    bad base URL override or a missing key."""
    import os

    env = os.environ if env is None else env
    provider, model_id = parse_spec(spec)
    if provider in SPECIAL_PROVIDERS:
        return None
    endpoint = all_endpoints(endpoints).get(provider)
    if endpoint is None:
        raise ConfigError(f"unknown provider {provider!r} in model spec {spec!r}")
    if endpoint.base_url_env and env.get(endpoint.base_url_env):
        override = env[endpoint.base_url_env].rstrip("/")
        if not override.startswith(("http://", "https://")):
            raise ConfigError(f"{endpoint.base_url_env} must be an http:// or https:// URL, got {override!r}")
        endpoint = endpoint.model_copy(update={"base_url": override})
    api_key = env.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
    if endpoint.api_key_env and not api_key:
        raise ConfigError(f"no API key for {provider}:{model_id}: set {endpoint.api_key_env}", provider=provider)
    return Upstream(provider=provider, endpoint=endpoint.model_copy(update={"name": provider}), api_key=api_key)


def agent_endpoints(upstream: Upstream, proxy: ModelProxy) -> dict[str, EndpointConfig]:
    """The `[endpoints]` entry that makes the agent's `resolve_model` talk to the proxy under the
    provider's own name (so pricing and model limits stay the provider's). It pins what the client
    would otherwise guess from the upstream host, such as OpenAI's `max_completion_tokens`."""
    from bot.llm.openai import default_max_tokens_field

    endpoint = upstream.endpoint
    max_tokens_field = endpoint.max_tokens_field
    if endpoint.api == "openai" and max_tokens_field is None:
        max_tokens_field = default_max_tokens_field(endpoint.base_url)
    routed = endpoint.model_copy(update={
        "name": upstream.provider, "base_url": proxy.base_url, "api_key_env": PROXY_TOKEN_ENV,
        "base_url_env": None, "max_tokens_field": max_tokens_field,
    })
    return {upstream.provider: routed}


def agent_env(proxy: ModelProxy, inherited: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the agent worker's environment needs for the proxy: its only model credential, the run
    token under `PROXY_TOKEN_ENV`, and 127.0.0.1 added to `NO_PROXY`/`no_proxy` (kept from `inherited`,
    default os.environ). Without that, a runner's `HTTPS_PROXY`/`HTTP_PROXY` would send the agent's
    loopback requests, token included, to the corporate proxy, which cannot reach them anyway."""
    import os

    source = os.environ if inherited is None else inherited
    existing = source.get("NO_PROXY") or source.get("no_proxy") or ""
    hosts = [host.strip() for host in existing.split(",") if host.strip()]
    no_proxy = ",".join([*hosts, *(h for h in ("127.0.0.1", "localhost") if h not in hosts)])
    return {PROXY_TOKEN_ENV: proxy.run_token, "NO_PROXY": no_proxy, "no_proxy": no_proxy}
