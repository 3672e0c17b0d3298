"""Git as the broker runs it: a hardened invocation, and a token that exists for git only during one
fetch or push.

The token never appears in argv (visible to every process in `ps`), in the environment (readable in
`/proc/PID/environ` by the same uid, and inherited by every child), in the remote URL (echoed in
errors) or in a file. Instead each git invocation inherits the read end of a fresh pipe that already
holds the credential, and a credential helper scoped to one URL prefix copies it from that descriptor
to git when git asks (`get`). The helper is a shell function made of builtins, so no program found
through PATH ever handles the token. A pipe is read once: a second `get` in the same invocation, or a
helper for another host, gets nothing.

What the descriptor does not protect against: the processes git itself starts inherit it (as they
would an environment variable), which is why the hardened configuration runs no hooks, fsmonitor or
other configurable commands; and a process of the same uid can open `/proc/GIT_PID/fd/N` while git
runs, which is why the agent runs under another uid.

The hardened invocation (`HARDENED_CONFIG`, `hardened_git_env`) reads no system or global config,
runs no hooks, no fsmonitor and no credential helper other than ours, allows only the https, http and
file transports (so `ext::` and friends are refused), and gives git a minimal environment built from
scratch, so no `GIT_*` variable of the broker's (such as `GIT_DIR` or `GIT_CONFIG_PARAMETERS`) leaks in.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

GIT_TIMEOUT = 300.0
TOKEN_USERNAME = "x-access-token"  # what GitHub expects with an installation or Actions token
# Fixed system directories, not the broker's PATH: a workflow may have put a directory the agent can
# write (node_modules/.bin, the workspace) on PATH, and git and its helpers are looked up there.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

HARDENED_CONFIG: tuple[str, ...] = (
    # Nothing the repository (or anything else) configures runs as a command.
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.untrackedCache=false",
    "-c", "core.askPass=",
    "-c", "core.pager=cat",
    "-c", "credential.helper=",  # an empty value clears every helper configured before it
    "-c", "credential.useHttpPath=false",
    # Transports: https for GitHub, http for loopback test servers, file for local remotes. `ext::`
    # (runs a command) and ssh/git are refused, also for submodules.
    "-c", "protocol.allow=never",
    "-c", "protocol.https.allow=always",
    "-c", "protocol.http.allow=always",
    "-c", "protocol.file.allow=always",
    # No submodule traffic and no background maintenance: nothing runs beyond the command asked for.
    "-c", "submodule.recurse=false",
    "-c", "fetch.recurseSubmodules=false",
    "-c", "push.recurseSubmodules=no",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
)


def hardened_git_env(home: Path, *, path: str = SAFE_PATH,
                     extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for git, built from scratch. `home` should be an empty directory the broker
    owns: git still reads `$HOME`-relative defaults (such as the attributes and ignore files under
    `$XDG_CONFIG_HOME/git`) even with global config off. `extra` adds variables (e.g. `GIT_AUTHOR_NAME`)."""
    env = {
        "PATH": path,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a terminal
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",  # fetched `refs/replace/*` must not change what a commit contains
    }
    env.update(extra or {})
    return env


class GitCredential(NamedTuple):
    """What one git invocation needs to authenticate: config arguments (no secret in them) and the
    descriptor to pass through `subprocess`'s `pass_fds`. Unpacks as `(config, pass_fds)`."""

    config: tuple[str, ...]
    pass_fds: tuple[int, ...]


@contextlib.contextmanager
def token_credential(token: str, url: str, *, username: str = TOKEN_USERNAME) -> Iterator[GitCredential]:
    """A credential for ONE git invocation against `url`'s scheme and host (e.g. `https://github.com`).
    Use a fresh one per invocation: the pipe is empty after git has read it. The descriptor is closed
    on exit."""
    prefix = credential_url_prefix(url)
    payload = _credential_payload(username, token)
    read_fd, write_fd = os.pipe()
    try:
        # A credential is far below the pipe's buffer (64 KiB on Linux), so this never blocks.
        os.write(write_fd, payload)
    finally:
        os.close(write_fd)
    try:
        # Git runs a `!` helper through the shell with the action (get, store, erase) as "$1". Only
        # `get` reads the pipe; store and erase must not drain it. Builtins only: no PATH lookup. The
        # pipe is opened as /dev/fd/N because dash's `<&N` takes single-digit descriptors only.
        helper = (f"!f() {{ test \"$1\" = get || return 0; "
                  f"while IFS= read -r line; do printf '%s\\n' \"$line\"; done < /dev/fd/{read_fd}; }}; f")
        config = ("-c", f"credential.{prefix}.helper={helper}")
        yield GitCredential(config=config, pass_fds=(read_fd,))
    finally:
        os.close(read_fd)


def credential_url_prefix(url: str) -> str:
    """`scheme://host[:port]` of `url`: the scope of the credential helper. Git asks a helper scoped
    this way only for that exact host, so a redirect to another host gets no token."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"the credential URL must be https://HOST or http://HOST, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("the credential URL must not carry a user name or password")
    host = parts.netloc
    if any(c in host for c in " \t\r\n\0\"'\\;&|$`=<>(){}"):
        raise ValueError(f"invalid host in credential URL {url!r}")
    return f"{parts.scheme}://{host}"


def _credential_payload(username: str, token: str) -> bytes:
    for name, value in (("token", token), ("user name", username)):
        if not value:
            raise ValueError(f"the git credential's {name} is empty")
        # A line break would let the value add its own attributes to git's credential protocol.
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"the git credential's {name} contains a line break or NUL")
    return f"username={username}\npassword={token}\n".encode()


def hardened_git(args: Sequence[str], *, cwd: Path, home: Path, token: str | None = None,
                 url: str | None = None, extra_env: Mapping[str, str] | None = None,
                 input: str | None = None, timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `git [hardened config] [credential] ARGS` in `cwd`. With `token`, git may authenticate to
    `url`'s host for this one invocation. Output is captured; the caller checks the return code and
    redacts what it shows."""
    credential: contextlib.AbstractContextManager[GitCredential | None]
    if token is not None:
        if url is None:
            raise ValueError("a token needs the URL it is for")
        credential = token_credential(token, url)
    else:
        credential = contextlib.nullcontext()
    with credential as granted:
        argv = ["git", *HARDENED_CONFIG, *(granted.config if granted else ()), *args]
        return subprocess.run(argv, cwd=cwd, env=hardened_git_env(home, extra=extra_env), input=input,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              pass_fds=granted.pass_fds if granted else ())
