"""J1QL text to tokens, each with its position (1-based line and column) for error messages.

Tokens:

    NAME      a word or a dotted path: ``Host``, ``aws_instance``, ``tag.AccountName``, ``u.email``,
              ``date.now`` (segments after a dot may start with a digit: ``tag.2fa``)
    BRACKET   a bracketed property name, its text without the brackets: ``[tag.special-name]``
    STRING    'single' or "double" quoted; a backslash escapes the next character
    NUMBER    ``42``, ``4.2``, ``1e3`` (a minus sign is its own token: ``date.now-24hr``)
    DATE      ``date(2024-01-31)``: the text between the parentheses, unparsed
    OP        ``= != < > <= >= ~= ^= $= !~= !^= !$=``
    ARROW     ``>>`` or ``<<``
    PUNCT     ``( ) | , * ! . + - ?`` and the unsupported ``# $ {``
    END       the end of the query

Keywords are NAME tokens; the parser gives them meaning by position (case-insensitively), so a
property may be called ``limit``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import QueryError

NAME, BRACKET, STRING, NUMBER, DATE, OP, ARROW, PUNCT, END = (
    "NAME",
    "BRACKET",
    "STRING",
    "NUMBER",
    "DATE",
    "OP",
    "ARROW",
    "PUNCT",
    "END",
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_DATE = re.compile(r"date\s*\(", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
# longest first: '!~=' before '!', '>>' before '>='
_SYMBOLS = ("!~=", "!^=", "!$=", "!=", "~=", "^=", "$=", "<=", ">=", ">>", "<<", "=", "<", ">")
_PUNCT = "()|,*!.+-?#${}"


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # the value: a name, the string's content, an operator
    offset: int  # 0-based offset in the query
    line: int
    column: int

    def is_word(self, *words: str) -> bool:
        """Is this the keyword (or one of the keywords) ``words`` (case-insensitive)?"""
        return self.kind == NAME and self.text.upper() in words

    def describe(self) -> str:
        """How an error message names the token."""
        if self.kind == END:
            return "the end of the query"
        if self.kind == STRING:
            return f"the string {self.text!r}"
        if self.kind == BRACKET:
            return f"'[{self.text}]'"
        if self.kind == DATE:
            return f"'date({self.text})'"
        return f"'{self.text}'"


class Source:
    """The query text, and positions in it."""

    def __init__(self, text: str, name: str = "query"):
        self.text = text
        self.name = name
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        line = 0
        for index, start in enumerate(self._line_starts):
            if start > offset:
                break
            line = index
        return line + 1, offset - self._line_starts[line] + 1

    def error(self, offset: int, message: str) -> QueryError:
        line, column = self.position(offset)
        return QueryError(message, source=self.name, line=line, column=column, offset=offset, text=self.text)


def tokenize(source: Source) -> list[Token]:
    """Every token of ``source``, ending with one END token; raises QueryError at a character
    that starts no token, or an unterminated string, bracket or date."""
    text = source.text
    tokens: list[Token] = []
    offset = 0

    def add(kind: str, value: str, start: int) -> None:
        line, column = source.position(start)
        tokens.append(Token(kind, value, start, line, column))

    while True:
        space = _SPACE.match(text, offset)
        if space:
            offset = space.end()
        if offset >= len(text):
            add(END, "", len(text))
            return tokens
        char = text[offset]
        date = _DATE.match(text, offset)
        if date and (offset == 0 or not _is_name_char(text[offset - 1])):
            close = text.find(")", date.end())
            if close < 0:
                raise source.error(offset, "date( is not closed: expected ')', e.g. date(2024-01-31)")
            add(DATE, text[date.end() : close].strip(), offset)
            offset = close + 1
            continue
        name = _NAME.match(text, offset)
        if name:
            add(NAME, name.group(), offset)
            offset = name.end()
            continue
        number = _NUMBER.match(text, offset)
        if number:
            add(NUMBER, number.group(), offset)
            offset = number.end()
            continue
        if char in "'\"":
            start = offset
            value, offset = _string(source, start)
            add(STRING, value, start)
            continue
        if char == "[":
            close = text.find("]", offset + 1)
            if close < 0:
                raise source.error(offset, "'[' is not closed: expected ']' after the property name")
            inner = text[offset + 1 : close]
            if not inner.strip():
                raise source.error(offset, "empty property name '[]'")
            add(BRACKET, inner, offset)
            offset = close + 1
            continue
        symbol = next((s for s in _SYMBOLS if text.startswith(s, offset)), None)
        if symbol:
            add(ARROW if symbol in (">>", "<<") else OP, symbol, offset)
            offset += len(symbol)
            continue
        if char in _PUNCT:
            add(PUNCT, char, offset)
            offset += 1
            continue
        raise source.error(offset, f"unexpected character {char!r}")


def _string(source: Source, start: int) -> tuple[str, int]:
    """The content of the string starting at ``start`` and the offset after it."""
    text = source.text
    quote = text[start]
    out: list[str] = []
    offset = start + 1
    while offset < len(text):
        char = text[offset]
        if char == "\\" and offset + 1 < len(text):
            out.append(text[offset + 1])
            offset += 2
            continue
        if char == quote:
            return "".join(out), offset + 1
        out.append(char)
        offset += 1
    raise source.error(start, f"the string starting here is not closed: expected {quote}")


def _is_name_char(char: str) -> bool:
    return char.isalnum() or char in "_."
