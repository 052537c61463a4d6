"""Just enough of a man(7) page's roff source to check it against the code it documents.

Conventions the pages in packaging/man follow, and these functions rely on:

* every option is written with escaped hyphens (``\\-d``, ``\\-\\-root``), so that it prints and
  copies as ASCII hyphen-minus; a plain ``-`` never starts a word;
* a documented item (subcommand, option, variable, bus member, polkit action) is the tag line of a
  ``.TP`` (or ``.TQ``) paragraph, its name first.
"""

from __future__ import annotations

import re

_FONT = re.compile(r"\\f(?:[BIRP]|\(\w\w|\[\w*\])")
# An escaped option at the start of a word: \-x or \-\-long\-name.
_OPTION = re.compile(r"(?<![\w\\-])\\-(?:\\-)?[A-Za-z](?:[A-Za-z0-9_]|\\-)*")
# An option-like word with a plain hyphen: groff prints that as a typographic hyphen.
_PLAIN_OPTION = re.compile(r"(?<![\w\\-])-{1,2}[A-Za-z]")
_ESCAPES = {r"\-": "-", r"\(->": "→", r"\(lq": '"', r"\(rq": '"', r"\~": " ", r"\e": "\\"}
# Macros whose arguments are printed alternately in two fonts without spaces between them.
_ALTERNATING = {".BR", ".RB", ".BI", ".IB", ".IR", ".RI"}


def _is_comment(line: str) -> bool:
    return line.startswith(('.\\"', "'\\\""))


def _words(args: str) -> list[str]:
    """A macro's arguments: quoted strings or blank-separated words."""
    return [q if q else w for q, w in re.findall(r'"([^"]*)"|(\S+)', args)]


def plain(line: str) -> str:
    """The text a line prints: fonts dropped, escapes resolved, macro arguments joined."""
    text = _FONT.sub("", line)
    if text.startswith("."):
        macro, _, args = text.partition(" ")
        words = _words(args)
        text = ("" if macro in _ALTERNATING else " ").join(words)
        if macro == ".OP":
            text = "[" + " ".join(words) + "]"
    for escape, char in _ESCAPES.items():
        text = text.replace(escape, char)
    return text.strip()


def sections(source: str | list[str], macro: str = ".SH") -> dict[str, list[str]]:
    """Lines of each ``.SH`` (or ``.SS``) section, by title; what precedes the first is ''."""
    result: dict[str, list[str]] = {"": []}
    current = ""
    for line in source.splitlines() if isinstance(source, str) else source:
        if _is_comment(line):
            continue
        if line.startswith(macro + " "):
            current = plain(" ".join(_words(line[len(macro) + 1 :])))
            result[current] = []
        else:
            result[current].append(line)
    return result


def tags(lines: list[str]) -> list[str]:
    """The tag line of every ``.TP``/``.TQ`` paragraph, as printed."""
    return [plain(lines[i + 1]) for i, line in enumerate(lines[:-1]) if line in (".TP", ".TQ")]


def options(lines: list[str] | str) -> set[str]:
    """Every option written in the lines (``--root``, ``-d``)."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    text = "\n".join(line for line in text.splitlines() if not _is_comment(line))
    return {m.replace("\\-", "-") for m in _OPTION.findall(_FONT.sub("", text))}


def plain_hyphen_options(source: str) -> list[str]:
    """Lines where an option-like word is written with a plain hyphen."""
    return [
        line
        for line in source.splitlines()
        if not _is_comment(line) and _PLAIN_OPTION.search(_FONT.sub("", line))
    ]
