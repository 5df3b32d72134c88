"""Incremental runs against a real local API (tests/fakes/feeds.py): the documented example saves
its high-water mark beside the output after a successful run and passes it to the next run,
which marks its types partial; --full-refresh ignores it; the mark is never advanced past data
that was not written; with --store the state lives in the store, per instance."""

from __future__ import annotations

import json
from unittest.mock import ANY

import pytest
import yaml

from engine.store.connect import open_store
from engine.store.url import parse_store_url
from tests.fakes.feeds import FeedApi
from tests.fakes.paging import EXAMPLES, item_ids, partial_types, step_status, write_mapping
from tests.fakes.server import Response
from tests.graphtools import read_output
from tests.storetools import current_keys, store_url

__all__ = ["store_url"]  # fixture

ALL = list(range(1, 24))
LAST = "2026-01-23T00:00:00Z"


@pytest.fixture
def api():
    with FeedApi() as server:
        yield server


def run(etl, api, out, *extra, mapping=EXAMPLES / "incremental.yaml"):
    return etl("run", mapping, "--base-url", api.url, "--output", out, *extra)


def state_of(out) -> dict:
    return json.loads((out.parent / f".{out.name}.state.json").read_text())


def since_params(api) -> list:
    return [r.query.get("updated_since") for r in api.log if r.path == "/items"]


def add_item(api, number: int, updated: str) -> None:
    api.items.append({"id": number, "name": f"item {number}", "updated_at": updated, "score": 1, "active": True})


def test_first_run_is_full_and_saves_the_mark(etl, api, tmp_path):
    out = tmp_path / "out"
    result = run(etl, api, out)
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(out)
    assert item_ids(output) == ALL
    assert partial_types(output) == []  # a first run fetched everything: nothing is partial
    assert since_params(api) == [None]
    state = state_of(out)
    assert state["integration"] == "example-incremental" and state["instance"] == "example-incremental"
    assert state["steps"]["fetch-items"]["since"] == LAST
    assert state["steps"]["fetch-items"]["mark"] == "updated_at"
    assert state["steps"]["fetch-items"]["compare"] == "time"


def test_next_run_fetches_what_changed_and_is_partial(etl, api, tmp_path):
    out = tmp_path / "out"
    assert run(etl, api, out).exit_code == 0
    add_item(api, 24, "2026-01-24T08:00:00Z")
    result = run(etl, api, out)
    assert result.exit_code == 0, result.stdout + result.stderr  # upserts by design: not a loss
    output = read_output(out)
    assert item_ids(output) == [24]
    assert partial_types(output) == ["example_item"]  # nothing deleted downstream
    assert since_params(api) == [None, LAST]
    assert state_of(out)["steps"]["fetch-items"]["since"] == "2026-01-24T08:00:00Z"
    # Nothing changed since: nothing fetched, and the mark stays.
    assert run(etl, api, out).exit_code == 0
    assert since_params(api)[-1] == "2026-01-24T08:00:00Z"
    assert state_of(out)["steps"]["fetch-items"]["since"] == "2026-01-24T08:00:00Z"


def test_full_refresh_ignores_the_saved_state(etl, api, tmp_path):
    out = tmp_path / "out"
    assert run(etl, api, out).exit_code == 0
    result = run(etl, api, out, "--full-refresh")
    assert result.exit_code == 0
    assert item_ids(read_output(out)) == ALL and partial_types(read_output(out)) == []
    assert since_params(api) == [None, None]
    assert state_of(out)["steps"]["fetch-items"]["since"] == LAST


def test_a_failed_step_keeps_its_state(etl, api, tmp_path):
    out = tmp_path / "out"
    assert run(etl, api, out).exit_code == 0
    saved = (tmp_path / ".out.state.json").read_bytes()
    add_item(api, 24, "2026-01-24T00:00:00Z")
    api.fail_next("/items", *[Response(500)] * 5)
    result = run(etl, api, out)
    assert result.exit_code == 1
    assert step_status(read_output(out), "fetch-items") == "failure"
    assert (tmp_path / ".out.state.json").read_bytes() == saved
    assert run(etl, api, out).exit_code == 0  # the next run asks again from the old mark
    assert since_params(api)[-1] == LAST and item_ids(read_output(out)) == [24]


def test_the_mark_counts_only_records_that_were_written(etl, api, tmp_path):
    """A record left out (here by the filter) does not move the mark: a later run still asks for it."""
    text = (
        (EXAMPLES / "incremental.yaml")
        .read_text()
        .replace("    records: items\n", "    records: items\n    filter: \"name != 'item 23'\"\n")
    )
    mapping = tmp_path / "filtered.yaml"
    mapping.write_text(text)
    out = tmp_path / "out"
    assert run(etl, api, out, mapping=mapping).exit_code == 0
    assert state_of(out)["steps"]["fetch-items"]["since"] == "2026-01-22T00:00:00Z"


def test_a_partial_step_keeps_its_state(etl, api, tmp_path):
    """A record skipped for a key that cannot be made marks the step partial: no advance."""
    out = tmp_path / "out"
    assert run(etl, api, out).exit_code == 0
    api.items.append({"id": None, "name": "no id", "updated_at": "2026-01-25T00:00:00Z"})
    add_item(api, 24, "2026-01-24T00:00:00Z")
    result = run(etl, api, out)
    assert result.exit_code == 1
    assert item_ids(read_output(out)) == [24]
    assert state_of(out)["steps"]["fetch-items"]["since"] == LAST


def test_state_of_another_mark_or_instance_is_not_used(etl, api, tmp_path):
    out = tmp_path / "out"
    assert run(etl, api, out).exit_code == 0
    text = (EXAMPLES / "incremental.yaml").read_text().replace("      compare: time\n", "      compare: string\n")
    other = tmp_path / "other.yaml"
    other.write_text(text)
    assert run(etl, api, out, mapping=other).exit_code == 0
    assert since_params(api) == [None, None]
    renamed = text.replace("  id: example-incremental\n", "  id: example-renamed\n")
    other.write_text(renamed)
    assert run(etl, api, out, mapping=other).exit_code == 0
    assert since_params(api) == [None, None, None]


def test_numbers_compare_as_numbers(etl, api, tmp_path):
    for item in api.items:
        item["updated_at"] = str(item["id"] * 7)  # "7" ... "161": as text, "98" > "161"
    text = (EXAMPLES / "incremental.yaml").read_text().replace("      compare: time\n", "      compare: number\n")
    text = text.replace("          updatedOn: to_epoch_ms(updated_at)\n", "")
    mapping = tmp_path / "numbers.yaml"
    mapping.write_text(text)
    out = tmp_path / "out"
    assert run(etl, api, out, mapping=mapping).exit_code == 0
    assert state_of(out)["steps"]["fetch-items"]["since"] == "161"


def test_preview_shows_the_next_incremental_request(etl, api, tmp_path):
    default = tmp_path / ".j1-integration"  # the tests run in tmp_path: etl run's default --output
    assert run(etl, api, default).exit_code == 0
    result = etl("preview", EXAMPLES / "incremental.yaml", "--base-url", api.url)
    assert result.exit_code == 0, result.stdout
    assert f"updated_since={LAST.replace(':', '%3A')}" in result.stdout
    full = etl("preview", EXAMPLES / "incremental.yaml", "--base-url", api.url, "--full-refresh")
    assert "updated_since" not in full.stdout
    assert state_of(default)["steps"]["fetch-items"]["since"] == LAST  # previews never save


def test_state_in_the_store(etl, api, tmp_path, store_url):
    out = tmp_path / "out"
    first = run(etl, api, out, "--store", store_url)
    assert first.exit_code == 0, first.stdout + first.stderr
    add_item(api, 24, "2026-01-24T00:00:00Z")
    (tmp_path / ".out.state.json").unlink()  # the store's state is what a --store run reads
    second = run(etl, api, out, "--store", store_url)
    assert second.exit_code == 0, second.stdout + second.stderr
    assert since_params(api) == [None, LAST]
    store = open_store(parse_store_url(store_url))
    try:
        keys = current_keys(store, "etl_entities", "example-incremental")
        assert len(keys) == 24  # the upsert kept the 23 of the first run
        from engine.store.state import StoreState

        saved = StoreState(store).read("example-incremental", "example-incremental")
        assert saved["fetch-items"]["since"] == "2026-01-24T00:00:00Z"
    finally:
        store.close()
    # A run that is not loaded does not move the store's mark.
    add_item(api, 25, "2026-01-25T00:00:00Z")
    assert run(etl, api, tmp_path / "elsewhere").exit_code == 0
    assert run(etl, api, out, "--store", store_url).exit_code == 0
    assert since_params(api)[-1] == "2026-01-24T00:00:00Z"


def test_state_is_a_validation_error_without_incremental(etl, tmp_path):
    text = (EXAMPLES / "incremental.yaml").read_text()
    text = text.replace("    incremental:\n      mark: updated_at\n      compare: time\n", "")
    mapping = tmp_path / "nostate.yaml"
    mapping.write_text(text)
    result = etl("validate", mapping)
    assert result.exit_code == 3
    assert "steps[0].request.params.updated_since: unknown variable 'state'" in result.stderr


def per_account_mapping(tmp_path):
    """The example run once per account (from config): each account keeps its own mark."""
    data = yaml.safe_load((EXAMPLES / "incremental.yaml").read_text())
    data["config"] = {"accounts": {"description": "Comma-separated account names."}}
    step = data["steps"][0]
    step["accounts"] = "split(config('accounts'), ',')"
    step["request"]["params"]["account"] = "{{ account }}"
    step["entities"][0]["key"] = "example_item:{{ account }}:{{ record.id }}"
    return write_mapping(tmp_path / "per-account.yaml", data)


def test_each_account_keeps_its_mark_and_a_new_one_is_fetched_in_full(etl, api, tmp_path):
    """An account that appears later gets everything, never `since` the mark the others
    reached (whose older records it never had); an account left out keeps its mark."""
    out, mapping = tmp_path / "out", per_account_mapping(tmp_path)
    assert run(etl, api, out, "--config", "accounts=acme", mapping=mapping).exit_code == 0
    assert state_of(out)["steps"]["fetch-items"]["units"] == {"acme": {"since": LAST, "lastRun": ANY}}
    add_item(api, 24, "2026-01-24T08:00:00Z")
    result = run(etl, api, out, "--config", "accounts=acme,globex", mapping=mapping)
    assert result.exit_code == 0, result.stdout + result.stderr
    asked = {(r.query.get("account"), r.query.get("updated_since")) for r in api.log[1:]}
    assert asked == {("acme", LAST), ("globex", None)}
    keys = {e["_key"] for e in read_output(out)["entities"]}
    assert "example_item:acme:24" in keys and "example_item:acme:1" not in keys
    assert {f"example_item:globex:{n}" for n in range(1, 25)} <= keys
    units = state_of(out)["steps"]["fetch-items"]["units"]
    assert units["acme"]["since"] == units["globex"]["since"] == "2026-01-24T08:00:00Z"
    # globex alone: acme's mark stays as it was
    add_item(api, 25, "2026-01-25T08:00:00Z")
    assert run(etl, api, out, "--config", "accounts=globex", mapping=mapping).exit_code == 0
    units = state_of(out)["steps"]["fetch-items"]["units"]
    assert (units["acme"]["since"], units["globex"]["since"]) == ("2026-01-24T08:00:00Z", "2026-01-25T08:00:00Z")
