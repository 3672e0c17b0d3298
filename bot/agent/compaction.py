"""Compaction: keep every request to the model under a token bound by summarising older messages.

When the context outgrows `threshold_tokens` (default: the model's context window minus a 16k reserve),
the older part of the conversation is replaced by a structured summary written by the model itself, and
the most recent ~`keep_recent_tokens` are kept verbatim. How the bound is kept, step by step:

- Size: measured the way the provider counts it. The last fresh assistant message's reported usage
  (input + cache read + cache write: the whole request that produced it) plus that message and
  everything appended after it, estimated from their wire form (texts JSON-escaped, tool arguments as
  JSON, a little framing per block) at 4 characters a token. Before any answer (or just after a
  compaction) the whole request is estimated that way: system prompt, tool schemas and every message.
  The session file's form (usage, cost, ids, timestamps) is never what is measured: it over-counts
  tool turns about 2.5 times and made compaction fire far too early.
- Cut: walk back from the newest message while the kept tail fits its budget; the tail may start only at
  a user or assistant message, never at a tool result, so a tool call is never separated from its result.
  A single turn too big to keep is split, its prefix summarised with the rest; if even the last message
  does not fit, nothing is kept and everything is summarised. The latest assistant message and the tool
  results the model has not read yet are kept whenever they fit the bound, even past
  `keep_recent_tokens`: output summarised before the model saw it would only make it ask again.
- Budget: summary (capped at `summary_max_tokens`) + file lists + kept tail + system prompt and tools fit
  in the threshold with room to spare, so the request after a compaction is always under the bound.
- The summary request itself respects the bound: the conversation to summarise is serialised to text
  (tool results cut to 2,000 characters) and fed in chunks that fit, each chunk updating the summary.
- A later compaction updates the previous summary rather than summarising it again; the lists of files
  read and modified accumulate across compactions. If the model call fails, a deterministic summary
  (first goal, files touched, last assistant text) is used, so compaction never blocks the run.
- The compaction entry, with the summary call's usage and cost, is written to the session before the
  in-memory context changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.agent import events as ev
from bot.agent.config import CompactionSettings
from bot.agent.loop import CompactionReason, CompactionRequest, Conversation
from bot.agent.session import ContextItem, summary_message
from bot.llm.base import Model, ModelRequest, ToolSpec
from bot.llm.errors import ModelError
from bot.llm.messages import (
    AssistantMessage,
    Cost,
    ImageContent,
    Message,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from bot.llm.retry import RetryPolicy, complete

if TYPE_CHECKING:
    import threading

Reason = CompactionReason

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1_200  # what providers roughly charge for one image, whatever its base64 size
TOOL_RESULT_MAX_CHARS = 2_000  # of one tool result, in the text given to the summariser
ARGUMENT_MAX_CHARS = 500  # of one tool call argument value (a `write`'s content can be huge)
READ_TOOLS = frozenset({"read"})
MODIFY_TOOLS = frozenset({"write", "edit"})

SUMMARY_SYSTEM_PROMPT = (
    "You are a context summarization assistant. You read a conversation between a user and an AI coding "
    "assistant and write a structured summary that another instance of the assistant will use to continue "
    "the work.\n\nDo NOT continue the conversation. Do NOT answer questions asked in it. Output ONLY the "
    "summary, in the exact format requested."
)

_FORMAT = """## Goal
[What the user is trying to accomplish; several items if the session covers several tasks.]

## Constraints & Preferences
- [Constraints, preferences and requirements the user stated, or "(none)"]

## Progress
### Done
- [x] [Completed tasks and changes]

### In Progress
- [ ] [Current work]

### Blocked
- [What prevents progress, or "(none)"]

## Key Decisions
- **[Decision]**: [Brief rationale]

## Next Steps
1. [Ordered list of what should happen next]

## Critical Context
- [Data, error messages, references needed to continue, or "(none)"]

Keep each section concise. Preserve exact file paths, function names, commands and error messages."""

SUMMARIZE_PROMPT = ("The conversation above (in <conversation> tags) is to be summarized. Write a structured "
                    "context checkpoint summary in this EXACT format:\n\n" + _FORMAT)

UPDATE_PROMPT = (
    "The conversation above (in <conversation> tags) is NEW and continues from the work summarized in "
    "<previous-summary>. Update that summary with the new messages:\n"
    "- PRESERVE everything still relevant from the previous summary (goals, constraints, decisions)\n"
    "- ADD new progress, decisions and context\n"
    "- MOVE items from In Progress to Done when they were completed\n"
    "- UPDATE Next Steps to the current state\n\n"
    "Answer with the complete updated summary in this EXACT format:\n\n" + _FORMAT
)


# One definition: the config file's `[compaction]` table is what the compactor runs with.
CompactionConfig = CompactionSettings


@dataclass
class CompactionResult:
    entry: dict[str, Any]
    reason: Reason
    tokens_before: int
    tokens_after: int
    fallback: bool
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost.zero)
    error: str | None = None
    summarized_messages: int = 0
    kept_messages: int = 0


Emit = Callable[[ev.Event], None]


# -- sizes -----------------------------------------------------------------------------------------

BLOCK_FRAMING_CHARS = 64  # what a provider wraps around one content block: type, ids, role, braces


def estimate_tokens(message: Message) -> int:
    """The message's size on the wire / 4: its texts JSON-escaped, tool arguments as JSON, and some
    framing per block. Not its session form, whose usage, cost, ids and timestamps are never sent."""
    chars = BLOCK_FRAMING_CHARS
    if isinstance(message, AssistantMessage):
        for block in message.content:
            if isinstance(block, TextContent):
                chars += _json_chars(block.text) + BLOCK_FRAMING_CHARS
            elif isinstance(block, ThinkingContent):
                chars += _json_chars(block.thinking) + len(block.signature or "") + BLOCK_FRAMING_CHARS
            else:
                chars += (len(block.id) + len(block.name) + BLOCK_FRAMING_CHARS
                          + len(json.dumps(block.arguments, ensure_ascii=False)))
        return math.ceil(chars / CHARS_PER_TOKEN)
    if isinstance(message, ToolResultMessage):
        chars += len(message.tool_call_id) + len(message.tool_name)
    content = message.content
    for part in [content] if isinstance(content, str) else content:
        if isinstance(part, str):
            chars += _json_chars(part)
        elif isinstance(part, ImageContent):
            chars += IMAGE_TOKENS * CHARS_PER_TOKEN
        else:
            chars += _json_chars(part.text) + BLOCK_FRAMING_CHARS
    return math.ceil(chars / CHARS_PER_TOKEN)


def _json_chars(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False))


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def request_overhead(system_prompt: str, tools: Sequence[ToolSpec]) -> int:
    """Tokens of a request that are not messages: the system prompt and the tool schemas."""
    specs = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]
    return text_tokens(system_prompt) + text_tokens(json.dumps(specs)) if specs else text_tokens(system_prompt)


class TokenCounter:
    """Per-message estimates, computed once per entry (a message never changes once stored)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], int] = {}

    def __call__(self, item: ContextItem) -> int:
        key = (item.entry_id, item.kind)
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = estimate_tokens(item.message)
        return value


def context_size(items: Sequence[ContextItem], overhead: int, count: Callable[[ContextItem], int]) -> int:
    """Tokens the next request will carry (see the module docstring)."""
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if item.fresh and isinstance(item.message, AssistantMessage) and item.message.usage.prompt_tokens:
            # The request that produced this answer, as the provider counted it, then the answer and
            # what followed it as they will be sent.
            return item.message.usage.prompt_tokens + sum(count(later) for later in items[index:])
    return overhead + sum(count(item) for item in items)


# -- cut point -------------------------------------------------------------------------------------

def choose_cut(items: Sequence[ContextItem], budget: int, count: Callable[[ContextItem], int]) -> int:
    """Index of the first kept item: the longest tail within `budget` that starts at a user or assistant
    message. `len(items)` keeps nothing."""
    cut = len(items)
    kept = 0
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if item.kind == "compaction_summary":
            break  # the old summary is replaced, never kept
        kept += count(item)
        if kept > budget:
            break
        if not isinstance(item.message, ToolResultMessage):
            cut = index
    return cut


def _keep_unseen(items: Sequence[ContextItem], cut: int, room: int, count: Callable[[ContextItem], int]) -> int:
    """Move the cut back to the last assistant message when its tool results (which the model has not
    read yet) fit in `room`: summarising output before the model ever saw it would make it ask again.
    Something must remain to summarise, or compaction could not free anything."""
    last = next((i for i in range(len(items) - 1, -1, -1) if isinstance(items[i].message, AssistantMessage)
                 and items[i].kind == "message"), None)
    if last is None or last >= cut:
        return cut
    if not any(item.kind != "compaction_summary" for item in items[:last]):
        return cut
    return last if sum(count(item) for item in items[last:]) <= room else cut


# -- file lists ------------------------------------------------------------------------------------

def file_operations(messages: Iterable[Message], read: set[str], modified: set[str]) -> None:
    for message in messages:
        if not isinstance(message, AssistantMessage):
            continue
        for call in message.tool_calls:
            path = call.arguments.get("path")
            if not isinstance(path, str) or not path:
                continue
            if call.name in READ_TOOLS:
                read.add(path)
            elif call.name in MODIFY_TOOLS:
                modified.add(path)


def format_file_lists(read_files: Sequence[str], modified_files: Sequence[str],
                      max_chars: int | None = None) -> str:
    """The lists as appended to the summary. Past `max_chars` (thousands of files) the text keeps what
    fits, modified files first, and says how many more there are; the compaction entry's `details`
    always has the complete lists."""
    budget = [max_chars if max_chars is not None else 1 << 62]

    def section(tag: str, paths: Sequence[str]) -> str | None:
        if not paths:
            return None
        shown: list[str] = []
        for path in paths:
            if budget[0] - len(path) - 1 < 80:
                break
            shown.append(path)
            budget[0] -= len(path) + 1
        if len(shown) < len(paths):
            shown.append(f"... and {len(paths) - len(shown)} more (listed in the session file)")
        return f"<{tag}>\n" + "\n".join(shown) + f"\n</{tag}>"

    modified = section("modified-files", modified_files)
    read = section("read-files", read_files)
    sections = [s for s in (read, modified) if s]
    return "\n\n" + "\n\n".join(sections) if sections else ""


def strip_file_lists(summary: str) -> str:
    """The summary without the file lists we append ourselves (they are recomputed each time)."""
    for tag in ("<read-files>", "<modified-files>"):
        at = summary.find("\n\n" + tag)
        if at != -1:
            summary = summary[:at]
    return summary


# -- the summary -----------------------------------------------------------------------------------

def serialize_for_summary(messages: Iterable[Message]) -> list[str]:
    """One text block per message, so the model reads a transcript instead of continuing a chat."""
    parts: list[str] = []
    for message in messages:
        if isinstance(message, UserMessage):
            if message.text:
                parts.append(f"[User]: {message.text}")
        elif isinstance(message, AssistantMessage):
            thinking = [b.thinking for b in message.content if isinstance(b, ThinkingContent) and b.thinking]
            if thinking:
                parts.append("[Assistant thinking]: " + _clip("\n".join(thinking), TOOL_RESULT_MAX_CHARS))
            if message.text:
                parts.append(f"[Assistant]: {message.text}")
            if message.tool_calls:
                parts.append("[Assistant tool calls]: " + "; ".join(_call_text(c) for c in message.tool_calls))
        elif message.text:
            label = "Tool error" if message.is_error else "Tool result"
            parts.append(f"[{label} ({message.tool_name})]: {_clip(message.text, TOOL_RESULT_MAX_CHARS)}")
    return parts


def _call_text(call: ToolCall) -> str:
    args = ", ".join(f"{k}={_clip(json.dumps(v, ensure_ascii=False), ARGUMENT_MAX_CHARS)}"
                     for k, v in call.arguments.items())
    return f"{call.name}({args})"


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[... {len(text) - limit} more characters truncated]"


def chunk_parts(parts: Sequence[str], budget_tokens: int) -> list[str]:
    """Group transcript parts into texts of at most `budget_tokens` (an oversized part is clipped)."""
    limit = max(200, budget_tokens * CHARS_PER_TOKEN)
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for part in parts:
        part = _clip(part, limit - 100)
        if current and size + len(part) + 2 > limit:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(part)
        size += len(part) + 2
    if current:
        chunks.append("\n\n".join(current))
    return chunks


SPLIT_TURN_NOTE = ("\n\nThe conversation above stops in the middle of the assistant's current turn: the rest "
                   "of that turn is kept verbatim after your summary. Say in In Progress what that turn was doing.")


def _summary_prompt(transcript: str, previous: str | None, instructions: str | None,
                    split_turn: bool = False) -> str:
    text = f"<conversation>\n{transcript}\n</conversation>\n\n"
    if previous:
        text += f"<previous-summary>\n{previous}\n</previous-summary>\n\n"
    text += UPDATE_PROMPT if previous else SUMMARIZE_PROMPT
    if split_turn:
        text += SPLIT_TURN_NOTE
    if instructions:
        text += f"\n\nAdditional focus requested by the user: {instructions}"
    return text


class SummaryFailed(ModelError):
    """A summary call failed; carries what the calls before it (other chunks) cost."""

    def __init__(self, message: str, usage: Usage, cost: Cost) -> None:
        super().__init__(message)
        self.usage = usage
        self.cost = cost


@dataclass
class _Summary:
    text: str
    usage: Usage
    cost: Cost


def summarize(model: Model, messages: Sequence[Message], *, previous: str | None, threshold: int,
              max_tokens: int, instructions: str | None = None, retry: RetryPolicy | None = None,
              cancel: threading.Event | None = None, split_turn: bool = False) -> _Summary:
    """Ask the model for the summary, chunk by chunk so each request fits in `threshold`. Raises
    SummaryFailed when a call fails or comes back empty."""
    usage, cost = Usage(), Cost.zero()
    summary = previous
    fixed = (text_tokens(SUMMARY_SYSTEM_PROMPT) + text_tokens(UPDATE_PROMPT) + text_tokens(SPLIT_TURN_NOTE)
             + text_tokens(instructions or "") + 200)
    parts = serialize_for_summary(messages) or ["(no messages)"]
    chunks = _chunks_within(parts, threshold, fixed, max_tokens, summary)
    for number, transcript in enumerate(chunks, start=1):
        prompt = _summary_prompt(transcript, summary, instructions, split_turn and number == len(chunks))
        request = ModelRequest(system=SUMMARY_SYSTEM_PROMPT, messages=[UserMessage(content=prompt)],
                               tools=[], max_output_tokens=max_tokens)
        if cancel is not None:
            request.cancel = cancel
        try:
            reply = complete(model, request, retry or RetryPolicy())
        except ModelError as exc:
            raise SummaryFailed(str(exc), usage, cost) from exc
        usage, cost = usage + reply.usage, cost + reply.cost
        if reply.stop_reason == "error" or not reply.text.strip():
            raise SummaryFailed(reply.error_message or "the summary came back empty", usage, cost)
        summary = _clip(reply.text.strip(), max_tokens * CHARS_PER_TOKEN)
    assert summary is not None
    return _Summary(summary, usage, cost)


def _chunks_within(parts: list[str], threshold: int, fixed: int, max_tokens: int,
                   previous: str | None) -> list[str]:
    # Every chunk carries the running summary (the previous one, then at most max_tokens) and the prompt
    # around it; 15% is left for the JSON escaping of the transcript on the wire.
    carried = max(max_tokens, text_tokens(previous or ""))
    return chunk_parts(parts, max(100, int((threshold - fixed - carried) * 0.85)))


def fallback_summary(messages: Sequence[Message], previous: str | None, error: str, max_tokens: int) -> str:
    """A summary without the model: the first goal, the last assistant text, the previous summary."""
    goal = next((m.text for m in messages if isinstance(m, UserMessage) and m.text), None)
    last = next((m.text for m in reversed(messages) if isinstance(m, AssistantMessage) and m.text), None)
    budget = max_tokens * CHARS_PER_TOKEN
    lines = [
        "## Goal",
        _clip(goal, budget // 4) if goal else "(see the previous summary below)" if previous else "(unknown)",
        "", "## Constraints & Preferences", "- (not recorded: the automatic summary was unavailable)",
        "", "## Progress", "### Done",
        f"- [x] {len(messages)} earlier messages were compacted without a model summary ({_clip(error, 300)})",
        "", "### In Progress", "- [ ] (unknown: re-check the files listed below)",
        "", "### Blocked", "- (none recorded)",
        "", "## Key Decisions", "- (not recorded)",
        "", "## Next Steps", "1. Re-read the modified files to recover the current state, then continue.",
        "", "## Critical Context",
        f"- Last assistant message before compaction: {_clip(last, budget // 4) if last else '(none)'}",
    ]
    if previous:
        lines += ["", "## Previous summary", _clip(previous, budget // 3)]
    return _clip("\n".join(lines), budget)


# -- compacting a conversation ---------------------------------------------------------------------

def compact(conversation: Conversation, model: Model, *, config: CompactionConfig, reason: Reason,
            overhead: int = 0, instructions: str | None = None, retry: RetryPolicy | None = None,
            cancel: threading.Event | None = None, emit: Emit | None = None,
            counter: TokenCounter | None = None) -> CompactionResult | None:
    """Summarise the older part of the conversation and persist a compaction entry. Returns None when
    there is nothing to summarise (the whole context already fits in the kept tail)."""
    count = counter or TokenCounter()
    items = conversation.items()
    threshold = config.threshold(model.info.context_window)
    summary_tokens = config.summary_budget(threshold)
    previous_entry = conversation.latest_compaction()
    previous = strip_file_lists(str(previous_entry["summary"])) if previous_entry else None
    read, modified = _previous_files(previous_entry)

    lists_chars = summary_tokens * CHARS_PER_TOKEN
    all_read, all_modified = set(read), set(modified)
    file_operations((i.message for i in items), all_read, all_modified)
    lists_tokens = text_tokens(format_file_lists(sorted(all_read), sorted(all_modified), lists_chars))
    room = threshold - overhead - summary_tokens - lists_tokens - text_tokens(COMPACTION_FRAME)
    keep_budget = max(0, min(config.keep_recent_tokens, room // 2))
    if reason == "overflow":
        keep_budget //= 2  # the estimate was wrong once already: keep less
    cut = _keep_unseen(items, choose_cut(items, keep_budget, count), room if reason != "overflow" else room // 2,
                       count)
    to_summarize = [i.message for i in items[:cut] if i.kind != "compaction_summary"]
    if not to_summarize:
        return None

    tokens_before = context_size(items, overhead, count)
    if emit:
        emit(ev.CompactionStart(reason=reason, tokens_before=tokens_before))
    file_operations(to_summarize, read, modified)
    read_files, modified_files = sorted(read - modified), sorted(modified)
    error: str | None = None
    try:
        split_turn = cut < len(items) and isinstance(items[cut].message, AssistantMessage)
        result = summarize(model, to_summarize, previous=previous, threshold=threshold,
                           max_tokens=summary_tokens, instructions=instructions, retry=retry, cancel=cancel,
                           split_turn=split_turn)
        body, usage, cost = result.text, result.usage, result.cost
    except SummaryFailed as exc:
        error = str(exc)
        body, usage, cost = fallback_summary(to_summarize, previous, error, summary_tokens), exc.usage, exc.cost
    summary = body + format_file_lists(read_files, modified_files, lists_chars)

    kept = items[cut:]
    tokens_after = (overhead + estimate_tokens(summary_message(summary, None))
                    + sum(count(i) for i in kept))
    entry = conversation.apply_compaction(
        summary=summary, first_kept_entry_id=kept[0].entry_id if kept else None,
        tokens_before=tokens_before, tokens_after=tokens_after, read_files=read_files,
        modified_files=modified_files, reason=reason, fallback=error is not None, error=error,
        model=model.info.spec, usage=usage.model_dump(mode="json"), cost=cost.model_dump(mode="json"),
    )
    if emit:
        emit(ev.CompactionEnd(reason=reason, tokens_before=tokens_before, tokens_after=tokens_after,
                              summary_fallback=error is not None))
        if tokens_after > threshold:
            emit(ev.Warning(message=f"the context is still {tokens_after} tokens after compaction, over the "
                                    f"{threshold}-token bound: the system prompt and tool schemas alone take "
                                    f"{overhead}; raise compaction.threshold_tokens"))
    return CompactionResult(entry, reason, tokens_before, tokens_after, error is not None, usage, cost, error,
                            len(to_summarize), len(kept))


COMPACTION_FRAME = summary_message("", None).text  # the fixed text around every summary


def _previous_files(entry: dict[str, Any] | None) -> tuple[set[str], set[str]]:
    details = entry.get("details") if entry else None
    if not isinstance(details, dict):
        return set(), set()
    read = {p for p in details.get("read_files", []) if isinstance(p, str)}
    modified = {p for p in details.get("modified_files", []) if isinstance(p, str)}
    return read, modified


# -- the agent's compactor -------------------------------------------------------------------------

class Compactor:
    """Plugs compaction into the agent loop (`bot.agent.loop.Compactor`): asked before every model
    request, called on a context-overflow error and on demand (`/compact`). It gets a
    `CompactionRequest` and returns a `CompactionResult`; the loop counts compactions and spend."""

    def __init__(self, config: CompactionConfig | None = None) -> None:
        self.config = config or CompactionConfig()
        self.counter = TokenCounter()

    def threshold(self, model: Model) -> int:
        return self.config.threshold(model.info.context_window)

    def context_tokens(self, request: CompactionRequest) -> tuple[int, int]:
        """(tokens the next request carries, the bound): for footers."""
        size = context_size(request.conversation.items(), _overhead(request), self.counter)
        return size, self.threshold(request.model)

    def needs_compaction(self, request: CompactionRequest) -> bool:
        if not self.config.enabled:
            return False
        size, bound = self.context_tokens(request)
        return size > bound

    def compact(self, request: CompactionRequest) -> CompactionResult | None:
        """Compact now; None when there is nothing to summarise (the context fits in the kept tail)."""
        return compact(request.conversation, request.model, config=self.config, reason=request.reason,
                       overhead=_overhead(request), instructions=request.instructions, retry=request.retry,
                       cancel=request.cancel, emit=request.emit, counter=self.counter)


def _overhead(request: CompactionRequest) -> int:
    return request_overhead(request.system_prompt, request.tools)
