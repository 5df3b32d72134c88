"""The plan: a mapping compiled into immutable values (``pipeline/compile.py`` builds it).

Every expression in a plan is already compiled (:class:`~engine.lang.values.Value`),
every reference resolved and every step in dependency order; a run never looks at the
YAML again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..http.retry import RetryPolicy
from ..http.transfer import DEFAULT_MAX_RESPONSE_BYTES
from ..lang.values import Value
from .ratelimit import HeaderLimits
from .signing import SignSpec

AUTH_FIELDS = {
    "bearer": {"required": {"token"}, "optional": set()},
    "basic": {"required": {"username", "password"}, "optional": set()},
    "api_key": {"required": {"name", "value"}, "optional": {"in"}},
    "oauth2_client_credentials": {
        "required": {"token_url", "client_id", "client_secret"},
        "optional": {"scope", "params", "client_auth"},
    },
}


# ----------------------------------------------------------------------------------------
# The plan: frozen dataclasses, built once per mapping.


@dataclass(frozen=True)
class ConfigField:
    name: str
    env: str | None
    type: str
    secret: bool
    required: bool
    default: Any
    description: str
    choices: tuple = ()  # the only values allowed, when given


@dataclass(frozen=True)
class RequestSpec:
    source: str
    method: str
    path: Value
    params: tuple[tuple[str, Value], ...] = ()
    headers: tuple[tuple[str, Value], ...] = ()
    body: Value | None = None
    graphql: str | None = None  # a GraphQL query: POSTed as {"query", "variables"}
    variables: tuple[tuple[str, Value], ...] = ()


@dataclass(frozen=True)
class AuthSpec:
    """Compiled ``auth`` of a source. ``fields`` holds the kind's values (templates)."""

    kind: str  # 'bearer' | 'basic' | 'api_key' | 'oauth2_client_credentials'
    fields: tuple[tuple[str, Value], ...]
    location: str = "header"  # api_key: 'header' | 'query'
    name: str = ""  # api_key: the header or parameter name
    client_auth: str = "body"  # oauth2: 'body' | 'basic'


@dataclass(frozen=True)
class Source:
    name: str
    base_url: Value
    headers: tuple[tuple[str, Value], ...]
    params: tuple[tuple[str, Value], ...]
    timeout: float
    retry: RetryPolicy
    validate: RequestSpec | None
    error_message: Value
    auth: AuthSpec | None = None
    rate_limits: tuple[tuple[int, float], ...] = ()  # (requests, seconds)
    on_status: tuple[tuple[int, str], ...] = ()  # (HTTP status, skip | partial | fail)
    allowed_origins: tuple[str, ...] = ()  # origins besides base_url's that get the credentials
    cross_origin: str = "refuse"  # a URL on another origin: refuse | anonymous (sent without credentials)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # per response, decoded
    sign: SignSpec | None = None  # signature params and headers, rendered on each request (signing.py)
    rate_limit_headers: HeaderLimits | None = None  # the quota the API announces (ratelimit.py)
    # What reads ``account`` (rendered per account, see ``Accounts``): the base URL, and the
    # names of headers and query parameters; the rest is rendered once, on the config.
    account_base_url: bool = False
    account_headers: frozenset[str] = frozenset()
    account_params: frozenset[str] = frozenset()

    @property
    def per_account(self) -> bool:
        """Whether some of the source's templates read ``account``."""
        return self.account_base_url or bool(self.account_headers or self.account_params)


@dataclass(frozen=True)
class Pagination:
    """How a step walks its pages. Parameter names are None when nothing is sent."""

    kind: str  # none | offset | page | cursor | next_url | link_header | graphql_cursor | search_after
    place: str = "query"  # where paging values go: query | header | body | path
    offset_param: str | None = None
    limit_param: str | None = None
    page_param: str | None = None
    size_param: str | None = None
    cursor_param: str | None = None
    start: int = 0  # the first offset or page number
    size: Value | None = None  # page size (offset: the limit)
    total: Value | None = None  # offset: total number of records
    total_pages: Value | None = None  # page: number of pages
    cursor: Value | None = None  # cursor: the next token in the body
    next_url: Value | None = None  # next_url: the next page's URL in the body
    page_info: Value | None = None  # graphql_cursor: {hasNextPage, endCursor}
    has_more: Value | None = None  # any kind: a flag in the body; false ends pagination
    max_pages: int | None = None
    stop_on_empty: bool = True
    after: Value | None = None  # search_after: the last record's sort values (JMESPath on the record)
    after_param: str | None = None  # search_after: the body key (or parameter) that carries them


# The fields each kind reads (besides kind, in, has_more, max_pages, stop_on_empty) ...
PAGINATION_FIELDS = {
    "none": set(),
    "offset": {"offset_param", "limit_param", "limit", "total"},
    "page": {"page_param", "start_page", "size_param", "size", "total_pages"},
    "cursor": {"cursor", "cursor_param", "size_param", "size"},
    "next_url": {"next_url", "size_param", "size"},
    "link_header": {"size_param", "size"},
    "graphql_cursor": {"page_info", "cursor_param", "size_param", "size"},
    "search_after": {"after", "after_param", "size_param", "size"},
}
# Fields that may read a response header ({header: NAME}) instead of the body, and what they hold.
HEADER_FIELDS = {"total": "number", "total_pages": "number", "cursor": "text", "next_url": "text", "has_more": "flag"}
# ... the ones it cannot do without ...
PAGINATION_REQUIRED = {
    "cursor": {"cursor": "JMESPath to the next token"},
    "next_url": {"next_url": "JMESPath to the next page's URL"},
    "graphql_cursor": {"page_info": "JMESPath to the pageInfo object"},
}
# ... and the parameter names it sends, with their defaults.
PAGINATION_PARAMS: dict[str, dict[str, str | None]] = {
    "none": {},
    "offset": {"offset_param": "offset", "limit_param": "limit"},
    "page": {"page_param": "page", "size_param": None},
    "cursor": {"cursor_param": "cursor", "size_param": None},
    "next_url": {"size_param": None},
    "link_header": {"size_param": None},
    "graphql_cursor": {"cursor_param": "after", "size_param": "first"},
    "search_after": {"after_param": "search_after", "size_param": "size"},
}


# ----------------------------------------------------------------------------------------
# Bodies other than JSON, export jobs, incremental state (pipeline/decode.py, exportjob.py, state.py)

FORMATS = ("json", "jsonl", "csv", "xml")
COMPRESSIONS = ("none", "gzip", "zip")
CSV_TYPES = ("string", "integer", "number", "boolean", "json")


@dataclass(frozen=True)
class CsvFormat:
    """``response.csv``: how a CSV file is read (a header row names the columns)."""

    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8-sig"  # a byte order mark, if any, is not part of the first column's name
    columns: tuple[tuple[str, str], ...] = ()  # column -> string | integer | number | boolean | json


@dataclass(frozen=True)
class XmlFormat:
    """``response.xml``: how XML becomes JSON-like documents."""

    element: tuple[str, ...] = ()  # the record elements: a name (any depth), or a path from the root ...
    rooted: bool = False  # ... when written with a '/' (report/hosts/host, /report)
    namespaces: str = "strip"  # strip: local names only | keep: names as written (prefix:name)
    attribute_prefix: str = ""  # attribute keys: prefix + name
    text_key: str = "_text"  # the text of an element that also has attributes or children
    lists: frozenset[str] = frozenset()  # element names always given as a list


@dataclass(frozen=True)
class ResponseFormat:
    """``response``: how a step's record-bearing bodies are read (pages, or an export's files)."""

    format: str = "auto"  # json | jsonl | csv | xml | auto (content type, file name, then the bytes)
    compression: str = "auto"  # none | gzip | zip | auto
    members: str | None = None  # zip: a glob of the member names to read (default: every file)
    csv: CsvFormat = CsvFormat()
    xml: XmlFormat = XmlFormat()


@dataclass(frozen=True)
class ExportJob:
    """``export``: an asynchronous job - started by the step's request, polled, downloaded."""

    job_id: Value  # on the start response (JMESPath, or {header: NAME})
    status: RequestSpec  # the poll request; templates see ``job``
    ready: Value  # JMESPath on the status body: the files can be downloaded
    failed: Value | None  # JMESPath on the status body: the job failed
    files: Value  # JMESPath on the ready status body: a URL or id, or a list of them
    download: RequestSpec | None  # the request of each file (templates see ``job`` and ``file``)
    interval: float = 1.0  # seconds before the second poll
    max_interval: float = 30.0  # the longest wait between polls
    backoff: float = 2.0  # each wait is this many times the previous one
    timeout: float = 3600.0  # seconds from the start of the job to its end


@dataclass(frozen=True)
class Incremental:
    """``incremental``: a high-water mark saved per integration instance and passed to the next run."""

    mark: Value | None  # JMESPath on each written record; the largest value is kept
    compare: str = "time"  # time | number | string


@dataclass(frozen=True)
class Accounts:
    """``accounts``: the step runs once per account, which its templates (and its source's
    base URL, headers and params) see as ``account``. Exactly one of the two is set."""

    items: Value | None = None  # JMESPath on the config, or a literal list: a list gives its items
    type: str | None = None  # every entity of this type (built by a step the step depends on)


@dataclass(frozen=True)
class Detail:
    """``detail``: one more request per listed record (templates see ``record``); its response
    becomes the record, or is merged into it, before anything is built."""

    request: RequestSpec
    record: Value  # JMESPath on the detail response: the detailed record
    merge: bool = False  # True: the listed record's fields, overwritten by the detail's
    on_status: tuple[tuple[int, str], ...] = ()  # the step's rules, overridden by the detail's own


@dataclass(frozen=True)
class EntitySpec:
    resource: str
    type: str
    classes: tuple[str, ...]
    for_each: Value | None  # one entity per item of this list (nested records)
    key: Value
    properties: tuple[tuple[str, Value], ...]
    tags: tuple[tuple[str, Value], ...]
    tags_from: Value | None
    raw_data: bool
    partial: bool
    duplicates: str = "keep-first"  # a repeated _key: keep the first and warn, or 'strict': fail the step


@dataclass(frozen=True)
class Endpoint:
    """One end of a direct relationship.

    ``mode`` is 'record' (the entity of ``type`` built from the current record),
    'key' (the entity whose ``_key`` the ``key`` template renders) or 'type' (every
    entity of ``type`` collected so far; for singletons such as an account).
    """

    mode: str
    type: str
    key: Value | None = None


@dataclass(frozen=True)
class RelationshipSpec:
    relationship_class: str
    type: str
    source: Endpoint
    target: Endpoint
    properties: tuple[tuple[str, Value], ...]
    for_each: Value | None
    partial: bool


@dataclass(frozen=True)
class MappedRelationshipSpec:
    relationship_class: str
    type: str
    source_type: str
    direction: str
    target_type: str | None
    target_class: str | None
    target_properties: tuple[tuple[str, Value], ...]
    filter_keys: tuple[tuple[str, ...], ...]
    skip_target_creation: bool | None
    properties: tuple[tuple[str, Value], ...]
    for_each: Value | None
    partial: bool


@dataclass(frozen=True)
class Step:
    id: str
    name: str
    depends_on: tuple[str, ...]
    when: Value | None  # JMESPath on config: the step runs only when it is truthy
    on_dependency_failure: str  # 'run' (with what exists) or 'skip'
    for_each: str | None  # fan-out: one request per entity of this type
    request: RequestSpec | None
    pagination: Pagination
    records: Value
    filter: Value | None
    on_status: tuple[tuple[int, str], ...]  # the source's rules, overridden by the step's
    entities: tuple[EntitySpec, ...]
    relationships: tuple[RelationshipSpec, ...]
    mapped_relationships: tuple[MappedRelationshipSpec, ...]
    response: ResponseFormat | None = None  # None: JSON bodies (the fast path)
    export: ExportJob | None = None
    incremental: Incremental | None = None
    accounts: Accounts | None = None
    detail: Detail | None = None

    @property
    def fans_out_over(self) -> str | None:
        """The entity type whose entities the step runs once for (``for_each``, or ``accounts``
        given as ``{type: ...}``), or None."""
        return self.for_each or (self.accounts.type if self.accounts is not None else None)

    @property
    def _specs(self) -> tuple[EntitySpec | RelationshipSpec | MappedRelationshipSpec, ...]:
        return (*self.entities, *self.relationships, *self.mapped_relationships)

    @property
    def declared_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.type for s in self._specs))

    @property
    def partial_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.type for s in self._specs if s.partial))


@dataclass(frozen=True)
class OfflineReplay:
    """One bundled cassette and what replaying it needs: the config it was recorded with
    (defaults of the run) and the clock of the recording."""

    cassette: Path
    config: tuple[tuple[str, Any], ...]
    as_of: str | None  # the clock of the recording, so time windows replay the same


@dataclass(frozen=True)
class OfflineChoice:
    """``offline.by_config.<field>.<value>``: the replay of a run whose config ``field`` is
    ``value`` (its config and clock already merged over the section's own)."""

    field: str
    value: Any
    replay: OfflineReplay


@dataclass(frozen=True)
class Offline:
    """The ``offline`` section: the cassette ``etl run --offline`` replays, and the other
    cassettes some config values choose instead (one per documented mode, say)."""

    cassette: Path
    config: tuple[tuple[str, Any], ...]
    as_of: str | None  # the clock of the recording, so time windows replay the same
    choices: tuple[OfflineChoice, ...] = ()

    @property
    def default(self) -> OfflineReplay:
        """The replay of a run whose config chooses no other cassette."""
        return OfflineReplay(self.cassette, self.config, self.as_of)

    @property
    def choice_fields(self) -> tuple[str, ...]:
        """The config fields whose value may choose another cassette, in the mapping's order."""
        return tuple(dict.fromkeys(choice.field for choice in self.choices))

    @property
    def cassettes(self) -> frozenset[Path]:
        """Every cassette bundled with the mapping."""
        return frozenset({self.cassette, *(choice.replay.cassette for choice in self.choices)})

    def choices_for(self, values: Mapping[str, Any]) -> tuple[OfflineChoice, ...]:
        """The choices that config ``values`` (field -> value) make."""
        return tuple(c for c in self.choices if c.field in values and _same_value(values[c.field], c.value))


def _same_value(a: Any, b: Any) -> bool:
    """Equal, and both booleans or neither: ``True`` does not choose what ``1`` chooses."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


@dataclass(frozen=True)
class Plan:
    path: str
    integration_id: str
    integration_name: str
    description: str
    config_fields: tuple[ConfigField, ...]
    sources: tuple[Source, ...]
    instance_tags: tuple[tuple[str, Value], ...]
    steps: tuple[Step, ...]  # in dependency order
    offline: Offline | None
    instance: Value | None = None  # integration.instance: the instance name a run is (config only)

    @property
    def default_source(self) -> Source:
        return self.sources[0]

    def source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def listed_types(self) -> frozenset[str]:
        """Entity types whose keys relationships enumerate ({type: X} endpoints)."""
        ends = (end for s in self.steps for r in s.relationships for end in (r.source, r.target))
        return frozenset(end.type for end in ends if end.mode == "type")

    def steps_for(self, wanted: list[str] | None) -> tuple[Step, ...]:
        """The steps to run for ``--step``: those asked for and everything they depend on."""
        if not wanted:
            return self.steps
        keep: set[str] = set()
        pending = list(wanted)
        while pending:
            step_id = pending.pop()
            if step_id not in keep:
                keep.add(step_id)
                pending.extend(self.step(step_id).depends_on)
        return tuple(s for s in self.steps if s.id in keep)


def fits_type(kind: str, value: Any) -> bool:
    return {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }.get(kind, lambda v: True)(value)
