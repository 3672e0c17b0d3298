"""Benchmark: the request size at which compaction fires (issue 13.1), against the scripted server.

An agent reads a file once per turn (the real `read` tool, the real Anthropic provider, the scripted
server on loopback, which counts input tokens as request-body bytes / 4) under `threshold_tokens = 8000`,
once with short tool outputs and once with 8 KB ones. For every compaction it prints the size of the
request that compaction replaced (measured on the wire, as the server would have counted it) and the
largest request actually sent. Goal: compaction fires within 10% below the threshold, and no request is
ever above it.

    python benchmarks/compaction_trigger.py [--threshold 8000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.agent import events as ev  # noqa: E402
from bot.agent.compaction import CompactionConfig, Compactor  # noqa: E402
from bot.agent.loop import Agent, Limits  # noqa: E402
from bot.agent.session import InMemoryConversation  # noqa: E402
from bot.llm.anthropic import AnthropicModel  # noqa: E402
from bot.llm.base import ModelInfo, ModelRequest  # noqa: E402
from bot.llm.retry import RetryPolicy  # noqa: E402
from bot.tools.base import ToolContext  # noqa: E402
from bot.tools.read import ReadTool  # noqa: E402
from tests.fake_llm import FakeLLMServer, RecordedRequest, Reply  # noqa: E402

CASES = {"short tool turns": (300, 110), "8 KB tool outputs": (8_192, 24)}


def wire_tokens(model: AnthropicModel, request: ModelRequest) -> float:
    body = json.dumps(model.build_body(request), separators=(",", ":"), ensure_ascii=False)
    return len(body.encode("utf-8")) / 4


def run_case(output_bytes: int, turns: int, threshold: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer() as server:
        workspace = Path(tmp)
        line = "0123456789 abcdefghij \"quoted\" and\ttabbed\n"
        (workspace / "data.txt").write_text(line * (output_bytes // len(line)))
        state = {"n": 0}

        def respond(request: RecordedRequest) -> Reply:
            if not request.body.get("tools"):
                return Reply(text="## Goal\nRead data.txt again.\n\n## Next Steps\n1. Keep reading.")
            state["n"] += 1
            if state["n"] > turns:
                return Reply(text="Done.")
            return Reply(text=f"Turn {state['n']}.", tool_calls=[(f"t{state['n']}", "read", {"path": "data.txt"})])

        server.responder = respond
        info = ModelInfo(provider="anthropic", id="claude-bench", api="anthropic", max_output_tokens=1_024)
        model = AnthropicModel(info, api_key="bench", base_url=server.anthropic_base_url)
        agent = Agent(model, [ReadTool()], ToolContext(workspace=workspace), "You are a careful coding agent.",
                      limits=Limits(max_turns=turns + 1), retry=RetryPolicy(max_retries=0),
                      conversation=InMemoryConversation(),
                      compactor=Compactor(CompactionConfig(threshold_tokens=threshold, keep_recent_tokens=2_000)))
        fired: list[float] = []
        sent_before: list[float] = []

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.CompactionStart):
                request = ModelRequest(system=agent.system_prompt, messages=agent.conversation.context(),
                                       tools=agent.tool_specs(), max_output_tokens=info.max_output_tokens)
                fired.append(wire_tokens(model, request))
                sent_before.append(len(server.requests[-1].raw) / 4)

        agent.subscribe(on_event)
        agent.run("Read data.txt once per turn until told otherwise.")
        largest = max(len(r.raw) / 4 for r in server.requests)
        return {"compactions": len(fired), "fired_at_tokens": fired, "last_sent_before_tokens": sent_before,
                "largest_request_tokens": largest,
                "ok": bool(fired) and largest <= threshold and min(fired) > 0.9 * threshold}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=int, default=8_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {name: run_case(size, turns, args.threshold) for name, (size, turns) in CASES.items()}
    if args.json:
        print(json.dumps(results))
    else:
        for name, result in results.items():
            fired = ", ".join(f"{t:.0f}" for t in result["fired_at_tokens"])
            print(f"{name}: {result['compactions']} compactions; fired at {fired} tokens "
                  f"(threshold {args.threshold}); largest request sent {result['largest_request_tokens']:.0f}"
                  f" tokens; {'ok' if result['ok'] else 'MISSED'}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
