"""Synthesise the bundled cassettes from the local API look-alikes.

    python -m tests.fakes.record_cassettes

Each scenario runs the real engine against a local fake (tests/fakes/) while recording,
then rewrites the local URL to the vendor's real one, so the cassettes look like - and
replay exactly like - recordings of the live API. Anyone with a real key can re-record
the same scenarios live instead; see cassettes/README.md.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EtlError
from engine.http.cassette import cassette
from engine.lang.functions import to_epoch_ms
from engine.pipeline.compile import compile_file
from engine.pipeline.config import resolve_config
from engine.pipeline.runner import RunOptions, run_plan

from . import digicert, domains, nowsecure, people
from .server import LocalApi, Response

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Scenario:
    name: str
    mapping: str
    real_base: str  # what the local URL is rewritten to
    fake_root: str  # path prefix of the fake's API root
    install: Callable[[LocalApi], None]
    config: dict = field(default_factory=dict)
    source: str | None = None  # the mapping source the fake stands in for (None: the default one)
    also: tuple = ()  # more fakes: (source, real_base, install)
    as_of: str | None = None


def _digicert(
    setup: Callable[[digicert.DigiCertData], None] = lambda data: None,
    faults: Callable[[LocalApi], None] = lambda api: None,
):
    def install(api: LocalApi) -> None:
        data = digicert.DigiCertData()
        setup(data)
        digicert.install(api, data)
        faults(api)

    return install


DIGICERT_CONFIG = {"apiKey": digicert.API_KEY, "pageSize": "2", "accountName": "Example Corp", "tagAccountName": "true"}

SCENARIOS = [
    Scenario(
        "digicert/full-run",
        "mappings/digicert.yaml",
        "https://www.digicert.com/services/v2",
        digicert.ROOT,
        _digicert(),
        DIGICERT_CONFIG,
    ),
    Scenario(
        "digicert/bad-key",
        "mappings/digicert.yaml",
        "https://www.digicert.com/services/v2",
        digicert.ROOT,
        _digicert(),
        {**DIGICERT_CONFIG, "apiKey": "not-a-valid-digicert-key"},
    ),
    Scenario(
        "digicert/forbidden-users",
        "mappings/digicert.yaml",
        "https://www.digicert.com/services/v2",
        digicert.ROOT,
        _digicert(lambda data: data.forbidden.add(f"{digicert.ROOT}/user")),
        DIGICERT_CONFIG,
    ),
    Scenario(
        "digicert/empty-orders",
        "mappings/digicert.yaml",
        "https://www.digicert.com/services/v2",
        digicert.ROOT,
        _digicert(lambda data: (data.orders.clear(), data.account.pop("admin_email"))),
        DIGICERT_CONFIG,
    ),
    Scenario(
        "digicert/rate-limited",
        "mappings/digicert.yaml",
        "https://www.digicert.com/services/v2",
        digicert.ROOT,
        _digicert(
            faults=lambda api: api.fail_next(
                f"{digicert.ROOT}/order/certificate",
                digicert.error(429, "request_limit_exceeded", "Service unavailable, please limit request volume"),
                digicert.error(503, "service_unavailable", "Service temporarily unavailable"),
            )
        ),
        DIGICERT_CONFIG,
    ),
]


def record(scenario: Scenario) -> Path:
    target = ROOT / "cassettes" / f"{scenario.name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    plan = compile_file(ROOT / scenario.mapping)
    config = resolve_config(plan, scenario.config, environ={}, dotenv=None)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as out:
        fakes = [(scenario.source, scenario.real_base, scenario.fake_root, scenario.install)]
        fakes += [(source, real, "", install) for source, real, install in scenario.also]
        rewrites, base_urls = [], []
        for source, real, root, install in fakes:
            api = stack.enter_context(LocalApi())
            install(api)
            rewrites.append((api.url + root, real))
            base_urls.append((source, api.url + root))
        options = RunOptions(
            output=Path(out) / "graph",
            base_urls=tuple(base_urls),
            concurrency=1,
            prefetch=False,
            now=to_epoch_ms(scenario.as_of) if scenario.as_of else None,
        )
        try:
            with cassette(target, "all", config.redactor):
                run_plan(plan, config, options)
        except EtlError as exc:
            print(f"  ({scenario.name}: the run failed as intended: {exc})")
    text = target.read_text(encoding="utf-8")
    for local, real in rewrites:
        text = text.replace(local, real)
    target.write_text(text, encoding="utf-8")
    return target


NOWSECURE_CONFIG = {
    "apiToken": nowsecure.API_TOKEN,
    "accountName": "Example Org",
    "tagAccountName": "true",
    "instanceId": "5e1f6c2a-0d3b-4e8f-9a71-2b4c6d8e0f13",
}
LAB = "https://lab-api.nowsecure.com"
PLATFORM = "https://api.nowsecure.com"


def _lab(faults: Callable[[LocalApi], None] = lambda api: None):
    def install(api: LocalApi) -> None:
        nowsecure.install_lab(api)
        faults(api)

    return install


SCENARIOS += [
    Scenario(
        "nowsecure/full-run",
        "mappings/nowsecure.yaml",
        LAB,
        "",
        _lab(),
        NOWSECURE_CONFIG,
        source="lab",
        as_of=nowsecure.AS_OF,
    ),
    Scenario(
        "nowsecure/latest-report",
        "mappings/nowsecure.yaml",
        LAB,
        "",
        _lab(),
        {**NOWSECURE_CONFIG, "findingsMode": "latest"},
        source="lab",
        also=(("platform", PLATFORM, nowsecure.install_graphql),),
        as_of=nowsecure.AS_OF,
    ),
    Scenario(
        "nowsecure/rate-limited",
        "mappings/nowsecure.yaml",
        LAB,
        "",
        _lab(
            lambda api: api.fail_next(
                f"/resource/app/{nowsecure.APP_IOS['ref']}/vulnerability/",
                Response(429, {"message": "Too Many Requests"}, headers={"Retry-After": "1"}),
            )
        ),
        NOWSECURE_CONFIG,
        source="lab",
        as_of=nowsecure.AS_OF,
    ),
    Scenario(
        "nowsecure/bad-token",
        "mappings/nowsecure.yaml",
        LAB,
        "",
        _lab(),
        {**NOWSECURE_CONFIG, "apiToken": "not-a-valid-nowsecure-token"},
        source="lab",
        as_of=nowsecure.AS_OF,
    ),
]


# The example mappings of mappings/examples/: generic sources of Person and Domain entities
# whose data lines up with the DigiCert and NowSecure cassettes above.
SCENARIOS += [
    Scenario(
        "examples/people/full-run",
        "mappings/examples/people.yaml",
        "https://people.example.com/v1",
        people.ROOT,
        lambda api: people.install(api),
        {"apiToken": people.API_TOKEN, "pageSize": "3"},
    ),
    Scenario(
        "examples/domains/full-run",
        "mappings/examples/domains.yaml",
        "https://dns.example.com/v1",
        domains.ROOT,
        lambda api: domains.install(api),
        {"apiKey": domains.API_KEY, "pageSize": "2"},
    ),
]


def main() -> None:
    from engine.http import clock

    clock.sleep = lambda seconds: None  # recorded retries need no real waiting
    for scenario in SCENARIOS:
        path = record(scenario)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
