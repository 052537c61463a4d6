"""Read a shell-style ``VAR=value`` file without running a shell.

``/etc/default/kdump-tools`` is sourced by ``/bin/sh`` in kdump-tools. kdumpd never runs it: this
module understands the subset of shell that such files use — comments, blank lines, ``export``,
``VAR=value`` and ``VAR+=value``, single and double quotes, backslash escapes, ``$VAR``,
``${VAR}``, ``${VAR:-word}`` / ``${VAR-word}`` expansion of variables assigned earlier in the same
file, and values spanning lines inside quotes — and rejects everything else (command
substitution, pipelines, several words, control flow) with an error naming the line.

A variable that was not assigned earlier expands to the empty string, as it does when kdump-tools
sources the file from a clean environment (systemd's ``EnvironmentFile=`` passes no other).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdumpd.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that end an unquoted word or start shell syntax we do not evaluate.
_SHELL_OPERATORS = set(";&|<>()")


@dataclass(frozen=True)
class Assignment:
    """One ``NAME=value`` statement; ``first_line``..``last_line`` are 1-based and inclusive."""

    name: str
    value: str
    append: bool
    exported: bool
    first_line: int
    last_line: int


class ShellSyntaxError(ConfigError):
    """A line of a shell-style config file that kdumpd cannot read without a shell."""


class _Scanner:
    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.filename = filename
        self.values: dict[str, str] = {}

    def error(self, message: str, line: int | None = None) -> ShellSyntaxError:
        return ShellSyntaxError(f"{self.filename}:{line or self.line}: {message}")

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def advance(self) -> str:
        ch = self.text[self.pos]
        self.pos += 1
        if ch == "\n":
            self.line += 1
        return ch

    # Jumps rather than advance() per character: the default file is mostly comments, and it is
    # parsed at every boot before arming; character by character took 0.3 s under emulation.
    def skip_blanks(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        self.pos = pos

    def skip_comment(self) -> None:
        """Stop at the newline (not consumed) or the end: a comment never spans lines."""
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def at_end_of_statement(self) -> bool:
        return self.peek() in ("", "\n", "#")

    def end_statement(self) -> None:
        """Consume the rest of a line known to hold nothing but blanks and a comment."""
        self.skip_blanks()
        self.skip_comment()
        if self.peek() == "\n":
            self.advance()

    def read_name(self) -> str:
        m = _NAME.match(self.text, self.pos)
        if not m:
            return ""
        self.pos = m.end()
        return m.group(0)

    # -- values ---------------------------------------------------------------------------------

    def read_word(self, name: str) -> str:
        """The value of an assignment: concatenated unquoted, '…' and "…" parts."""
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch in ("", "\n", " ", "\t"):
                return "".join(out)
            if ch == "'":
                out.append(self.read_single_quoted(name))
            elif ch == '"':
                out.append(self.read_double_quoted(name))
            elif ch == "\\":
                self.advance()
                nxt = self.peek()
                if nxt == "":
                    raise self.error(f"{name}: backslash at end of file")
                self.advance()
                if nxt != "\n":  # backslash-newline is a line continuation
                    out.append(nxt)
            elif ch == "$":
                out.append(self.read_dollar(name))
            elif ch == "`":
                raise self.error(f"{name}: command substitution (`…`) is not supported")
            elif ch in _SHELL_OPERATORS:
                raise self.error(f"{name}: shell operator {ch!r} is not supported in a value")
            else:
                out.append(self.advance())

    def read_single_quoted(self, name: str) -> str:
        start = self.line
        self.advance()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise self.error(f"{name}: unterminated single quote", start)
        chunk = self.text[self.pos : end]
        self.line += chunk.count("\n")
        self.pos = end + 1
        return chunk

    def read_double_quoted(self, name: str) -> str:
        start = self.line
        self.advance()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == "":
                raise self.error(f"{name}: unterminated double quote", start)
            if ch == '"':
                self.advance()
                return "".join(out)
            if ch == "\\":
                self.advance()
                nxt = self.peek()
                if nxt in ("$", "`", '"', "\\"):
                    out.append(self.advance())
                elif nxt == "\n":
                    self.advance()
                else:
                    out.append("\\")
            elif ch == "$":
                out.append(self.read_dollar(name))
            elif ch == "`":
                raise self.error(f"{name}: command substitution (`…`) is not supported")
            else:
                out.append(self.advance())

    def read_dollar(self, name: str) -> str:
        self.advance()  # the '$'
        ch = self.peek()
        if ch == "(":
            raise self.error(f"{name}: command substitution $(…) is not supported")
        if ch == "{":
            return self.read_braced(name)
        ref = self.read_name()
        if ref:
            return self.values.get(ref, "")
        if ch and (ch.isdigit() or ch in "@*#?-$!"):
            raise self.error(f"{name}: special parameter ${ch} is not supported")
        return "$"  # a lone '$' is literal in sh

    def read_braced(self, name: str) -> str:
        close = self.text.find("}", self.pos)
        newline = self.text.find("\n", self.pos)
        if close < 0 or (0 <= newline < close):
            raise self.error(f"{name}: unterminated ${{…}}")
        body = self.text[self.pos + 1 : close]
        self.pos = close + 1
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?", body, re.DOTALL)
        if not m or (m.group(3) is not None and re.search(r"[$`\\'\"]", m.group(3))):
            raise self.error(f"{name}: unsupported expansion ${{{body}}}")
        ref, op, default = m.groups()
        value = self.values.get(ref)
        if op is None:
            return value or ""
        if op == ":-":
            return value if value else default
        return value if value is not None else default

    # -- statements -----------------------------------------------------------------------------

    def statement(self) -> Assignment | None:
        """Read one statement; None for a blank line, a comment or a bare ``export NAME``."""
        self.skip_blanks()
        if self.at_end_of_statement():
            self.end_statement()
            return None
        first_line = self.line
        name = self.read_name()
        exported = False
        if name == "export" and self.peek() in (" ", "\t"):
            exported = True
            self.skip_blanks()
            name = self.read_name()
            if name and self.at_end_of_statement():
                # ``export NAME`` (no value) only marks the variable; nothing to record.
                self.end_statement()
                return None
        append = False
        if name and self.text.startswith("+=", self.pos):
            append = True
            self.pos += 2
        elif name and self.peek() == "=":
            self.pos += 1
        else:
            start = self.text.rfind("\n", 0, self.pos) + 1
            end = self.text.find("\n", self.pos)
            shown = self.text[start : end if end >= 0 else len(self.text)].strip()[:60]
            raise self.error(f"cannot understand {shown!r}: only VAR=value lines are supported")
        value = self.read_word(name)
        self.skip_blanks()
        if not self.at_end_of_statement():
            raise self.error(
                f"{name}: more than one word after '=' (quote values that contain spaces)"
            )
        last_line = self.line
        self.end_statement()
        if append:
            value = self.values.get(name, "") + value
        self.values[name] = value
        return Assignment(name, value, append, exported, first_line, last_line)


def parse_assignments(text: str, filename: str) -> list[Assignment]:
    """Every assignment in ``text`` in file order, values fully expanded.

    Raises :class:`ShellSyntaxError` (a :class:`ConfigError`) naming ``filename`` and the line.
    """
    scanner = _Scanner(text, filename)
    found: list[Assignment] = []
    while scanner.peek():
        stmt = scanner.statement()
        if stmt is not None:
            found.append(stmt)
    return found
