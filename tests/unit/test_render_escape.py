"""``gpucal.render``: text from a file never drives the terminal. Control characters (C0, ESC, DEL, C1) and
bidi overrides are shown as escapes in every line, table and JSON document, and nothing is read as markup."""

from __future__ import annotations

import io
import json

import pytest

from gpucal import render

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x08\r\u202eabc\u2066\x9b31m\x7f\x00"
RAW = ("\x1b", "\x07", "\x08", "\r", "\u202e", "\u2066", "\x9b", "\x7f", "\x00")


def test_escape_writes_every_control_character_visibly():
    assert render.escape(HOSTILE) == "\\x1b]0;owned\\x07\\x1b[2J\\x08\\x0d\\u202eabc\\u2066\\x9b31m\\x7f\\x00"
    assert render.escape("two\nlines\tand a tab") == "two\nlines\tand a tab"
    assert render.escape("two\nlines\t", layout=False) == "two\\x0alines\\x09"
    assert render.escape("µs, α/β, R², 日本, naïve") == "µs, α/β, R², 日本, naïve"  # printable text as it is
    assert render.escape(render.escape(HOSTILE)) == render.escape(HOSTILE)


def _console(stream):
    out = render.console()
    out.file = stream
    return out


def test_lines_and_tables_are_escaped_and_never_markup():
    stream = io.StringIO()
    out = _console(stream)
    render.line(f"name {HOSTILE} [bold]x[/bold] :smile:", out)
    out.print(render.table((f"col{HOSTILE}", "[red]b"), [(f"cell{HOSTILE}", "[bold]y[/bold]")],
                           title=f"title {HOSTILE} [bold]t[/bold]"))
    out.print(f"direct {HOSTILE}")
    text = stream.getvalue()
    for char in RAW:
        assert char not in text, repr(char)
    assert "\\x1b]0;owned\\x07" in text and "\\u202e" in text
    for markup in ("[bold]x[/bold]", "[red]b", "[bold]y[/bold]", "[bold]t[/bold]", ":smile:"):
        assert markup in text


def test_json_escapes_them_too_and_stays_json():
    stream = io.StringIO()
    render.print_json({"name": HOSTILE, HOSTILE: [HOSTILE]}, stream)
    text = stream.getvalue()
    for char in RAW:
        assert char not in text, repr(char)
    assert json.loads(text) == {"name": HOSTILE, HOSTILE: [HOSTILE]}  # the same document, escaped as JSON


@pytest.mark.parametrize("char", ["\x1b", "\x9b", "\u202e", "\x7f"])
def test_each_character_class_alone(char):
    assert char not in render.escape(f"a{char}b") and "\\" in render.escape(f"a{char}b")
