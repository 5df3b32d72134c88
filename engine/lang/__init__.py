"""The expression language of mappings: JMESPath (compiled to closures), the engine's
functions, Jinja templates in a sandbox, the compiled values built from them, and the
limits that keep what they build and how long they loop bounded (limits.py)."""
