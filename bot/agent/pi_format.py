"""Interop with pi (`@mariozechner/pi-coding-agent`) session files, JSONL version 3 (and older 1-2).

pi's format is the same tree as ours with different spelling: camelCase keys (`parentId`,
`firstKeptEntryId`, `toolCallId`...), a `toolResult` role, `toolCall` content blocks, a `thinkingSignature`
field, `stopReason: "toolUse"`, usage with `cacheRead`/`cacheWrite` and the cost nested inside it. pi has no
`leaf` entries: its active tip is simply the last entry of the file.

Reading converts every entry to our spelling, keeping ids, so a pi session resumes with the same context
pi would have sent. pi-only message roles become what pi itself sends the model: `bashExecution` and
`custom` turn into user messages, the rest into entries this version keeps but ignores. Writing does the
reverse; our `leaf` entries are dropped, and when the active tip is not the last entry a pi `custom`
entry (customType "opi-leaf") is appended under it, so pi's "last entry is the tip" rule finds it.
Verified against pi 0.73.1 (see tests/data/pi/README.md).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from bot.agent.session import Session, SessionHeader, iso_now, iso_to_ms

PI_VERSION = 3

_STOP_FROM_PI = {"toolUse": "tool_use"}
_STOP_TO_PI = {"tool_use": "toolUse"}


# -- pi → opi --------------------------------------------------------------------------------------

def session_from_pi(file: Path, header: dict[str, Any], lines: list[str]) -> Session:
    session = Session(_header_from_pi(header, str(file)), file, source_format="pi")
    version = header.get("version")
    raw_entries, corrupt = _parse_lines(lines)
    if version is None or (isinstance(version, int) and version < 2):
        _assign_v1_ids(raw_entries)
    for number, raw in raw_entries:
        entry = entry_from_pi(raw)
        if entry is None:
            corrupt.append(number)
        else:
            session.add_loaded_entry(entry, number)
    if corrupt:
        session.warnings.append(f"{file}: skipped {len(corrupt)} corrupt line(s) of the pi session: "
                                + ", ".join(str(n) for n in sorted(corrupt)[:20]))
    return session


def _header_from_pi(header: dict[str, Any], where: str) -> SessionHeader:
    parent = header.get("parentSession")
    return SessionHeader(
        id=str(header["id"]), timestamp=str(header.get("timestamp") or ""), cwd=str(header.get("cwd") or ""),
        parent_session=parent if isinstance(parent, str) else None,
        metadata={"imported_from": "pi", "pi_version": header.get("version", 1), "pi_file": where},
    )


def _parse_lines(lines: list[str]) -> tuple[list[tuple[int, dict[str, Any]]], list[int]]:
    entries: list[tuple[int, dict[str, Any]]] = []
    corrupt: list[int] = []
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            corrupt.append(number)
            continue
        if isinstance(data, dict) and isinstance(data.get("type"), str) and data["type"] != "session":
            entries.append((number, data))
        else:
            corrupt.append(number)
    return entries, corrupt


def _assign_v1_ids(entries: list[tuple[int, dict[str, Any]]]) -> None:
    """pi v1 files are linear without ids: chain them in file order, as pi's own migration does."""
    previous: str | None = None
    ids: list[str] = []
    for _, entry in entries:
        entry["id"] = secrets.token_hex(4)
        entry["parentId"] = previous
        previous = entry["id"]
        ids.append(entry["id"])
    for _, entry in entries:
        index = entry.pop("firstKeptEntryIndex", None)
        # the index counted the header as entry 0
        if entry.get("type") == "compaction" and isinstance(index, int) and 1 <= index <= len(ids):
            entry["firstKeptEntryId"] = ids[index - 1]


def entry_from_pi(raw: dict[str, Any]) -> dict[str, Any] | None:
    entry_id, parent = raw.get("id"), raw.get("parentId")
    if not isinstance(entry_id, str) or (parent is not None and not isinstance(parent, str)):
        return None
    base: dict[str, Any] = {"type": raw["type"], "id": entry_id, "parent_id": parent,
                            "timestamp": raw.get("timestamp") or iso_now()}
    kind = raw["type"]
    if kind == "message":
        message = raw.get("message")
        if not isinstance(message, dict):
            return None
        converted = message_from_pi(message)
        if converted is None:  # pi-only and not sent to the model: keep the node, ignore it
            return {**base, "type": "pi_message", "message": message}
        return {**base, "message": converted}
    if kind == "compaction":
        details = _dict(raw.get("details"))
        return {**base, "summary": str(raw.get("summary", "")), "first_kept_entry_id": raw.get("firstKeptEntryId"),
                "tokens_before": raw.get("tokensBefore", 0), "tokens_after": None,
                "details": {"read_files": list(details.get("readFiles", [])),
                            "modified_files": list(details.get("modifiedFiles", []))}}
    if kind == "branch_summary":
        return {**base, "summary": str(raw.get("summary", "")), "from_id": raw.get("fromId")}
    if kind == "model_change":
        return {**base, "provider": raw.get("provider"), "model": raw.get("modelId")}
    if kind == "session_info":
        return {**base, "name": raw.get("name")}
    if kind == "custom_message":  # extension messages that pi sends to the model as user messages
        return {**base, "type": "message",
                "message": {"role": "user", "content": _content_from_pi(raw.get("content", "")),
                            "timestamp": _ms(raw.get("timestamp"))}}
    # thinking_level_change, label, custom and anything newer: kept (camelCase inside), not in context
    return {**base, **{k: v for k, v in raw.items() if k not in ("type", "id", "parentId", "timestamp")}}


def message_from_pi(message: dict[str, Any]) -> dict[str, Any] | None:
    role = message.get("role")
    timestamp = message.get("timestamp") if isinstance(message.get("timestamp"), int) else 0
    if role == "user":
        return {"role": "user", "content": _content_from_pi(message.get("content", "")), "timestamp": timestamp}
    if role == "assistant":
        usage = _dict(message.get("usage"))
        cost = _dict(usage.get("cost"))
        stop = str(message.get("stopReason", "stop"))
        return {
            "role": "assistant",
            "content": [_block_from_pi(b) for b in message.get("content", []) if isinstance(b, dict)],
            "provider": str(message.get("provider", "")), "model": str(message.get("model", "")),
            "api": str(message.get("api", "")),
            "usage": {"input": usage.get("input", 0), "output": usage.get("output", 0),
                      "cache_read": usage.get("cacheRead", 0), "cache_write": usage.get("cacheWrite", 0)},
            "cost": {"input": cost.get("input"), "output": cost.get("output"),
                     "cache_read": cost.get("cacheRead"), "cache_write": cost.get("cacheWrite"),
                     "total": cost.get("total")},
            "stop_reason": _STOP_FROM_PI.get(stop, stop),
            "error_message": message.get("errorMessage"),
            "timestamp": timestamp,
        }
    if role == "toolResult":
        result: dict[str, Any] = {
            "role": "tool_result", "tool_call_id": str(message.get("toolCallId", "")),
            "tool_name": str(message.get("toolName", "")),
            "content": _content_from_pi(message.get("content", [])),
            "is_error": bool(message.get("isError", False)), "timestamp": timestamp,
        }
        if isinstance(message.get("details"), dict):
            result["details"] = message["details"]
        return result
    if role == "bashExecution":
        if message.get("excludeFromContext"):
            return None
        return {"role": "user", "content": [{"type": "text", "text": _bash_execution_text(message)}],
                "timestamp": timestamp}
    if role == "custom":
        return {"role": "user", "content": _content_from_pi(message.get("content", "")), "timestamp": timestamp}
    if role in ("branchSummary", "compactionSummary") and isinstance(message.get("summary"), str):
        return {"role": "user", "content": [{"type": "text", "text": message["summary"]}], "timestamp": timestamp}
    return None


def _content_from_pi(content: Any) -> Any:
    if isinstance(content, str):
        return content
    blocks = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "image":
            blocks.append({"type": "image", "data": block.get("data", ""), "mime_type": block.get("mimeType", "")})
        elif block.get("type") == "text":
            blocks.append({"type": "text", "text": block.get("text", "")})
    return blocks


def _block_from_pi(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "toolCall":
        arguments = block.get("arguments")
        return {"type": "tool_call", "id": str(block.get("id", "")), "name": str(block.get("name", "")),
                "arguments": arguments if isinstance(arguments, dict) else {}}
    if kind == "thinking":
        return {"type": "thinking", "thinking": str(block.get("thinking", "")),
                "signature": block.get("thinkingSignature"), "redacted": bool(block.get("redacted", False))}
    return {"type": "text", "text": str(block.get("text", ""))}


def _bash_execution_text(message: dict[str, Any]) -> str:
    # Mirrors pi's bashExecutionToText, which is what pi sends the model for a `!command`.
    text = f"Ran `{message.get('command', '')}`\n"
    output = message.get("output")
    text += f"```\n{output}\n```" if output else "(no output)"
    code = message.get("exitCode")
    if message.get("cancelled"):
        text += "\n\n(command cancelled)"
    elif isinstance(code, int) and code != 0:
        text += f"\n\nCommand exited with code {code}"
    if message.get("truncated") and message.get("fullOutputPath"):
        text += f"\n\n[Output truncated. Full output: {message['fullOutputPath']}]"
    return text


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _ms(timestamp: Any) -> int:
    return iso_to_ms(timestamp) or 0


# -- opi → pi --------------------------------------------------------------------------------------

def export_pi_lines(session: Session) -> list[dict[str, Any]]:
    """The session as pi v3 JSON objects, header first."""
    header: dict[str, Any] = {"type": "session", "version": PI_VERSION, "id": session.header.id,
                              "timestamp": session.header.timestamp or iso_now(), "cwd": session.header.cwd}
    if session.header.parent_session:
        header["parentSession"] = session.header.parent_session
    out: list[dict[str, Any]] = [header]
    last_id: str | None = None
    for entry in session.entries:
        if entry["type"] == "leaf":
            continue
        converted = entry_to_pi(entry)
        out.append(converted)
        last_id = converted["id"]
    if session.tip is not None and session.tip != last_id:
        out.append({"type": "custom", "id": session.new_id(), "parentId": session.tip, "timestamp": iso_now(),
                    "customType": "opi-leaf", "data": {"entryId": session.tip}})
    return out


def write_pi(session: Session, out: Path) -> None:
    text = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for line in export_pi_lines(session))
    out.write_text(text, encoding="utf-8")


def entry_to_pi(entry: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"type": entry["type"], "id": entry["id"], "parentId": entry.get("parent_id"),
                            "timestamp": entry.get("timestamp") or iso_now()}
    kind = entry["type"]
    if kind == "message":
        return {**base, "message": message_to_pi(entry["message"])}
    if kind == "pi_message":
        return {**base, "type": "message", "message": entry["message"]}
    if kind == "compaction":
        details = _dict(entry.get("details"))
        return {**base, "summary": entry.get("summary", ""),
                # pi needs a string; an id that is not on the path keeps nothing, as our null does
                "firstKeptEntryId": entry.get("first_kept_entry_id") or entry["id"],
                "tokensBefore": entry.get("tokens_before") or 0,
                "details": {"readFiles": list(details.get("read_files", [])),
                            "modifiedFiles": list(details.get("modified_files", []))}}
    if kind == "branch_summary":
        return {**base, "summary": entry.get("summary", ""), "fromId": entry.get("from_id") or entry["id"]}
    if kind == "model_change":
        return {**base, "provider": entry.get("provider"), "modelId": entry.get("model")}
    if kind == "session_info":
        return {**base, "name": entry.get("name")}
    return {**base, **{k: v for k, v in entry.items() if k not in ("type", "id", "parent_id", "timestamp")}}


def message_to_pi(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    timestamp = message.get("timestamp", 0)
    if role == "user":
        return {"role": "user", "content": _content_to_pi(message.get("content", "")), "timestamp": timestamp}
    if role == "assistant":
        usage = _dict(message.get("usage"))
        cost = _dict(message.get("cost"))
        numbers = {k: int(usage.get(k) or 0) for k in ("input", "output", "cache_read", "cache_write")}
        out: dict[str, Any] = {
            "role": "assistant",
            "content": [_block_to_pi(b) for b in message.get("content", [])],
            "api": message.get("api", ""), "provider": message.get("provider", ""),
            "model": message.get("model", ""),
            "usage": {"input": numbers["input"], "output": numbers["output"],
                      "cacheRead": numbers["cache_read"], "cacheWrite": numbers["cache_write"],
                      "totalTokens": sum(numbers.values()),
                      # pi has no "unknown price": an unknown component is written as 0
                      "cost": {"input": cost.get("input") or 0, "output": cost.get("output") or 0,
                               "cacheRead": cost.get("cache_read") or 0,
                               "cacheWrite": cost.get("cache_write") or 0, "total": cost.get("total") or 0}},
            "stopReason": _STOP_TO_PI.get(message.get("stop_reason", "stop"), message.get("stop_reason", "stop")),
            "timestamp": timestamp,
        }
        if message.get("error_message"):
            out["errorMessage"] = message["error_message"]
        return out
    result: dict[str, Any] = {
        "role": "toolResult", "toolCallId": message.get("tool_call_id", ""),
        "toolName": message.get("tool_name", ""), "content": _content_to_pi(message.get("content", [])),
        "isError": bool(message.get("is_error", False)), "timestamp": timestamp,
    }
    if message.get("details") is not None:
        result["details"] = message["details"]
    return result


def _content_to_pi(content: Any) -> Any:
    if isinstance(content, str):
        return content
    blocks = []
    for block in content:
        if block.get("type") == "image":
            blocks.append({"type": "image", "data": block.get("data", ""), "mimeType": block.get("mime_type", "")})
        else:
            blocks.append({"type": "text", "text": block.get("text", "")})
    return blocks


def _block_to_pi(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "tool_call":
        return {"type": "toolCall", "id": block.get("id", ""), "name": block.get("name", ""),
                "arguments": block.get("arguments") or {}}
    if kind == "thinking":
        out: dict[str, Any] = {"type": "thinking", "thinking": block.get("thinking", "")}
        if block.get("signature"):
            out["thinkingSignature"] = block["signature"]
        if block.get("redacted"):
            out["redacted"] = True
        return out
    return {"type": "text", "text": block.get("text", "")}
