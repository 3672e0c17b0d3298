#!/bin/sh
# Entrypoint of the opi-bot container action: the main step, and (named opi-post-entrypoint) the post step.
#
# Both run as root, as the runner starts them: `opi action` is the broker that alone holds the secrets and
# starts the agent under an unprivileged uid itself. The shell execs straight into tini, which keeps PID 1:
# it forwards the SIGTERM of a cancelled job to opi and reaps orphaned processes (a killed tool's children).
# Nothing stays behind holding the inputs in its environment. Without tini (a local run) opi is exec'd.
set -eu

case "$(basename "$0")" in
  opi-post-entrypoint) set -- action --post ;;
  *) set -- action "$@" ;;
esac

if command -v tini >/dev/null 2>&1; then
  exec tini -s -- opi "$@"
fi
exec opi "$@"
