"""etl: a declarative engine that turns vendor security APIs into a JupiterOne-compatible graph.

The pipeline, one module per stage:

    load.py     read the mapping YAML, keep positions, check the JSON Schema
    plan.py     compile it into an immutable Plan (JMESPath and Jinja compiled once)
    fetch.py    HTTP: sessions, retries, pagination
    extract.py  records out of page bodies
    build.py    entities and relationships out of records
    graph.py    JupiterOne graph rules, checked before writing
    write.py    the .j1-integration layout and summary.json, written atomically
    run.py      the steps, in dependency order, through all of the above
"""

__version__ = "0.1.0"
