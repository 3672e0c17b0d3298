"""A smart-HTTP git server on loopback, for tests that need git to talk HTTP as it does to github.com.

It serves the bare repositories under one directory through `git http-backend` run as a CGI program, the
way a web server would. Fetching is anonymous; pushing (`git-receive-pack`: both the
`info/refs?service=git-receive-pack` advertisement and the POST) needs `Authorization: Basic`, and is
answered `401` with `WWW-Authenticate: Basic realm="fake"` otherwise, which is what makes git ask its
credential helper. Every request is recorded with the credentials it carried, decoded, so a test can
say exactly which token reached the remote and for what:

    with GitHttpServer(tmp_path) as server:        # serves tmp_path/remote.git as {server.url}/remote.git
        git clone {server.url}/remote.git work     # anonymous
        ...push with a credential helper...
        assert server.pushes()[-1].credentials == ("x-access-token", token)

`accept(user, password)` decides which Basic credentials a push may use (default: any); refused ones get
the same 401. Request bodies may come with Content-Length or chunked (git streams large packs chunked),
and gzip-encoded (git compresses large fetch negotiations): http-backend decodes gzip itself when told
through `HTTP_CONTENT_ENCODING`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fake_github import LoopbackServer

REALM = "fake"
_RECEIVE_PACK = "git-receive-pack"
_CGI_TIMEOUT = 60


@dataclass(frozen=True)
class GitHttpRequest:
    """One request as the server saw it. `authorization` is the header as sent ("" when absent);
    `credentials` is its decoded (user, password) when it was `Basic`, else None."""

    method: str
    path: str
    query: str
    authorization: str
    credentials: tuple[str, str] | None
    status: int
    chunked: bool = False  # the body came with `Transfer-Encoding: chunked`

    @property
    def service(self) -> str:
        """`git-upload-pack` (fetch) or `git-receive-pack` (push), from the query or the POST path."""
        found = parse_qs(self.query).get("service", [""])[0]
        return found or self.path.rsplit("/", 1)[-1]

    @property
    def is_push(self) -> bool:
        return self.service == _RECEIVE_PACK


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic ...` header, None for any other header."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user, password


class GitHttpServer(LoopbackServer):
    """`git http-backend` behind a ThreadingHTTPServer on 127.0.0.1 (ephemeral port)."""

    def __init__(self, project_root: Path, *,
                 accept: Callable[[str, str], bool] = lambda user, password: True) -> None:
        self.project_root = Path(project_root)
        self.accept = accept
        self.requests: list[GitHttpRequest] = []
        self.cgi_errors: list[str] = []  # http-backend's stderr, when it wrote any
        self._lock = threading.Lock()
        super().__init__()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    def repo_url(self, name: str) -> str:
        """The clone URL of `project_root/name` (e.g. "remote.git")."""
        return f"{self.url}/{name}"

    # -- inspection ---------------------------------------------------------------------------------
    @property
    def authorizations(self) -> list[str]:
        """Every Authorization header seen, in order: Basic ones decoded to "user:password"."""
        seen = []
        for request in self.requests:
            if request.credentials is not None:
                seen.append(":".join(request.credentials))
            elif request.authorization:
                seen.append(request.authorization)
        return seen

    def pushes(self) -> list[GitHttpRequest]:
        return [r for r in self.requests if r.is_push]

    def fetches(self) -> list[GitHttpRequest]:
        return [r for r in self.requests if not r.is_push]

    # -- serving ------------------------------------------------------------------------------------
    def _record(self, request: GitHttpRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def run_backend(self, env: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run `git http-backend` with the CGI variables `env` and `body` on stdin; (status, headers, body)."""
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                              timeout=_CGI_TIMEOUT, check=False)
        if proc.stderr:
            with self._lock:
                self.cgi_errors.append(proc.stderr.decode("utf-8", "replace"))
        return parse_cgi_response(proc.stdout)


def parse_cgi_response(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """A CGI program's output: header lines up to a blank line (`Status: 404 Not Found` sets the status,
    200 without it), then the body."""
    ends = [(output.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if output.find(sep) >= 0]
    if not ends:
        return 502, [("Content-Type", "text/plain")], b"http-backend wrote no CGI header\n" + output
    cut, sep = min(ends)
    head, body = output[:cut], output[cut + len(sep):]
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "status":
            status = int(value.strip().split()[0])
        elif name.strip():
            headers.append((name.strip(), value.strip()))
    return status, headers, body


def _make_handler(server: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._chunked_body()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _chunked_body(self) -> bytes:
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline().split(b";", 1)[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk

        def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _serve(self) -> None:
            body = self._body()
            parts = urlsplit(self.path)
            authorization = self.headers.get("Authorization", "")
            credentials = basic_credentials(authorization)
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            recorded = GitHttpRequest(self.command, unquote(parts.path), parts.query, authorization, credentials, 0,
                                      chunked)
            if recorded.is_push and (credentials is None or not server.accept(*credentials)):
                server._record(dataclasses.replace(recorded, status=401))
                self._send(401, [("WWW-Authenticate", f'Basic realm="{REALM}"'),
                                 ("Content-Type", "text/plain")], b"authentication required\n")
                return
            status, headers, payload = server.run_backend(self._cgi_env(recorded, credentials, len(body)), body)
            server._record(dataclasses.replace(recorded, status=status))
            self._send(status, headers, payload)

        def _cgi_env(self, request: GitHttpRequest, credentials: tuple[str, str] | None,
                     length: int) -> dict[str, str]:
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(server.project_root),
                "GIT_PROJECT_ROOT": str(server.project_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_SOFTWARE": "opi-tests-git-http",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": request.path,
                "QUERY_STRING": request.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(length),
                "REMOTE_ADDR": self.client_address[0],
            }
            if credentials is not None:
                # http-backend enables receive-pack only for an authenticated user.
                env["REMOTE_USER"] = credentials[0]
                env["AUTH_TYPE"] = "Basic"
            encoding = self.headers.get("Content-Encoding")
            if encoding:
                env["HTTP_CONTENT_ENCODING"] = encoding
            protocol = self.headers.get("Git-Protocol")
            if protocol:  # protocol v2: newer git reads the CGI variable, older the plain one
                env["HTTP_GIT_PROTOCOL"] = env["GIT_PROTOCOL"] = protocol
            return env

        do_GET = do_POST = do_HEAD = _serve

    return Handler
