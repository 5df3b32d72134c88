"""Local HTTP servers that behave like vendor APIs, for tests and for synthesising cassettes."""
