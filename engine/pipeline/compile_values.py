"""The part of the compiler every other part uses: compiling one value, and reporting a
problem at its place in the file (``compile.py`` and ``compile_rules.py`` build on it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExpressionError, Problem
from ..lang.template_checks import TEMPLATE_VARIABLES, check_fields
from ..lang.values import Value, jmespath_value, literal, template_value
from .load import PathT, SourceMap, format_path

VALUE_FORMS = ("jmespath", "template", "value")
TOO_DEEP = "nested too deeply to compile"
NOT_COMPILED = literal(None)


@dataclass
class ValueCompiler:
    """Compiles values in their documented forms and collects the problems found."""

    data: dict
    source_map: SourceMap
    base_dir: Path
    problems: list[Problem] = field(default_factory=list)
    for_each_types: set[str] = field(default_factory=set)  # of the step being compiled
    variables: frozenset[str] = TEMPLATE_VARIABLES  # what templates of the rule being compiled can see
    current_step: dict = field(default_factory=dict)
    ancestor_types: frozenset[str] = frozenset()  # what ``ancestors`` holds in the step being compiled

    # -- reporting -----------------------------------------------------------------------

    def problem(self, path: PathT, message: str, *, key: bool = False) -> None:
        self.problems.append(self.source_map.problem(path, message, key=key))

    def problem_at(self, path: PathT, offset: int, message: str) -> None:
        self.problems.append(Problem(self.source_map.locate_in_scalar(path, offset), format_path(path), message))

    # -- values --------------------------------------------------------------------------

    @property
    def config_names(self) -> frozenset[str]:
        return frozenset((self.data.get("config") or {}).keys())

    def value(
        self, raw: Any, path: PathT, *, variables: frozenset[str] | None = None, allow_jmespath: bool = True
    ) -> Value | None:
        """Compile one value written in any of the documented forms. Templates may use
        ``variables`` (by default, what the rule being compiled can see)."""
        variables = self.variables if variables is None else variables
        try:
            if isinstance(raw, dict):
                ((form, text),) = raw.items()
                if form == "value":
                    return literal(text)
                if form == "template":
                    return self.checked_template(str(text), variables)
                return jmespath_value(str(text), self.config_names)
            if isinstance(raw, str):
                if "{{" in raw or "{%" in raw or not allow_jmespath:
                    return self.checked_template(raw, variables)
                return jmespath_value(raw, self.config_names)
            return literal(raw)
        except ExpressionError as exc:
            if isinstance(raw, dict):
                path = path + (next(iter(raw)),)
            self.problem_at(path, exc.offset, str(exc))
            return None
        except RecursionError:  # nesting the checks of lang/ do not foresee: still a located problem
            self.problem(path, TOO_DEEP)
            return None

    def checked_template(self, text: str, variables: frozenset[str]) -> Value:
        """A template, its variables checked; the entity types it reads of ``ancestors`` must
        be ancestors of the step's records (an ExpressionError at the first that is not)."""
        value = template_value(text, variables=variables, config_fields=self.config_names)
        if "ancestors" in variables:
            check_fields(text, "ancestors", self.ancestor_types, "ancestor type")
        return value

    def structure(self, raw: Any, path: PathT, variables: frozenset[str]) -> Value | None:
        """A JSON value (a request body) whose strings may be templates; {jmespath|template|value: ...}
        anywhere in it is that explicit form."""
        if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in VALUE_FORMS:
            return self.value(raw, path, variables=variables)
        if isinstance(raw, dict):
            found = {k: self.structure(v, path + (k,), variables) for k, v in raw.items()}
            parts = {k: v for k, v in found.items() if v is not None}
            if len(parts) < len(found):
                return None
            return Value("template", raw, lambda scope: {k: v.evaluate(scope) for k, v in parts.items()})
        if isinstance(raw, list):
            listed = [self.structure(v, path + (i,), variables) for i, v in enumerate(raw)]
            items = [v for v in listed if v is not None]
            if len(items) < len(listed):
                return None
            return Value("template", raw, lambda scope: [v.evaluate(scope) for v in items])
        if isinstance(raw, str) and ("{{" in raw or "{%" in raw):
            return self.template(raw, path, variables)
        return literal(raw)

    @staticmethod
    def compiled(value: Value | None) -> Value:
        """``value``, or a stand-in when it did not compile: its problem is recorded, so no
        plan is ever built with the stand-in (compilation raises MappingError instead)."""
        return value if value is not None else NOT_COMPILED

    def template(self, raw: str, path: PathT, variables: frozenset[str] | None = None) -> Value | None:
        return self.value(raw, path, variables=variables, allow_jmespath=False)

    def expression(self, raw: str, path: PathT) -> Value | None:
        try:
            return jmespath_value(raw, self.config_names)
        except ExpressionError as exc:
            self.problem_at(path, exc.offset, str(exc))
            return None
        except RecursionError:
            self.problem(path, TOO_DEEP)
            return None

    def value_map(self, raw: dict | None, path: PathT, **kwargs) -> tuple[tuple[str, Value], ...]:
        out = []
        for name, spec in (raw or {}).items():
            compiled = self.value(spec, path + (name,), **kwargs)
            if compiled is not None:
                out.append((str(name), compiled))
        return tuple(out)
