"""CQL2-text tokens: what :mod:`cimtwin.api.cql2` parses. Signs bind to numbers only where no
operand precedes them (``x-1`` is a subtraction), and SQL comment markers are refused by name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cimtwin.api.cql2_ast import (
    ARRAY_FUNCTIONS,
    GEOMETRY_TYPES,
    SPATIAL_FUNCTIONS,
    STRING_FUNCTIONS,
    TEMPORAL_FUNCTIONS,
    CQL2Error,
)


@dataclass(frozen=True)
class Token:
    kind: str  # NUM STR IDENT QIDENT OP ARITH LP RP COMMA EOF
    value: Any
    pos: int  # 1-based
    text: str


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_IDENT = re.compile(r"[^\W\d]\w*")
_OPERATORS = ("<=", ">=", "<>", "=", "<", ">")
_ARITH = "+-*/%^"
_PUNCT = {"(": "LP", ")": "RP", ",": "COMMA"}
#: words that are not property names (quote a property that is spelt like one)
KEYWORDS = {
    "AND",
    "OR",
    "NOT",
    "LIKE",
    "BETWEEN",
    "IN",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "TIMESTAMP",
    "DATE",
    "INTERVAL",
    "DIV",
    *STRING_FUNCTIONS,
    *SPATIAL_FUNCTIONS,
    *TEMPORAL_FUNCTIONS,
    *ARRAY_FUNCTIONS,
    *GEOMETRY_TYPES,
}


def _ends_operand(tok: Token | None) -> bool:
    """After this token a '+' or '-' is an operator, not the sign of a number."""
    if tok is None:
        return False
    if tok.kind in ("NUM", "STR", "QIDENT", "RP"):
        return True
    return tok.kind == "IDENT" and (
        tok.value.upper() not in KEYWORDS or tok.value.upper() in ("TRUE", "FALSE")
    )


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        pos = i + 1
        if c in ("'", '"'):
            j, buf = i + 1, []
            while True:
                if j >= n:
                    what = "string literal" if c == "'" else "quoted property name"
                    raise CQL2Error(f"unterminated {what} starting with {text[i : i + 12]!r}", pos)
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:
                        buf.append(c)
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            value = "".join(buf)
            if c == '"' and not value:
                raise CQL2Error("empty quoted property name", pos)
            tokens.append(Token("STR" if c == "'" else "QIDENT", value, pos, text[i : j + 1]))
            i = j + 1
            continue
        if c in _PUNCT:
            tokens.append(Token(_PUNCT[c], c, pos, c))
            i += 1
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op:
            tokens.append(Token("OP", op, pos, op))
            i += len(op)
            continue
        if text.startswith("--", i) or text.startswith("/*", i):
            raise CQL2Error(f"{text[i : i + 2]!r} starts an SQL comment; CQL2 has no comments", pos)
        if c in _ARITH and (c not in "+-" or _ends_operand(tokens[-1] if tokens else None)):
            tokens.append(Token("ARITH", c, pos, c))
            i += 1
            continue
        m = _NUMBER.match(text, i)
        if m:
            t = m.group()
            tokens.append(Token("NUM", int(t) if _INTEGER.fullmatch(t) else float(t), pos, t))
            i = m.end()
            continue
        if c in "+-":  # a sign before a non-number: unary plus or minus
            tokens.append(Token("ARITH", c, pos, c))
            i += 1
            continue
        m = _IDENT.match(text, i)
        if m:
            tokens.append(Token("IDENT", m.group(), pos, m.group()))
            i = m.end()
            continue
        hint = " (CQL2 writes 'not equal' as <>)" if c == "!" else ""
        raise CQL2Error(f"unexpected character {c!r}{hint}", pos)
    tokens.append(Token("EOF", None, n + 1, ""))
    return tokens
