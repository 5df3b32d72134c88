"""A template's render, bounded in time: the rewrite of its tree that counts loops, captured
text and ``~`` against the render's budget (``limits.py``), and the filters it inserts.

The rewrite runs on a template's parsed tree before Jinja generates its code
(``templates.py``); :func:`guard` also tells whether the render needs a budget at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2.nodes as nodes
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

from .limits import MAX_STRING_LENGTH, charge_built, check_value_size, counted, would_be_too_long
from .template_sandbox import finalize

# -- the filters the tree rewrite inserts (names no template can write) -------------------

_LOOP = "etl-loop"
_OUTPUT = "etl-output"
_CONCAT = "etl-concat"


@pass_context
def _loop_filter(context: Any, iterable: Any, cost: int) -> Any:
    """A loop's iterable: each iteration costs ``cost`` steps (the size of the loop's body)."""
    return counted(iterable, cost)


@pass_context
def _output_filter(context: Any, value: Any) -> str:
    """Text a block captures (``{% set x %}``, ``{% filter %}``, a recursive loop): counted as built."""
    text = value if value.__class__ is str else str(finalize(value))
    charge_built(len(text))
    return text


def _concat_filter(values: list) -> str:
    """``a ~ b ~ c``: refused as soon as the text would be too long."""
    parts = []
    total = 0
    for value in values:
        if value.__class__ is not str:
            check_value_size(value, "a value joined with '~' is", MAX_STRING_LENGTH)
            value = str(value)
        total += len(value)
        if total > MAX_STRING_LENGTH:
            raise would_be_too_long("the result of '~'")
        parts.append(value)
    charge_built(total)
    return "".join(parts)


# The filters above, by the names the rewrite gives them (the environment adds them).
BUDGET_FILTERS: dict[str, Callable[..., Any]] = {_LOOP: _loop_filter, _OUTPUT: _output_filter, _CONCAT: _concat_filter}


# ----------------------------------------------------------------------------------------
# The tree rewrite: loops, captured text and '~' counted


class _Guard(NodeTransformer):
    """Rewrites a parsed template so that its render is bounded: a loop's iterable charges
    the loop body's size per iteration, text captured by a block is counted, and ``~``
    checks the length of its result as it goes. Records whether the render needs a budget."""

    def __init__(self) -> None:
        self.capturing = 0
        self.budgeted = False

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.budgeted = True
        cost = 1 + _size(node.body) + _size(node.else_)
        self.capturing += node.recursive
        self.generic_visit(node)  # in place
        self.capturing -= node.recursive
        node.iter = nodes.Filter(node.iter, _LOOP, [nodes.Const(cost)], [], None, None, lineno=node.lineno)
        return node

    def _capture(self, node: nodes.Node) -> nodes.Node:
        self.budgeted = True
        self.capturing += 1
        self.generic_visit(node)
        self.capturing -= 1
        return node

    visit_AssignBlock = _capture
    visit_FilterBlock = _capture

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        if self.capturing:
            node.nodes = [nodes.Filter(child, _OUTPUT, [], [], None, None, lineno=child.lineno) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.budgeted = True
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT, [], [], None, None, lineno=node.lineno)

    def visit_Call(self, node: nodes.Node) -> nodes.Node:
        self.budgeted = True
        return self.generic_visit(node)

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:
        if node.name not in _UNBUDGETED_FILTERS:
            self.budgeted = True
        return self.generic_visit(node)

    def _operator(self, node: nodes.Node) -> nodes.Node:
        self.budgeted = True
        return self.generic_visit(node)

    visit_Mul = visit_Add = visit_Pow = visit_Mod = _operator


# Filters that neither loop nor build much: a template using only these needs no budget.
_UNBUDGETED_FILTERS = frozenset(
    {"abs", "capitalize", "count", "d", "default", "epoch_ms", "first", "float", "int", "last", "length"}
    | {"lower", "round", "split", "string", "title", "trim", "upper"}
)


def _size(body: list) -> int:
    """The nodes of a loop body, without the bodies of the loops inside it (which count
    their own iterations)."""
    total = 0
    pending = list(body)
    while pending:
        node = pending.pop()
        total += 1
        if isinstance(node, nodes.For):
            pending.extend(n for n in (node.target, node.iter, node.test) if n is not None)
        else:
            pending.extend(node.iter_child_nodes())
    return total


def guard(tree: nodes.Template) -> bool:
    """Rewrite ``tree`` in place (see :class:`_Guard`); True when its render needs a budget."""
    rewrite = _Guard()
    rewrite.visit(tree)
    return rewrite.budgeted
