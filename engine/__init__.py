"""etl: a declarative engine that turns vendor security APIs into a JupiterOne-compatible graph.

The map (dependencies point down: cli -> tools -> query -> store -> pipeline -> lang/http -> the modules
at the top):

    cli/          the ``etl`` command: click commands only (parse, call, print); errors converted once
    tools/        what users do with a mapping or a run's output: authoring (preview, coverage,
                  explain), scaffold (etl new), document, diff, alerts, visualize/ (assets/: the
                  page), sync/, schedule
    query/        J1QL over the store: lexer -> parser -> plan -> SQL compiler (per dialect) -> executor
    store/        the persistent graph: every instance's runs merged (SQLite or PostgreSQL), history,
                  the mapper, export (see store/__init__.py)
    pipeline/     one run, stage by stage: load -> compile -> config -> fetch/auth/ratelimit ->
                  records (paginate, fanout, exportjob, accounts, detail requests) -> extract ->
                  build -> check -> write; runner.py drives the steps, run.py starts a run as the
                  user asked (see pipeline/__init__.py)
    lang/         the expression language: JMESPath compiled to closures, the engine's functions,
                  Jinja templates in a sandbox, compiled values, the limits of what they may build
    http/         HTTP shared by runs and sync: the retry policy, its clock, sessions, origins (where
                  credentials may go), bounded transfers, cassettes

    errors.py     every error class and every exit code
    secrets.py    the redactor (and the log filter that applies it)
    output.py     the one reader of an output directory (summary, entities, relationships)
    jsonio.py     JSON in and out (orjson, with json's fallback)
    datamodel.py  JupiterOne's data model: classes, required properties, relationship types
    signals.py    SIGTERM handled like Ctrl-C
    schema/       the JSON Schema of mapping files (package data)

Where a change goes: a pagination kind -> pipeline/paginate.py (and plan.py, the schema);
how secrets are redacted -> secrets.py; retrying on another status -> http/retry.py;
reading a run's output -> output.py; a CLI command -> cli/ (its logic under tools/);
fan-out, accounts, detail requests -> pipeline/records.py.
"""

__version__ = "0.1.0"
