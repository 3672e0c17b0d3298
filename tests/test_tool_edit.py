"""edit: unique exact match, counts in errors, normalised fallback, CRLF/BOM, multi-edit atomicity, diff."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bot.tools.base import ToolContext, ToolOutput
from bot.tools.edit import EditTool


def edit(ctx: ToolContext, path: str, old: str | None = None, new: str | None = None,
         **extra: object) -> ToolOutput:
    args: dict[str, object] = {"path": path, **extra}
    if old is not None:
        args["old_text"] = old
    if new is not None:
        args["new_text"] = new
    return EditTool().execute(args, ctx)


def put(ctx: ToolContext, name: str, data: str | bytes) -> Path:
    path = ctx.workspace / name
    if isinstance(data, str):
        path.write_bytes(data.encode())
    else:
        path.write_bytes(data)
    return path


def test_unique_exact_match_is_replaced_and_a_diff_returned(ctx: ToolContext) -> None:
    path = put(ctx, "app.py", "def main():\n    return 1\n\n\nprint(main())\n")
    out = edit(ctx, "app.py", "    return 1\n", "    return 2\n")
    assert not out.is_error, out.text
    assert path.read_text() == "def main():\n    return 2\n\n\nprint(main())\n"
    assert out.text.startswith("Edited app.py: 1 replacement, +1 -1 lines.\n\n--- a/app.py\n+++ b/app.py\n")
    assert "-    return 1\n+    return 2" in out.text
    assert out.details is not None
    assert out.details["added"] == 1 and out.details["removed"] == 1 and out.details["replacements"] == 1
    assert out.details["fallback"] == [] and out.details["first_changed_line"] == 2
    assert out.details["diff"].startswith("--- a/app.py\n+++ b/app.py\n@@ -1,5 +1,5 @@\n")


def test_duplicate_match_names_the_count_and_changes_nothing(ctx: ToolContext) -> None:
    path = put(ctx, "dup.py", "x = 1\ny = 2\nx = 1\n")
    out = edit(ctx, "dup.py", "x = 1", "x = 3")
    assert out.is_error
    assert out.text == "old_text matches 2 times in dup.py; add surrounding lines to make it unique"
    assert path.read_text() == "x = 1\ny = 2\nx = 1\n"


def test_overlapping_occurrences_count_as_ambiguous(ctx: ToolContext) -> None:
    put(ctx, "a.txt", "aaa\n")
    out = edit(ctx, "a.txt", "aa", "b")
    assert out.is_error and "matches 2 times" in out.text


def test_not_found_points_at_the_most_similar_line(ctx: ToolContext) -> None:
    put(ctx, "cfg.py", "TIMEOUT = 30\nRETRIES = 5\n")
    out = edit(ctx, "cfg.py", "RETRYS = 5", "RETRIES = 6")
    assert out.is_error
    assert out.text.startswith("old_text was not found in cfg.py")
    assert "most similar line is 2: 'RETRIES = 5'" in out.text


def test_empty_and_identical_old_text_are_errors(ctx: ToolContext) -> None:
    put(ctx, "a.txt", "x\n")
    empty = edit(ctx, "a.txt", "", "y")
    assert empty.is_error and empty.text.startswith("old_text is empty")
    same = edit(ctx, "a.txt", "x", "x")
    assert same.is_error and same.text == "old_text and new_text are identical, so there is nothing to change"


def test_fallback_tolerates_indentation_trailing_space_and_smart_quotes(ctx: ToolContext) -> None:
    path = put(ctx, "m.py", "class A:\n    def f(self):\n        return \"it's\"   \n\n    def g(self):\n        pass\n")
    # The model dropped the indentation and used typographic quotes.
    out = edit(ctx, "m.py", "def f(self):\n    return \u201cit\u2019s\u201d\n", "def f(self):\n    return \"its\"\n")
    assert not out.is_error, out.text
    assert "matched after normalising whitespace, indentation and quotes" in out.text
    assert out.details is not None and out.details["fallback"] == [0]
    # The replacement was re-indented to the file's level.
    assert path.read_text() == "class A:\n    def f(self):\n        return \"its\"\n\n    def g(self):\n        pass\n"


def test_fallback_with_tabs_in_the_file(ctx: ToolContext) -> None:
    path = put(ctx, "main.go", "func main() {\n\tfmt.Println(\"a\")\n\tfmt.Println(\"b\")\n}\n")
    out = edit(ctx, "main.go", "    fmt.Println(\"a\")\n", "    fmt.Println(\"A\")\n    fmt.Println(\"A2\")\n")
    assert not out.is_error, out.text
    assert path.read_text() == "func main() {\n\tfmt.Println(\"A\")\n\tfmt.Println(\"A2\")\n\tfmt.Println(\"b\")\n}\n"


def test_fallback_that_is_ambiguous_is_refused(ctx: ToolContext) -> None:
    path = put(ctx, "b.py", "if a:\n    go()\nif b:\n        go()\n")
    out = edit(ctx, "b.py", "\tgo()\n", "stop()\n")
    assert out.is_error
    assert "ignoring whitespace and quote differences it matches 2 times" in out.text
    assert path.read_text() == "if a:\n    go()\nif b:\n        go()\n"


def test_crlf_file_keeps_crlf(ctx: ToolContext) -> None:
    path = put(ctx, "win.txt", b"one\r\ntwo\r\nthree\r\n")
    out = edit(ctx, "win.txt", "two\nthree\n", "2\n3\n4\n")
    assert not out.is_error, out.text
    assert path.read_bytes() == b"one\r\n2\r\n3\r\n4\r\n"
    assert out.details is not None and out.details["fallback"] == []  # an exact match, modulo line endings


def test_single_line_edit_in_crlf_file_with_multiline_replacement(ctx: ToolContext) -> None:
    path = put(ctx, "win.txt", b"a\r\nb\r\n")
    edit(ctx, "win.txt", "b", "b\nc")
    assert path.read_bytes() == b"a\r\nb\r\nc\r\n"


def test_mixed_line_endings_are_left_as_they_are_outside_the_edit(ctx: ToolContext) -> None:
    path = put(ctx, "mixed.txt", b"lf1\nlf2\ncr1\r\ncr2\r\n")
    edit(ctx, "mixed.txt", "lf2\n", "LF2\nextra\n")
    assert path.read_bytes() == b"lf1\nLF2\nextra\ncr1\r\ncr2\r\n"


def test_bom_is_preserved(ctx: ToolContext) -> None:
    path = put(ctx, "bom.cs", b"\xef\xbb\xbfusing System;\r\nclass A {}\r\n")
    out = edit(ctx, "bom.cs", "class A {}", "class B {}")
    assert not out.is_error, out.text
    assert path.read_bytes() == b"\xef\xbb\xbfusing System;\r\nclass B {}\r\n"


def test_multi_edit_applies_all_against_the_original(ctx: ToolContext) -> None:
    path = put(ctx, "m.txt", "alpha\nbeta\ngamma\ndelta\n")
    out = EditTool().execute({"path": "m.txt", "edits": [
        {"old_text": "gamma", "new_text": "GAMMA"},
        {"old_text": "alpha", "new_text": "ALPHA\nalpha2"},
    ]}, ctx)
    assert not out.is_error, out.text
    assert path.read_text() == "ALPHA\nalpha2\nbeta\nGAMMA\ndelta\n"
    assert out.text.startswith("Edited m.txt: 2 replacements, +3 -2 lines.")


def test_multi_edit_with_one_bad_edit_changes_nothing(ctx: ToolContext) -> None:
    path = put(ctx, "m.txt", "alpha\nbeta\nbeta\n")
    before = path.stat().st_mtime_ns
    out = EditTool().execute({"path": "m.txt", "edits": [
        {"old_text": "alpha", "new_text": "ALPHA"},
        {"old_text": "beta", "new_text": "BETA"},
    ]}, ctx)
    assert out.is_error
    assert out.text == "edits[1]: old_text matches 2 times in m.txt; add surrounding lines to make it unique"
    assert path.read_text() == "alpha\nbeta\nbeta\n"
    assert path.stat().st_mtime_ns == before


def test_multi_edit_overlap_is_refused(ctx: ToolContext) -> None:
    path = put(ctx, "o.txt", "one two three\n")
    out = EditTool().execute({"path": "o.txt", "edits": [
        {"old_text": "one two", "new_text": "1 2"},
        {"old_text": "two three", "new_text": "2 3"},
    ]}, ctx)
    assert out.is_error and out.text == "edits[0] and edits[1] overlap in o.txt; merge them into one edit"
    assert path.read_text() == "one two three\n"


def test_both_forms_at_once_or_neither_are_errors(ctx: ToolContext) -> None:
    put(ctx, "a.txt", "x\n")
    both = EditTool().execute({"path": "a.txt", "old_text": "x", "new_text": "y",
                               "edits": [{"old_text": "x", "new_text": "z"}]}, ctx)
    assert both.is_error and both.text == "Give either old_text/new_text or edits, not both"
    neither = EditTool().execute({"path": "a.txt", "old_text": "x"}, ctx)
    assert neither.is_error and neither.text == "new_text is missing; give old_text and new_text (or edits)"
    empty = EditTool().execute({"path": "a.txt", "edits": []}, ctx)
    assert empty.is_error and empty.text.startswith("edits is empty")


def test_non_utf8_and_binary_files_are_refused(ctx: ToolContext) -> None:
    put(ctx, "latin.txt", b"caf\xe9\n")
    out = edit(ctx, "latin.txt", "caf", "bar")
    assert out.is_error and out.text.startswith("latin.txt is not UTF-8: invalid byte 0xe9 at offset 3.")
    put(ctx, "bin.dat", b"ab\x00cd")
    out = edit(ctx, "bin.dat", "ab", "xy")
    assert out.is_error and out.text.startswith("bin.dat is a binary file (NUL byte at offset 2)")


def test_missing_file_and_directory(ctx: ToolContext) -> None:
    out = edit(ctx, "nope.txt", "a", "b")
    assert out.is_error and out.text == "File not found: nope.txt. edit changes existing files; use write to create one"
    (ctx.workspace / "d").mkdir()
    assert edit(ctx, "d", "a", "b").text == "d is a directory, not a file"


def test_edit_is_atomic_and_keeps_mode(ctx: ToolContext) -> None:
    path = put(ctx, "tool.sh", "#!/bin/sh\necho a\n")
    path.chmod(0o700)
    edit(ctx, "tool.sh", "echo a", "echo b")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert sorted(p.name for p in ctx.workspace.iterdir()) == ["tool.sh"]


def test_deleting_text_and_no_trailing_newline(ctx: ToolContext) -> None:
    path = put(ctx, "n.txt", "keep\ndrop")
    out = edit(ctx, "n.txt", "\ndrop", "")
    assert not out.is_error, out.text
    assert path.read_text() == "keep"
    assert "\\ No newline at end of file" in out.text


def test_large_diff_is_cut_in_the_text_but_whole_in_details(ctx: ToolContext) -> None:
    old = "".join(f"line {i}\n" for i in range(1000))
    put(ctx, "big.txt", old)
    out = edit(ctx, "big.txt", old, old.upper())
    assert "[diff cut at 300 of" in out.text
    assert out.details is not None and out.details["diff"].count("\n") > 2000


def test_unencodable_new_text_is_a_clear_error(ctx: ToolContext) -> None:
    path = put(ctx, "a.txt", "x\n")
    out = edit(ctx, "a.txt", "x", "y\ud800")
    assert out.is_error and out.text == "new_text is not valid Unicode: surrogates not allowed at character 1"
    assert path.read_text() == "x\n"


@pytest.mark.parametrize(("in_file", "old", "new", "expected"), [
    ("greeting = '你好，世界'\n", "greeting = '你好,世界'", "greeting = '再见'", "greeting = '再见'\n"),
    ("code = 'ＡＢＣ１２３'\n", "code = 'ABC123'", "code = 'XYZ'", "code = 'XYZ'\n"),
    ("name = 'Cafe\u0301'\n", "name = 'Caf\u00e9'", "name = 'Bar'", "name = 'Bar'\n"),  # decomposed é in the file
    ("name = 'Caf\u00e9'\n", "name = 'Cafe\u0301'", "name = 'Bar'", "name = 'Bar'\n"),  # and the other way
])
def test_fallback_applies_nfkc_normalisation(ctx: ToolContext, in_file: str, old: str, new: str,
                                             expected: str) -> None:
    path = put(ctx, "text.py", in_file + "other = 1\n")
    out = edit(ctx, "text.py", old, new)
    assert not out.is_error, out.text
    assert path.read_text() == expected + "other = 1\n"
    assert out.details is not None and out.details["fallback"] == [0]


def test_a_combining_mark_at_the_end_of_the_match_is_replaced_with_its_letter(ctx: ToolContext) -> None:
    path = put(ctx, "a.txt", "x = e\u0301\ny = 2\n")
    out = edit(ctx, "a.txt", "x = \u00e9", "x = a")
    assert not out.is_error, out.text
    assert path.read_text() == "x = a\ny = 2\n"  # no stray U+0301 left behind


def test_old_text_twice_once_line_endings_are_ignored_is_ambiguous(ctx: ToolContext) -> None:
    original = b"hello\r\nworld\r\nmiddle\nhello\nworld\n"
    path = put(ctx, "mixed.txt", original)
    out = edit(ctx, "mixed.txt", "hello\nworld\n", "bye\n")
    assert out.is_error and "matches 2 times" in out.text
    assert path.read_bytes() == original
