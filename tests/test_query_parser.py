"""The J1QL lexer, parser and dates: what a query means, and where it is wrong (line and column)."""

from __future__ import annotations

import pytest

from engine.errors import EXIT_USAGE, QueryError
from engine.query import compile_query
from engine.query.ast import And, Comparison, Group, Literal, Or, Ref, RelativeDate, StaticDate, Undefined
from engine.query.dates import shifted, static_ms
from engine.query.parser import parse


def test_keywords_are_case_insensitive_and_names_are_not():
    one = parse(
        "find unique Host with name = 'a' as h that has >> as r * return h.name order by h.name desc skip 1 limit 2"
    )
    two = parse(
        "FIND UNIQUE Host WITH name = 'a' AS h THAT HAS >> AS r * RETURN h.name ORDER BY h.name DESC SKIP 1 LIMIT 2"
    )
    assert one.unique and two.unique
    for q in (one, two):
        assert q.start.targets[0].name == "Host" and q.start.targets[0].is_class
        assert q.hops[0].verbs == ("HAS",) and q.hops[0].direction == "out" and q.hops[0].alias == "r"
        assert q.order[0].descending and (q.skip, q.limit) == (1, 2)
    assert not parse("FIND host").start.targets[0].is_class  # snake_case: a type
    assert parse("FIND aws_iam_user").start.targets[0].name == "aws_iam_user"


def test_with_and_as_in_either_order():
    a = parse("FIND Person WITH manager = undefined AS u")
    b = parse("FIND Person AS u WITH manager = undefined")
    for q in (a, b):
        assert q.start.alias == "u" and q.start.targets[0].name == "Person"
        assert isinstance(q.start.filter, Comparison) and isinstance(q.start.filter.value, Undefined)


def test_precedence_and_shorthand():
    q = parse("FIND x WITH a = 1 OR b = 2 AND (c = 3 OR d = 4)")
    assert isinstance(q.start.filter, Or)
    assert isinstance(q.start.filter.items[1], And)
    assert isinstance(q.start.filter.items[1].items[1], Or)
    group = parse("FIND x WITH p != ('a' OR \"b\" OR 3)").start.filter
    assert isinstance(group, Comparison) and group.op == "!="
    assert isinstance(group.value, Group) and group.value.kind == "OR"
    assert [v.value for v in group.value.values] == ["a", "b", 3]


def test_values():
    def value(text):
        return parse(f"FIND x WITH p = {text}").start.filter.value

    assert value("'it\\'s'") == Literal("it's", 16)
    assert value('"double"').value == "double"
    assert value("-4.5").value == -4.5 and value("10").value == 10 and value("1e3").value == 1000.0
    assert value("TRUE").value is True and value("false").value is False
    assert isinstance(value("undefined"), Undefined)
    assert value("date.now - 30 days").steps == ((-30, "day"),)
    assert value("date.now-24hr + 1 yr").steps == ((-24, "hour"), (1, "year"))
    assert value("date.now").steps == ()
    assert isinstance(value("date(2019-10-30)"), StaticDate)
    assert isinstance(value("Date.Now - 2 mos"), RelativeDate)


def test_where_names_aliases_and_brackets():
    q = parse(
        "FIND User AS u THAT IS Person AS p WHERE u.email = p.email AND u.[tag.x-y] = 'a' RETURN p.[special-name]"
    )
    first, second = q.where.items
    assert first.ref == Ref("u", "email", 41) and first.value == Ref("p", "email", 51)
    assert second.ref.alias == "u" and second.ref.name == "tag.x-y"
    assert q.returns[0].name == "special-name" and q.returns[0].key == "p.special-name"


def test_return_items():
    q = parse("FIND A AS a THAT RELATES TO B AS b RETURN a, a.*, b.name AS n, COUNT(b), Avg(b.size), count(b.x)")
    assert [i.key for i in q.returns] == ["a", "a.*", "n", "count(b)", "avg(b.size)", "count(b.x)"]
    assert parse("FIND A RETURN TREE").tree


def test_dates():
    assert static_ms("2024-01-31") == 1706659200000
    assert static_ms("2024") == 1704067200000
    assert static_ms("2024-02") == 1706745600000
    assert static_ms("2024-01-31T10") == 1706695200000
    assert static_ms("2024-01-31T10:30Z") == 1706697000000
    assert static_ms("2024-01-31T10:30:15.5+01:00") == 1706693415500
    assert static_ms("2024-13-01") is None and static_ms("yesterday") is None
    march_31 = static_ms("2024-03-31")
    assert shifted(march_31, ((-1, "month"),)) == static_ms("2024-02-29")  # calendar months, clamped
    assert shifted(march_31, ((1, "year"), (-2, "day"))) == static_ms("2025-03-29")
    assert shifted(march_31, ((-36, "hour"),)) == static_ms("2024-03-29T12")


ERRORS = [
    ("FIND * WITH = 1", "query:1:13: expected a property name, found '='"),
    ("FIND", "query:1:5: expected a class, a type, '*' or '(' after FIND, found the end of the query"),
    ("SELECT *", "query:1:1: expected FIND, found 'SELECT'"),
    ("FIND Host WITH name 'a'", "query:1:21: expected a comparison (=, !=, <, >, <=, >=, ~=, ^=, $=, !~=, !^=, !$=)"),
    ("FIND Host WITH name = ", "query:1:23: expected a value ('text', a number, true, false, undefined or a date)"),
    ("FIND Host WITH name = web", "query:1:23: expected a value ('text', a number, true, false, undefined, date.now)"),
    ("FIND Host WITH name = 'a", "query:1:23: the string starting here is not closed"),
    ("FIND Host\n  WITH x = 1\n  THAT", "query:3:7: expected a relationship verb (HAS, IS, ...) or RELATES TO"),
    ("FIND Host THAT HAS", "query:1:19: expected a class, a type, '*' or '(' after THAT HAS"),
    ("FIND (Host|Device WITH a = 1", "query:1:19: expected '|' or ')' to close the list of classes and types"),
    ("FIND Host WITH a = 1 LIMIT x", "query:1:28: expected a whole number after LIMIT"),
    ("FIND Host WITH a = ('x' OR 'y' AND 'z')", "query:1:32: mixing AND and OR in one list of values"),
    ("FIND Host WITH t > date.now - 3 weeks", "query:1:33: expected a unit (hour, day, month, year"),
    ("FIND Host WITH t > date(last tuesday)", "query:1:20: date(last tuesday) is not an ISO-8601 date or time"),
    ("FIND Host WITH x = 1 @", "query:1:22: unexpected character '@'"),
    ("FIND Host WITH x = 1 extra", "query:1:22: expected THAT, WHERE, RETURN, ORDER BY, SKIP, LIMIT or the end"),
    ("FIND Host WHERE name = 'x'", "query:1:17: expected alias.property (WHERE filters name an alias: u.email)"),
    ("FIND Host AS h RETURN h.name +", "query:1:30: arithmetic in RETURN is not supported"),
    ("FIND Host AS h RETURN CONCAT(h.a, 'b')", "query:1:23: CONCAT() is not supported in RETURN"),
    ("FIND Host AS h RETURN sum(h)", "query:1:27: SUM() needs alias.property"),
    ("FIND Host AS h RETURN count(*)", "query:1:29: COUNT(*) is not supported"),
    ("FIND Host AS h ORDER h.name", "query:1:22: expected BY after ORDER"),
    ('FIND "127.0.0.1"', "query:1:6: full-text search"),
    ("FIND #CriticalAsset", "query:1:6: smart classes (#Name) are not supported"),
    ("FIND User (THAT IS Person)?", "query:1:11: optional traversals '(THAT ...)?' are not supported"),
    ("FIND A WITH x = ${ param.x }", "query:1:17: parameters (${ ... }) are not supported"),
    ("FIND A AS a THAT HAS B AS a", "query:1:27: alias 'a' is defined twice"),
    ("FIND A AS a RETURN b.name", "query:1:20: unknown alias 'b' in RETURN (aliases: a)"),
    ("FIND A AS a THAT HAS B AS b ORDER BY b.name", "query:1:38: without RETURN the answer is the starting entities"),
    ("FIND UNIQUE A AS a RETURN a.x ORDER BY a.y", "query:1:40: with UNIQUE, ORDER BY must name a returned item (a.y)"),
    ("FIND A AS a RETURN a.x, a.x", "query:1:20: RETURN has 'a.x' twice; name one with AS"),
    ("FIND A WITH x > true", "query:1:17: > does not compare booleans; use = or !="),
    ("FIND A WITH x ~= 3", "query:1:18: ~= compares strings: expected a quoted string"),
    ("FIND A WITH x < undefined", "query:1:17: undefined compares only with = and !="),
]


@pytest.mark.parametrize("text, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_point_at_the_column(text, message):
    with pytest.raises(QueryError) as caught:
        compiled = compile_query(text)
        compiled.sql("sqlite")  # some problems are found while writing the SQL
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE


def test_the_error_knows_where_it_is():
    with pytest.raises(QueryError) as caught:
        compile_query("FIND Host\n  WITH = 1", "rules.yaml#q0")
    error = caught.value
    assert (error.source, error.line, error.column, error.offset) == ("rules.yaml#q0", 2, 8, 17)
    assert error.message == "expected a property name, found '='"
