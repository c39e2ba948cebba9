"""A small CQL parser for content search: enough of Confluence's grammar to be strict.

Supported: `type`, `space`, `creator`, `contributor`, `id`, `title`, `lastmodified`, `created`
with = != > >= < <= ~ in / not in, `and`, `or`, parentheses and `order by F [asc|desc]`.
Dates have minute resolution, as on Cloud: "yyyy/MM/dd HH:mm", "yyyy/MM/dd", "yyyy-MM-dd",
"yyyy-MM-dd HH:mm" and now("-7d"). A content date is compared at minute precision, so
`lastmodified > "2026/05/01 10:30"` does NOT match an edit at 10:30:45 [inferred from the
minute resolution; Atlassian does not document the tie rule]. Anything else is a 400.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Item = dict[str, Any]
Predicate = Callable[[Item], bool]

TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|(?P<op>>=|<=|!=|=|>|<|~|\(|\)|,)'
    r"|(?P<word>[A-Za-z0-9_.:\-/+]+))"
)
FIELDS = {"type", "space", "space.key", "creator", "contributor", "id", "title", "lastmodified",
          "created"}  # fmt: skip
DATE_FIELDS = {"lastmodified", "created"}
CONTENT_TYPES = {"page", "blogpost", "comment", "attachment"}
MINUTE = 60_000
DAY = 86_400_000


class CQLError(ValueError):
    """The query cannot be parsed; the route answers 400."""


@dataclass
class Query:
    """A parsed query: a predicate and an optional sort."""

    predicate: Predicate
    order_field: str | None = None
    descending: bool = False


def tokenize(text: str) -> list[str]:
    """Split CQL into tokens; quoted strings keep their quotes."""
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise CQLError(f"unexpected character at {pos}")
        tokens.append(m.group(m.lastgroup or "word"))
        pos = m.end()
    return tokens


def parse_date(value: str, utc_offset_ms: int = 0) -> tuple[int, int]:
    """Return (start ms, resolution ms) of a CQL date literal or now() expression.

    A literal names a wall-clock time in the reading zone (``utc_offset_ms`` east of UTC:
    Cloud reads it in the user's or site's zone, CONFCLOUD-70966); now() is an instant.
    """
    if m := re.fullmatch(r'now\(\s*(?:"([+-]?\d+)([mhdw])")?\s*\)', value):
        now = int(time.time() * 1000) // MINUTE * MINUTE
        if not m.group(1):
            return now, MINUTE
        unit = {"m": MINUTE, "h": 60 * MINUTE, "d": DAY, "w": 7 * DAY}[m.group(2)]
        return now + int(m.group(1)) * unit, MINUTE
    for fmt, res in (
        ("%Y/%m/%d %H:%M", MINUTE),
        ("%Y-%m-%d %H:%M", MINUTE),
        ("%Y/%m/%d", DAY),
        ("%Y-%m-%d", DAY),
    ):
        try:
            dt = datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        return int(dt.timestamp() * 1000) - utc_offset_ms, res
    raise CQLError(f"unrecognised date {value!r}; use yyyy/MM/dd HH:mm or yyyy-MM-dd")


class Parser:
    """Recursive-descent parser over a token list."""

    def __init__(
        self, tokens: list[str], resolve_user: Callable[[int], str], utc_offset_ms: int = 0
    ) -> None:
        self.tokens = tokens
        self.pos = 0
        self.user = resolve_user
        self.utc_offset_ms = utc_offset_ms

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise CQLError("unexpected end of query")
        self.pos += 1
        return tok

    def keyword(self, *words: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.lower() in words:
            self.pos += 1
            return True
        return False

    def parse(self) -> Query:
        pred = self.expr()
        query = Query(pred)
        if self.keyword("order"):
            if not self.keyword("by"):
                raise CQLError("expected 'by' after 'order'")
            field = self.take().lower()
            if field not in FIELDS:
                raise CQLError(f"cannot order by {field}")
            query.order_field = field
            if self.keyword("desc"):
                query.descending = True
            else:
                self.keyword("asc")
        if self.peek() is not None:
            raise CQLError(f"unexpected {self.peek()!r}")
        return query

    def expr(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda item: any(p(item) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.atom()]
        while self.keyword("and"):
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else (lambda item: all(p(item) for p in parts))

    def atom(self) -> Predicate:
        if self.peek() == "(":
            self.take()
            inner = self.expr()
            if self.take() != ")":
                raise CQLError("expected )")
            return inner
        field = self.take().lower()
        if field not in FIELDS:
            raise CQLError(f"unknown field {field!r}")
        negate = self.keyword("not")
        if self.keyword("in"):
            values = self.value_list()
            return self.membership(field, values, negate=negate)
        if negate:
            raise CQLError("expected 'in' after 'not'")
        op = self.take()
        if op not in ("=", "!=", ">", ">=", "<", "<=", "~"):
            raise CQLError(f"expected an operator after {field}, got {op!r}")
        return self.comparison(field, op, self.value())

    def value(self) -> str:
        tok = self.take()
        if tok in ("(", ")", ",", "=", "!=", ">", ">=", "<", "<=", "~") or tok.lower() in (
            "and",
            "or",
            "order",
        ):
            raise CQLError(f"expected a value, got {tok!r}")
        if tok[0] in "\"'":
            return tok[1:-1]
        if tok.lower() == "now" or tok.lower().startswith("now("):
            return self.now_call(tok)
        return tok

    def now_call(self, tok: str) -> str:
        text = tok
        if self.peek() == "(":
            text += self.take()
            while (t := self.take()) != ")":
                text += t
            text += ")"
        return text

    def value_list(self) -> list[str]:
        if self.take() != "(":
            raise CQLError("expected ( after in")
        values = [self.value()]
        while (tok := self.take()) == ",":
            values.append(self.value())
        if tok != ")":
            raise CQLError("expected ) to close the list")
        return values

    def getter(self, field: str) -> Callable[[Item], Any]:
        getters: dict[str, Callable[[Item], Any]] = {
            "type": lambda it: it["type"],
            "space": lambda it: it["space"][0],
            "space.key": lambda it: it["space"][0],
            "creator": lambda it: self.user(it["creator"]),
            "id": lambda it: it["id"],
            "title": lambda it: it["title"].lower(),
            # Cloud indexes dates to the minute, so comparisons happen at that precision.
            "lastmodified": lambda it: it["modified"] // MINUTE * MINUTE,
            "created": lambda it: it["created"] // MINUTE * MINUTE,
        }
        if field not in getters:
            raise CQLError(f"{field} needs = or in")
        return getters[field]

    def membership(self, field: str, values: list[str], *, negate: bool) -> Predicate:
        if field == "type" and not set(values) <= CONTENT_TYPES:
            raise CQLError(f"unknown content type in {values}")
        if field == "contributor":
            wanted = set(values)
            pred: Predicate = lambda it: bool(  # noqa: E731
                {self.user(it["creator"]), self.user(it["modifier"])} & wanted
            )
        else:
            get, wanted = self.getter(field), set(values)
            pred = lambda it: get(it) in wanted  # noqa: E731
        return (lambda it: not pred(it)) if negate else pred

    def comparison(self, field: str, op: str, value: str) -> Predicate:
        if field in DATE_FIELDS:
            start, res = parse_date(value, self.utc_offset_ms)
            get = self.getter(field)
            ops: dict[str, Predicate] = {
                ">=": lambda it: get(it) >= start,
                ">": lambda it: get(it) >= start + res if res == DAY else get(it) > start,
                "<": lambda it: get(it) < start,
                "<=": lambda it: get(it) < start + res,
                "=": lambda it: start <= get(it) < start + res,
                "!=": lambda it: not start <= get(it) < start + res,
            }
            if op not in ops:
                raise CQLError(f"operator {op} is not valid for dates")
            return ops[op]
        if field == "type" and op in ("=", "!=") and value not in CONTENT_TYPES:
            raise CQLError(f"unknown content type {value!r}")
        if op == "~":
            if field != "title":
                raise CQLError(f"~ is only valid for text fields, not {field}")
            needle = value.lower()
            return lambda it: needle in it["title"].lower()
        if op in ("=", "!="):
            return self.membership(field, [value], negate=op == "!=")
        raise CQLError(f"operator {op} is not valid for {field}")


def parse(text: str, resolve_user: Callable[[int], str], utc_offset_ms: int = 0) -> Query:
    """Parse a CQL query; raise CQLError with a short reason when it is not valid.

    ``utc_offset_ms``: the zone date literals are read in (see parse_date).
    """
    tokens = tokenize(text)
    if not tokens:
        raise CQLError("empty query")
    return Parser(tokens, resolve_user, utc_offset_ms).parse()
