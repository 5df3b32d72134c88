"""Many accounts in one mapping: what an account changes in the requests to a source.

A step with ``accounts`` (``plan.Accounts``) runs once per account, and a source's
``base_url``, ``headers`` and ``params`` may read ``account``. This module renders those
templates once per account (:class:`~.fetch.AccountBase`), and decides where the source's
credentials may go: its own origin (its base URL rendered without an account, when that is
a URL), its ``allowed_origins``, nowhere else. :class:`AccountSources` is a part of
:class:`~.runner.Runner`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jinja2

from ..errors import FetchError, MappingError
from ..http.origins import origin_of, url_problem
from ..lang.values import Scope, Value
from .build import describe
from .fetch import AccountBase
from .load import PathT
from .plan import Plan, Source

if TYPE_CHECKING:
    import jmespath

    from .config import ResolvedConfig
    from .fetch import HttpClient
    from .runner import RunOptions


class AccountSources:
    """The base URLs of a run's sources, and what each account changes in them."""

    plan: Plan
    config: ResolvedConfig
    options: RunOptions
    jmespath: jmespath.Options
    account_bases: dict[tuple[str, int], tuple[Any, AccountBase | FetchError]]

    if TYPE_CHECKING:  # the rest of the runner, which this part uses

        def client(self, name: str) -> HttpClient: ...
        def evaluate(self, value: Value, path: PathT) -> Any: ...
        def where(self, path: PathT) -> str: ...
        def mapping_error(self, path: PathT, message: str) -> MappingError: ...

    def redact_secret_accounts(self, expression: Value, accounts: list) -> None:
        """Accounts made from a secret config field are secrets too: every text in them is
        redacted like the field's value (a key per account split out of one secret value, say).
        A field is taken as read when the expression names it."""
        secret_fields = [f.name for f in self.plan.config_fields if f.secret]
        if not any(name in str(expression.source) for name in secret_fields):
            return
        for account in accounts:
            for text in _texts(account):
                self.config.redactor.add(text)

    def base_url_override(self, source: Source) -> str | None:
        """``--base-url`` for ``source`` (for every account too), if given."""
        for name, url in self.options.base_urls:
            if name == source.name or (name is None and source is self.plan.default_source):
                return url
        return None

    def base_url(self, source: Source) -> str:
        """The source's own base URL: its requests without an account (``validate``, steps
        without accounts) go there, and credentials go to its origin (and allowed_origins).
        A base URL that reads ``account`` is rendered with the account left empty; when that
        is not a URL, the source has none of its own (see :meth:`account_base`)."""
        override = self.base_url_override(source)
        if override is not None:
            return override
        if not source.account_base_url:
            return self.evaluate(source.base_url, ("sources", source.name, "base_url"))
        home = self.without_account(source)
        if home is not None:
            return home
        path = ("sources", source.name, "base_url")
        if source.validate is not None:
            raise self.mapping_error(
                path,
                "without an account it is not a URL, and the source's validate request is made before any "
                "account: put the account in the paths of the requests instead, or drop validate",
            )
        if not source.allowed_origins:
            raise self.mapping_error(
                path,
                "it reads the account in its origin, so the source has no origin of its own to send its "
                f"credentials to: list the origins of its accounts in sources.{source.name}.allowed_origins",
            )
        return source.allowed_origins[0]

    def without_account(self, source: Source) -> str | None:
        """The source's base URL rendered with ``account`` empty (its fields empty too), if it
        is then a URL: the part of it that is the same for every account."""
        variables = {"config": self.config.values, "account": jinja2.ChainableUndefined()}
        try:
            url = source.base_url.evaluate(Scope({}, variables, self.jmespath))
        except Exception:  # the account is all of it, or it reads the account's fields in ways text cannot
            return None
        return url if isinstance(url, str) and url_problem(url) is None else None

    def account_base(self, source_name: str, account: Any) -> AccountBase | FetchError | None:
        """What ``account`` changes in the requests to a source (None: nothing), or why its
        requests cannot be made: one of its templates failed, or its base URL is on an origin
        the source's credentials may not go to. Worked out once per account."""
        source = self.plan.source(source_name)
        if account is None or not source.per_account:
            return None
        cached = self.account_bases.get((source_name, id(account)))
        if cached is not None and cached[0] is account:
            return cached[1]
        try:
            base: AccountBase | FetchError = self.render_account_base(source, account)
        except FetchError as exc:
            base = exc
        self.account_bases[(source_name, id(account))] = (account, base)  # the account kept: its id stays its own
        return base

    def render_account_base(self, source: Source, account: Any) -> AccountBase:
        """The source's templates that read ``account``, rendered for it."""
        scope = Scope({}, {"config": self.config.values, "account": account}, self.jmespath)
        path = ("sources", source.name)

        def render(value: Value, where: PathT) -> Any:
            try:
                return value.evaluate(scope)
            except Exception as exc:  # a field this account does not have, a null in text...
                raise FetchError(f"{self.where((*path, *where))}: {value.source!r} failed: {describe(exc)}") from None

        base_url = None
        if source.account_base_url and self.base_url_override(source) is None:
            base_url = render(source.base_url, ("base_url",))
            self.check_account_origin(source, base_url)
        texts = []
        for kind, pairs, names in (
            ("headers", source.headers, source.account_headers),
            ("params", source.params, source.account_params),
        ):
            rendered = ((name, render(value, (kind, name))) for name, value in pairs if name in names)
            texts.append({n: _text(v) for n, v in rendered if v is not None})  # null leaves one out
        return AccountBase(base_url, texts[0], texts[1])

    def check_account_origin(self, source: Source, base_url: Any) -> None:
        """An account's base URL must be a URL; on an origin that is neither the source's nor
        one of its ``allowed_origins`` its requests are refused (unless the source sends them
        there without credentials: ``cross_origin: anonymous``)."""
        name = source.name
        problem = url_problem(base_url) if isinstance(base_url, str) else f"it is {type(base_url).__name__}, not text"
        if problem is not None:
            raise FetchError(self.config.redactor(f"the base URL of source '{name}' is {base_url!r}: {problem}"))
        client = self.client(name)
        origin = origin_of(base_url)
        if origin in client.trusted or source.cross_origin == "anonymous":
            return
        raise FetchError(
            self.config.redactor(
                f"the base URL of source '{name}' for this account ({base_url}) is on origin {origin}, which is "
                f"neither the source's own ({client.origin}) nor one of its allowed_origins; refusing to send the "
                f"source's credentials there. List it in sources.{name}.allowed_origins (or set "
                f"sources.{name}.cross_origin: anonymous to request it without credentials)"
            )
        )


def _texts(value: Any) -> Iterator[str]:
    """Every text in a JSON value (an account), numbers and booleans as text."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif value is not None:
        yield _text(value)


def _text(value: Any) -> str:
    """A header or query parameter's text (booleans as true/false)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
