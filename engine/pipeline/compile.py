"""Compile a schema-checked mapping into an immutable :class:`~engine.pipeline.plan.Plan`.

Every JMESPath expression and Jinja template is compiled here, exactly once; every
cross-reference (steps, types, config fields, sources) is resolved here. Problems are
collected, not raised one by one, so that ``etl validate`` reports all of them at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import MappingError, ValueProblem, did_you_mean
from ..http.origins import origin_of, url_problem
from ..http.retry import DEFAULT_RETRY_STATUSES, RetryPolicy
from ..http.transfer import DEFAULT_MAX_RESPONSE_BYTES
from ..lang.functions import to_epoch_ms
from ..lang.template_checks import REQUEST_VARIABLES, SIGN_VARIABLES, uses_variable
from ..lang.values import Value, literal
from .compile_io import StepIoCompiler
from .compile_rules import RuleCompiler
from .load import LoadedMapping, PathT, load_mapping
from .plan import (
    AUTH_FIELDS,
    HEADER_FIELDS,
    PAGINATION_FIELDS,
    PAGINATION_PARAMS,
    PAGINATION_REQUIRED,
    Accounts,
    AuthSpec,
    ConfigField,
    Detail,
    Offline,
    OfflineChoice,
    OfflineReplay,
    Pagination,
    Plan,
    RequestSpec,
    Source,
    Step,
    fits_type,
)
from .ratelimit import HeaderLimits
from .signing import SignSpec


def compile_file(path: str | Path) -> Plan:
    """Load, schema-check and compile a mapping file. Raises MappingError with every problem."""
    return compile_mapping(load_mapping(path), base_dir=Path(path).parent)


def compile_mapping(loaded: LoadedMapping, base_dir: Path = Path(".")) -> Plan:
    compiler = Compiler(loaded.data, loaded.source, base_dir)
    plan = compiler.compile()
    if plan is None or compiler.problems:
        raise MappingError(compiler.problems)
    return plan


class Compiler(RuleCompiler, StepIoCompiler):
    """Compiles a whole mapping: config, sources, requests, steps and their order."""

    # -- top level -----------------------------------------------------------------------

    def compile(self) -> Plan | None:
        data = self.data
        integration = data["integration"]
        config_fields = self.config_fields()
        sources = self.sources()
        instance_tags = self.value_map(data.get("tags"), ("tags",), variables=frozenset({"config", "now"}))
        steps = self.steps({s.name for s in sources})
        offline = self.offline()
        instance = None
        if "instance" in integration:
            instance = self.template(integration["instance"], ("integration", "instance"), frozenset({"config"}))
        if self.problems:
            return None
        return Plan(
            path=self.source_map.file,
            integration_id=integration["id"],
            integration_name=integration["name"],
            description=integration.get("description", ""),
            config_fields=config_fields,
            sources=sources,
            instance_tags=instance_tags,
            steps=steps,
            offline=offline,
            instance=instance,
        )

    def config_fields(self) -> tuple[ConfigField, ...]:
        fields = []
        for name, spec in (self.data.get("config") or {}).items():
            path = ("config", name)
            has_default = "default" in spec
            required = spec.get("required", not has_default)
            if required and has_default:
                self.problem(path + ("required",), "a field with a default cannot be required")
            kind = spec.get("type", "string")
            if has_default and spec["default"] is not None and not fits_type(kind, spec["default"]):
                self.problem(path + ("default",), f"default {spec['default']!r} is not of type {kind}")
            choices = tuple(spec.get("choices") or ())
            if choices and has_default and spec["default"] not in choices:
                self.problem(path + ("default",), f"default {spec['default']!r} is not one of the choices")
            fields.append(
                ConfigField(
                    name=name,
                    env=spec.get("env"),
                    type=kind,
                    secret=bool(spec.get("secret", False)),
                    required=bool(required),
                    default=spec.get("default"),
                    description=spec.get("description", ""),
                    choices=choices,
                )
            )
        return tuple(fields)

    def sources(self) -> tuple[Source, ...]:
        variables = frozenset({"config"})
        per_account = frozenset({"config", "account"})  # base_url, headers, params
        out = []
        for name, spec in self.data["sources"].items():
            path = ("sources", name)
            base_url = self.template(spec["base_url"], path + ("base_url",), per_account)
            retry_spec = spec.get("retry") or {}
            retry = RetryPolicy(
                max_attempts=retry_spec.get("max_attempts", RetryPolicy.max_attempts),
                initial_delay=float(retry_spec.get("initial_delay", RetryPolicy.initial_delay)),
                max_delay=float(retry_spec.get("max_delay", RetryPolicy.max_delay)),
                statuses=tuple(retry_spec.get("statuses", DEFAULT_RETRY_STATUSES)),
            )
            validate = None
            if "validate" in spec:
                validate = self.request(
                    {"source": name, **spec["validate"]}, path + ("validate",), {name}, variables=variables
                )
            error_message = self.expression(
                spec.get("error_message", "errors[0].message || message || error || detail"),
                path + ("error_message",),
            )
            allowed_origins = []  # each an http(s) origin, without a path
            for index, url in enumerate(spec.get("allowed_origins") or ()):
                origin = origin_of(url)
                bare = urlsplit(url).path in ("", "/") and "?" not in url and "#" not in url
                if origin is None or url_problem(url) or not bare:
                    self.problem(
                        path + ("allowed_origins", index),
                        f"{url!r} is not an origin: write it as https://host or https://host:port",
                    )
                else:
                    allowed_origins.append(str(origin))
            sign = None
            if spec.get("sign"):  # templates over the request being sent (pipeline/signing.py)
                sign = SignSpec(
                    **{
                        part: self.value_map(
                            spec["sign"].get(part),
                            path + ("sign", part),
                            variables=SIGN_VARIABLES,
                            allow_jmespath=False,
                        )
                        for part in ("params", "headers")
                    }
                )
            out.append(
                Source(
                    name=name,
                    auth=self.auth(spec.get("auth"), path + ("auth",)),
                    rate_limits=tuple((int(r["requests"]), float(r["seconds"])) for r in spec.get("rate_limits") or ()),
                    on_status=tuple((int(k), v) for k, v in (spec.get("on_status") or {}).items()),
                    base_url=self.compiled(base_url),
                    headers=self.value_map(
                        spec.get("headers"), path + ("headers",), variables=per_account, allow_jmespath=False
                    ),
                    params=self.value_map(
                        spec.get("params"), path + ("params",), variables=per_account, allow_jmespath=False
                    ),
                    timeout=float(spec.get("timeout", 30)),
                    retry=retry,
                    validate=validate,
                    error_message=self.compiled(error_message),
                    allowed_origins=tuple(allowed_origins),
                    cross_origin=spec.get("cross_origin", "refuse"),
                    max_response_bytes=int(spec.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)),
                    sign=sign,
                    rate_limit_headers=HeaderLimits.from_mapping(spec.get("rate_limit_headers")),
                    account_base_url=reads_account(spec["base_url"]),
                    account_headers=names_reading_account(spec.get("headers")),
                    account_params=names_reading_account(spec.get("params")),
                )
            )
        return tuple(out)

    def request(
        self, spec: dict, path: PathT, source_names: set[str], variables: frozenset[str] = REQUEST_VARIABLES
    ) -> RequestSpec | None:
        source = spec.get("source") or next(iter(self.data["sources"]))
        if source not in source_names:
            self.problem(path + ("source",), f"unknown source '{source}'{did_you_mean(source, source_names)}")
        graphql = spec.get("graphql")
        return RequestSpec(
            source=source,
            method=spec.get("method", "POST" if graphql else "GET"),
            graphql=graphql["query"] if graphql else None,
            variables=self.value_map(
                (graphql or {}).get("variables"),
                path + ("graphql", "variables"),
                variables=variables,
                allow_jmespath=False,
            ),
            path=self.compiled(self.template(spec.get("path", ""), path + ("path",), variables)),
            params=self.value_map(spec.get("params"), path + ("params",), variables=variables, allow_jmespath=False),
            headers=self.value_map(spec.get("headers"), path + ("headers",), variables=variables, allow_jmespath=False),
            body=self.structure(spec["body"], path + ("body",), variables) if "body" in spec else None,
        )

    def offline(self) -> Offline | None:
        """The ``offline`` section: its cassette, config and clock, and the cassettes that
        ``by_config`` lets a config value choose instead."""
        spec = self.data.get("offline")
        if not spec:
            return None
        default = self.offline_replay(spec, ("offline",), None)
        choices = self.offline_choices(spec.get("by_config") or {}, default)
        return Offline(cassette=default.cassette, config=default.config, as_of=default.as_of, choices=choices)

    def offline_replay(self, spec: dict, path: PathT, base: OfflineReplay | None) -> OfflineReplay:
        """One cassette of the offline section; a choice's config is merged over ``base``'s,
        and its ``as_of`` (when it gives none) is ``base``'s."""
        config = spec.get("config") or {}
        for name in config:
            if name not in self.config_names:
                self.problem(
                    path + ("config", name),
                    f"unknown config field '{name}'{did_you_mean(name, self.config_names)}",
                    key=True,
                )
        as_of = spec.get("as_of")
        if as_of is not None:
            try:
                to_epoch_ms(str(as_of))
            except ValueProblem as exc:
                self.problem(path + ("as_of",), str(exc))
        if base is not None:
            config = {**dict(base.config), **config}
            as_of = base.as_of if as_of is None else as_of
        return OfflineReplay(
            cassette=(self.base_dir / spec["cassette"]).resolve(),
            config=tuple(config.items()),
            as_of=None if as_of is None else str(as_of),
        )

    def offline_choices(self, by_config: dict, default: OfflineReplay) -> tuple[OfflineChoice, ...]:
        """``offline.by_config``: config field -> value -> the cassette a run with that value replays."""
        fields = self.data.get("config") or {}
        choices = []
        for name, by_value in by_config.items():
            path = ("offline", "by_config", name)
            if name not in fields:
                self.problem(path, f"unknown config field '{name}'{did_you_mean(name, self.config_names)}", key=True)
                continue
            if fields[name].get("secret"):
                self.problem(path, f"config field '{name}' is secret; a secret cannot choose a cassette", key=True)
                continue
            for key, spec in by_value.items():
                value, problem = offline_choice_value(name, fields[name], key)
                if problem:
                    self.problem(path + (key,), problem, key=True)
                    continue
                choices.append(OfflineChoice(name, value, self.offline_replay(spec, path + (key,), default)))
        return tuple(choices)

    # -- steps ---------------------------------------------------------------------------

    def steps(self, source_names: set[str]) -> tuple[Step, ...]:
        raw_steps = self.data["steps"]
        ids: dict[str, int] = {}
        for index, spec in enumerate(raw_steps):
            if spec["id"] in ids:
                self.problem(
                    ("steps", index, "id"), f"duplicate step id '{spec['id']}' (also steps[{ids[spec['id']]}])"
                )
            ids.setdefault(spec["id"], index)
        # entity _type -> the steps that build it. Several steps may build one type (say, one
        # per mode, switched by `when`), with the same class; one step declares it once.
        declared_types: dict[str, list[str]] = {}
        classes_of: dict[str, Any] = {}
        for index, spec in enumerate(raw_steps):
            for e_index, entity in enumerate(spec.get("entities") or []):
                entity_type, where = entity["type"], ("steps", index, "entities", e_index, "type")
                owners = declared_types.setdefault(entity_type, [])
                if spec["id"] in owners:
                    self.problem(where, f"entity type '{entity_type}' is declared twice in this step")
                elif entity_type in classes_of and classes_of[entity_type] != entity["class"]:
                    self.problem(
                        where,
                        f"entity type '{entity_type}' is declared with class "
                        f"{entity['class']!r} here but {classes_of[entity_type]!r} in step "
                        f"'{owners[0]}'",
                    )
                owners.append(spec["id"])
                classes_of.setdefault(entity_type, entity["class"])

        compiled = []
        for index, spec in enumerate(raw_steps):
            step = self.step(spec, ("steps", index), ids, declared_types, source_names)
            if step is not None:
                compiled.append(step)
        return self.in_dependency_order(compiled, ids)

    def in_dependency_order(self, steps: list[Step], ids: dict[str, int]) -> tuple[Step, ...]:
        by_id = {s.id: s for s in steps}
        ordered: list[Step] = []
        state: dict[str, str] = {}

        def visit(step: Step, trail: list[str]) -> None:
            if state.get(step.id) == "done":
                return
            if state.get(step.id) == "visiting":
                cycle = " -> ".join(trail[trail.index(step.id) :] + [step.id])
                self.problem(("steps", ids[step.id], "depends_on"), f"dependency cycle: {cycle}")
                return
            state[step.id] = "visiting"
            for dep in step.depends_on:
                if dep in by_id and dep != step.id:  # a self-dependency is reported already
                    visit(by_id[dep], trail + [step.id])
            state[step.id] = "done"
            ordered.append(step)

        for step in steps:
            visit(step, [])
        return tuple(ordered)

    def step(
        self, spec: dict, path: PathT, ids: dict[str, int], declared_types: dict, source_names: set[str]
    ) -> Step | None:
        for d_index, dep in enumerate(spec.get("depends_on") or []):
            if dep not in ids:
                self.problem(path + ("depends_on", d_index), f"unknown step '{dep}'{did_you_mean(dep, ids)}")
            elif dep == spec["id"]:
                self.problem(path + ("depends_on", d_index), "a step cannot depend on itself")
        self.current_step = spec
        self.ancestor_types = self.lineage(spec["id"])[0]
        request = None
        if "request" in spec:
            request_variables = self.request_variables(spec)
            request = self.request(spec["request"], path + ("request",), source_names, request_variables)
        state = frozenset({"state"} if "incremental" in spec else ())
        export = self.export_job(spec.get("export"), path + ("export",), spec, source_names, state)
        response = self.response_format(spec.get("response"), path + ("response",))
        incremental = self.incremental(spec.get("incremental"), path + ("incremental",), spec)
        accounts = self.accounts(spec.get("accounts"), path + ("accounts",), spec, declared_types)
        detail = self.detail(spec.get("detail"), path + ("detail",), spec, source_names)
        when = self.expression(spec["when"], path + ("when",)) if "when" in spec else None
        parent_type = spec.get("for_each")
        if parent_type is not None:
            self.check_fan_out_type(parent_type, path + ("for_each",), spec, declared_types)
            if request is None:
                self.problem(path + ("for_each",), "for_each needs a request to make per entity")
        pagination = self.pagination(spec.get("pagination"), path + ("pagination",))
        if pagination.kind == "graphql_cursor" and (request is None or request.graphql is None):
            self.problem(path + ("pagination", "kind"), "graphql_cursor pagination needs a request with graphql")
        records = self.expression(spec.get("records", "@"), path + ("records",))
        record_filter = self.expression(spec["filter"], path + ("filter",)) if "filter" in spec else None
        record_types = {e["type"] for e in spec.get("entities") or [] if "for_each" not in e}
        self.for_each_types = {e["type"] for e in spec.get("entities") or [] if "for_each" in e}
        entities = tuple(
            e
            for e in (self.entity(raw, path + ("entities", i)) for i, raw in enumerate(spec.get("entities") or []))
            if e is not None
        )
        relationships = tuple(
            r
            for r in (
                self.relationship(raw, path + ("relationships", i), record_types, declared_types)
                for i, raw in enumerate(spec.get("relationships") or [])
            )
            if r is not None
        )
        mapped = tuple(
            m
            for m in (
                self.mapped_relationship(raw, path + ("mapped_relationships", i), record_types)
                for i, raw in enumerate(spec.get("mapped_relationships") or [])
            )
            if m is not None
        )
        if records is None:
            return None
        return Step(
            id=spec["id"],
            name=spec.get("name", spec["id"]),
            depends_on=tuple(spec.get("depends_on") or ()),
            when=when,
            on_dependency_failure=spec.get("on_dependency_failure", "run"),
            for_each=parent_type,
            request=request,
            pagination=pagination,
            records=records,
            filter=record_filter,
            on_status=self.status_rules(request, spec.get("on_status")),
            entities=entities,
            relationships=relationships,
            mapped_relationships=mapped,
            response=response,
            export=export,
            incremental=incremental,
            accounts=accounts,
            detail=detail,
        )

    def request_variables(self, spec: dict) -> frozenset[str]:
        """What the templates of a step's request see: ``parent`` and ``ancestors`` in a
        fan-out step, ``paging`` when it is paginated, ``state`` when it is incremental,
        ``account`` when its records can have one."""
        variables = set(REQUEST_VARIABLES)
        if "for_each" in spec:
            variables.add("ancestors")
        else:
            variables.discard("parent")
        if (spec.get("pagination") or {}).get("kind", "none") == "none":
            variables.discard("paging")
        if "incremental" in spec:
            variables.add("state")
        if self.lineage(spec["id"])[1]:
            variables.add("account")
        return frozenset(variables)

    def accounts(self, raw: Any, path: PathT, spec: dict, declared_types: dict) -> Accounts | None:
        """``accounts``: a JMESPath on the config, a list, or ``{type: T}`` (every entity of T)."""
        if raw is None:
            return None
        if "for_each" in spec:
            self.problem(
                path,
                "a step has accounts or for_each, not both: a fan-out step runs for the account its parent "
                "entity was fetched for (its templates see it as account)",
                key=True,
            )
        if "export" in spec:
            self.problem(path, "an export job cannot be started per account; use one step per job", key=True)
        if "request" not in spec:
            self.problem(path, "accounts needs a request to make per account", key=True)
        if isinstance(raw, dict):
            self.check_fan_out_type(raw["type"], path + ("type",), spec, declared_types)
            return Accounts(type=raw["type"])
        if isinstance(raw, list):
            return Accounts(items=literal(raw))
        items = self.expression(raw, path)
        return None if items is None else Accounts(items=items)

    def detail(self, raw: dict | None, path: PathT, spec: dict, source_names: set[str]) -> Detail | None:
        """``detail``: a request per listed record (of the step's source unless it names one);
        its templates see what the step's request sees, but ``paging``, and ``record``."""
        if raw is None:
            return None
        if "request" not in spec:
            self.problem(path, "detail needs the step's request: it is made once per record that request lists")
        source = (spec.get("request") or {}).get("source")
        request_raw = raw["request"]
        if source and "source" not in request_raw:
            request_raw = {"source": source, **request_raw}
        variables = (self.request_variables(spec) - {"paging"}) | {"record"}
        request = self.request(request_raw, path + ("request",), source_names, variables)
        record = self.expression(raw.get("record", "@"), path + ("record",))
        if request is None or record is None:
            return None
        rules = dict(self.status_rules(request, spec.get("on_status")))
        rules.update((int(k), v) for k, v in (raw.get("on_status") or {}).items())
        return Detail(request, record, bool(raw.get("merge", False)), tuple(sorted(rules.items())))

    def pagination(self, spec: dict | None, path: PathT) -> Pagination:
        if not spec or spec.get("kind", "none") == "none":
            return Pagination(kind="none")
        kind = spec["kind"]
        self.check_pagination_fields(spec, path)
        params = {name: spec.get(name, default) for name, default in PAGINATION_PARAMS[kind].items()}
        size_key = "limit" if kind == "offset" else "size"
        size = spec.get(size_key)

        def optional(name: str) -> Value | None:
            if name not in spec:
                return None
            if name in HEADER_FIELDS:  # a JMESPath on the body, or {header: NAME}
                return self.body_or_header(spec[name], path + (name,), HEADER_FIELDS[name])
            return self.expression(spec[name], path + (name,))

        return Pagination(
            kind=kind,
            place=spec.get("in", "body" if kind == "search_after" else "query"),
            start=spec.get("start_page", 1) if kind == "page" else 0,
            size=None
            if size is None
            else self.value(size, path + (size_key,), allow_jmespath=False, variables=frozenset({"config"})),
            total=optional("total"),
            total_pages=optional("total_pages"),
            cursor=optional("cursor"),
            next_url=optional("next_url"),
            page_info=optional("page_info"),
            has_more=optional("has_more"),
            max_pages=spec.get("max_pages"),
            stop_on_empty=spec.get("stop_on_empty", True),
            after=self.expression(spec.get("after", "sort"), path + ("after",)) if kind == "search_after" else None,
            **params,
        )

    def check_pagination_fields(self, spec: dict, path: PathT) -> None:
        kind = spec["kind"]
        allowed = PAGINATION_FIELDS[kind] | {"kind", "in", "has_more", "max_pages", "stop_on_empty"}
        for name in spec:
            if name not in allowed:
                self.problem(
                    path + (name,),
                    f"'{name}' is not used by kind '{kind}' (it uses: {', '.join(sorted(allowed - {'kind'}))})",
                    key=True,
                )
        for name, what in PAGINATION_REQUIRED.get(kind, {}).items():
            if name not in spec:
                self.problem(path, f"kind '{kind}' needs '{name}' ({what})")

    def status_rules(self, request: RequestSpec | None, raw: dict | None) -> tuple[tuple[int, str], ...]:
        """A step's status rules: its source's, overridden by its own."""
        rules: dict[int, str] = {}
        if request is not None:
            source = self.data["sources"].get(request.source) or {}
            rules.update((int(k), v) for k, v in (source.get("on_status") or {}).items())
        rules.update((int(k), v) for k, v in (raw or {}).items())
        return tuple(sorted(rules.items()))

    def auth(self, spec: dict | None, path: PathT) -> AuthSpec | None:
        if not spec:
            return None
        variables = frozenset({"config"})
        kind = spec["kind"]
        for name in sorted(AUTH_FIELDS[kind]["required"]):
            if name not in spec:
                self.problem(path, f"auth kind '{kind}' needs '{name}'")
        for name in spec:
            if name != "kind" and name not in AUTH_FIELDS[kind]["required"] | AUTH_FIELDS[kind]["optional"]:
                self.problem(path + (name,), f"'{name}' is not used by auth kind '{kind}'", key=True)
        fields = []
        for name, raw in spec.items():
            if name in ("kind", "in", "name", "client_auth"):
                continue
            if name == "params":
                fields.append((name, literal(raw)))
                continue
            compiled = self.template(str(raw), path + (name,), variables)
            if compiled is not None:
                fields.append((name, compiled))
        return AuthSpec(
            kind=kind,
            fields=tuple(fields),
            location=spec.get("in", "header"),
            name=spec.get("name", ""),
            client_auth=spec.get("client_auth", "body"),
        )


def reads_account(raw: Any) -> bool:
    """Whether a value of a source (a template, or ``{template: ...}``) reads ``account``."""
    if isinstance(raw, dict) and "template" in raw:
        raw = raw["template"]
    return isinstance(raw, str) and uses_variable(raw, "account")


def names_reading_account(values: dict | None) -> frozenset[str]:
    """The names of a source's headers (or params) whose value reads ``account``."""
    return frozenset(str(name) for name, raw in (values or {}).items() if reads_account(raw))


def offline_choice_value(name: str, field: dict, key: Any) -> tuple[Any, str | None]:
    """The config value an ``offline.by_config`` key stands for (YAML keys are text, numbers
    or booleans), or why it cannot be one of the field's values."""
    kind = field.get("type", "string")
    value = key
    if kind in ("integer", "number") and isinstance(key, str):
        try:
            value = int(key) if kind == "integer" else float(key)
        except ValueError:
            value = key
    elif kind == "boolean" and isinstance(key, str) and key.lower() in ("true", "false"):
        value = key.lower() == "true"
    if not fits_type(kind, value):
        quoted = " (quote it)" if isinstance(key, bool) and kind == "string" else ""
        return None, f"{key!r} is not a value of config field '{name}': it is of type {kind}{quoted}"
    choices = field.get("choices") or ()
    if choices and value not in choices:
        listed = ", ".join(map(str, choices))
        return None, f"{key!r} is not one of the choices of config field '{name}' ({listed})"
    return value, None
