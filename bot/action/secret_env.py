"""Keep secrets out of the environment block that tool subprocesses can read.

Scrubbing the environment handed to tools is not enough: `/proc/<pid>/environ` shows a process's
*initial* environment for its whole life, and a tool's shell can read its parent's (`cat
/proc/$PPID/environ`, same uid). Deleting from `os.environ` does not change that block; only an exec
does. So the action re-executes itself once with the secret-named variables removed, passes them
through an inherited pipe, and puts them back into `os.environ`, which lives on the heap, not in the
block `/proc` shows.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from bot.tools.base import is_secret_env_name

_FD_VARIABLE = "OPI_SECRETS_FD"
# A pipe holds 64 KiB on Linux; the secrets are written before the exec, so they must fit without a reader.
_PIPE_LIMIT = 60_000


def restore_secrets() -> bool:
    """In the re-executed process: read the secrets back. Returns False when this process was not one."""
    fd_text = os.environ.pop(_FD_VARIABLE, None)
    if fd_text is None:
        return False
    with os.fdopen(int(fd_text), "rb") as pipe:
        secrets: dict[str, str] = json.loads(pipe.read().decode("utf-8"))
    os.environ.update(secrets)
    return True


def reexec_without_secrets(argv: Sequence[str]) -> None:
    """Replace this process with `opi action ARGV` whose initial environment holds no secrets.
    Returns only when there is nothing to hide or the secrets are too large to pass (then logs why)."""
    secrets = {name: value for name, value in os.environ.items() if is_secret_env_name(name)}
    if not secrets:
        return
    payload = json.dumps(secrets).encode("utf-8")
    if len(payload) > _PIPE_LIMIT:
        print("opi action: secrets too large to move out of the process environment; continuing with them",
              file=sys.stderr, flush=True)
        return
    read_end, write_end = os.pipe()
    os.write(write_end, payload)
    os.close(write_end)
    os.set_inheritable(read_end, True)
    env = {name: value for name, value in os.environ.items() if name not in secrets}
    env[_FD_VARIABLE] = str(read_end)
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: the working directory is the user's checkout; a `bot/` package there must not be imported.
    os.execve(sys.executable, [sys.executable, "-P", "-m", "bot", "action", *argv], env)
