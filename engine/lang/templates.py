"""Jinja templates of a mapping, compiled: :func:`compile_template` (a template's text) and
:func:`compile_expression` (one Jinja expression), and :class:`LazyTemplate`, what a
template compiles to.

Templates are checked once, when the mapping is compiled (syntax, nesting, unknown
variables, filters and tests, undeclared config fields, each with the offset of the
offending token: ``template_checks.py``), and compiled by Jinja on first use.

They run in one environment (``template_environment.py``): a sandbox that bounds what a
template can build and how long it can loop (``limits.py``). Operators, calls
(``template_sandbox.py``) and the filters that can build big values
(``template_filters.py``) check their results (and, where one step can build a huge
value, their arguments); loops and the items of ``map``/``select``-like filters are
counted against the render's budget, by a rewrite of the template's tree before Jinja
generates its code (``template_budget.py``).
"""

from __future__ import annotations

import jinja2
import jinja2.nodes as nodes
import jinja2.parser
from jinja2.environment import TemplateExpression

from .limits import MAX_STRING_LENGTH, end_render, start_render, too_long
from .template_budget import guard
from .template_checks import check_template
from .template_environment import ENVIRONMENT


def compile_template(text: str, *, variables: frozenset[str], config_fields: frozenset[str]) -> LazyTemplate:
    """Check a template (syntax, nesting, unknown variables, filters and tests, undeclared
    config fields); the Jinja template itself is compiled on first use (plain
    substitutions rarely need it)."""
    check_template(text, variables=variables, config_fields=config_fields)
    return LazyTemplate(text)


class LazyTemplate:
    """A checked template, compiled to Python by Jinja the first time it is rendered."""

    __slots__ = ("text", "_template", "_budgeted")

    def __init__(self, text: str):
        self.text = text
        self._template: jinja2.Template | None = None
        self._budgeted = False

    def _compile(self) -> jinja2.Template:
        tree = ENVIRONMENT.parse(self.text)
        self._budgeted = guard(tree)
        self._template = ENVIRONMENT.from_string(tree)
        return self._template

    def render(self, variables: dict) -> str:
        template = self._template
        if template is None:
            template = self._compile()
        if not self._budgeted:
            result = template.render(variables)
        else:
            token = start_render()
            try:
                result = _render_bounded(template, variables)
            finally:
                end_render(token)
        if len(result) > MAX_STRING_LENGTH:
            raise too_long("template result")
        return result


def _render_bounded(template: jinja2.Template, variables: dict) -> str:
    """Render, refusing as soon as the text is too long (a loop's output grows as it runs)."""
    pieces = []
    total = 0
    for piece in template.root_render_func(template.new_context(variables)):
        total += len(piece)
        if total > MAX_STRING_LENGTH:
            raise too_long("template result")
        pieces.append(piece)
    return "".join(pieces)


def compile_expression(source: str) -> tuple[TemplateExpression, bool]:
    """Jinja's ``compile_expression(source, undefined_to_none=False)``, with the tree
    rewritten by :func:`guard`; and whether evaluating it needs a budget."""
    parser = jinja2.parser.Parser(ENVIRONMENT, source, state="variable")
    expression = parser.parse_expression()
    if not parser.stream.eos:
        raise jinja2.TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
    expression.set_environment(ENVIRONMENT)
    tree = nodes.Template([nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)], lineno=1)
    budgeted = guard(tree)
    return TemplateExpression(ENVIRONMENT.from_string(tree), False), budgeted
