"""The one Jinja environment every mapping template runs in: the sandbox
(``template_sandbox.py``) with the engine's filters and globals (``template_filters.py``)
and the filters the render's budget inserts (``template_budget.py``)."""

from __future__ import annotations

import jinja2

from .template_budget import BUDGET_FILTERS
from .template_filters import bounded_range, engine_filters
from .template_sandbox import MappingSandbox, finalize


def make_environment() -> MappingSandbox:
    env = MappingSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=finalize,
        keep_trailing_newline=False,
    )
    env.filters.update(engine_filters(env))
    env.filters.update(BUDGET_FILTERS)
    # Templates get data helpers only: no lipsum, cycler, joiner or namespace objects.
    env.globals = {"range": bounded_range, "dict": dict}
    return env


ENVIRONMENT = make_environment()
# The filters and tests a template may name (not those the budget's rewrite inserts).
FILTER_NAMES = frozenset(name for name in ENVIRONMENT.filters if name not in BUDGET_FILTERS)
TEST_NAMES = frozenset(ENVIRONMENT.tests)
