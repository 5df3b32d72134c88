"""The HTML page: the Jinja template, style sheet and script of ``engine/tools/assets/``
(package data), a Content-Security-Policy that allows nothing but them (by hash), and the
drawing's data written in between (:func:`write_drawing`, or :func:`render_page` for a small
view held in memory)."""

from __future__ import annotations

import base64
import hashlib
import html
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import VisualizeError
from .drawing import Drawing
from .limits import NO_DATA
from .spool import script_json

if TYPE_CHECKING:
    import jinja2


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


@lru_cache(maxsize=1)
def _assets() -> tuple[jinja2.Template, str, str]:
    """The page template, its style sheet and its script (package data under tools/assets/).
    Jinja is imported here, not with the module: the command line imports this package to
    build its options, and every command would pay for it."""
    import jinja2

    assets = resources.files("engine.tools").joinpath("assets")
    environment = jinja2.Environment(autoescape=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    page = environment.from_string(assets.joinpath("visualize.html.j2").read_text(encoding="utf-8"))
    style = assets.joinpath("visualize.css").read_text(encoding="utf-8")
    script = assets.joinpath("visualize.js").read_text(encoding="utf-8")
    return page, style, script


DATA_MARK = "\x00graph-data\x00"  # where the data goes; never in the template, nor in escaped text


def page_frame(
    title: str, status: str, *, notice: str | None = None, empty_message: str | None = None
) -> tuple[str, str]:
    """The page before and after its data (no data, and no script, with an ``empty_message``)."""
    from markupsafe import Markup

    page, style, script = _assets()
    if empty_message is not None:
        csp = f"default-src 'none'; style-src {_csp_hash(style)}; base-uri 'none'; form-action 'none'"
    else:
        csp = (
            f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
            f"img-src data:; base-uri 'none'; form-action 'none'"
        )
    text = page.render(
        csp=Markup(html.escape(csp, quote=True)),
        title=title,
        style=Markup(style),
        script=Markup(script),
        data=Markup(DATA_MARK),
        status=status,
        notice=notice,
        empty_message=empty_message,
    )
    before, _, after = text.partition(DATA_MARK)
    return before, after


def render_page(view: dict, title: str, *, empty_message: str | None = None) -> str:
    """The whole page of a small view held in memory (``{"nodes", "edges", "types"}``)."""
    if empty_message is None and not view["nodes"]:
        empty_message = NO_DATA
    entities = sum(1 for n in view["nodes"] if n["kind"] == "entity")
    before, after = page_frame(
        title, f"{entities} entities, {len(view['edges'])} relationships", empty_message=empty_message
    )
    return before + (script_json(view) if empty_message is None else "") + after


def write_drawing(drawing: Drawing, output: Path, title: str) -> None:
    """Write the page of ``drawing`` to ``output`` in pieces, through a temporary file beside it."""
    summary = drawing.summary
    empty = summary.empty_message() if not summary.nodes else None
    before, after = page_frame(title, summary.status(), notice=summary.notice(), empty_message=empty)
    temporary = output.with_name(f".{output.name}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(before.encode("utf-8"))
            if empty is None:
                drawing.write_data(out)
            out.write(after.encode("utf-8"))
        temporary.replace(output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise VisualizeError(f"cannot write {output}: {exc.strerror}") from None
