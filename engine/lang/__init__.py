"""The expression language of mappings: JMESPath (compiled to closures), the engine's
functions, Jinja templates in a sandbox, and the compiled values built from them."""
