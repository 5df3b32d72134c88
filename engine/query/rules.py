"""A *question*, as JupiterOne's alert rules hold one: named J1QL queries and a condition on
their answers, e.g. ``queries.query0.total > 0``.

A condition compares a query's ``total`` (the number of items it answered) with a number, with
``AND``, ``OR`` and parentheses; it is given as text or in JupiterOne's list form::

    queries.expiring.total > 0 OR (queries.admins.total >= 3 AND queries.people.total = 0)
    ["AND", ["queries.query0.total", ">", 0]]            # JupiterOne's rule JSON

Operators: ``= == === != !== < > <= >=``. Without a condition a question fires when its first
query answered anything (``queries.query0.total > 0``, JupiterOne's default).

All of a question's queries run in one read transaction, with one clock for ``date.now``.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from .execute import Answer, CompiledQuery
from .lexer import END, NAME, NUMBER, OP, PUNCT, Source, Token, tokenize

if TYPE_CHECKING:
    from ..store.connect import Store

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    "===": operator.eq,
    "!=": operator.ne,
    "!==": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Total:
    """``queries.<query>.total <op> <number>``."""

    query: str
    op: str
    number: float

    def holds(self, totals: dict[str, int]) -> bool:
        return _COMPARE[self.op](totals[self.query], self.number)

    def text(self) -> str:
        number = int(self.number) if float(self.number).is_integer() else self.number
        return f"queries.{self.query}.total {self.op} {number}"


@dataclass(frozen=True)
class Junction:
    kind: str  # AND | OR
    items: tuple[Condition, ...]

    def holds(self, totals: dict[str, int]) -> bool:
        results = (item.holds(totals) for item in self.items)
        return all(results) if self.kind == "AND" else any(results)

    def text(self) -> str:
        return f" {self.kind} ".join(f"({i.text()})" if isinstance(i, Junction) else i.text() for i in self.items)


Condition = Total | Junction


def _total(ref: str, op: str, number: Any, where: Callable[[str], QueryError], names: list[str]) -> Total:
    parts = ref.split(".")
    if len(parts) != 3 or parts[0] != "queries" or parts[2] != "total":
        raise where(f"expected queries.<name>.total, not {ref!r}")
    if parts[1] not in names:
        raise where(f"no query is named {parts[1]!r} (queries: {', '.join(names)})")
    if op not in _COMPARE:
        raise where(f"unknown comparison {op!r} (use {' '.join(_COMPARE)})")
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise where(f"a total compares with a number, not {number!r}")
    return Total(parts[1], op, number)


def parse_condition(text: str, names: list[str], source_name: str = "condition") -> Condition:
    """A condition written as text; raises QueryError at the column of the problem."""
    source = Source(text, source_name)
    tokens = tokenize(source)
    position = 0

    def peek() -> Token:
        return tokens[position]

    def take() -> Token:
        nonlocal position
        token = tokens[position]
        position = min(position + 1, len(tokens) - 1)
        return token

    def disjunction() -> Condition:
        items = [conjunction()]
        while peek().is_word("OR"):
            take()
            items.append(conjunction())
        return items[0] if len(items) == 1 else Junction("OR", tuple(items))

    def conjunction() -> Condition:
        items = [factor()]
        while peek().is_word("AND"):
            take()
            items.append(factor())
        return items[0] if len(items) == 1 else Junction("AND", tuple(items))

    def factor() -> Condition:
        token = take()
        if token.kind == PUNCT and token.text == "(":
            inner = disjunction()
            closing = take()
            if not (closing.kind == PUNCT and closing.text == ")"):
                raise source.error(closing.offset, f"expected ')', found {closing.describe()}")
            return inner
        if token.kind != NAME:
            raise source.error(token.offset, f"expected queries.<name>.total, found {token.describe()}")
        op = take()
        if op.kind != OP:
            raise source.error(op.offset, f"expected a comparison (> 0, = 0, ...), found {op.describe()}")
        op_text = op.text
        while op_text in ("=", "==", "!=") and peek().kind == OP and peek().text == "=":
            op_text += take().text  # '==' and '===' arrive as '=' '=' ...; '!==' as '!=' '='
        sign = 1
        if peek().kind == PUNCT and peek().text == "-":
            take()
            sign = -1
        number = take()
        if number.kind != NUMBER:
            raise source.error(number.offset, f"expected a number, found {number.describe()}")
        value = sign * (float(number.text) if any(c in number.text for c in ".eE") else int(number.text))
        return _total(token.text, op_text, value, lambda m: source.error(token.offset, m), names)

    condition = disjunction()
    if peek().kind != END:
        raise source.error(peek().offset, f"expected AND, OR or the end, found {peek().describe()}")
    return condition


def list_condition(value: Any, names: list[str]) -> Condition:
    """A condition in JupiterOne's list form: ``["AND", [ref, op, number], ...]`` (nested lists
    for OR); raises ValueError with what is wrong."""

    def fail(message: str) -> QueryError:
        return QueryError(message, source="condition")

    if not isinstance(value, list) or not value:
        raise ValueError("a condition list starts with AND or OR: [AND, [queries.query0.total, '>', 0]]")
    head = value[0]
    if isinstance(head, str) and head.upper() in ("AND", "OR"):
        items = tuple(list_condition(item, names) for item in value[1:])
        if not items:
            raise ValueError(f"{head} needs at least one comparison")
        return items[0] if len(items) == 1 else Junction(head.upper(), items)
    if len(value) == 3 and isinstance(head, str):
        try:
            return _total(head, str(value[1]), value[2], fail, names)
        except QueryError as exc:
            raise ValueError(exc.message) from None
    raise ValueError(f"expected [queries.<name>.total, op, number] or [AND|OR, ...], not {value!r}")


@dataclass(frozen=True)
class Question:
    """Named queries (compiled once) and the condition on their totals."""

    queries: tuple[tuple[str, CompiledQuery], ...]
    condition: Condition

    def ask(self, store: Store, *, now: int) -> Asked:
        """Run every query (one transaction, one clock) and evaluate the condition."""
        answers: dict[str, Answer] = {}
        with store.read() as conn:
            for name, compiled in self.queries:
                answers[name] = compiled.execute(conn, store.dialect, now=now)
        totals = {name: answer.total for name, answer in answers.items()}
        return Asked(answers, totals, self.condition.holds(totals))


@dataclass(frozen=True)
class Asked:
    answers: dict[str, Answer]
    totals: dict[str, int]
    fired: bool


def default_condition(names: list[str]) -> Condition:
    return Total(names[0], ">", 0)


@dataclass(frozen=True)
class QuestionAlert:
    """A rule whose question's condition held, with what its queries answered."""

    rule: str
    description: str | None
    question: Question
    asked: Asked

    def to_json(self) -> dict:
        return {
            "rule": self.rule,
            "on": "query",
            "description": self.description,
            "condition": self.question.condition.text(),
            "queries": {
                name: {"query": answer.query, "total": answer.total, "type": answer.type, "data": answer.data}
                for name, answer in self.asked.answers.items()
            },
        }

    def lines(self, sample: int) -> list[str]:
        """The alert as text: the rule, the totals, and up to ``sample`` items of each answer."""
        totals = ", ".join(f"{name}: {total}" for name, total in self.asked.totals.items())
        lines = [f"  [{self.rule}] query: {self.question.condition.text()} ({totals})"]
        if self.description:
            lines.append(f"      {self.description}")
        for name, answer in self.asked.answers.items():
            items = answer.data["vertices"] if answer.type == "tree" else answer.data
            lines.extend(f"      {name}: {_item_text(item)}" for item in items[:sample])
            if len(items) > sample:
                lines.append(f"      {name}: ... and {len(items) - sample} more (--format json lists all)")
        return lines


def _value_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _item_text(item: Any) -> str:
    """An entity as ``_type _key "name"``; a row as ``key=value, ...``."""
    if isinstance(item, dict) and "_key" in item:
        name = item.get("displayName", item.get("name"))
        return f"{item.get('_type')} {item['_key']}" + (f" {_value_text(name)}" if name is not None else "")
    if isinstance(item, dict):
        return ", ".join(f"{k}={_value_text(v)}" for k, v in item.items())
    return _value_text(item)


# -- a rule's question, from a rules file ---------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """A problem in a rule's question: where (a path under the rule), what, and for a query or a
    condition written as text, the offset in it."""

    path: tuple
    message: str
    offset: int | None = None
    key: bool = False


def question_of(rule: dict) -> tuple[Question | None, list[Issue]]:
    """The question of a JupiterOne-style rule: ``queries`` (or ``question.queries``), and
    ``condition`` (or the OR of ``operations[].when.condition``; default: the first query's total
    is above 0). Every query is compiled here, once."""
    issues: list[Issue] = []
    queries_path: tuple = ("queries",)
    items = rule.get("queries")
    if "question" in rule:
        if "queries" in rule:
            issues.append(Issue(queries_path, "give queries or question.queries, not both"))
        queries_path = ("question", "queries")
        question = rule["question"]
        items = question.get("queries") if isinstance(question, dict) else None
    compiled = _queries(items, queries_path, issues)
    if issues or not compiled:
        return None, issues
    names = [name for name, _ in compiled]
    conditions = []
    for where, value in _conditions(rule, issues):
        try:
            conditions.append(parse_condition(value, names) if isinstance(value, str) else list_condition(value, names))
        except QueryError as exc:
            issues.append(Issue(where, exc.message, exc.offset))
        except ValueError as exc:
            issues.append(Issue(where, str(exc)))
    if issues:
        return None, issues
    if not conditions:
        condition: Condition = default_condition(names)
    else:
        condition = conditions[0] if len(conditions) == 1 else Junction("OR", tuple(conditions))
    return Question(tuple(compiled), condition), issues


def _queries(items: Any, path: tuple, issues: list[Issue]) -> list[tuple[str, CompiledQuery]]:
    if not isinstance(items, list) or not items:
        issues.append(Issue(path, "must be a list of queries: - {name: query0, query: FIND ...}"))
        return []
    found: list[tuple[str, CompiledQuery]] = []
    for number, entry in enumerate(items):
        where = path + (number,)
        text_path = where if isinstance(entry, str) else where + ("query",)
        entry = {"query": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict):
            issues.append(Issue(where, "a query is a mapping: {name: query0, query: FIND ...}"))
            continue
        for key in entry:
            if key not in ("name", "query", "version"):
                issues.append(Issue(where + (str(key),), f"unknown field '{key}' (name, query, version)", key=True))
        name, text = entry.get("name", f"query{number}"), entry.get("query")
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            issues.append(Issue(where + ("name",), "a query's name is letters, digits and _ (query0)"))
        elif any(name == known for known, _ in found):
            issues.append(Issue(where + ("name",), f"two queries are named {name!r}"))
        elif not isinstance(text, str) or not text.strip():
            issues.append(Issue(text_path, "missing the J1QL query (query: FIND ...)"))
        else:
            try:
                found.append((name, CompiledQuery(text, name)))
            except QueryError as exc:
                issues.append(Issue(text_path, exc.message, exc.offset))
    return found


def _conditions(rule: dict, issues: list[Issue]) -> list[tuple[tuple, Any]]:
    """Where the rule states a condition, and what it says."""
    found: list[tuple[tuple, Any]] = []
    if "condition" in rule:
        found.append((("condition",), rule["condition"]))
    operations = rule.get("operations")
    if operations is not None and not isinstance(operations, list):
        issues.append(Issue(("operations",), "must be a list of {when: {condition: ...}}"))
        return found
    for number, operation in enumerate(operations or ()):
        when = operation.get("when") if isinstance(operation, dict) else None
        if isinstance(when, dict) and "condition" in when:
            found.append((("operations", number, "when", "condition"), when["condition"]))
    return found
