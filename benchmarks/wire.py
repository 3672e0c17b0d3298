"""Benchmark: what opi puts on the wire. Runs `opi -p` against the scripted model server and prints

- the first request's size with all seven tools and the default system prompt (goal: <= 6,000 bytes),
  split into system prompt, tool schemas (each tool's share) and the rest, for both dialects;
- whether every request is a strict extension of the one before (same system prompt and tools, earlier
  messages unchanged apart from Anthropic's moving cache breakpoint), which is what prompt caching needs;
- the request size at which compaction fires for `threshold_tokens = 8000`, with short tool turns and
  with 8 KB tool outputs. The scripted server reports a request's input tokens as its bytes / 4, so the
  threshold corresponds to about 32,000 request bytes; compaction should fire within 10% below that.

    python benchmarks/wire.py [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import FakeLLMServer, child_env, opi_command, run_child

from tests.fake_llm import RecordedRequest, Reply

TARGET_FIRST_REQUEST_BYTES = 6_000
THRESHOLD_TOKENS = 8_000
SUMMARY_MARKER = "context summarization assistant"  # in the compaction summary request's system prompt


def compact_json(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_cache_control(v) for v in value]
    return value


def extension_problem(previous: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why `current` is not a strict extension of `previous`, or None. Anthropic's cache breakpoint moves
    to the newest block on every request, so cache_control is not part of the comparison."""
    before, after = strip_cache_control(previous), strip_cache_control(current)
    for key in sorted(set(before) | set(after)):
        if key != "messages" and before.get(key) != after.get(key):
            return f"{key!r} changed"
    old, new = before["messages"], after["messages"]
    if len(new) <= len(old):
        return f"{len(new)} messages after {len(old)}"
    for index, (a, b) in enumerate(zip(old, new, strict=False)):
        if a != b:
            if index == len(old) - 1 and a.get("role") == b.get("role") == "user" \
                    and b.get("content", [])[:len(a.get("content", []))] == a.get("content"):
                continue  # Anthropic merges the next tool results into the last user message
            return f"message {index} changed"
    return None


def opi_run(server: FakeLLMServer, root: Path, model: str, prompt: str, *, config: str = "",
            max_turns: int = 60) -> None:
    workspace = root / "work"
    env = child_env(server, root / "home")
    env["OPI_SESSIONS_DIR"] = str(root / "sessions")
    if config:
        (root / "home" / ".config" / "opi").mkdir(parents=True, exist_ok=True)
        (root / "home" / ".config" / "opi" / "config.toml").write_text(config, encoding="utf-8")
    result = run_child([*opi_command(), "-p", prompt, "--model", model, "--allow-mutating",
                        "--max-turns", str(max_turns)], cwd=workspace, env=env, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"opi failed with exit code {result.returncode}:\n{result.stderr[-2000:]}")


def workspace_with_notes(root: Path, note_bytes: int) -> None:
    workspace = root / "work"
    workspace.mkdir()
    line = "the quick brown fox jumps over the lazy dog, again and again\n"
    for index in range(5):
        (workspace / f"notes_{index}.txt").write_text(line * max(1, note_bytes // len(line)), encoding="utf-8")


def first_request(dialect: str) -> dict[str, Any]:
    """Three turns (read, read, answer): the first request's make-up, and whether each extends the last."""
    model = "anthropic:claude-sonnet-4-5" if dialect == "anthropic" else "openai:gpt-4.1"
    with tempfile.TemporaryDirectory(prefix="opi-bench-wire-") as tmp, FakeLLMServer() as server:
        root = Path(tmp)
        workspace_with_notes(root, 200)
        server.enqueue_many([Reply(tool_calls=[("call_1", "read", {"path": "notes_1.txt"})]),
                             Reply(tool_calls=[("call_2", "read", {"path": "notes_2.txt"})]),
                             Reply(text="Both notes are about a fox.")])
        opi_run(server, root, model, "What do notes_1.txt and notes_2.txt say?")
        server.verify()
        requests = list(server.requests)
    body = requests[0].body
    tools = body.get("tools", [])
    system = body.get("system") if dialect == "anthropic" else body["messages"][0]
    problems = [extension_problem(a.body, b.body) for a, b in itertools.pairwise(requests)]
    return {
        "dialect": dialect,
        "first_request_bytes": len(requests[0].raw),
        "system_prompt_bytes": compact_json(system),
        "tools_bytes": compact_json(tools),
        "tool_bytes": {tool.get("name") or tool["function"]["name"]: compact_json(tool) for tool in tools},
        "requests": len(requests),
        "strict_extension": all(problem is None for problem in problems),
        "extension_problems": [p for p in problems if p],
    }


def compaction_trigger(note_bytes: int, turns: int) -> dict[str, Any]:
    """Read `note_bytes`-byte files until compaction fires; the request before the summary call is the
    largest the agent sent under the threshold."""
    fired: list[int] = []

    def respond(request: RecordedRequest) -> Reply:
        if SUMMARY_MARKER in request.raw.decode(errors="replace"):
            fired.append(len(server.requests) - 1)  # the index of this summary request
            return Reply(text="## Goal\nRead the notes.\n\n## Progress\n### Done\n- [x] Read some notes")
        calls = len([m for m in request.body.get("messages", []) if m.get("role") == "assistant"])
        if fired or calls >= turns:
            return Reply(text="Read the notes.")
        return Reply(tool_calls=[(f"call_{calls}", "read", {"path": f"notes_{calls % 5}.txt"})])

    with tempfile.TemporaryDirectory(prefix="opi-bench-wire-") as tmp, FakeLLMServer() as server:
        root = Path(tmp)
        workspace_with_notes(root, note_bytes)
        server.responder = respond
        opi_run(server, root, "anthropic:claude-sonnet-4-5", "Read the notes one by one.",
                config=f"[compaction]\nthreshold_tokens = {THRESHOLD_TOKENS}\n", max_turns=turns + 5)
        sizes = [len(request.raw) for request in server.requests]
    figures: dict[str, Any] = {"tool_output_bytes": note_bytes, "threshold_tokens": THRESHOLD_TOKENS,
                               "threshold_bytes": THRESHOLD_TOKENS * 4, "compactions": len(fired)}
    if fired:
        before = sizes[fired[0] - 1]
        figures.update({"request_bytes_before_compaction": before,
                        "fraction_of_threshold": round(before / (THRESHOLD_TOKENS * 4), 3),
                        "largest_request_bytes": max(size for i, size in enumerate(sizes) if i not in fired)})
    else:
        figures["largest_request_bytes"] = max(sizes)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    firsts = [first_request("anthropic"), first_request("openai")]
    triggers = [compaction_trigger(60, 400), compaction_trigger(8_192, 40)]
    ok = all(f["first_request_bytes"] <= TARGET_FIRST_REQUEST_BYTES and f["strict_extension"] for f in firsts)
    if args.json:
        print(json.dumps({"first_requests": firsts, "compaction": triggers, "targets_met": ok}))
        return 0 if ok else 1
    for f in firsts:
        print(f"first request ({f['dialect']}): {f['first_request_bytes']:,} B (goal <= "
              f"{TARGET_FIRST_REQUEST_BYTES:,}); system prompt {f['system_prompt_bytes']:,} B, "
              f"tools {f['tools_bytes']:,} B")
        print("  " + ", ".join(f"{name} {size:,}" for name, size in f["tool_bytes"].items()))
        print(f"  {f['requests']} requests, each a strict extension of the one before: {f['strict_extension']}"
              + (f" ({'; '.join(f['extension_problems'])})" if f["extension_problems"] else ""))
    for t in triggers:
        where = (f"fired at a {t['request_bytes_before_compaction']:,} B request "
                 f"({t['fraction_of_threshold']:.0%} of ~{t['threshold_bytes']:,} B)" if t["compactions"]
                 else "did not fire")
        print(f"compaction, threshold {t['threshold_tokens']:,} tokens, {t['tool_output_bytes']:,}-byte tool "
              f"outputs: {where}; largest request {t['largest_request_bytes']:,} B")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
