"""GitHub event payloads and routing: which events start a run, and what the run is asked to do.

The models name only the fields the action uses and ignore the rest, so a payload from a newer GitHub
still parses. `route()` turns (event name, payload) into either a `Task` or an `Ignored` with the reason
logged; it never talks to GitHub (the PR head of an `issue_comment` is looked up later).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

# Every comment the bot writes carries this, so a run never reacts to the bot's own words.
BOT_MARKER = "<!-- opi-bot -->"

SUPPORTED_EVENTS = ("issue_comment", "pull_request_review_comment", "schedule", "workflow_dispatch")


class EventError(Exception):
    """The event file is missing, unreadable or not a payload of the named event."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class User(_Payload):
    login: str
    id: int
    type: str = "User"

    @property
    def is_bot(self) -> bool:
        return self.type == "Bot" or self.login.endswith("[bot]")

    @property
    def noreply_email(self) -> str:
        return f"{self.id}+{self.login}@users.noreply.github.com"


class Repository(_Payload):
    full_name: str
    default_branch: str = "main"
    html_url: str = ""
    fork: bool = False


class IssuePullRequestLink(_Payload):
    url: str | None = None
    html_url: str | None = None


class Issue(_Payload):
    number: int
    title: str
    body: str | None = None
    html_url: str = ""
    user: User | None = None
    # Present exactly when the issue is a pull request.
    pull_request: IssuePullRequestLink | None = None


class IssueComment(_Payload):
    id: int
    body: str
    user: User
    html_url: str = ""


class ReviewComment(_Payload):
    id: int
    body: str
    user: User
    path: str
    diff_hunk: str
    line: int | None = None
    original_line: int | None = None
    start_line: int | None = None
    side: str | None = None
    commit_id: str | None = None
    html_url: str = ""


class BranchRepo(_Payload):
    full_name: str


class Branch(_Payload):
    ref: str
    sha: str
    # null when the head repository of a fork PR was deleted.
    repo: BranchRepo | None = None


class PullRequest(_Payload):
    number: int
    title: str
    body: str | None = None
    html_url: str = ""
    head: Branch
    base: Branch

    @property
    def is_fork(self) -> bool:
        head_repo = self.head.repo.full_name if self.head.repo else None
        base_repo = self.base.repo.full_name if self.base.repo else None
        return head_repo != base_repo


class IssueCommentEvent(_Payload):
    action: str
    issue: Issue
    comment: IssueComment
    repository: Repository
    sender: User


class ReviewCommentEvent(_Payload):
    action: str
    comment: ReviewComment
    pull_request: PullRequest
    repository: Repository
    sender: User


class DispatchEvent(_Payload):
    inputs: dict[str, Any] | None = None
    ref: str | None = None
    repository: Repository | None = None
    sender: User | None = None


# -- routing -----------------------------------------------------------------------------------------

TaskKind = Literal["pr_comment", "issue_comment", "review_comment", "scheduled"]


@dataclass(frozen=True)
class ReviewContext:
    path: str
    line: int | None
    start_line: int | None
    side: str | None
    diff_hunk: str


@dataclass(frozen=True)
class Task:
    """One unit of work for the agent, with everything known before any GitHub call."""

    kind: TaskKind
    event_name: str
    repo: str
    instructions: str  # what follows the trigger (may be empty)
    is_fix: bool  # the first word after the trigger is "fix"
    number: int | None = None  # issue or PR number; None for scheduled runs
    title: str = ""
    body: str = ""
    html_url: str = ""
    requester: User | None = None
    comment_id: int | None = None
    comment_url: str = ""
    comment_kind: Literal["issue", "review"] | None = None
    review: ReviewContext | None = None
    pull: PullRequest | None = None  # known from the payload for review comments only
    default_branch: str = "main"
    ref: str = ""  # a workflow_dispatch's branch (`refs/heads/` removed): the run works from there

    @property
    def on_pull_request(self) -> bool:
        return self.kind in ("pr_comment", "review_comment")


@dataclass(frozen=True)
class Ignored:
    reason: str


def load_event(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EventError(f"cannot read the event file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"the event file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventError(f"the event file {path} holds a JSON {type(data).__name__}, not an object")
    return data


def parse_trigger(body: str, trigger: str) -> str | None:
    """The instructions after the first visible trigger, or None when the comment has none.

    The comment is parsed as CommonMark (markdown-it-py), and the trigger counts only as the first word
    of a line of an ordinary top-level paragraph: never in a code block or code span, a block quote, a
    list, a heading, raw HTML, an HTML comment (closed or not) or the content of `<details>` and other
    elements that hide their content. So quoting a comment, pasting a log, or hiding text from readers
    never starts a run. "/opi" must be a whole word ("/opinion" does not count).

    The instructions are the rest of the trigger's paragraph (from the trigger line on) and the blocks
    after it, without the parts a reader cannot see (HTML comments, raw HTML, hidden elements).
    """
    if not trigger.strip() or trigger not in body:
        return None  # the common case, and no parse at all
    source = body.replace("\r\n", "\n").replace("\r", "\n")
    tokens = _commonmark().parse(source)
    visibility = _Visibility()
    for index, token in enumerate(tokens):
        if token.type == "html_block":
            visibility.feed_html(token.content)
            continue
        if token.type != "inline":
            continue
        in_paragraph = token.level == 1 and tokens[index - 1].type == "paragraph_open"
        children = token.children or []
        for position, child in enumerate(children):
            if in_paragraph and not visibility.hidden and _is_trigger(children, position, trigger):
                return _instructions(tokens, index, position, trigger, source.split("\n"), visibility)
            visibility.feed_inline(child)
    return None


# Elements whose content GitHub does not show (or shows only on a click): a trigger inside them is hidden.
_HIDING_TAGS = frozenset({"details", "template", "script", "style", "noscript", "textarea", "title", "xmp",
                          "iframe", "noembed", "noframes", "object", "select", "plaintext"})
_TAG_START = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)")
_TAG_STOP = re.compile(r"[\"'>]")
_COMMENT_OPEN, _COMMENT_CLOSE = "<!--", "-->"


def _tag_end(html: str, position: int) -> int:
    """The index after the `>` that ends the tag whose attributes start at `position`, or -1.

    Any quote is taken to open a quoted value (stricter than HTML, which only quotes after `=`), so an
    unterminated quote or tag is never mistaken for a closed one. Linear: each character is passed once.
    """
    while True:
        stop = _TAG_STOP.search(html, position)
        if stop is None:
            return -1
        if stop.group() == ">":
            return stop.end()
        closing_quote = html.find(stop.group(), stop.end())
        if closing_quote < 0:
            return -1
        position = closing_quote + 1


class _Visibility:
    """Whether the text reached so far is hidden from a reader of the rendered comment.

    Fed every piece of raw HTML in document order. Conservative on purpose: an unclosed `<details>` or
    HTML comment hides everything after it, `<!--` in plain text (which CommonMark shows as text when
    it is never closed) counts as a comment too, and so does a tag or quoted attribute value that never
    ends (a browser would swallow the rest of the comment into it).
    """

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._in_comment = False
        self._swallowed = False

    @property
    def hidden(self) -> bool:
        return self._in_comment or self._swallowed or any(self._open.values())

    def feed_html(self, html: str) -> None:
        for segment in self._outside_comments(html):
            position = 0
            while (start := _TAG_START.search(segment, position)) is not None:
                end = _tag_end(segment, start.end())
                if end < 0:
                    self._swallowed = True
                    return
                closing, name = start.group(1), start.group(2).lower()
                position = end
                # No exception for `<details/>`: HTML ignores the slash on a non-void element.
                if name in _HIDING_TAGS:
                    self._open[name] = max(0, self._open.get(name, 0) + (-1 if closing else 1))

    def visible_text(self, text: str) -> str:
        """The parts of plain text a reader sees, updating the comment state on the way."""
        pieces = self._outside_comments(text)
        return "" if self._swallowed or any(self._open.values()) else "".join(pieces)

    def feed_inline(self, token: Token) -> None:
        if token.type == "html_inline":
            self.feed_html(token.content)
        elif token.type == "text":
            self.visible_text(token.content)

    def _outside_comments(self, text: str) -> list[str]:
        pieces: list[str] = []
        position = 0
        while position < len(text):
            if self._in_comment:
                end = text.find(_COMMENT_CLOSE, position)
                if end < 0:
                    return pieces
                self._in_comment, position = False, end + len(_COMMENT_CLOSE)
            else:
                start = text.find(_COMMENT_OPEN, position)
                if start < 0:
                    pieces.append(text[position:])
                    return pieces
                pieces.append(text[position:start])
                self._in_comment, position = True, start + len(_COMMENT_OPEN)
        return pieces


_LINE_BREAKS = ("softbreak", "hardbreak")


def _is_trigger(children: list[Token], position: int, trigger: str) -> bool:
    """The inline token at `position` starts a line and its first word is the trigger."""
    child = children[position]
    if child.type != "text" or not child.content.startswith(trigger):
        return False
    if position > 0 and children[position - 1].type not in _LINE_BREAKS:
        return False
    rest = child.content[len(trigger):]
    if rest:
        return rest[0].isspace()
    return position + 1 == len(children) or children[position + 1].type in _LINE_BREAKS


def _instructions(tokens: list[Token], index: int, position: int, trigger: str, lines: list[str],
                  visibility: _Visibility) -> str:
    paragraph = tokens[index].children or []
    parts = [_render_inline(paragraph[position:], visibility, skip=len(trigger))]
    for block in _top_level_blocks(tokens, index + 2):
        parts.append(_render_block(block, lines, visibility))
    return "\n\n".join(part.strip("\n") for part in parts if part.strip()).strip()


def _top_level_blocks(tokens: list[Token], start: int) -> list[list[Token]]:
    """The tokens from `start` on, grouped into top-level blocks (each open token with its close)."""
    blocks: list[list[Token]] = []
    current: list[Token] = []
    for token in tokens[start:]:
        current.append(token)
        if token.level == 0 and token.nesting <= 0:
            blocks.append(current)
            current = []
    return blocks


def _render_block(block: list[Token], lines: list[str], visibility: _Visibility) -> str:
    head = block[0]
    if head.type == "html_block":
        visibility.feed_html(head.content)  # raw HTML is never part of the instructions
        return ""
    if head.type == "paragraph_open":
        return _render_inline(block[1].children or [], visibility)
    if any(token.type.startswith("html_") for token in _with_children(block)):
        return _render_pieces(block, lines, visibility)
    # No raw HTML inside, so nothing hidden either: the source as written (list markers, fences, ...).
    return "" if visibility.hidden or head.map is None else "\n".join(lines[head.map[0]:head.map[1]])


def _with_children(block: list[Token]) -> list[Token]:
    return [*block, *(child for token in block for child in token.children or [])]


def _render_pieces(block: list[Token], lines: list[str], visibility: _Visibility) -> str:
    """A list or quote holding raw HTML, piece by piece, so hidden parts inside it stay out."""
    pieces: list[str] = []
    for token in block:
        if token.type == "html_block":
            visibility.feed_html(token.content)
        elif token.type == "inline":
            pieces.append(_render_inline(token.children or [], visibility).strip())
        elif token.type in ("fence", "code_block") and token.map is not None and not visibility.hidden:
            pieces.append("\n".join(lines[token.map[0]:token.map[1]]))
    return "\n".join(piece for piece in pieces if piece.strip())


def _render_inline(children: list[Token], visibility: _Visibility, *, skip: int = 0) -> str:
    """Paragraph text back as Markdown-ish source, without raw HTML and hidden parts.

    `skip` drops that many characters of the first text token (the trigger itself).
    """
    out: list[str] = []
    links: list[Token] = []
    for number, child in enumerate(children):
        if child.type == "html_inline":
            visibility.feed_html(child.content)
            continue
        if child.type == "text":
            text = visibility.visible_text(child.content[skip:] if number == 0 else child.content)
            out.append(text)
            continue
        if visibility.hidden:
            continue
        out.append(_inline_source(child, links))
    return "".join(out)


def _inline_source(token: Token, links: list[Token]) -> str:
    kind = token.type
    if kind in _LINE_BREAKS:
        return "\n"
    if kind == "code_inline":
        return f"{token.markup}{token.content}{token.markup}"
    if kind == "link_open":
        links.append(token)
        return "<" if token.markup == "autolink" else "["
    if kind == "link_close":
        opened = links.pop() if links else None
        if opened is None:
            return ""
        return ">" if opened.markup == "autolink" else f"]({opened.attrGet('href') or ''})"
    if kind == "image":
        return f"![{token.content}]({token.attrGet('src') or ''})"
    if kind.endswith(("_open", "_close")):
        return token.markup
    return token.content


@cache
def _commonmark() -> MarkdownIt:
    # Imported here: most comments never mention the trigger, and those runs need no parser at all.
    from markdown_it import MarkdownIt

    # Strict CommonMark with raw HTML recognised (the "commonmark" preset), as GitHub parses comments.
    return MarkdownIt("commonmark")


def route(event_name: str, payload: dict[str, Any], *, trigger: str = "/opi", prompt: str = "") -> Task | Ignored:
    try:
        if event_name == "issue_comment":
            return _route_issue_comment(IssueCommentEvent.model_validate(payload), event_name, trigger)
        if event_name == "pull_request_review_comment":
            return _route_review_comment(ReviewCommentEvent.model_validate(payload), event_name, trigger)
        if event_name in ("schedule", "workflow_dispatch"):
            return _route_scheduled(DispatchEvent.model_validate(payload), event_name, prompt)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise EventError(f"the {event_name} payload is missing fields the action needs: {problems}") from exc
    return Ignored(f"event {event_name!r} is not handled (supported: {', '.join(SUPPORTED_EVENTS)})")


def _comment_filter(action: str, body: str, author: User, sender: User, trigger: str) -> str | Ignored:
    if action != "created":
        return Ignored(f"comment was {action}, only new comments are handled")
    if sender.is_bot or author.is_bot:
        return Ignored(f"comment by bot {sender.login if sender.is_bot else author.login} is ignored")
    if BOT_MARKER in body:
        return Ignored("comment carries the bot's own marker")
    instructions = parse_trigger(body, trigger)
    if instructions is None:
        return Ignored(f"no line of the comment starts with {trigger!r}")
    return instructions


def _split_fix(instructions: str) -> tuple[bool, str]:
    match = re.match(r"fix(?=[\s:]|$):?\s*(?P<rest>.*)", instructions, re.IGNORECASE | re.DOTALL)
    return (True, match.group("rest").strip()) if match else (False, instructions)


def _route_issue_comment(event: IssueCommentEvent, event_name: str, trigger: str) -> Task | Ignored:
    checked = _comment_filter(event.action, event.comment.body, event.comment.user, event.sender, trigger)
    if isinstance(checked, Ignored):
        return checked
    is_fix, instructions = _split_fix(checked)
    issue = event.issue
    return Task(
        kind="pr_comment" if issue.pull_request is not None else "issue_comment",
        event_name=event_name, repo=event.repository.full_name, instructions=instructions, is_fix=is_fix,
        number=issue.number, title=issue.title, body=issue.body or "", html_url=issue.html_url,
        requester=event.comment.user, comment_id=event.comment.id, comment_url=event.comment.html_url,
        comment_kind="issue", default_branch=event.repository.default_branch,
    )


def _route_review_comment(event: ReviewCommentEvent, event_name: str, trigger: str) -> Task | Ignored:
    checked = _comment_filter(event.action, event.comment.body, event.comment.user, event.sender, trigger)
    if isinstance(checked, Ignored):
        return checked
    is_fix, instructions = _split_fix(checked)
    comment, pull = event.comment, event.pull_request
    review = ReviewContext(path=comment.path, line=comment.line or comment.original_line,
                          start_line=comment.start_line, side=comment.side, diff_hunk=comment.diff_hunk)
    return Task(
        kind="review_comment", event_name=event_name, repo=event.repository.full_name,
        instructions=instructions, is_fix=is_fix, number=pull.number, title=pull.title,
        body=pull.body or "", html_url=pull.html_url, requester=comment.user, comment_id=comment.id,
        comment_url=comment.html_url, comment_kind="review", review=review, pull=pull,
        default_branch=event.repository.default_branch,
    )


def _route_scheduled(event: DispatchEvent, event_name: str, prompt: str) -> Task | Ignored:
    # A dispatch may carry its own `prompt` input; the action's `prompt` input is the fallback.
    dispatched = str((event.inputs or {}).get("prompt") or "").strip()
    text = dispatched or prompt.strip()
    if not text:
        return Ignored(f"{event_name} run without a prompt: set the action's `prompt` input")
    repo = event.repository.full_name if event.repository else ""
    ref = event.ref or ""
    return Task(kind="scheduled", event_name=event_name, repo=repo, instructions=text, is_fix=False,
                requester=event.sender, default_branch=event.repository.default_branch if event.repository
                else "main", ref=ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else "")
