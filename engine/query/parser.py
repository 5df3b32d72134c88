"""Tokens to a :class:`~engine.query.ast.Query`: a recursive-descent parser of J1QL.

The grammar (docs/j1ql.md has it with an example of every construct)::

    query      = FIND [UNIQUE] selector {hop} [WHERE expr] [RETURN returns]
                 [ORDER BY order {"," order}] [SKIP int] [LIMIT int]      (SKIP and LIMIT in any order)
    selector   = targets {WITH expr | AS name}                            (each at most once)
    targets    = "*" | name | "(" name {"|" name} ")"                      (TitleCase: a class; else a type)
    hop        = THAT ["!"] verbs [TO] {">>" | "<<" | AS name} selector
    verbs      = RELATES [TO] | name | "(" name {"|" name} ")"
    expr       = conj {OR conj}
    conj       = factor {AND factor}
    factor     = "(" expr ")" | property op operand
    property   = name | "[" any text "]"                  (WHERE: alias "." name | alias ".[" any text "]")
    op         = "=" | "!=" | "<" | ">" | "<=" | ">=" | "~=" | "^=" | "$=" | "!~=" | "!^=" | "!$="
    operand    = value | "(" value {OR value} ")" | "(" value {AND value} ")"
    value      = string | ["-"] number | true | false | undefined | date | alias.property (WHERE only)
    date       = date.now {("+" | "-") number unit} | date(ISO-8601)
    unit       = hour | hr | hours | hrs | day | days | month | mo | months | mos | year | yr | years | yrs
    returns    = TREE | item {"," item}
    item       = (alias | alias.property | alias.* | func "(" alias ["." property] ")") [AS label]
    func       = COUNT | MIN | MAX | AVG | SUM
    order      = alias.property [ASC | DESC]

Keywords are case-insensitive. Every error names the line and column of the token that could
not be read (``query:1:23: expected a property name, found '='``).
"""

from __future__ import annotations

from .ast import (
    And,
    Comparison,
    Expr,
    Group,
    Hop,
    Literal,
    Or,
    OrderItem,
    Query,
    Ref,
    RelativeDate,
    ReturnItem,
    Selector,
    StaticDate,
    Target,
    Undefined,
    Value,
)
from .dates import static_ms, unit
from .lexer import BRACKET, DATE, END, NAME, NUMBER, OP, PUNCT, STRING, Source, Token, tokenize

AGGREGATES = ("COUNT", "MIN", "MAX", "AVG", "SUM")
COMPARISONS = ("=", "!=", "<", ">", "<=", ">=", "~=", "^=", "$=", "!~=", "!^=", "!$=")
CLAUSES = ("WHERE", "RETURN", "ORDER", "SKIP", "LIMIT", "THAT")
_UNSUPPORTED_FUNCTIONS = ("CONCAT",)


def parse(text: str, name: str = "query") -> Query:
    """Parse ``text``; raises :class:`~engine.errors.QueryError` at the first problem."""
    return Parser(Source(text, name)).query()


class Parser:
    def __init__(self, source: Source):
        self.source = source
        self.tokens = tokenize(source)
        self.index = 0

    # -- helpers ------------------------------------------------------------------------------

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.token
        if token.kind != END:
            self.index += 1
        return token

    def error(self, message: str, token: Token | None = None):
        token = token or self.token
        return self.source.error(token.offset, message)

    def expected(self, what: str, token: Token | None = None):
        token = token or self.token
        return self.error(f"expected {what}, found {token.describe()}", token)

    def word(self, *words: str) -> bool:
        """Consume the keyword if it is next."""
        if self.token.is_word(*words):
            self.advance()
            return True
        return False

    def punct(self, char: str) -> bool:
        if self.token.kind == PUNCT and self.token.text == char:
            self.advance()
            return True
        return False

    def expect_punct(self, char: str, what: str) -> Token:
        if self.token.kind == PUNCT and self.token.text == char:
            return self.advance()
        raise self.expected(what)

    def name(self, what: str) -> Token:
        if self.token.kind != NAME:
            raise self.expected(what)
        return self.advance()

    # -- the query ----------------------------------------------------------------------------

    def query(self) -> Query:
        if self.token.kind == STRING:
            raise self.error('full-text search (FIND "text") is not supported; filter properties with WITH')
        if not self.word("FIND"):
            raise self.expected("FIND")
        unique = self.word("UNIQUE")
        start = self.selector("FIND")
        hops = []
        while self.token.is_word("THAT"):
            hops.append(self.hop())
        self._unsupported_after_selector()
        where = self.expr(in_where=True) if self.word("WHERE") else None
        tree, returns = False, tuple[ReturnItem, ...]()
        if self.word("RETURN"):
            tree, returns = self.returns()
        order = self.order() if self.token.is_word("ORDER") else ()
        skip = limit = None
        while self.token.is_word("SKIP", "LIMIT"):
            keyword = self.advance()
            value = self.count(keyword.text.upper())
            if keyword.text.upper() == "SKIP":
                if skip is not None:
                    raise self.error("SKIP is given twice", keyword)
                skip = value
            else:
                if limit is not None:
                    raise self.error("LIMIT is given twice", keyword)
                limit = value
        if self.token.kind != END:
            raise self.expected(self._what_may_follow(hops, where, returns, tree), self.token)
        return Query(self.source.text, unique, start, tuple(hops), where, tree, returns, order, skip, limit)

    def _what_may_follow(self, hops, where, returns, tree) -> str:
        if returns or tree:
            return "',', ORDER BY, SKIP, LIMIT or the end of the query"
        return "THAT, WHERE, RETURN, ORDER BY, SKIP, LIMIT or the end of the query"

    def _unsupported_after_selector(self) -> None:
        token = self.token
        if token.kind == PUNCT and token.text == "(":
            raise self.error("optional traversals '(THAT ...)?' are not supported")

    def count(self, keyword: str) -> int:
        token = self.token
        if token.kind != NUMBER or not token.text.isdigit():
            raise self.expected(f"a whole number after {keyword}")
        self.advance()
        return int(token.text)

    # -- selectors and hops -------------------------------------------------------------------

    def selector(self, after: str) -> Selector:
        token = self.token
        if token.kind == PUNCT and token.text == "#":
            raise self.error("smart classes (#Name) are not supported; name the classes, e.g. FIND (Host|Device)")
        if token.kind == PUNCT and token.text == "$":
            raise self.error("parameters (${ ... }) are not supported")
        if token.kind == STRING:
            raise self.error("full-text search (a quoted string) is not supported; filter properties with WITH")
        if self.punct("*"):
            targets: tuple[Target, ...] = ()
        elif self.punct("("):
            found = [self.target()]
            while self.punct("|"):
                found.append(self.target())
            self.expect_punct(")", "'|' or ')' to close the list of classes and types")
            targets = tuple(found)
        elif token.kind == NAME and not token.is_word(*CLAUSES):
            targets = (self.target(),)
        else:
            raise self.expected(f"a class, a type, '*' or '(' after {after}")
        filter_: Expr | None = None
        alias: str | None = None
        alias_offset = token.offset
        while True:
            keyword = self.token
            if self.word("WITH"):
                if filter_ is not None:
                    raise self.error("WITH is given twice for these entities: join the filters with AND", keyword)
                filter_ = self.expr(in_where=False)
            elif self.word("AS"):
                if alias is not None:
                    raise self.error("AS is given twice for these entities", keyword)
                alias_offset = self.token.offset
                alias = self.alias_name()
            else:
                return Selector(targets, filter_, alias, token.offset, alias_offset)

    def target(self) -> Target:
        token = self.token
        if token.kind == STRING:
            raise self.error("full-text search (a quoted string) is not supported; filter properties with WITH")
        name = self.name("a class (TitleCase) or a type (snake_case)")
        return Target(name.text, name.text[:1].isupper(), name.offset)

    def alias_name(self) -> str:
        token = self.token
        if token.kind != NAME or "." in token.text:
            raise self.expected("an alias name (letters, digits, _)")
        return self.advance().text

    def hop(self) -> Hop:
        start = self.advance()  # THAT
        negated = self.punct("!")
        verbs: tuple[str, ...]
        if self.word("RELATES"):
            self.word("TO")
            verbs = ()
        elif self.punct("("):
            found = [self.verb()]
            while self.punct("|"):
                found.append(self.verb())
            self.expect_punct(")", "'|' or ')' to close the list of verbs")
            verbs = tuple(found)
            self.word("TO")
        else:
            verbs = (self.verb(),)
            self.word("TO")
        direction, alias = "both", None
        alias_offset = start.offset
        while True:
            token = self.token
            if token.kind == "ARROW":
                if direction != "both":
                    raise self.error("the direction is given twice", token)
                direction = "out" if token.text == ">>" else "in"
                self.advance()
            elif self.word("AS"):
                if alias is not None:
                    raise self.error("AS is given twice for this relationship", token)
                alias_offset = self.token.offset
                alias = self.alias_name()
            else:
                break
        entity = self.selector(f"THAT {'!' if negated else ''}{'|'.join(verbs) or 'RELATES TO'}")
        return Hop(negated, verbs, direction, alias, entity, start.offset, alias_offset)

    def verb(self) -> str:
        token = self.token
        if token.kind != NAME or "." in token.text or token.is_word(*CLAUSES):
            raise self.expected("a relationship verb (HAS, IS, ...) or RELATES TO")
        return self.advance().text.upper()

    # -- filters ------------------------------------------------------------------------------

    def expr(self, *, in_where: bool) -> Expr:
        start = self.token.offset
        items = [self.conjunction(in_where)]
        while self.word("OR"):
            items.append(self.conjunction(in_where))
        return items[0] if len(items) == 1 else Or(tuple(items), start)

    def conjunction(self, in_where: bool) -> Expr:
        start = self.token.offset
        items = [self.factor(in_where)]
        while self.word("AND"):
            items.append(self.factor(in_where))
        return items[0] if len(items) == 1 else And(tuple(items), start)

    def factor(self, in_where: bool) -> Expr:
        if self.punct("("):
            inner = self.expr(in_where=in_where)
            self.expect_punct(")", "AND, OR or ')'")
            return inner
        ref = self.property_ref(in_where)
        token = self.token
        if token.kind != OP or token.text not in COMPARISONS:
            raise self.expected("a comparison (=, !=, <, >, <=, >=, ~=, ^=, $=, !~=, !^=, !$=)")
        self.advance()
        if token.text in ("<", ">", "<=", ">=") and self.token.kind == OP:
            raise self.expected("a value")
        operand: Value | Group
        if self.token.kind == PUNCT and self.token.text == "(":
            operand = self.group(in_where)
        else:
            operand = self.value(in_where)
        return Comparison(ref, token.text, operand, ref.offset)

    def property_ref(self, in_where: bool) -> Ref:
        token = self.token
        if token.kind == BRACKET and not in_where:
            self.advance()
            return Ref(None, token.text, token.offset)
        if token.kind != NAME or token.is_word("AND", "OR") or (not in_where and token.is_word(*CLAUSES)):
            what = "alias.property (WHERE filters name an alias: u.email)" if in_where else "a property name"
            raise self.expected(what)
        if not in_where:
            return Ref(None, self.advance().text, token.offset)
        return self.alias_ref("alias.property (WHERE filters name an alias: u.email)")

    def alias_ref(self, what: str) -> Ref:
        """``alias.name``, ``alias.[special-name]``."""
        token = self.token
        if token.kind != NAME:
            raise self.expected(what)
        self.advance()
        if "." in token.text:
            alias, name = token.text.split(".", 1)
            return Ref(alias, name, token.offset)
        if self.token.kind == PUNCT and self.token.text == "." and self.peek().kind == BRACKET:
            self.advance()
            return Ref(token.text, self.advance().text, token.offset)
        raise self.expected(what, token)

    def group(self, in_where: bool) -> Group:
        start = self.advance()  # (
        values = [self.value(in_where)]
        kind = None
        while self.token.is_word("AND", "OR"):
            joiner = self.advance().text.upper()
            if kind is not None and joiner != kind:
                joined = self.tokens[self.index - 1]
                raise self.error(f"mixing AND and OR in one list of values; use ({kind} ...) only", joined)
            kind = joiner
            values.append(self.value(in_where))
        self.expect_punct(")", "OR, AND or ')' to close the list of values")
        return Group(kind or "OR", tuple(values), start.offset)

    def value(self, in_where: bool) -> Value:
        token = self.token
        if token.kind == STRING:
            self.advance()
            return Literal(token.text, token.offset)
        if token.kind == NUMBER or (token.kind == PUNCT and token.text == "-" and self.peek().kind == NUMBER):
            sign = -1 if self.punct("-") else 1
            number = self.advance()
            return Literal(sign * _number(number.text), token.offset)
        if token.kind == DATE:
            self.advance()
            ms = static_ms(token.text)
            if ms is None:
                example = "date(2024-01-31), date(2024-01-31T10:00:00Z)"
                raise self.error(f"date({token.text}) is not an ISO-8601 date or time ({example})", token)
            return StaticDate(ms, token.text, token.offset)
        if token.kind == NAME:
            word = token.text.lower()
            if word in ("true", "false"):
                self.advance()
                return Literal(word == "true", token.offset)
            if word == "undefined":
                self.advance()
                return Undefined(token.offset)
            if word == "date.now":
                self.advance()
                return self.relative_date(token)
            if in_where and not token.is_word(*CLAUSES, "AND", "OR"):
                return self.alias_ref("a value or alias.property")
            what = "a value ('text', a number, true, false, undefined, date.now)"
            raise self.expected(f"{what}, not the name {token.text!r}")
        if token.kind == PUNCT and token.text == "$":
            raise self.error("parameters (${ ... }) are not supported")
        raise self.expected("a value ('text', a number, true, false, undefined or a date)")

    def relative_date(self, now: Token) -> RelativeDate:
        steps: list[tuple[int | float, str]] = []
        while self.token.kind == PUNCT and self.token.text in "+-" and self.peek().kind == NUMBER:
            sign = -1 if self.advance().text == "-" else 1
            amount = _number(self.advance().text)
            word = self.token
            found = unit(word.text) if word.kind == NAME else None
            if found is None:
                raise self.expected("a unit (hour, day, month, year, or hr, hrs, mo, yr ...)")
            self.advance()
            steps.append((sign * amount, found))
        return RelativeDate(tuple(steps), now.offset)

    # -- RETURN and ORDER BY ------------------------------------------------------------------

    def returns(self) -> tuple[bool, tuple[ReturnItem, ...]]:
        if self.word("TREE"):
            return True, ()
        items = [self.return_item()]
        while self.punct(","):
            items.append(self.return_item())
        return False, tuple(items)

    def return_item(self) -> ReturnItem:
        token = self.token
        if token.kind == NAME and self.peek().kind == PUNCT and self.peek().text == "(":
            function = token.text.upper()
            if function in _UNSUPPORTED_FUNCTIONS:
                raise self.error(f"{function}() is not supported in RETURN")
            if function not in AGGREGATES:
                raise self.error(f"unknown function {token.text}(); RETURN knows {', '.join(AGGREGATES)}")
            self.advance()
            self.advance()  # (
            inner = self.token
            if inner.kind == PUNCT and inner.text == "*":
                raise self.error(f"{function}(*) is not supported; count an alias: COUNT(u)")
            alias, name, star = self.returned(inner, allow_star=False)
            self.expect_punct(")", f"')' to close {function}(")
            if function != "COUNT" and name is None:
                raise self.error(f"{function}() needs alias.property, e.g. {function}(u.score)", inner)
            item = ReturnItem(alias, name, star, function.lower(), None, token.offset)
        else:
            alias, name, star = self.returned(token, allow_star=True)
            item = ReturnItem(alias, name, star, None, None, token.offset)
        if self.token.kind == OP or (self.token.kind == PUNCT and self.token.text in "+-*/"):
            raise self.error("arithmetic in RETURN is not supported")
        if self.word("AS"):
            label = self.token
            if label.kind not in (NAME, STRING):
                raise self.expected("a label after AS")
            self.advance()
            item = ReturnItem(item.alias, item.name, item.star, item.function, label.text, item.offset)
        return item

    def returned(self, token: Token, *, allow_star: bool) -> tuple[str, str | None, bool]:
        """``alias``, ``alias.name``, ``alias.[name]`` or ``alias.*``: (alias, name, star)."""
        if token.kind != NAME or token.is_word(*CLAUSES):
            raise self.expected("an alias, alias.property or alias.*")
        self.advance()
        if "." in token.text:
            alias, name = token.text.split(".", 1)
            return alias, name, False
        if self.token.kind == PUNCT and self.token.text == ".":
            self.advance()
            if self.token.kind == BRACKET:
                return token.text, self.advance().text, False
            if allow_star and self.punct("*"):
                return token.text, None, True
            raise self.expected("a property name, [name] or *" if allow_star else "a property name or [name]")
        return token.text, None, False

    def order(self) -> tuple[OrderItem, ...]:
        self.advance()  # ORDER
        if not self.word("BY"):
            raise self.expected("BY after ORDER")
        items = []
        while True:
            ref = self.alias_ref("alias.property to sort by (ORDER BY u.name)")
            descending = False
            if self.word("DESC"):
                descending = True
            else:
                self.word("ASC")
            items.append(OrderItem(ref, descending))
            if not self.punct(","):
                return tuple(items)


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)
