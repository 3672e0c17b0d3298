"""read: numbering, head truncation with a continuation offset, long lines, binary and non-UTF-8."""

from __future__ import annotations

import re

from bot.tools.base import ToolContext, ToolOutput
from bot.tools.read import MAX_BYTES, MAX_LINE_CHARS, MAX_LINES, ReadTool


def read(ctx: ToolContext, **args: object) -> ToolOutput:
    return ReadTool().execute(dict(args), ctx)


def numbered(text: str) -> list[tuple[int, str]]:
    return [(int(n), body) for n, body in re.findall(r"^ *(\d+)\t(.*)$", text, flags=re.MULTILINE)]


def test_lines_are_numbered_like_cat_n(ctx: ToolContext) -> None:
    (ctx.workspace / "a.txt").write_text("alpha\nbeta\n\ngamma")
    out = read(ctx, path="a.txt")
    assert not out.is_error
    assert out.text == "     1\talpha\n     2\tbeta\n     3\t\n     4\tgamma\n"
    assert out.details == {"path": "a.txt", "start_line": 1, "end_line": 4, "total_lines": 4, "truncated": False}


def test_offset_and_limit_select_a_window(ctx: ToolContext) -> None:
    (ctx.workspace / "a.txt").write_text("".join(f"l{i}\n" for i in range(1, 11)))
    out = read(ctx, path="a.txt", offset=4, limit=3)
    assert numbered(out.text) == [(4, "l4"), (5, "l5"), (6, "l6")]
    assert "[Showing lines 4-6 of 10. Use offset=7 to continue.]" in out.text


def test_line_cap_truncates_and_says_how_to_continue(ctx: ToolContext) -> None:
    total = MAX_LINES + 500
    (ctx.workspace / "big.txt").write_text("".join(f"row {i}\n" for i in range(1, total + 1)))
    first = read(ctx, path="big.txt")
    lines = numbered(first.text)
    assert lines[0] == (1, "row 1") and lines[-1] == (MAX_LINES, f"row {MAX_LINES}")
    assert f"Use offset={MAX_LINES + 1} to continue" in first.text
    assert f"of {total}" in first.text
    # Following the notice reads the rest, and the last window has no notice.
    rest = read(ctx, path="big.txt", offset=MAX_LINES + 1)
    assert numbered(rest.text)[0] == (MAX_LINES + 1, f"row {MAX_LINES + 1}")
    assert numbered(rest.text)[-1] == (total, f"row {total}")
    assert "offset=" not in rest.text
    assert rest.details is not None and rest.details["truncated"] is False


def test_byte_cap_truncates_before_the_line_cap(ctx: ToolContext) -> None:
    line = "x" * 999  # ~1 KB per numbered line: the 50 KB cap hits at ~50 lines
    (ctx.workspace / "wide.txt").write_text((line + "\n") * 300)
    out = read(ctx, path="wide.txt")
    shown = numbered(out.text)
    assert 40 < len(shown) < 60
    assert len(out.text.encode()) <= MAX_BYTES + 200
    assert f"({MAX_BYTES // 1024} KB limit). Use offset={len(shown) + 1} to continue." in out.text
    continued = read(ctx, path="wide.txt", offset=len(shown) + 1)
    assert numbered(continued.text)[0][0] == len(shown) + 1


def test_long_single_line_is_cut_with_a_note(ctx: ToolContext) -> None:
    (ctx.workspace / "min.js").write_text("short\n" + "é" * 100_000 + "\nafter\n")
    out = read(ctx, path="min.js")
    lines = numbered(out.text)
    assert [n for n, _ in lines] == [1, 2, 3]
    assert lines[1][1].startswith("é" * MAX_LINE_CHARS) and f"line cut at {MAX_LINE_CHARS}" in lines[1][1]
    assert lines[2] == (3, "after")
    assert "were cut: 2" in out.text


def test_huge_line_without_newline_is_not_loaded_whole(ctx: ToolContext) -> None:
    (ctx.workspace / "blob.txt").write_text("a" * 5_000_000)
    out = read(ctx, path="blob.txt")
    assert not out.is_error
    assert len(out.text) < 10_000 and "line cut" in out.text


def test_crlf_lines_show_without_carriage_returns(ctx: ToolContext) -> None:
    (ctx.workspace / "win.txt").write_bytes(b"one\r\ntwo\r\n")
    assert numbered(read(ctx, path="win.txt").text) == [(1, "one"), (2, "two")]


def test_binary_file_is_reported_not_shown(ctx: ToolContext) -> None:
    (ctx.workspace / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    out = read(ctx, path="img.png")
    assert out.is_error
    assert "img.png is a PNG image" in out.text and "NUL byte at offset 8" in out.text


def test_nul_after_the_sniffed_head_is_caught_in_the_window_shown(ctx: ToolContext) -> None:
    (ctx.workspace / "late.bin").write_bytes(b"text\n" * 4000 + b"\x00tail\n")
    out = read(ctx, path="late.bin", offset=3990)
    assert out.is_error and "binary file" in out.text and "NUL byte at offset 20000" in out.text


def test_non_utf8_file_names_the_byte_and_offset(ctx: ToolContext) -> None:
    (ctx.workspace / "latin1.txt").write_bytes(b"hello\nwor\xffld\n")
    out = read(ctx, path="latin1.txt")
    assert out.is_error
    assert "not UTF-8: invalid byte 0xff at offset 9" in out.text


def test_multibyte_character_cut_by_the_line_cap_is_not_a_decoding_error(ctx: ToolContext) -> None:
    (ctx.workspace / "cjk.txt").write_text("界" * 10_000 + "\n")
    out = read(ctx, path="cjk.txt")
    assert not out.is_error, out.text
    assert "界" * MAX_LINE_CHARS in out.text


def test_missing_file_suggests_similar_names(ctx: ToolContext) -> None:
    (ctx.workspace / "config.toml").write_text("")
    out = read(ctx, path="confg.toml")
    assert out.is_error
    assert out.text == "File not found: confg.toml. Similar names in that directory: config.toml"


def test_directory_is_a_clear_error(ctx: ToolContext) -> None:
    (ctx.workspace / "src").mkdir()
    out = read(ctx, path="src")
    assert out.is_error and out.text == "src is a directory, not a file; use ls to list it"


def test_empty_file(ctx: ToolContext) -> None:
    (ctx.workspace / "empty.txt").write_text("")
    out = read(ctx, path="empty.txt")
    assert not out.is_error and out.text == "[empty.txt is empty]"


def test_offset_past_the_end_is_an_error_naming_the_length(ctx: ToolContext) -> None:
    (ctx.workspace / "a.txt").write_text("1\n2\n3\n")
    out = read(ctx, path="a.txt", offset=10)
    assert out.is_error and out.text == "offset 10 is beyond the end of a.txt, which has 3 lines"


def test_invalid_offset_is_rejected_by_the_schema(ctx: ToolContext) -> None:
    (ctx.workspace / "a.txt").write_text("x\n")
    out = read(ctx, path="a.txt", offset=0)
    assert out.is_error and "offset" in out.text and "greater than or equal to 1" in out.text


def test_broken_symlink(ctx: ToolContext) -> None:
    (ctx.workspace / "dangling").symlink_to("nowhere.txt")
    out = read(ctx, path="dangling")
    assert out.is_error and "broken symlink" in out.text and "nowhere.txt" in out.text


def test_schema_is_what_the_model_sees() -> None:
    schema = ReadTool().schema()
    assert schema["required"] == ["path"]
    assert set(schema["properties"]) == {"path", "offset", "limit"}
    assert all(prop.get("description") for prop in schema["properties"].values())


def test_utf8_bom_is_not_shown(ctx: ToolContext) -> None:
    (ctx.workspace / "bom.txt").write_bytes(b"\xef\xbb\xbffirst\nsecond\n")
    assert numbered(read(ctx, path="bom.txt").text) == [(1, "first"), (2, "second")]


def test_utf16_gets_its_own_message(ctx: ToolContext) -> None:
    (ctx.workspace / "u16.txt").write_bytes("hello\n".encode("utf-16"))
    out = read(ctx, path="u16.txt")
    assert out.is_error and out.text.startswith("u16.txt is UTF-16 encoded text; read shows UTF-8 only.")


def test_a_limit_above_the_cap_is_capped_and_says_so(ctx: ToolContext) -> None:
    (ctx.workspace / "big.txt").write_text("x\n" * (MAX_LINES + 10))
    out = read(ctx, path="big.txt", limit=MAX_LINES + 5)
    assert len(numbered(out.text)) == MAX_LINES
    assert f"({MAX_LINES}-line limit). Use offset={MAX_LINES + 1} to continue." in out.text
