#!/bin/sh
# Entrypoint of the opi-bot container action (main step and, as opi-post-entrypoint, the post step).
#
# The runner starts the container as root with the workspace owned by the runner user (uid 1001 on
# hosted runners). Running as root would leave root-owned files in the workspace that later steps
# cannot touch, so drop to the workspace owner's uid/gid when possible; otherwise fall back to running
# as root and handing everything written in the workspace back to its owner afterwards.
set -eu

case "$(basename "$0")" in
  opi-post-entrypoint) set -- action --post ;;
  *) set -- action "$@" ;;
esac

workspace="${GITHUB_WORKSPACE:-$PWD}"
owner_uid="$(stat -c %u "$workspace" 2>/dev/null || echo 0)"
owner_gid="$(stat -c %g "$workspace" 2>/dev/null || echo 0)"

if [ "$(id -u)" = "0" ] && [ "$owner_uid" != "0" ] && command -v setpriv >/dev/null 2>&1; then
  # HOME (/github/home) and the file-command files belong to the runner user too.
  exec setpriv --reuid="$owner_uid" --regid="$owner_gid" --clear-groups opi "$@"
fi

if [ "$(id -u)" != "0" ] || [ "$owner_uid" = "0" ]; then
  # Nothing to hand back afterwards, so exec: no shell stays behind (as PID 1) holding the inputs,
  # API keys included, in an environment a tool could read from /proc.
  exec opi "$@"
fi

# Root without setpriv, workspace owned by someone else: run, then hand the files back.
status=0
opi "$@" || status=$?
if [ "$(id -u)" = "0" ] && [ "$owner_uid" != "0" ]; then
  chown -R "$owner_uid:$owner_gid" "$workspace" 2>/dev/null || true
fi
exit "$status"
