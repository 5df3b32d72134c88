"""Draw a graph as one self-contained HTML page: an output directory's (``etl visualize``), or
any entities and relationships a caller has (:func:`write_page_for`, e.g. a query's answer).

Like the JupiterOne SDK's ``j1-integration visualize``, without loading anything from the
internet: the graph is embedded as JSON, and a small script in the page lays it out
(force-directed, seeded, so the same data gives the same picture) and draws it in SVG, with
a search box and a type toggle per legend entry.

* Nodes are entities, coloured by ``_type`` (see the legend), labelled with displayName,
  ``[_type]`` and ``_key``; a repeated ``_key`` gets its own node marked ``[DUPLICATE _KEY]``.
* Edges are relationships, labelled with their ``_class``, drawn from ``_fromEntityKey``
  to ``_toEntityKey``; an endpoint with no entity becomes a "missing entity" node.
* A mapped relationship's target is resolved against the entities with its
  ``targetFilterKeys`` (OR of ANDs; ``_class`` matched as a subset). When nothing
  matches, it points at a dashed placeholder node built from the target's filter-key
  values (one per distinct target). The edge follows ``relationshipDirection``.

What is drawn (:class:`~.limits.Limits`): only entities of the ``types`` asked for (none: every type),
and at most ``max_nodes`` nodes - entities first, in the input's order, then the placeholders
and missing entities the drawn relationships need - and ``EDGES_PER_NODE`` times as many edges.
A relationship is drawn when both its ends are; an end that is an entity left out leaves the
relationship out (it is never shown as "missing"). Everything left out is counted
(:class:`~.limits.PageSummary`), and the page and the command say how to narrow the view.

Memory stays flat in the size of the input: the objects are read as a stream (an output
directory one file at a time, with :mod:`engine.output`); what the relationships need to know
about every entity - which node it is drawn as, or that it exists but is not drawn - lives in a
private temporary SQLite database (:class:`~.identities.IdentityIndex`), and the nodes and
edges are written to temporary files as they are made and copied into the page at the end.

Every text is escaped: the data is JSON with ``<``, ``>`` and ``&`` escaped, and the
script only ever sets ``textContent``. A Content-Security-Policy allows nothing but the
page's own script and style (by hash), so even a label that got through could not run; the
script attaches its listeners itself (no inline handlers).

The package (dependencies point down; this module holds the entry points: :func:`write_page`,
:func:`write_page_for`, :func:`build_view`):

    page.py        the HTML page: the Jinja template, style and script of ``tools/assets/``,
                   the Content-Security-Policy, the data written in between
    drawing.py     what is drawn, decided object by object: nodes, edges, placeholders,
                   missing entities, the legend's colours
    sources.py     what is drawn from: an output directory, or a caller's iterables
    identities.py  what a relationship's end finds an entity by, and the index of them
    spool.py       the page's data, escaped for a <script> element and spooled to disk
    limits.py      --type and --max-nodes (:class:`~.limits.Limits`), and what was drawn and
                   left out (:class:`~.limits.PageSummary`)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ...errors import OutputDirError, VisualizeError
from .drawing import draw
from .limits import DEFAULT_MAX_NODES, Limits, PageSummary
from .page import write_drawing
from .sources import DirectorySource, IterableSource


def _prepare(output: Path) -> Path:
    """Make ``output``'s folder; it also holds the temporary files of the page's data."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VisualizeError(f"cannot write {output}: {exc.strerror}") from None
    return output.parent


def write_page(
    directory: Path, output: Path, *, types: Iterable[str] = (), max_nodes: int = DEFAULT_MAX_NODES
) -> PageSummary:
    """Write the page of the output directory ``directory`` (or of its graph/ folder) to
    ``output``: what ``etl visualize`` does. A graph file that cannot be read, or a page that
    cannot be written: :class:`VisualizeError`; a ``types`` name no object has: :class:`UsageError`."""
    limits = Limits(frozenset(types), max_nodes)
    try:
        source = DirectorySource.open(directory)
        drawing = draw(source, limits, str(directory), _prepare(output))
    except OutputDirError as exc:
        raise VisualizeError(str(exc)) from None
    try:
        write_drawing(drawing, output, f"etl graph: {directory}")
    finally:
        drawing.close()
    return drawing.summary


def write_page_for(
    entities: Iterable[dict],
    relationships: Iterable[dict],
    output: Path,
    title: str,
    *,
    types: Iterable[str] = (),
    max_nodes: int = DEFAULT_MAX_NODES,
) -> PageSummary:
    """Write the page of any graph objects - e.g. a query's answer - to ``output``, titled
    ``title``, with the same limits, look and safety as ``etl visualize``.

    ``entities`` is read once. ``relationships`` is read twice (the targets' filter keys, then
    the edges): as it is when it is a collection (a list), else once into a temporary file
    beside ``output``. Each object is a graph object as an output directory holds it (``_key``,
    ``_type``, ``_class``, ...; relationships with ``_fromEntityKey``/``_toEntityKey`` or a
    ``_mapping``). Returns what was drawn and left out; the caller shows
    :meth:`PageSummary.notice` when it is not None. A page that cannot be written:
    :class:`VisualizeError`; a ``types`` name no object has: :class:`UsageError`."""
    limits = Limits(frozenset(types), max_nodes)
    source = IterableSource(entities, relationships, _prepare(output))
    try:
        drawing = draw(source, limits, title, output.parent)
        try:
            write_drawing(drawing, output, title)
        finally:
            drawing.close()
    finally:
        source.close()
    return drawing.summary


def build_view(
    entities: Iterable[dict], relationships: Iterable[dict], *, types: Iterable[str] = (), max_nodes: int = 0
) -> dict:
    """The data a page would draw, ``{"nodes": [...], "edges": [...], "types": [...]}``, as one
    dict (it holds everything drawn: for small graphs and tests). No node limit by default."""
    source = IterableSource(entities, relationships, None)
    try:
        drawing = draw(source, Limits(frozenset(types), max_nodes), "the graph", None)
        try:
            return drawing.view()
        finally:
            drawing.close()
    finally:
        source.close()
