"""Regenerate the pi-written session files in this directory by running the real pi CLI against the
scripted loopback model server (tests/fake_llm.py). Not run by the test suite; see README.md.

    npm install --prefix /tmp/pi @mariozechner/pi-coding-agent@0.73.1
    python tests/data/pi/make_pi_session.py /tmp/pi

File 1 (`pi-0.73.1-edit-session.jsonl`): two runs of `pi -p` in a scratch workspace: the first reads and
edits a file (tool calls, tool results, thinking with a signature), the second continues the session (`-c`).
File 2 (`pi-0.73.1-compacted-session.jsonl`): `pi --mode rpc` with `compaction.keepRecentTokens` set low
in pi's settings.json: two prompts that read files, then the RPC `compact` command (pi asks the model
for the summary), then one more prompt, so the file holds a real pi `compaction` entry.
The workspace path is rewritten to /workspace so the stored files do not depend on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.fake_llm import FakeLLMServer, Reply  # noqa: E402

HERE = Path(__file__).resolve().parent


PI_PREFIX = "/tmp/pi"


def main(pi_prefix: str) -> None:
    global PI_PREFIX
    PI_PREFIX = pi_prefix
    cli = Path(pi_prefix) / "node_modules/@mariozechner/pi-coding-agent/dist/cli.js"
    scratch = Path(tempfile.mkdtemp(prefix="pi-gen-"))
    home, workspace, sessions = scratch / "home", scratch / "workspace", scratch / "sessions"
    for path in (home / ".pi" / "agent", workspace, sessions):
        path.mkdir(parents=True)
    (workspace / "hello.py").write_text('print("hello")\n')
    with FakeLLMServer() as server:
        models = {"providers": {"fake": {
            "baseUrl": server.anthropic_base_url, "api": "anthropic-messages", "apiKey": "fake-key",
            "models": [{"id": "fake-model", "name": "Fake", "reasoning": False, "contextWindow": 200000,
                        "maxTokens": 8192, "cost": {"input": 3, "output": 15, "cacheRead": 0.3,
                                                    "cacheWrite": 3.75}}]}}}
        (home / ".pi" / "agent" / "models.json").write_text(json.dumps(models))
        server.enqueue_many([
            Reply(thinking="I should look at the file first.", text="Let me read it.",
                  tool_calls=[("toolu_01", "read", {"path": "hello.py"})]),
            Reply(tool_calls=[("toolu_02", "edit", {"path": "hello.py", "oldText": 'print("hello")',
                                                    "newText": 'print("hello, world")'})]),
            Reply(text="Done: hello.py now prints `hello, world`."),
            Reply(text="It prints hello, world."),
        ])
        env = {**os.environ, "HOME": str(home), "PI_OFFLINE": "1"}
        base = ["node", str(cli), "--provider", "fake", "--model", "fake-model", "--session-dir", str(sessions),
                "--no-extensions", "--no-skills", "--no-context-files", "-p"]
        for extra in ([], ["-c"]):
            prompt = "Make hello.py greet the world." if not extra else "What does it print now?"
            done = subprocess.run([*base, *extra, prompt], cwd=workspace, env=env, capture_output=True,
                                  text=True, timeout=120)
            print(done.stdout, done.stderr, file=sys.stderr)
            done.check_returncode()
        store(sessions, scratch, workspace, "pi-0.73.1-edit-session.jsonl")
        shutil.rmtree(sessions)
        sessions.mkdir()
        (home / ".pi" / "agent" / "settings.json").write_text(
            json.dumps({"compaction": {"enabled": False, "keepRecentTokens": 50}}))
        (workspace / "notes.md").write_text("# Notes\n" + "- a note about the project\n" * 40)
        server.enqueue_many([
            Reply(tool_calls=[("toolu_11", "read", {"path": "notes.md"})]),
            Reply(text="notes.md holds 40 project notes."),
            Reply(tool_calls=[("toolu_12", "read", {"path": "hello.py"})]),
            Reply(text="hello.py prints a greeting."),
            Reply(text="## Goal\nUnderstand the project files.\n\n## Progress\n### Done\n- [x] Read notes.md "
                       "and hello.py\n\n## Next Steps\n1. Wait for the next request."),
            Reply(text="Two files: notes.md and hello.py."),
        ])
        commands = [{"id": "1", "type": "prompt", "message": "What is in notes.md?"},
                    {"id": "2", "type": "prompt", "message": "And hello.py?"},
                    {"id": "3", "type": "compact"},
                    {"id": "4", "type": "prompt", "message": "List the files you know."}]
        rpc(base[:-1], commands, workspace, env)
        store(sessions, scratch, workspace, "pi-0.73.1-compacted-session.jsonl")
    shutil.rmtree(scratch)


def rpc(base: list[str], commands: list[dict[str, str]], workspace: Path, env: dict[str, str]) -> None:
    """Send each command once the previous one has finished (agent_end, or the compact response)."""
    process = subprocess.Popen([*base, "--mode", "rpc"], cwd=workspace, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    for command in commands:
        process.stdin.write(json.dumps(command) + "\n")
        process.stdin.flush()
        for line in process.stdout:
            event = json.loads(line)
            if event.get("type") == "response" and not event.get("success", True):
                raise RuntimeError(f"pi refused {command}: {event}")
            if event.get("type") == "agent_end" or (event.get("type") == "response"
                                                    and event.get("command") == "compact"):
                break
    process.stdin.close()
    process.wait(timeout=60)


def store(sessions: Path, scratch: Path, workspace: Path, name: str) -> None:
    files = sorted(sessions.rglob("*.jsonl"))
    assert len(files) == 1, files
    text = files[0].read_text().replace(str(workspace), "/workspace").replace(str(scratch), "/scratch")
    (HERE / name).write_text(text)
    print(f"wrote {HERE / name} ({len(text.splitlines())} lines)")
    # pi's own reconstruction of the context, which the tests compare ours against
    context = subprocess.run(["node", str(HERE / "pi_context.mjs"), PI_PREFIX, str(HERE / name)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    out = HERE / name.replace(".jsonl", ".pi-context.json")
    out.write_text(json.dumps(json.loads(context), indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pi")
