"""The agent's answer cannot make the bot notify people or close issues: a hostile issue can steer the
model into writing `@org/team` or `fixes other/repo#4`, and the bot publishes the answer under its own
name in the report comment, the pull request it opens and its commit message (`bot.action.comment.defang`).
"""

from __future__ import annotations

import re

import pytest

from bot.action.comment import defang
from tests import action_support as payloads
from tests.action_runner import FIXED_APP, Runner
from tests.action_support import git
from tests.fake_llm import Reply

ZWSP = "\u200b"

# What GitHub acts on, roughly as it finds them: an @ at the start or after a non-word character followed
# by a name; a closing keyword, an optional colon and whitespace, then an issue reference.
LIVE_MENTION = re.compile(r"(?:^|[^A-Za-z0-9`])@[A-Za-z0-9]")
LIVE_CLOSING = re.compile(r"(?i)(?<![A-Za-z0-9])(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)[\s*_~:\[(]*"
                          r"(?:#\d|GH-\d|[\w.-]+/[\w.-]+#\d|https?://\S+/issues/\d)")


def _outside_code(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text)


@pytest.mark.parametrize("text", [
    "cc @torvalds", "@octo-org/security-team please look", "(@someone)", "thanks,@someone", "**@bold**",
    "path/@types/node", "@a1", "_@emphasised_", "\\`@escaped\\`", "``` x`\n@not-a-fence\n",
])
def test_mentions_are_broken(text: str) -> None:
    out = defang(text)
    assert not LIVE_MENTION.search(out) and out.replace(ZWSP, "") == text


@pytest.mark.parametrize("text", [
    "Closes #1", "fixes #2", "Resolved: #3", "closes octo-org/other-repo#4", "FIXES GH-5",
    "fixed https://github.com/octo/other/issues/6", "Auto-closes #7", "closes\n#8", "Fix #9, fix #10",
    "resolves  #11", "_fixes_ #12", "**Fixes:** #13", "closes [#14](https://github.com/o/r/issues/14)",
])
def test_closing_keywords_before_an_issue_reference_are_broken(text: str) -> None:
    out = defang(text)
    assert not LIVE_CLOSING.search(out) and out.replace(ZWSP, "") == text


@pytest.mark.parametrize("text", [
    "mail someone@example.com", "`@decorator` and `cc @team`", "```py\n@dataclass\nclass A: ...\n```",
    "see https://www.npmjs.com/package/@scope/pkg", "<https://example.com/@user>", "fixes the bug in #3",
    "a prefix #4", "@ alone", "the fix is #5-safe? no: fixes are listed in #6", "https://example.com/fix#1",
])
def test_everything_else_is_left_as_it_was(text: str) -> None:
    assert defang(text) == text


def test_mentions_written_as_html_entities_are_broken() -> None:
    # GitHub decodes entities before it looks for mentions.
    assert defang("cc &#64;torvalds, &#x40;a and &commat;b") == (
        f"cc &#64;{ZWSP}torvalds, &#x40;{ZWSP}a and &commat;{ZWSP}b")


def test_keywords_are_broken_even_in_code_where_a_commit_message_has_no_code() -> None:
    assert LIVE_CLOSING.search(defang("`closes #4`")) is None


def test_defang_is_idempotent() -> None:
    text = "Closes #1 for @someone, see https://x.example/@a and `@b`"
    assert defang(defang(text)) == defang(text)


EVIL = ("Fixed `add` for @octo-org/security-team, cc @torvalds.\n"
        "Closes #1, fixes #2, resolves #3, closes octo-org/other-repo#4, fixes https://github.com/o/r/issues/5\n\n"
        "Write to someone@example.com; `@decorator` stays as it is. FYI @maintainer")


@pytest.mark.slow
def test_a_hostile_answer_neither_mentions_nor_closes_in_the_pr_the_comment_or_the_commit(runner: Runner) -> None:
    runner.llm.enqueue_many([Reply(tool_calls=[("c", "write", {"path": "app.py", "content": FIXED_APP})]),
                             Reply(text=EVIL)])
    payload = payloads.issue_comment("/opi fix the add function")
    payload["repository"]["default_branch"] = "main"
    proc = runner.run(runner.env("issue_comment", payload))
    assert proc.returncode == 0, proc.stderr[-2000:]

    pr_body = runner.github.calls("POST", r"/pulls$")[0].json()["body"]
    comment = runner.comment_bodies()[0]
    message = git(runner.remote, "log", "-1", "--format=%B", "refs/heads/opi/issue-1")
    assert pr_body.startswith("Resolves #1.\n")  # the bot's own link to the issue it was asked about
    for text in (pr_body.removeprefix("Resolves #1."), comment, message):
        assert not LIVE_MENTION.search(_outside_code(text)), text
        assert not LIVE_CLOSING.search(text), text
    # Still readable: only zero-width spaces were added.
    assert EVIL in pr_body.replace(ZWSP, "") and EVIL in comment.replace(ZWSP, "")
    assert EVIL.split("\n\n")[0] in message.replace(ZWSP, "")
    assert "someone@example.com" in comment and "`@decorator`" in comment
