"""The broker's model proxy: the agent's real model client streams through it with a run token, the
scripted upstream sees only the real key, and the key never comes back."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx2
import pytest

from bot.action.model_proxy import (
    PROXY_TOKEN_ENV,
    ModelProxy,
    StreamRedactor,
    Upstream,
    agent_endpoints,
    agent_env,
    resolve_upstream,
)
from bot.llm.base import Model
from bot.llm.errors import AuthError, BadRequestError, ConfigError, OverloadedError, RateLimitError
from bot.llm.messages import UserMessage
from bot.llm.models import EndpointConfig, resolve_model
from bot.tools.base import is_secret_env_name
from tests.fake_github import LoopbackServer
from tests.fake_llm import ErrorReply, FakeLLMServer, Reply
from tests.provider_support import READ_TOOL, request, run

REAL_KEY = "sk-ant-REALKEY-0123456789abcdefghijWXYZ"
SPECS = {"anthropic": "anthropic:claude-sonnet-4-5", "openai": "openai:gpt-4o"}
DIALECTS = ["anthropic", "openai"]


def upstream_env(server: FakeLLMServer) -> dict[str, str]:
    return server.env(api_key=REAL_KEY)


@pytest.fixture
def proxies() -> Iterator[list[ModelProxy]]:
    started: list[ModelProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def start_proxy(proxies: list[ModelProxy], upstream: Upstream | None, **kwargs: Any) -> ModelProxy:
    assert upstream is not None
    proxy = upstream.proxy(**kwargs).start()
    proxies.append(proxy)
    return proxy


def proxied_model(server: FakeLLMServer, dialect: str, proxies: list[ModelProxy]) -> tuple[Model, ModelProxy]:
    """The agent side exactly as the worker would build it: an endpoint override and the token env."""
    spec = SPECS[dialect]
    upstream = resolve_upstream(spec, env=upstream_env(server))
    assert upstream is not None
    proxy = start_proxy(proxies, upstream)
    model = resolve_model(spec, endpoints=agent_endpoints(upstream, proxy), env=agent_env(proxy))
    return model, proxy


def url_of(proxy: ModelProxy) -> str:
    return proxy.base_url + ("/v1/messages" if proxy.api == "anthropic" else "/chat/completions")


def auth_headers(proxy: ModelProxy, token: str | None = None) -> dict[str, str]:
    token = proxy.run_token if token is None else token
    if proxy.api == "anthropic":
        return {"x-api-key": token, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


def body_for(dialect: str) -> bytes:
    return json.dumps({"model": "m", "stream": True, "max_tokens": 10,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()


# -- the real client, both dialects ------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", DIALECTS)
def test_real_client_streams_text_and_tool_calls_through_the_proxy(
        fake_llm: FakeLLMServer, dialect: str, proxies: list[ModelProxy]) -> None:
    fake_llm.enqueue(Reply(text="Reading it now.", tool_calls=[("call_1", "read", {"path": "a.txt"})]))
    fake_llm.enqueue(Reply(text="done"))
    model, proxy = proxied_model(fake_llm, dialect, proxies)

    _, first = run(model, request(UserMessage(content="read a.txt"), tools=[READ_TOOL]))
    _, second = run(model, request(UserMessage(content="again")))

    assert first.text == "Reading it now."
    assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [("call_1", "read", {"path": "a.txt"})]
    assert second.text == "done"
    assert first.provider == dialect  # the provider's own name: pricing and limits stay the provider's
    stats = proxy.stats()
    assert stats.forwarded == 2 and stats.rejected == 0 and stats.bytes_down > 0 and stats.bytes_up > 0


@pytest.mark.parametrize("dialect", DIALECTS)
def test_upstream_gets_the_real_key_and_never_the_run_token(
        fake_llm: FakeLLMServer, dialect: str, proxies: list[ModelProxy]) -> None:
    fake_llm.enqueue(Reply(text="ok"))
    model, proxy = proxied_model(fake_llm, dialect, proxies)
    run(model, request())

    [seen] = fake_llm.requests
    if dialect == "anthropic":
        assert seen.headers["x-api-key"] == REAL_KEY
        assert seen.headers["anthropic-version"]
        assert "authorization" not in seen.headers
    else:
        assert seen.headers["authorization"] == f"Bearer {REAL_KEY}"
        assert "x-api-key" not in seen.headers
    assert not any(proxy.run_token in value for value in seen.headers.values())
    assert proxy.run_token.encode() not in seen.raw
    assert seen.path == ("/v1/messages" if dialect == "anthropic" else "/v1/chat/completions")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_run_token_is_worthless_against_the_upstream(
        fake_llm: FakeLLMServer, dialect: str, proxies: list[ModelProxy]) -> None:
    """An upstream that checks keys (as every provider does) refuses the token the agent holds."""
    def check_key(req: Any) -> Any:
        presented = req.headers.get("x-api-key") or req.headers.get("authorization", "").removeprefix("Bearer ")
        return Reply(text="welcome") if presented == REAL_KEY else ErrorReply(401, "invalid x-api-key")

    fake_llm.responder = check_key
    model, proxy = proxied_model(fake_llm, dialect, proxies)
    direct = resolve_model(SPECS[dialect], env=fake_llm.env(api_key=proxy.run_token))

    _, through_proxy = run(model, request())
    with pytest.raises(AuthError):
        run(direct, request())

    assert through_proxy.text == "welcome"
    assert proxy.run_token != REAL_KEY and REAL_KEY not in proxy.run_token


# -- refusals ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("token", [None, "wrong", "X" * 43])
def test_missing_or_wrong_token_is_401_and_nothing_reaches_upstream(
        fake_llm: FakeLLMServer, dialect: str, token: str | None, proxies: list[ModelProxy]) -> None:
    proxy = start_proxy(proxies, resolve_upstream(SPECS[dialect], env=upstream_env(fake_llm)))
    headers = auth_headers(proxy, token or "unused")
    if token is None:
        headers.pop("x-api-key", None)
        headers.pop("authorization", None)

    response = httpx2.post(url_of(proxy), content=body_for(dialect), headers=headers)

    assert response.status_code == 401
    assert fake_llm.requests == []
    assert REAL_KEY not in response.text
    assert proxy.stats().rejected == 1 and proxy.stats().forwarded == 0


def test_the_token_must_come_in_the_dialects_own_header(fake_llm: FakeLLMServer,
                                                      proxies: list[ModelProxy]) -> None:
    anthropic = start_proxy(proxies, resolve_upstream(SPECS["anthropic"], env=upstream_env(fake_llm)))
    openai = start_proxy(proxies, resolve_upstream(SPECS["openai"], env=upstream_env(fake_llm)))

    wrong_header = httpx2.post(url_of(anthropic), content=b"{}",
                               headers={"authorization": f"Bearer {anthropic.run_token}"})
    wrong_scheme = httpx2.post(url_of(openai), content=b"{}",
                               headers={"authorization": f"Basic {openai.run_token}"})
    twice = httpx2.post(url_of(anthropic), content=b"{}",
                        headers=[("x-api-key", anthropic.run_token), ("x-api-key", "other")])
    other_proxys_token = httpx2.post(url_of(openai), content=b"{}",
                                     headers={"authorization": f"Bearer {anthropic.run_token}"})

    assert [r.status_code for r in (wrong_header, wrong_scheme, twice, other_proxys_token)] == [401] * 4
    assert fake_llm.requests == []
    assert anthropic.run_token != openai.run_token


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/v1/models", 404),
    ("POST", "/v1/messages/count_tokens", 404),
    ("POST", "/v1/files", 404),
    ("POST", "/", 404),
    ("GET", "/v1/models", 404),
    ("DELETE", "/v1/files/x", 404),
])
def test_paths_the_clients_do_not_use_are_404(fake_llm: FakeLLMServer, dialect: str, method: str, path: str,
                                               status: int, proxies: list[ModelProxy]) -> None:
    proxy = start_proxy(proxies, resolve_upstream(SPECS[dialect], env=upstream_env(fake_llm)))
    root = proxy.base_url.removesuffix("/v1")
    response = httpx2.request(method, root + path, content=b"{}", headers=auth_headers(proxy))
    assert response.status_code == status
    assert fake_llm.requests == []


@pytest.mark.parametrize("path", ["/v1/../v1/messages", "/v1/./messages", "/v1/messages/",
                                  "/V1/messages", "/v1/messages%00", "http://evil.example/v1/messages"])
def test_unnormalised_paths_are_404_not_forwarded(fake_llm: FakeLLMServer, path: str,
                                                  proxies: list[ModelProxy]) -> None:
    proxy = start_proxy(proxies, resolve_upstream(SPECS["anthropic"], env=upstream_env(fake_llm)))
    connection = http.client.HTTPConnection("127.0.0.1", int(proxy.base_url.rsplit(":", 1)[1]))
    try:
        connection.request("POST", path, body=b"{}", headers=auth_headers(proxy))
        status = connection.getresponse().status
    finally:
        connection.close()
    assert status == 404
    assert fake_llm.requests == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_other_methods_on_the_model_path_are_405_and_queries_404(
        fake_llm: FakeLLMServer, dialect: str, proxies: list[ModelProxy]) -> None:
    proxy = start_proxy(proxies, resolve_upstream(SPECS[dialect], env=upstream_env(fake_llm)))
    get = httpx2.get(url_of(proxy), headers=auth_headers(proxy))
    put = httpx2.put(url_of(proxy), content=b"{}", headers=auth_headers(proxy))
    query = httpx2.post(url_of(proxy) + "?beta=true", content=b"{}", headers=auth_headers(proxy))
    assert (get.status_code, put.status_code, query.status_code) == (405, 405, 404)
    assert get.headers["allow"] == "POST"
    assert fake_llm.requests == []


def test_a_body_above_the_limit_is_413_and_not_forwarded(fake_llm: FakeLLMServer,
                                                         proxies: list[ModelProxy]) -> None:
    proxy = start_proxy(proxies, resolve_upstream(SPECS["anthropic"], env=upstream_env(fake_llm)),
                        max_body_bytes=1000)
    response = httpx2.post(url_of(proxy), content=b"x" * 1001, headers=auth_headers(proxy))
    assert response.status_code == 413
    assert "1001 bytes" in response.json()["error"]["message"]
    assert fake_llm.requests == []


def test_connections_beyond_the_limit_are_closed_at_once(proxies: list[ModelProxy]) -> None:
    proxy = ModelProxy("http://127.0.0.1:9", "anthropic", REAL_KEY, max_connections=2).start()
    proxies.append(proxy)
    port = int(proxy.base_url.rsplit(":", 1)[1])
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        with socket.create_connection(("127.0.0.1", port)) as third:
            third.settimeout(30)
            assert third.recv(1) == b""  # closed by the proxy without a word
        assert proxy.stats().rejected == 1
    finally:
        for connection in held:
            connection.close()


def test_client_headers_beyond_the_allow_list_never_reach_upstream(fake_llm: FakeLLMServer,
                                                                   proxies: list[ModelProxy]) -> None:
    fake_llm.enqueue(Reply(text="ok"))
    proxy = start_proxy(proxies, resolve_upstream(SPECS["anthropic"], env=upstream_env(fake_llm)))
    headers = {**auth_headers(proxy), "anthropic-beta": "interleaved-thinking-2025-05-14",
               "accept": "text/event-stream", "cookie": "session=planted", "x-forwarded-for": "10.0.0.1",
               "proxy-authorization": "Basic cGxhbnRlZA==", "connection": "keep-alive, x-planted",
               "x-planted": "1", "te": "trailers", "upgrade": "h2c", "authorization": "Bearer planted"}
    response = httpx2.post(url_of(proxy), content=body_for("anthropic"), headers=headers)

    assert response.status_code == 200
    [seen] = fake_llm.requests
    assert seen.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert seen.headers["accept"] == "text/event-stream"
    assert seen.headers["x-api-key"] == REAL_KEY
    for name in ("cookie", "x-forwarded-for", "proxy-authorization", "x-planted", "te", "upgrade",
                 "authorization"):
        assert name not in seen.headers
    assert "planted" not in json.dumps(seen.headers)


# -- errors pass through, the key never comes back -------------------------------------------------------
@pytest.mark.parametrize("dialect", DIALECTS)
def test_429_with_retry_after_passes_through(fake_llm: FakeLLMServer, dialect: str,
                                             proxies: list[ModelProxy]) -> None:
    fake_llm.enqueue(ErrorReply(429, "slow down", headers={"retry-after": "7", "x-ratelimit-remaining": "0",
                                                           "set-cookie": "upstream=1"}))
    fake_llm.enqueue(ErrorReply(429, "slow down", headers={"retry-after": "7"}))
    model, proxy = proxied_model(fake_llm, dialect, proxies)

    raw = httpx2.post(url_of(proxy), content=body_for(dialect), headers=auth_headers(proxy))
    with pytest.raises(RateLimitError) as caught:
        run(model, request())

    assert raw.status_code == 429
    assert raw.headers["retry-after"] == "7" and raw.headers["x-ratelimit-remaining"] == "0"
    assert "set-cookie" not in raw.headers
    assert raw.json()["error"]["message"] == "slow down"
    assert caught.value.retry_after == 7.0 and "slow down" in str(caught.value)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("status", "error"), [(400, BadRequestError), (401, AuthError),
                                                (529, OverloadedError)])
def test_error_statuses_reach_the_client_classified(fake_llm: FakeLLMServer, dialect: str, status: int,
                                                    error: type[Exception], proxies: list[ModelProxy]) -> None:
    fake_llm.enqueue(ErrorReply(status, f"scripted {status}"))
    model, _ = proxied_model(fake_llm, dialect, proxies)
    with pytest.raises(error, match=f"scripted {status}"):
        run(model, request())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_upstream_error_bodies_that_echo_the_key_are_redacted(fake_llm: FakeLLMServer, dialect: str,
                                                              proxies: list[ModelProxy]) -> None:
    masked = REAL_KEY[:8] + "*" * 20 + REAL_KEY[-4:]
    message = (f"Incorrect API key provided: {masked}. Full: {REAL_KEY}. "
               f"Tail: {REAL_KEY[:3]}...{REAL_KEY[-4:]}. See the docs.")
    fake_llm.enqueue(ErrorReply(401, message, headers={"x-request-id": f"req-{REAL_KEY}"}))
    proxy = start_proxy(proxies, resolve_upstream(SPECS[dialect], env=upstream_env(fake_llm)))

    response = httpx2.post(url_of(proxy), content=body_for(dialect), headers=auth_headers(proxy))

    assert response.status_code == 401
    everything = response.text + json.dumps(dict(response.headers))
    assert REAL_KEY not in everything and REAL_KEY[-4:] not in everything and "****" not in everything
    assert "Incorrect API key provided: ***" in response.json()["error"]["message"]
    assert response.json()["error"]["message"].endswith("See the docs.")


def test_a_key_in_a_successful_stream_is_redacted(fake_llm: FakeLLMServer, proxies: list[ModelProxy]) -> None:
    # Whole within one event. Split across deltas it is no longer one byte string: the proxy cannot see it
    # there, and the broker's scan of everything that leaves is what covers that case.
    fake_llm.enqueue(Reply(text=f"the key is {REAL_KEY} indeed", chunks=1))
    model, _ = proxied_model(fake_llm, "openai", proxies)
    _, message = run(model, request())
    assert message.text == "the key is *** indeed"


@pytest.mark.parametrize("split", range(len(REAL_KEY) + 3))
def test_stream_redactor_catches_a_key_split_anywhere(split: int) -> None:
    data = b"data: " + REAL_KEY.encode() + b"\n\n"
    cut = split + 3
    redactor = StreamRedactor(REAL_KEY.encode())
    out = redactor.feed(data[:cut]) + redactor.feed(data[cut:]) + redactor.flush()
    assert out == b"data: ***\n\n"


def test_stream_redactor_holds_back_nothing_after_a_complete_event() -> None:
    redactor = StreamRedactor(REAL_KEY.encode())
    event = b'data: {"text":"sk-"}\n\n'
    assert redactor.feed(event) == event
    assert redactor.feed(b"data: sk-ant") == b"data: "  # could be the key's start: held
    assert redactor.feed(b"-other\n\n") == b"sk-ant-other\n\n"


# -- streaming, disconnects, stop -----------------------------------------------------------------------
class GatedUpstream(LoopbackServer):
    """An upstream that sends one SSE event, then waits for `gate` before finishing; `client_gone` is
    set when writing fails because the proxy closed the connection."""

    poll_interval = 0.02

    def __init__(self, *, endless: bool = False) -> None:
        super().__init__()
        self.endless = endless
        self.gate = threading.Event()
        self.client_gone = threading.Event()
        self.finished = threading.Event()
        self.start()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                try:
                    self.chunk(b"event: first\ndata: {}\n\n")
                    while owner.endless and not owner.gate.wait(0.02):
                        self.chunk(b"event: ping\ndata: {}\n\n")
                    owner.gate.wait(30)
                    self.chunk(b"event: last\ndata: {}\n\n")
                    self.chunk(b"")
                    owner.finished.set()
                except OSError:
                    owner.client_gone.set()
                    self.close_connection = True

            def chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler

    def close(self) -> None:
        self.gate.set()
        self.stop()


@pytest.fixture
def gated() -> Iterator[GatedUpstream]:
    upstream = GatedUpstream()
    yield upstream
    upstream.close()


@pytest.fixture
def endless() -> Iterator[GatedUpstream]:
    upstream = GatedUpstream(endless=True)
    yield upstream
    upstream.close()


def test_events_arrive_before_the_upstream_finishes(gated: GatedUpstream, proxies: list[ModelProxy]) -> None:
    proxy = ModelProxy(gated.url, "anthropic", REAL_KEY).start()
    proxies.append(proxy)
    with httpx2.stream("POST", url_of(proxy), content=b"{}", headers=auth_headers(proxy)) as response:
        lines = response.iter_lines()
        first = next(lines)
        upstream_was_done = gated.finished.is_set()
        gated.gate.set()
        rest = list(lines)
    assert first == "event: first"
    assert not upstream_was_done  # the first event was relayed while upstream was still streaming
    assert "event: last" in rest


def test_a_client_hanging_up_mid_stream_closes_the_upstream(endless: GatedUpstream,
                                                           proxies: list[ModelProxy]) -> None:
    proxy = ModelProxy(endless.url, "openai", REAL_KEY).start()
    proxies.append(proxy)
    with httpx2.stream("POST", url_of(proxy), content=b"{}", headers=auth_headers(proxy)) as response:
        assert next(response.iter_lines()) == "event: first"
    # The proxy's next write fails, it drops the upstream response, and upstream's next write fails.
    assert endless.client_gone.wait(20)
    assert proxy.stats().client_disconnects == 1


def test_stop_ends_an_in_flight_stream_and_the_listener(gated: GatedUpstream) -> None:
    proxy = ModelProxy(gated.url, "anthropic", REAL_KEY).start()
    url = url_of(proxy)
    with httpx2.stream("POST", url, content=b"{}", headers=auth_headers(proxy)) as response:
        lines = response.iter_lines()
        assert next(lines) == "event: first"
        stopper = threading.Thread(target=proxy.stop)
        stopper.start()
        stopper.join(30)
        assert not stopper.is_alive()
        with pytest.raises(httpx2.HTTPError):
            list(lines)
    with pytest.raises(httpx2.ConnectError):
        httpx2.post(url, content=b"{}", headers=auth_headers(proxy))
    proxy.stop()  # idempotent


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_unreachable_upstream_is_a_502_in_the_dialects_envelope(dialect: str,
                                                                  proxies: list[ModelProxy]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}"
    proxy = ModelProxy(dead + ("/v1" if dialect == "openai" else ""), dialect, REAL_KEY).start()
    proxies.append(proxy)
    response = httpx2.post(url_of(proxy), content=b"{}", headers=auth_headers(proxy))
    assert response.status_code == 502
    assert "cannot reach the model API" in response.json()["error"]["message"]
    assert REAL_KEY not in response.text
    assert proxy.stats().upstream_failures == 1


def test_listens_on_loopback_only_and_never_shows_the_key(fake_llm: FakeLLMServer,
                                                         proxies: list[ModelProxy]) -> None:
    upstream = resolve_upstream(SPECS["anthropic"], env=upstream_env(fake_llm))
    proxy = start_proxy(proxies, upstream)
    assert proxy.base_url.startswith("http://127.0.0.1:")
    assert proxy._server is not None and proxy._server.server_address[0] == "127.0.0.1"
    assert REAL_KEY not in repr(proxy) and REAL_KEY not in repr(upstream)
    assert proxy.run_token not in repr(proxy)
    assert len(proxy.run_token) >= 40


def test_a_stopped_proxy_has_no_base_url() -> None:
    proxy = ModelProxy("https://api.anthropic.com", "anthropic", REAL_KEY)
    with pytest.raises(RuntimeError, match="not running"):
        _ = proxy.base_url


@pytest.mark.parametrize(("args", "message"), [
    (("ftp://x", "anthropic", "k"), "http:// or https://"),
    (("https://x", "gemini", "k"), "unknown model API"),
    (("https://x", "openai", "k\r\nx-evil: 1"), "line break"),
])
def test_bad_construction_is_refused(args: tuple[str, str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelProxy(*args)


# -- resolving specs and the agent's settings -------------------------------------------------------------
def test_agent_settings_carry_only_the_token_under_a_scrubbed_name() -> None:
    upstream = resolve_upstream("openai:gpt-5", env={"OPENAI_API_KEY": REAL_KEY})
    assert upstream is not None
    with upstream.proxy() as proxy:
        env = agent_env(proxy)
        endpoints = agent_endpoints(upstream, proxy)
    assert env[PROXY_TOKEN_ENV] == proxy.run_token
    assert REAL_KEY not in json.dumps(env)
    assert is_secret_env_name(PROXY_TOKEN_ENV)  # tool subprocesses never see it
    routed = endpoints["openai"]
    assert routed.api_key_env == PROXY_TOKEN_ENV and routed.base_url_env is None
    assert routed.base_url.startswith("http://127.0.0.1:")
    # The client guesses the output-limit field from the host; pinned to what api.openai.com needs.
    assert routed.max_tokens_field == "max_completion_tokens"
    assert REAL_KEY not in routed.model_dump_json()


def test_resolve_upstream_follows_base_url_overrides_presets_and_endpoints() -> None:
    env = {"ANTHROPIC_API_KEY": "a-key-123456", "ANTHROPIC_BASE_URL": "https://gateway.example/v1/",
           "GROQ_API_KEY": "g-key-123456", "TOGETHER_KEY": "t-key-123456"}
    anthropic = resolve_upstream("anthropic:claude-sonnet-4-5", env=env)
    groq = resolve_upstream("groq:llama-3.3-70b-versatile", env=env)
    ollama = resolve_upstream("ollama:llama3.1:8b", env={})
    together = resolve_upstream("together:some-model", env=env, endpoints={"together": EndpointConfig(
        base_url="https://api.together.xyz/v1", api_key_env="TOGETHER_KEY", max_tokens_field="max_tokens")})

    assert anthropic is not None and anthropic.endpoint.base_url == "https://gateway.example/v1"
    assert anthropic.api_key == "a-key-123456"
    assert groq is not None and groq.endpoint.base_url == "https://api.groq.com/openai/v1"
    assert ollama is not None and ollama.api_key == "" and ollama.endpoint.api == "openai"
    assert together is not None and together.provider == "together" and together.api_key == "t-key-123456"
    assert resolve_upstream("mock:x", env={}) is None
    with pytest.raises(ConfigError, match="GROQ_API_KEY"):
        resolve_upstream("groq:llama-3.3-70b-versatile", env={})
    with pytest.raises(ConfigError, match="unknown provider"):
        resolve_upstream("nope:x", env={})


def test_anthropic_upstream_whose_base_ends_in_v1_is_not_doubled(fake_llm: FakeLLMServer,
                                                                proxies: list[ModelProxy]) -> None:
    fake_llm.enqueue(Reply(text="ok"))
    env = {"ANTHROPIC_API_KEY": REAL_KEY, "ANTHROPIC_BASE_URL": fake_llm.url + "/v1"}
    upstream = resolve_upstream(SPECS["anthropic"], env=env)
    proxy = start_proxy(proxies, upstream)
    assert upstream is not None
    model = resolve_model(SPECS["anthropic"], endpoints=agent_endpoints(upstream, proxy), env=agent_env(proxy))
    run(model, request())
    assert [r.path for r in fake_llm.requests] == ["/v1/messages"]


def test_a_configured_preset_override_streams_through_the_proxy(fake_llm: FakeLLMServer,
                                                              proxies: list[ModelProxy]) -> None:
    """A keyless OpenAI-compatible server (a local Ollama): the agent still needs the token, upstream
    gets no credentials at all."""
    fake_llm.enqueue(Reply(text="local"))
    endpoints = {"ollama": EndpointConfig(base_url=fake_llm.openai_base_url, api_key_env=None)}
    upstream = resolve_upstream("ollama:llama3.1:8b", endpoints=endpoints, env={})
    proxy = start_proxy(proxies, upstream)
    assert upstream is not None
    model = resolve_model("ollama:llama3.1:8b", endpoints=agent_endpoints(upstream, proxy),
                          env=agent_env(proxy))
    _, message = run(model, request())
    assert message.text == "local"
    assert "authorization" not in fake_llm.requests[0].headers
    assert httpx2.post(url_of(proxy), content=b"{}").status_code == 401


def test_the_agent_reaches_the_proxy_even_behind_a_runner_http_proxy(
        fake_llm: FakeLLMServer, proxies: list[ModelProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker inherits HTTPS_PROXY/HTTP_PROXY from the runner; loopback must bypass them."""
    fake_llm.enqueue(Reply(text="direct"))
    proxy = start_proxy(proxies, resolve_upstream(SPECS["openai"], env=upstream_env(fake_llm)))
    env = agent_env(proxy, {"NO_PROXY": "corp.example, .internal"})
    assert env["NO_PROXY"] == env["no_proxy"] == "corp.example,.internal,127.0.0.1,localhost"
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{unused.getsockname()[1]}"
    for name, value in {"HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy, "ALL_PROXY": dead_proxy,
                        "http_proxy": dead_proxy, **env}.items():
        monkeypatch.setenv(name, value)
    with httpx2.Client(trust_env=True) as client:  # as bot.llm.http.shared_client builds it
        response = client.post(url_of(proxy), content=body_for("openai"), headers=auth_headers(proxy))
    assert response.status_code == 200
