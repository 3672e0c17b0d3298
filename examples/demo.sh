#!/usr/bin/env bash
# The offline demo: opi answers an `/opi` comment with no network, no API key and no GitHub.
#
# `--model replay:examples/session.jsonl` replays the hand-written session's assistant turns in order,
# while the tool calls (read, edit, and bash running the tests) run for real in a temporary copy of
# examples/repo. `opi action --dry-run` then prints the comment it would post on the issue.
#
# Usage: examples/demo.sh   (when `opi` is not on PATH it first installs this checkout into a private venv,
#                           ${XDG_CACHE_HOME:-~/.cache}/opi/demo-venv, or $OPI_DEMO_VENV)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

if ! command -v opi >/dev/null 2>&1; then
  venv="${OPI_DEMO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/opi/demo-venv}"
  echo "demo: installing opi into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q "$root"
  PATH="$venv/bin:$PATH"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/opi-demo.XXXXXX")"
cp -R "$here/repo" "$work/repo"
mkdir -p "$work/runner-temp"
cd "$work/repo"
git init -q -b main
git add -A
git -c user.name="opi demo" -c user.email="demo@example.com" commit -q -m "example project"

# A runner's variables would point the action at a real workspace and a real artifact service: drop them.
for name in $(env | sed -n 's/^\(GITHUB_[A-Z_]*\|ACTIONS_[A-Z_]*\|INPUT_[A-Z_]*\)=.*/\1/p'); do
  unset "$name"
done
export RUNNER_TEMP="$work/runner-temp"

status=0
opi action --dry-run --event "$here/event.json" --event-name issue_comment \
  --model "replay:$here/session.jsonl" || status=$?

echo "demo: the changed checkout is $work/repo; the session is under $RUNNER_TEMP" >&2
exit "$status"
