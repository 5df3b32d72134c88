"""Hooks for the tools that watch a run (preview, coverage, explain): what was fetched, and
what each record built, before any of it is checked or written."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .build import ROOT, Built, GraphBuilder, Lineage
from .plan import Step

if TYPE_CHECKING:
    from .records import Position


class Observer:
    """Hooks for tools that watch a run (preview, coverage, explain). The default does nothing."""

    def step_started(self, step: Step, builder: GraphBuilder) -> None:
        """``step`` starts; ``builder`` builds its records (a tool may ask it again, before the
        next record, which rule built what: it sees the run as the record did)."""

    def page(self, step: Step, page, records: list, lineage: Lineage) -> None:
        """A page was fetched for ``step`` (``lineage``: the parent entity or the account it
        was fetched for, see :meth:`~.build.Lineage.describe`)."""

    def detail(self, step: Step, page, position: Position | str) -> None:
        """The detail request of the record at ``position`` (``step.detail``) was answered
        with ``page``."""

    def record(self, step: Step, position: Position | str, record: Any, built: Built, lineage: Lineage = ROOT) -> None:
        """``record`` was turned into ``built`` (entities, relationships, warnings), before any
        of it was checked or written. ``position`` is the step's id alone for the one record of
        a step without a request; ``lineage`` is where the record was fetched (its fan-out
        parent, ancestors and account): pass it to ``GraphBuilder.build`` to build it again."""
