"""``etl new``: start a new vendor (its logic is in :mod:`engine.tools.scaffold`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..tools.scaffold import Scaffolded, scaffold
from .common import INTERNAL_ERROR_LINE

NEW_EXIT_CODES_HELP = f"""\b
Exit codes:
  0  the files were written
  2  NAME is not a slug, or a file exists (without --force); nothing was written
  5  a file could not be written
{INTERNAL_ERROR_LINE}
"""


@click.command("new", epilog=NEW_EXIT_CODES_HELP)
@click.argument("name")
@click.option(
    "-C",
    "--directory",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The project root to write into (the directory holding mappings/).",
)
@click.option("--force", is_flag=True, help="Overwrite the mapping, cassette README and test if they exist.")
def new(name: str, root: Path, force: bool) -> None:
    """Start mapping a new vendor NAME: write a starter mapping, a cassette folder and a replay test.

    \b
    mappings/NAME.yaml          a small commented mapping that passes `etl validate`
    cassettes/NAME/README.md    how to record the cassette the mapping replays offline
    tests/test_NAME.py          replays the cassette against a snapshot (skipped until recorded)
    .etl/mapping.schema.json    the JSON Schema the mapping's yaml-language-server modeline
                                names, for completion in editors (refreshed on every run)

    NAME is a slug (lower-case letters, digits, single underscores): it prefixes the entity
    types and, in capitals, the environment variables (NAME_API_TOKEN). Existing files are
    never overwritten without --force.
    """
    report(scaffold(name, root, force=force), name)


def report(done: Scaffolded, name: str) -> None:
    """What was written, and what to do next."""
    for path in done.written:
        click.echo(f"wrote {done.root / path}")
    click.echo(f"{done.root / done.schema}: {done.schema_status} (the editor schema the mapping's modeline names)")
    mapping = Path("mappings") / f"{name}.yaml"
    click.echo(
        "\nNext, from the project root:\n"
        f"  1. edit {mapping}: each TODO, from the API's reference\n"
        f"  2. etl validate {mapping}\n"
        f"  3. {name.upper()}_API_TOKEN=... etl preview {mapping} --step fetch-items\n"
        f"  4. {name.upper()}_API_TOKEN=... etl run {mapping} --cassette cassettes/{name}/full-run.yaml "
        f"--record-mode once --output /tmp/{name}\n"
        f"  5. python -m pytest tests/test_{name}.py   (replays it; writes the snapshot the first time)"
    )


COMMANDS = (new,)
